//! Who may do what over HTTP.
//!
//! - Bearer tokens: the tokens file holds `ROLE NAME SHA256` lines (the SHA-256 of
//!   each secret, never the secret). `read` may run queries and read pages, metrics
//!   and dashboards; `admin` may also change dashboards. Secrets are compared by their
//!   digests, in constant time, against every token.
//! - Host and Origin must name this server (an IP address, `localhost` on loopback,
//!   or a name of `http.allowed_hosts`): a page of another site, or a name rebound to
//!   this address (DNS rebinding), gets 403.
//! - Requests with a body must be JSON (415 otherwise): a cross-site form or
//!   `text/plain` POST cannot reach a handler.
//!
//! `/healthz` and the page's static assets are open (they hold no data).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiMetrics};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Token {
    pub role: Role,
    pub name: String,
    digest: [u8; 32],
}

/// The tokens of a tokens file.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    list: Vec<Token>,
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Equal without an early exit (the time does not depend on where they differ).
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
}

impl Tokens {
    /// Parses a tokens file; errors name the line. `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ApiError> {
        let err = |line: usize, message: String| ApiError::Tokens {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut list: Vec<Token> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let parts: Vec<&str> = l.split_whitespace().collect();
            let [role, name, digest] = parts[..] else {
                return Err(err(
                    line,
                    format!(
                        "expected `ROLE NAME SHA256` (3 fields), found {} field(s)",
                        parts.len()
                    ),
                ));
            };
            let role = Role::parse(role).ok_or_else(|| {
                err(
                    line,
                    format!("unknown role `{role}` (expected `read` or `admin`)"),
                )
            })?;
            if !valid_name(name) {
                return Err(err(
                    line,
                    format!("bad name `{name}` (letters, digits, . _ - @; at most 64)"),
                ));
            }
            let digest = unhex32(digest).ok_or_else(|| {
                err(
                    line,
                    "the third field must be the hex SHA-256 of the secret (64 hex digits), \
                     as `nagare token new` prints it"
                        .into(),
                )
            })?;
            if list.iter().any(|t| t.name == name) {
                return Err(err(line, format!("name `{name}` is already used above")));
            }
            if list.iter().any(|t| t.digest == digest) {
                return Err(err(line, "the same secret is listed twice".into()));
            }
            list.push(Token {
                role,
                name: name.to_string(),
                digest,
            });
        }
        Ok(Self { list })
    }

    pub fn load(path: &Path) -> Result<Self, ApiError> {
        let text = std::fs::read_to_string(path).map_err(|source| ApiError::TokensRead {
            path: path.to_path_buf(),
            source,
        })?;
        let t = Self::parse(&text, path)?;
        if t.list.is_empty() {
            tracing::warn!(path = %path.display(), "the tokens file lists no token: every API request will be refused");
        }
        Ok(t)
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The token whose secret this is (every token is compared, in constant time).
    pub fn check(&self, secret: &str) -> Option<&Token> {
        let d = sha256(secret.as_bytes());
        let mut found = None;
        for t in &self.list {
            if ct_eq(&d, &t.digest) {
                found = Some(t);
            }
        }
        found
    }
}

/// A new secret (32 bytes from the OS's random source, hex) and its tokens-file line.
pub fn new_token(role: Role, name: &str) -> Result<(String, String), String> {
    if !valid_name(name) {
        return Err(format!(
            "bad name `{name}` (letters, digits, . _ - @; at most 64)"
        ));
    }
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system's random source failed".to_string())?;
    let secret = format!("nagare_{}", hex(&bytes));
    let line = token_line(role, name, &secret);
    Ok((secret, line))
}

/// The tokens-file line of a secret.
pub fn token_line(role: Role, name: &str, secret: &str) -> String {
    format!(
        "{} {} {}",
        role.name(),
        name,
        hex(&sha256(secret.as_bytes()))
    )
}

/// Which Host and Origin values name this server.
#[derive(Debug, Clone)]
pub struct Hosts {
    listen: SocketAddr,
    names: Vec<String>,
}

