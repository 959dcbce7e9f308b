//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use nagare::pcap::UdpDatagram;

/// ../shared (or $NAGARE_SHARED_DIR). Interop tests need it: missing means failure.
pub fn shared_dir() -> PathBuf {
    let p = std::env::var_os("NAGARE_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    assert!(
        p.join("captures").is_dir(),
        "interop tests need ../shared/captures (set NAGARE_SHARED_DIR); not found at {}",
        p.display()
    );
    p
}

/// Path of an external tool; interop tests fail loudly when it is missing.
pub fn tool(name: &str) -> PathBuf {
    for dir in [
        "/usr/bin",
        "/usr/sbin",
        "/usr/local/bin",
        "/usr/local/sbin",
        "/bin",
        "/sbin",
    ] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("interop test needs `{name}` installed (.ci/run installs it)");
}

/// Datagrams of one pcap, in order.
pub fn read_pcap(path: &Path) -> Vec<UdpDatagram> {
    nagare::pcap::read_file(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .0
}

/// Totals an independent decoder (tshark) reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub records: u64,
    pub bytes: u64,
    pub packets: u64,
}

fn num(v: &serde_json::Value) -> u64 {
    match v {
        serde_json::Value::String(s) => s.parse().unwrap_or(0),
        serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// Sum of every value of `key` in a record (tshark repeats a key for reverse elements).
fn sum_key(rec: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<u64> {
    match rec.get(key)? {
        serde_json::Value::Array(a) => Some(a.iter().map(num).sum()),
        v => Some(num(v)),
    }
}

fn first_of(rec: &serde_json::Map<String, serde_json::Value>, keys: &[&str]) -> u64 {
    keys.iter().find_map(|k| sum_key(rec, k)).unwrap_or(0)
}

fn as_objects(v: &serde_json::Value) -> Vec<&serde_json::Map<String, serde_json::Value>> {
    match v {
        serde_json::Value::Object(o) => vec![o],
        serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_object()).collect(),
        _ => vec![],
    }
}

/// Decodes `datagrams` with tshark's cflow dissector and returns the data-record totals
/// (options data records excluded, as nagare applies those to exporter state).
///
/// Each datagram is fed to tshark twice and only the second copy is counted: a
/// datagram that carries a data set before the template it needs (in the same
/// datagram) is then decoded by tshark too, as nagare decodes it by holding the set.
pub fn tshark_totals(datagrams: &[UdpDatagram]) -> Totals {
    let tshark = tool("tshark");
    // nagare is one collector, and it scopes templates by exporter (IP + observation
    // domain), not by the exporter's UDP port, which changes when an exporter restarts
    // its export process. tshark scopes templates by the whole address 4-tuple, so for
    // tshark every datagram is readdressed to one collector address and one source port
    // per exporter address.
    let mut doubled = Vec::with_capacity(datagrams.len() * 2);
    for d in datagrams {
        let mut d = d.clone();
        let collector: std::net::IpAddr = if d.dst.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        d.dst = SocketAddr::new(collector, d.dst.port());
        d.src = SocketAddr::new(d.src.ip(), 4444);
        doubled.push(d.clone());
        doubled.push(d);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("oracle.pcap");
    std::fs::write(&pcap, nagare::pcap::write_pcap(&doubled)).expect("write pcap");
    if let Some(keep) = std::env::var_os("NAGARE_KEEP_ORACLE_PCAP") {
        // debugging aid: keep the capture tshark was given
        let _ = std::fs::copy(&pcap, keep);
    }
    let mut ports: Vec<u16> = datagrams.iter().map(|d| d.dst.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    let mut cmd = Command::new(tshark);
    cmd.arg("-r").arg(&pcap);
    for p in ports {
        cmd.arg("-d").arg(format!("udp.port=={p},cflow"));
    }
    cmd.args(["-T", "json", "--no-duplicate-keys"]);
    let out = cmd.output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames: serde_json::Value = serde_json::from_slice(&out.stdout).expect("tshark json");
    let mut t = Totals::default();
    // (source, domain, template id) -> is an options template
    let mut options: HashMap<(String, String, u64), bool> = HashMap::new();
    for (i, fr) in frames.as_array().expect("frames").iter().enumerate() {
        let layers = &fr["_source"]["layers"];
        let src = layers["ip"]["ip.src"]
            .as_str()
            .or(layers["ipv6"]["ipv6.src"].as_str())
            .unwrap_or("")
            .to_string();
        let count_this = i % 2 == 1;
        for c in as_objects(&layers["cflow"]) {
            let domain = c
                .get("cflow.source_id")
                .or(c.get("cflow.od_id"))
                .map(|v| num(v).to_string())
                .unwrap_or_default();
            if c.get("cflow.version").map(num) == Some(5) {
                for (k, v) in c {
                    if k.starts_with("pdu ") && count_this {
                        for rec in as_objects(v) {
                            t.records += 1;
                            t.bytes += first_of(rec, &["cflow.octets"]);
                            t.packets += first_of(rec, &["cflow.packets"]);
                        }
                    }
                }
                continue;
            }
            // Template sets first, so that data sets of this frame are classified.
            for (k, _) in c {
                if !(k.starts_with("FlowSet ") || k.starts_with("Set ")) {
                    continue;
                }
                let is_opt = k.contains("(Options Template)");
                let is_tpl = k.contains("(Data Template)");
                if (is_opt || is_tpl)
                    && let Some(ids) = k.rsplit(':').next()
                {
                    for id in ids.split(',').filter_map(|s| s.trim().parse::<u64>().ok()) {
                        options.insert((src.clone(), domain.clone(), id), is_opt);
                    }
                }
            }
            if !count_this {
                continue;
            }
            for (k, v) in c {
                if !(k.starts_with("FlowSet ") || k.starts_with("Set ")) {
                    continue;
                }
                let Some(id) = k
                    .split("[id=")
                    .nth(1)
                    .and_then(|s| s.split(']').next())
                    .and_then(|s| s.parse::<u64>().ok())
                else {
                    continue;
                };
                if id < 256 || options.get(&(src.clone(), domain.clone(), id)) == Some(&true) {
                    continue;
                }
                for fs in as_objects(v) {
                    for (kk, vv) in fs {
                        if !kk.starts_with("Flow ") {
                            continue;
                        }
                        for rec in as_objects(vv) {
                            t.records += 1;
                            t.bytes += first_of(
                                rec,
                                &[
                                    "cflow.octets",
                                    "cflow.octets64",
                                    "cflow.permanent_octets",
                                    "cflow.initiator_octets",
                                ],
                            );
                            t.packets += first_of(
                                rec,
                                &[
                                    "cflow.packets",
                                    "cflow.packets64",
                                    "cflow.permanent_packets",
                                    "cflow.initiator_packets",
                                ],
                            );
                            t.bytes += first_of(rec, &["cflow.responder_octets"]);
                            t.packets += first_of(rec, &["cflow.responder_packets"]);
                        }
                    }
                }
            }
        }
    }
    t
}

/// Datagrams built from single-payload .dat files, sent from 192.0.2.1:4444 to :2055.
pub fn dat_datagrams(dir: &Path, files: &[String]) -> Vec<UdpDatagram> {
    files
        .iter()
        .enumerate()
        .map(|(i, f)| UdpDatagram {
            ts_ns: 1_600_000_000_000_000_000 + i as i64 * 1_000_000_000,
            src: "192.0.2.1:4444".parse::<SocketAddr>().expect("addr"),
            dst: "127.0.0.1:2055".parse::<SocketAddr>().expect("addr"),
            payload: std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}")),
        })
        .collect()
}

/// The test sequences of beats-golden/dat_tests.yaml, in file order: (name, files).
pub fn beats_sequences(yaml: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut in_files = false;
    for line in yaml.lines() {
        let t = line.trim_end();
        if t.trim().is_empty() || t.trim_start().starts_with('#') || t == "---" || t == "tests:" {
            continue;
        }
        let indent = t.len() - t.trim_start().len();
        let s = t.trim();
        if indent == 2 && s.ends_with(':') {
            out.push((s.trim_end_matches(':').to_string(), vec![]));
            in_files = false;
        } else if indent == 4 {
            in_files = s == "files:";
        } else if indent >= 6
            && in_files
            && s.starts_with("- ")
            && let Some(last) = out.last_mut()
        {
            last.1.push(s[2..].trim().to_string());
        }
    }
    out
}

/// A generated site (switch exporters as an `Emitter` on loopback sends them) with its
/// inventory and a GeoIP database of its Internet prefixes written into `dir`.
/// Returns (site, inventory path, mmdb path).
pub fn site_files(dir: &Path, vms: usize) -> (nagare::generate::profile::Site, PathBuf, PathBuf) {
    let site = nagare::generate::site_for("127.0.0.1:9".parse().expect("addr"), vms);
    let inv = dir.join("inventory.toml");
    std::fs::write(&inv, site.inventory_toml()).expect("write inventory");
    let mmdb = dir.join("geo.mmdb");
    let db = nagare::enrich::geoip::write_mmdb(&site.geo_prefixes()).expect("mmdb");
    std::fs::write(&mmdb, db).expect("write mmdb");
    (site, inv, mmdb)
}

/// A `nagare serve` process started by a test.
pub struct Daemon {
    pub child: std::process::Child,
    pub udp: Vec<SocketAddr>,
    pub http: SocketAddr,
    pub state_dir: PathBuf,
    stderr_log: PathBuf,
}

impl Daemon {
    /// Starts the real binary on loopback ports chosen by the kernel; `extra` are added
    /// to `serve`'s arguments.
    pub fn start(state_dir: &Path, extra: &[&str]) -> Daemon {
        use std::io::BufRead;
        let log = state_dir.with_extension("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nagare"));
        cmd.arg("serve")
            .args([
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--log",
                "info",
            ])
            .arg("--state-dir")
            .arg(state_dir)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let mut child = cmd.spawn().expect("start nagare serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = std::io::BufReader::new(stdout);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if line.starts_with("nagare: listening") {
                    let _ = tx.send(line.clone());
                }
                line.clear();
            }
        });
        let line = match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "nagare serve did not report its addresses; stderr:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let mut udp = vec![];
        let mut http = None;
        for part in line.split_whitespace() {
            if let Some(v) = part.strip_prefix("udp=") {
                udp = v.split(',').filter_map(|a| a.parse().ok()).collect();
            }
            if let Some(v) = part.strip_prefix("http=") {
                http = v.parse().ok();
            }
        }
        Daemon {
            child,
            udp,
            http: http.expect("http address"),
            state_dir: state_dir.to_path_buf(),
            stderr_log: log,
        }
    }

    pub fn get(&self, path: &str) -> String {
        let url = format!("http://{}{}", self.http, path);
        let mut resp = ureq::get(&url)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        resp.body_mut().read_to_string().expect("body")
    }

    /// Samples of /metrics: "name{labels}" -> value.
    pub fn metrics(&self) -> HashMap<String, f64> {
        parse_metrics(&self.get("/metrics"))
    }

    /// Sum of every sample of a metric family.
    pub fn metric_sum(&self, name: &str) -> f64 {
        metric_sum(&self.metrics(), name)
    }

    /// Polls until `pred` holds on the metrics (or panics after `secs`).
    pub fn wait_metrics(
        &self,
        secs: u64,
        what: &str,
        pred: impl Fn(&HashMap<String, f64>) -> bool,
    ) -> HashMap<String, f64> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let m = self.metrics();
            if pred(&m) {
                return m;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; metrics:\n{}",
                    self.get("/metrics")
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn terminate(mut self) -> String {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().expect("wait");
        let log = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        assert!(
            status.success(),
            "nagare exited with {status}; stderr:\n{log}"
        );
        log
    }

    /// SIGKILL (no chance to flush).
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn send(&self, payloads: &[Vec<u8>]) {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        for (i, p) in payloads.iter().enumerate() {
            s.send_to(p, self.udp[0]).expect("send");
            if i % 32 == 31 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

pub fn metric_sum(m: &HashMap<String, f64>, name: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

/// Runs `nagare gen` with `args` to its end; it must succeed. Returns its stderr (where
/// it reports what it sent).
pub fn run_gen(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nagare"))
        .arg("gen")
        .args(args)
        .output()
        .expect("run nagare gen");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "gen: {err}");
    err
}
