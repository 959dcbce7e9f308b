//! The API's trust boundary: tokens and roles, Host/Origin checks, JSON-only POSTs,
//! the connection limit and timeouts, TLS, the query gate as clients see it (429
//! busy, on HTTP, the socket and the CLI), and the query socket's framing.
//!
//! Most tests run the transports in process (`Api::start` on port 0, over an empty
//! store) so that they can hold the query gate; the start-up refusals run the binary.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use nagare::api::{Api, ApiConfig};
use nagare::query::{Context, QueryConfig};
use serde_json::Value as J;

/// The transports of a daemon over an empty store, on a runtime of their own.
struct Server {
    rt: tokio::runtime::Runtime,
    api: Option<Api>,
    http: SocketAddr,
    socket: PathBuf,
    ctx: Arc<Context>,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(http: ApiConfig, query: QueryConfig) -> Server {
        Self::try_start(http, query, tempfile::tempdir().expect("tempdir")).expect("start")
    }

    fn try_start(
        mut http: ApiConfig,
        query: QueryConfig,
        dir: tempfile::TempDir,
    ) -> Result<Server, nagare::api::ApiError> {
        http.listen = "127.0.0.1:0".parse().expect("addr");
        if http.query_socket.is_none() {
            http.query_socket = Some(dir.path().join("query.sock"));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let res = nagare::rollup::RollupConfig::default()
            .resolutions()
            .expect("resolutions");
        let store = nagare::rollup::store::Store::new(None, res, 1, 0);
        let enr = Arc::new(nagare::enrich::Enricher::from_parts(
            Default::default(),
            Default::default(),
        ));
        let ctx = Arc::new(Context::new(store, enr, Arc::new(|_, _| None), query));
        let web = Arc::new(nagare::api::web::Web::load(dir.path()));
        let metrics: Arc<dyn nagare::api::http::MetricsSource> =
            Arc::new(|_: &mut nagare::telemetry::Exposition| {});
        let api = rt.block_on(Api::start(
            &http,
            dir.path(),
            metrics,
            ctx.clone(),
            web,
            None,
        ))?;
        Ok(Server {
            http: api.http_addr,
            socket: api.socket_path.clone(),
            api: Some(api),
            rt,
            ctx,
            dir,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(api) = self.api.take() {
            let _ = self.rt.block_on(api.stop());
        }
    }
}

/// One HTTP/1.1 request on a new connection; (status, headers, body).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {out:?}"));
    (status, head.to_ascii_lowercase(), body.to_string())
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// JSON content type and a bearer header.
fn r(auth: &str) -> [(&str, &str); 2] {
    [JSON, ("authorization", auth)]
}
const QUERY: &str = r#"{"query": "flows in last 1 hour"}"#;

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

/// `nagare token new --role ROLE NAME`: (secret, tokens-file line).
fn new_token(role: &str, name: &str) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nagare"))
        .args(["token", "new", "--role", role, name])
        .output()
        .expect("run nagare token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    (lines[0].to_string(), lines[1].to_string())
}

fn nagare_query(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nagare"))
        .arg("query")
        .args(args)
        .env_remove("NAGARE_TOKEN")
        .envs(env.iter().copied())
        .output()
        .expect("run nagare query")
}

#[test]
fn tokens_roles_and_the_open_health_check() {
    let (read, read_line) = new_token("read", "viewer");
    let (admin, admin_line) = new_token("admin", "ops");
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("# nagare tokens\n\n{read_line}\n{admin_line}\n"),
    )
    .expect("write tokens");
    assert!(!std::fs::read_to_string(&tokens).unwrap().contains(&read));
    let s = Server::start(
        ApiConfig {
            tokens_file: Some(tokens),
            ..ApiConfig::default()
        },
        QueryConfig::default(),
    );
    let a = s.http;
    let (rb, ab) = (bearer(&read), bearer(&admin));

    // open: the health check and the page's assets
    let (code, _, body) = request(a, "GET", "/healthz", &[], "");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    assert_eq!(request(a, "GET", "/", &[], "").0, 200);
    assert_eq!(request(a, "GET", "/app.js", &[], "").0, 200);

    // no token, a wrong token: 401 with the scheme to use
    let (code, head, _) = request(a, "POST", "/api/v1/query", &[JSON], QUERY);
    assert_eq!(code, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    let wrong = bearer("nagare_0000");
    assert_eq!(
        request(a, "POST", "/api/v1/query", &r(&wrong), QUERY).0,
        401
    );
    assert_eq!(request(a, "GET", "/metrics", &[], "").0, 401);
    assert_eq!(request(a, "GET", "/api/v1/dashboards", &[], "").0, 401);

    // read: queries, metrics, dashboards to look at
    let (code, _, body) = request(a, "POST", "/api/v1/query", &r(&rb), QUERY);
    assert_eq!(code, 200, "{body}");
    let v: J = serde_json::from_str(&body).expect("json");
    assert_eq!(v["rows"], J::Array(vec![]));
    assert_eq!(request(a, "GET", "/metrics", &r(&rb), "").0, 200);
    assert_eq!(request(a, "GET", "/api/v1/dashboards", &r(&rb), "").0, 200);
    let q = "/api/v1/query?q=flows%20in%20last%201%20hour";
    assert_eq!(request(a, "GET", q, &r(&rb), "").0, 200);

    // but not write dashboards; admin can
    let panel = r#"{"title": "t", "query": "flows"}"#;
    let path = "/api/v1/dashboards/mine/panels";
    let (code, _, body) = request(a, "POST", path, &r(&rb), panel);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("role read"), "{body}");
    let (code, _, body) = request(a, "POST", path, &r(&ab), panel);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        request(a, "DELETE", "/api/v1/dashboards/mine", &r(&rb), "").0,
        403
    );
    assert_eq!(
        request(a, "DELETE", "/api/v1/dashboards/mine", &r(&ab), "").0,
        204
    );

    // a text/plain POST is refused before its handler
    let plain = [("content-type", "text/plain"), ("authorization", &rb)];
    assert_eq!(request(a, "POST", "/api/v1/query", &plain, QUERY).0, 415);

    // the rejections are counted
    let (_, _, m) = request(a, "GET", "/metrics", &r(&rb), "");
    let m = common::parse_metrics(&m);
    let rejected =
        |reason: &str| m[&format!("nagare_api_requests_rejected_total{{reason=\"{reason}\"}}")];
    assert_eq!(rejected("unauthorized"), 4.0);
    assert_eq!(rejected("forbidden"), 2.0);
    assert_eq!(rejected("unsupported_media_type"), 1.0);

    // the CLI: --token-file, NAGARE_TOKEN, and a clear message without a token
    let server = format!("http://{a}");
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{read}\n")).expect("write secret");
    let sf = secret_file.to_str().expect("path");
    let out = nagare_query(
        &[
            "--server",
            &server,
            "--token-file",
            sf,
            "--format",
            "json",
            "flows in last 1 hour",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = nagare_query(
        &[
            "--server",
            &server,
            "--format",
            "json",
            "flows in last 1 hour",
        ],
        &[("NAGARE_TOKEN", &read)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = nagare_query(&["--server", &server, "flows in last 1 hour"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs a token") && err.contains("--token-file"),
        "{err}"
    );
}

#[test]
fn pages_of_other_sites_and_rebound_names_are_refused() {
    // no tokens (loopback): the checks that protect a browser still apply
    let s = Server::start(ApiConfig::default(), QueryConfig::default());
    let a = s.http;
    let ok = request(a, "POST", "/api/v1/query", &[JSON], QUERY);
    assert_eq!(ok.0, 200, "{}", ok.2);
    let same_origin = format!("http://{a}");
    let h = [JSON, ("origin", same_origin.as_str())];
    assert_eq!(request(a, "POST", "/api/v1/query", &h, QUERY).0, 200);
    let h = [JSON, ("origin", "http://evil.example")];
    assert_eq!(request(a, "POST", "/api/v1/query", &h, QUERY).0, 403);
    let h = [JSON, ("origin", "null")];
    assert_eq!(request(a, "POST", "/api/v1/query", &h, QUERY).0, 403);
    // DNS rebinding: a name of the attacker's, resolved to this address
    let rebound = format!("rebind.evil.example:{}", a.port());
    let h = [JSON, ("host", rebound.as_str())];
    assert_eq!(request(a, "POST", "/api/v1/query", &h, QUERY).0, 403);
    assert_eq!(request(a, "GET", "/api/v1/vocabulary", &h[1..], "").0, 403);
    let localhost = format!("localhost:{}", a.port());
    assert_eq!(
        request(a, "GET", "/api/v1/vocabulary", &[("host", &localhost)], "").0,
        200
    );
    // a form or text/plain POST (no preflight in a browser) never reaches a handler
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        let h = [("content-type", ct)];
        assert_eq!(
            request(a, "POST", "/api/v1/query", &h, QUERY).0,
            415,
            "{ct}"
        );
    }
    assert_eq!(request(a, "POST", "/api/v1/query", &[], QUERY).0, 415);
}

#[test]
fn a_full_query_queue_answers_busy_on_http_the_socket_and_the_cli() {
    let s = Server::start(
        ApiConfig::default(),
        QueryConfig {
            max_concurrent: 1,
            max_queued: 0,
            ..QueryConfig::default()
        },
    );
    let held = s.ctx.gate().acquire().expect("the only slot");
    let (code, _, body) = request(s.http, "POST", "/api/v1/query", &[JSON], QUERY);
    assert_eq!(code, 429, "{body}");
    let v: J = serde_json::from_str(&body).expect("json");
    assert_eq!(v["error"]["kind"], "busy");

    let mut sock = UnixStream::connect(&s.socket).expect("connect");
    sock.write_all(b"flows in last 1 hour\n").expect("write");
    let mut line = String::new();
    BufReader::new(&sock).read_line(&mut line).expect("read");
    let v: J = serde_json::from_str(&line).expect("json");
    assert_eq!(v["error"]["kind"], "busy");

    let server = format!("http://{}", s.http);
    let sock_path = s.socket.to_str().expect("path");
    for args in [
        vec!["--server", server.as_str(), "flows"],
        vec!["--socket", sock_path, "flows"],
    ] {
        let out = nagare_query(&args, &[]);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("busy"), "{args:?}: {err}");
    }
    drop(held);
    assert_eq!(
        request(s.http, "POST", "/api/v1/query", &[JSON], QUERY).0,
        200
    );
}

/// Reads until the peer closes; true when it did (within the test's generous cap).
fn closed_by_peer(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).is_ok()
}

#[test]
fn connections_past_the_limit_are_closed_and_the_others_served() {
    let s = Server::start(
        ApiConfig {
            max_connections: 3,
            ..ApiConfig::default()
        },
        QueryConfig::default(),
    );
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(s.http).expect("connect"))
        .collect();
    for _ in 0..2 {
        let mut extra = TcpStream::connect(s.http).expect("the kernel accepts");
        extra
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut out = String::new();
        extra
            .read_to_string(&mut out)
            .expect("closed by the server");
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        let v: J = serde_json::from_str(body).expect("the body is the declared JSON");
        assert_eq!(v["error"]["kind"], "busy");
    }
    // the three held connections are served (the first reads the metrics)
    let mut metrics = String::new();
    for (i, mut c) in held.into_iter().enumerate() {
        let path = if i == 0 { "/metrics" } else { "/healthz" };
        let req = format!(
            "GET {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            s.http
        );
        c.write_all(req.as_bytes()).expect("write");
        let mut out = String::new();
        c.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        c.read_to_string(&mut out).expect("read");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        if i == 0 {
            metrics = out
                .split_once("\r\n\r\n")
                .map(|x| x.1.to_string())
                .unwrap_or_default();
        }
    }
    let m = common::parse_metrics(&metrics);
    assert_eq!(m["nagare_api_connections_refused_total"], 2.0);
}

#[test]
fn idle_and_slow_connections_are_closed() {
    // idle: connected, nothing sent
    let s = Server::start(
        ApiConfig {
            idle_timeout_ms: 300,
            ..ApiConfig::default()
        },
        QueryConfig::default(),
    );
    let mut idle = TcpStream::connect(s.http).expect("connect");
    assert!(closed_by_peer(&mut idle), "the idle connection was closed");
    let (_, _, m) = request(s.http, "GET", "/metrics", &[], "");
    assert_eq!(
        common::parse_metrics(&m)["nagare_api_idle_connections_closed_total"],
        1.0
    );
    drop(s);

    // headers begun and never finished
    let s = Server::start(
        ApiConfig {
            header_read_timeout_ms: 300,
            ..ApiConfig::default()
        },
        QueryConfig::default(),
    );
    let mut slow = TcpStream::connect(s.http).expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        .expect("write");
    assert!(closed_by_peer(&mut slow), "the slow request was closed");
    drop(s);

    // a body that never comes: the request times out with 503
    let s = Server::start(
        ApiConfig {
            request_timeout_ms: 300,
            ..ApiConfig::default()
        },
        QueryConfig::default(),
    );
    let mut stalled = TcpStream::connect(s.http).expect("connect");
    let head = format!(
        "POST /api/v1/query HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"query\"",
        s.http
    );
    stalled.write_all(head.as_bytes()).expect("write");
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut out = vec![0u8; 4096];
    let n = stalled.read(&mut out).expect("an answer");
    let out = String::from_utf8_lossy(&out[..n]);
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
}

fn socket_line(r: &mut BufReader<UnixStream>) -> Option<J> {
    let mut line = String::new();
    match r.read_line(&mut line).expect("read") {
        0 => None,
        _ => Some(serde_json::from_str(&line).expect("a JSON line")),
    }
}

#[test]
fn the_query_socket_frames_lines_strictly() {
    let s = Server::start(
        ApiConfig {
            socket_timeout_ms: 500,
            ..ApiConfig::default()
        },
        QueryConfig::default(),
    );
    let connect = || {
        let c = UnixStream::connect(&s.socket).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        c
    };
    // a line past 64 KiB: one error, its tail is not run as a query
    let mut c = connect();
    let mut long = "flows where Port = 22 ".repeat(4000).into_bytes(); // 88 000 bytes
    long.extend_from_slice(b"\nflows in last 1 hour\n");
    c.write_all(&long).expect("write");
    let mut r = BufReader::new(c.try_clone().expect("clone"));
    let first = socket_line(&mut r).expect("an answer to the long line");
    assert_eq!(first["error"]["kind"], "limit", "{first}");
    let second = socket_line(&mut r).expect("an answer to the next line");
    assert!(second["rows"].is_array(), "{second}");
    // nothing else: the idle connection is then closed without another answer
    assert!(socket_line(&mut r).is_none());

    // not UTF-8: an error, and the connection goes on
    let mut c = connect();
    c.write_all(b"flows where VM = '\xff\xfe'\nflows in last 1 hour\n")
        .expect("write");
    let mut r = BufReader::new(c.try_clone().expect("clone"));
    let bad = socket_line(&mut r).expect("an answer");
    assert_eq!(bad["error"]["kind"], "syntax");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("UTF-8"),
        "{bad}"
    );
    assert!(socket_line(&mut r).expect("next").get("rows").is_some());

    // a request begun and never ended: an error, then closed
    let mut c = connect();
    c.write_all(b"flows in last").expect("write");
    let mut r = BufReader::new(c.try_clone().expect("clone"));
    let t = socket_line(&mut r).expect("a timeout answer");
    assert_eq!(t["error"]["kind"], "timeout");
    assert!(socket_line(&mut r).is_none(), "closed");
}

#[test]
fn a_live_query_socket_is_never_unlinked() {
    let first = Server::start(ApiConfig::default(), QueryConfig::default());
    let second = Server::try_start(
        ApiConfig {
            query_socket: Some(first.socket.clone()),
            ..ApiConfig::default()
        },
        QueryConfig::default(),
        tempfile::tempdir().expect("tempdir"),
    );
    let Err(e) = second else {
        panic!("a second server took a live socket")
    };
    let msg = e.to_string();
    assert!(
        msg.contains(&first.socket.display().to_string()) && msg.contains("in use"),
        "{msg}"
    );
    // the first still answers on it
    let c = UnixStream::connect(&first.socket).expect("still there");
    (&c).write_all(b"flows in last 1 hour\n").expect("write");
    let mut r = BufReader::new(c);
    assert!(socket_line(&mut r).expect("answer")["rows"].is_array());
    let _ = &first.dir;
}

fn serve_fails(args: &[&str], state: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nagare"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("run nagare serve");
    assert!(!out.status.success(), "started: {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unsafe_starts_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    // every interface, no tokens
    let err = serve_fails(&["--http", "0.0.0.0:0"], &dir.path().join("a"));
    assert!(
        err.contains("0.0.0.0:0") && err.contains("not a loopback address"),
        "{err}"
    );
    assert!(
        err.contains("--tokens-file") && err.contains("nagare token new"),
        "{err}"
    );
    // a tokens file with an error names its line
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# ok\nread someone not-a-digest\n").expect("write");
    let t = tokens.to_str().expect("path");
    let err = serve_fails(
        &["--http", "127.0.0.1:0", "--tokens-file", t],
        &dir.path().join("b"),
    );
    assert!(err.contains("line 2") && err.contains("SHA-256"), "{err}");
    // a second daemon on a live socket
    let d = common::Daemon::start(&dir.path().join("c"), &[]);
    let sock = d.state_dir.join("query.sock");
    let s = sock.to_str().expect("path");
    let err = serve_fails(
        &["--http", "127.0.0.1:0", "--query-socket", s],
        &dir.path().join("d"),
    );
    assert!(err.contains(s) && err.contains("in use"), "{err}");
    let c = UnixStream::connect(&sock).expect("the first daemon's socket is still there");
    (&c).write_all(b"flows in last 1 hour\n").expect("write");
    assert!(socket_line(&mut BufReader::new(c)).expect("answer")["rows"].is_array());
    d.terminate();
}

#[test]
fn https_with_a_certificate() {
    use tokio_rustls::rustls;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (the test makes its certificate with it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = Server::start(
        ApiConfig {
            tls_cert: Some(cert.clone()),
            tls_key: Some(key),
            ..ApiConfig::default()
        },
        QueryConfig::default(),
    );
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(&cert).expect("cert");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).expect("root");
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("client");
    let mut tcp = TcpStream::connect(s.http).expect("connect");
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    let req = format!(
        "GET /healthz HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
        s.http
    );
    tls.write_all(req.as_bytes()).expect("write over TLS");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out); // a close without close_notify is fine here
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("ok\n"),
        "{out}"
    );
    // plain HTTP on the TLS port gets no answer
    let mut plain = TcpStream::connect(s.http).expect("connect");
    plain.write_all(req.as_bytes()).expect("write");
    plain
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut out = Vec::new();
    let _ = plain.read_to_end(&mut out);
    assert!(
        !String::from_utf8_lossy(&out).contains("200"),
        "plain HTTP was served"
    );
}