impl Hosts {
    pub fn new(listen: SocketAddr, names: &[String]) -> Self {
        Self {
            listen,
            names: names
                .iter()
                .map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        }
    }

    /// `authority` is a Host header value or an Origin's host\[:port\].
    pub fn allows(&self, authority: &str) -> bool {
        let host = strip_port(authority.trim());
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let lip = self.listen.ip();
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            // an address cannot be rebound; it must be one this server listens on
            return lip.is_unspecified()
                || ip == lip
                || (lip.is_loopback() && ip.is_loopback())
                || self.names.iter().any(|n| n.parse::<IpAddr>() == Ok(ip));
        }
        if host == "localhost" && (lip.is_loopback() || lip.is_unspecified()) {
            return true;
        }
        self.names.contains(&host)
    }

    /// An Origin header (`scheme://host[:port]`); `null` and other forms are refused.
    pub fn allows_origin(&self, origin: &str) -> bool {
        let Some((scheme, rest)) = origin.split_once("://") else {
            return false;
        };
        if scheme != "http" && scheme != "https" {
            return false;
        }
        !rest.contains('/') && self.allows(rest)
    }
}

/// "host:port" -> "host"; "[v6]:port" -> "[v6]"; a bare v6 address stays whole.
fn strip_port(a: &str) -> &str {
    if a.starts_with('[') {
        return a.split_once(']').map_or(a, |(h, _)| &a[..h.len() + 1]);
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => a,
    }
}

/// What the request guard needs.
pub struct Access {
    pub tokens: Option<Tokens>,
    pub hosts: Hosts,
    pub metrics: Arc<ApiMetrics>,
}

impl Access {
    pub fn new(
        tokens: Option<Tokens>,
        listen: SocketAddr,
        allowed_hosts: &[String],
        metrics: Arc<ApiMetrics>,
    ) -> Self {
        Self {
            tokens,
            hosts: Hosts::new(listen, allowed_hosts),
            metrics,
        }
    }
}

/// Paths anyone may GET: the page's assets (no data) and the health check.
fn is_public(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && matches!(path, "/" | "/app.js" | "/app.css" | "/healthz")
}

/// What a request needs: reading (queries included), or changing state.
fn needed_role(method: &Method, path: &str) -> Role {
    if method == Method::GET || method == Method::HEAD || path == "/api/v1/query" {
        Role::Read
    } else {
        Role::Admin
    }
}

