//! `nagare demo` (the README's first command) leads to a daemon that answers every seed
//! query with non-empty, plausible answers. Runs the demo briefly, with a day of history
//! at a twentieth of the nominal volume (a debug build decodes slowly).

mod seeds;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value as J;

#[test]
fn demo_answers_every_seed_query() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nagare"))
        .args([
            "demo",
            "--http",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--history",
            "1d",
            "--intensity",
            "0.05",
            "--duration",
            "600",
            "--state-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nagare demo");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut http = None;
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(240))
            .unwrap_or_else(|_| {
                panic!(
                    "demo did not get ready; output so far:\n{}",
                    lines.join("\n")
                )
            });
        if let Some(rest) = line.strip_prefix("nagare: listening ") {
            http = rest
                .split_whitespace()
                .find_map(|p| p.strip_prefix("http="))
                .map(str::to_string);
        }
        let ready = line.starts_with("nagare demo: ready");
        lines.push(line);
        if ready {
            break;
        }
    }
    let out = lines.join("\n");
    assert!(out.contains("nagare demo: web page  http://"), "{out}");
    assert!(out.contains("nagare query"), "suggests queries: {out}");
    let http = http.expect("listening line");
    // records are visible within 5 s
    std::thread::sleep(Duration::from_secs(6));
    let q = |query: &str| -> J {
        let mut resp = ureq::post(&format!("http://{http}/api/v1/query"))
            .header("content-type", "application/json")
            .send(serde_json::json!({ "query": query }).to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
    };
    for (id, query) in seeds::SEEDS {
        let r = q(query);
        let rows = r["rows"].as_array().unwrap_or_else(|| panic!("{id}: {r}"));
        assert!(!rows.is_empty(), "{id}: empty answer to {query}");
    }
    // plausible: the countries of the site, the web tier on top, the scanner at night
    let countries = q("flows group by Destination Country");
    let names: Vec<&str> = countries["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r[0].as_str())
        .collect();
    assert!(
        names.contains(&"United Kingdom") && names.contains(&"United States"),
        "{names:?}"
    );
    let vms = q("top 5 VMs by Network Rate in last 2 days");
    assert_eq!(vms["rows"].as_array().unwrap().len(), 5);
    let ports = q("top 20 switch ports by Network rate in last 2 days");
    assert!(
        ports["rows"][0][0].as_str().unwrap().starts_with("tor-"),
        "{ports}"
    );
    let lateral = q(seeds::SEEDS
        .iter()
        .find(|s| s.0 == "S14b")
        .map(|s| s.1)
        .unwrap());
    let top = lateral["rows"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|r| r[1].as_u64().unwrap_or(0))
        .map(|r| r[0].clone());
    assert_eq!(top, Some(J::from("vuln-scan-01")), "{lateral}");
    // SIGTERM stops it cleanly
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "demo exit: {status}");
}