fn deny(code: StatusCode, message: &str) -> Response {
    let body = axum::Json(serde_json::json!({"error": {"kind": "access", "message": message}}));
    if code == StatusCode::UNAUTHORIZED {
        (code, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
    } else {
        (code, body).into_response()
    }
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<Result<&str, ()>> {
    h.get(name).map(|v| v.to_str().map_err(|_| ()))
}

/// The request guard (an axum middleware), in order: Host/Origin (403), token (401,
/// or 403 for a role too low), JSON body (415).
pub async fn guard(State(a): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return next.run(req).await;
    }
    let h = req.headers();
    let host_ok = match header_str(h, header::HOST) {
        None => true, // HTTP/1.0 tools; browsers always send Host
        Some(Ok(v)) => a.hosts.allows(v),
        Some(Err(())) => false,
    };
    let origin_ok = match header_str(h, header::ORIGIN) {
        None => true,
        Some(Ok(v)) => a.hosts.allows_origin(v),
        Some(Err(())) => false,
    };
    if !host_ok || !origin_ok {
        a.metrics.bad_host.inc();
        return deny(
            StatusCode::FORBIDDEN,
            "the Host or Origin of this request is not this server (add the name to http.allowed_hosts)",
        );
    }
    if !is_public(&method, &path)
        && let Some(tokens) = &a.tokens
    {
        let secret = match header_str(h, header::AUTHORIZATION) {
            Some(Ok(v)) => v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .map(str::trim),
            _ => None,
        };
        let Some(token) = secret.and_then(|s| tokens.check(s)) else {
            a.metrics.unauthorized.inc();
            return deny(
                StatusCode::UNAUTHORIZED,
                "this server needs a token: send `Authorization: Bearer SECRET`",
            );
        };
        let need = needed_role(&method, &path);
        if token.role < need {
            a.metrics.forbidden.inc();
            return deny(
                StatusCode::FORBIDDEN,
                &format!(
                    "token `{}` has role {}; this needs {}",
                    token.name,
                    token.role.name(),
                    need.name()
                ),
            );
        }
    }
    if matches!(method, Method::POST | Method::PUT | Method::PATCH) {
        let json = match header_str(req.headers(), header::CONTENT_TYPE) {
            Some(Ok(v)) => v
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")),
            _ => false,
        };
        if !json {
            a.metrics.unsupported_media_type.inc();
            return deny(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the request body must be JSON (Content-Type: application/json)",
            );
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("tokens")
    }

    #[test]
    fn a_new_token_is_found_by_its_secret_only() {
        let (secret, line) = new_token(Role::Read, "grafana").expect("token");
        let (other, _) = new_token(Role::Read, "x").expect("token");
        assert_ne!(secret, other, "secrets are random");
        assert!(!line.contains(&secret), "the line holds no secret");
        let text = format!("# comment\n\n{line}\n");
        let t = Tokens::parse(&text, p()).expect("parses");
        let tok = t.check(&secret).expect("found");
        assert_eq!((tok.role, tok.name.as_str()), (Role::Read, "grafana"));
        assert!(t.check(&other).is_none());
        assert!(t.check("").is_none());
    }

    #[test]
    fn the_digest_is_sha256_of_the_secret() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1
        assert_eq!(
            token_line(Role::Admin, "ops", "abc"),
            "admin ops ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn errors_name_the_line() {
        let good = token_line(Role::Read, "a", "s1");
        let cases = [
            (format!("{good}\nwrite b {}\n", "0".repeat(64)), 2, "role"),
            (format!("\n\n{good} extra\n"), 3, "3 fields"),
            ("read a 1234\n".to_string(), 1, "SHA-256"),
            (
                format!("{good}\n{}\n", token_line(Role::Admin, "a", "s2")),
                2,
                "already used",
            ),
            (format!("read b {}\n", "g".repeat(64)), 1, "SHA-256"),
        ];
        for (text, line, what) in cases {
            let e = Tokens::parse(&text, p()).expect_err(&text).to_string();
            assert!(e.contains(&format!("line {line}:")), "{e}");
            assert!(e.contains(what), "{e}");
        }
    }

    #[test]
    fn hosts_are_this_server_only() {
        let lo = Hosts::new("127.0.0.1:9180".parse().unwrap(), &[]);
        for ok in [
            "127.0.0.1:9180",
            "localhost:9180",
            "localhost",
            "[::1]:9180",
            "127.0.0.2",
        ] {
            assert!(lo.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:9180",
            "evil.example",
            "192.0.2.1:9180",
            "localhost.evil.example",
        ] {
            assert!(!lo.allows(bad), "{bad}");
        }
        let any = Hosts::new(
            "0.0.0.0:9180".parse().unwrap(),
            &["Nagare.Example.NET".into()],
        );
        assert!(any.allows("192.0.2.7:9180"));
        assert!(any.allows("nagare.example.net:443"));
        assert!(!any.allows("rebind.attacker.example:9180"));
        let one = Hosts::new("192.0.2.7:9180".parse().unwrap(), &[]);
        assert!(one.allows("192.0.2.7:9180"));
        assert!(!one.allows("192.0.2.8:9180"));
        assert!(!one.allows("localhost:9180"));
        assert!(lo.allows_origin("http://127.0.0.1:9180"));
        assert!(lo.allows_origin("http://localhost:9180"));
        for bad in [
            "null",
            "http://evil.example",
            "file://",
            "http://127.0.0.1:9180/x",
        ] {
            assert!(!lo.allows_origin(bad), "{bad}");
        }
    }
}
