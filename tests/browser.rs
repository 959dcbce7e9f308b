//! The web page in a real browser (Debian's headless Chromium, driven over WebDriver by
//! chromedriver): the daemon receives generated traffic; the test loads the page, runs a
//! series query and a group-by query, pins one to a dashboard, reloads, and checks the
//! rendered tables against the API's answers, that the charts exist with one line per
//! group, and that the pinned panel survives the reload. Screenshots are saved under
//! target/browser-screenshots/ (CI keeps them as artifacts). A second test signs in
//! with a token (the field, and `?token=`) on a daemon that has tokens.
//!
//! Needs chromium and chromedriver: `cargo test --features browser --test browser`.
#![cfg(feature = "browser")]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Daemon;
use nagare::generate::Emitter;
use serde_json::{Value as J, json};

// ---------------------------------------------------------------------------------
// A minimal W3C WebDriver client

struct Driver {
    child: Child,
    base: String,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn post(url: &str, body: &J) -> J {
    let mut r = ureq::post(url)
        .config()
        .http_status_as_error(false)
        .build()
        .header("content-type", "application/json")
        .send(body.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let v: J = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    if let Some(err) = v["value"].get("error") {
        panic!("WebDriver {url}: {err}: {}", v["value"]["message"]);
    }
    v["value"].clone()
}

fn get(url: &str) -> J {
    let mut r = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let v: J = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    v["value"].clone()
}

impl Driver {
    fn start(profile: &std::path::Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(common::tool("chromedriver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while ureq::get(&format!("{base}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": common::tool("chromium").to_string_lossy(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1400,2400",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let mut r = ureq::post(&format!("{base}/session"))
            .header("content-type", "application/json")
            .send(caps.to_string().as_bytes())
            .expect("new session");
        let v: J = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Driver {
            child,
            base,
            session,
        }
    }
    fn url(&self, p: &str) -> String {
        format!("{}/session/{}{}", self.base, self.session, p)
    }
    fn go(&self, u: &str) {
        post(&self.url("/url"), &json!({ "url": u }));
    }
    /// Runs a script in the page (async-capable: the last argument is the callback).
    fn js(&self, script: &str, args: J) -> J {
        post(
            &self.url("/execute/sync"),
            &json!({ "script": script, "args": args }),
        )
    }
    fn wait(&self, what: &str, script: &str) -> J {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(script, json!([]));
            if !v.is_null() && v != J::Bool(false) {
                return v;
            }
            if Instant::now() > deadline {
                let diag = self.js(
                    "const t = (id) => { const e = document.getElementById(id); return e ? e.textContent : null; };
                     return {status: t('status'), errtext: t('error'), url: location.href, body: document.body ? document.body.innerText.slice(0, 600) : null};",
                    json!([]),
                );
                self.screenshot(&format!("timeout-{}", what.replace(' ', "-")));
                panic!("timed out waiting for {what}; page: {diag}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = get(&self.url("/screenshot"));
        let png = base64_decode(b64.as_str().expect("screenshot"));
        assert_eq!(&png[1..4], b"PNG");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("{name}.png"));
        std::fs::write(&p, png).unwrap();
        p
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64"),
        }
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

// ---------------------------------------------------------------------------------

/// The API's answer to `q`, evaluated at `now` (the page's evaluation time, so that
/// rates divide by the same range).
fn api_query(d: &Daemon, q: &str, now: i64) -> J {
    let mut r = ureq::post(&format!("http://{}/api/v1/query", d.http))
        .header("content-type", "application/json")
        .send(json!({ "query": q, "now": now }).to_string().as_bytes())
        .unwrap();
    serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
}

/// Runs a query in the page and returns the canonical query it ran and its evaluation
/// time (from the status line) once the table is rendered.
fn run_in_page(dr: &Driver, q: &str) -> (String, i64) {
    dr.js(
        "document.getElementById('query').value = arguments[0];
         document.getElementById('result-table') && document.getElementById('result-table').remove();
         document.getElementById('run').click();",
        json!([q]),
    );
    dr.wait(
        "the result table",
        "return document.getElementById('result-table') !== null && document.getElementById('status').textContent.includes(' rows');",
    );
    let status = dr.js(
        "return document.getElementById('status').textContent;",
        json!([]),
    );
    let parts: Vec<&str> = status.as_str().unwrap().split(" · ").collect();
    let end = parts[2]
        .split(" → ")
        .nth(1)
        .expect("time range in the status line");
    let now = end.parse::<jiff::Timestamp>().expect("rfc3339").as_second();
    (parts[0].to_string(), now)
}

/// The rendered table: header names and the raw cell values.
fn page_table(dr: &Driver, selector: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let v = dr.js(
        "const t = document.querySelector(arguments[0]);
         if (!t) return null;
         const head = [...t.querySelectorAll('thead th')].map(th => th.textContent);
         const rows = [...t.querySelectorAll('tbody tr')].map(tr => [...tr.querySelectorAll('td')].map(td => td.dataset.raw));
         return [head, rows];",
        json!([selector]),
    );
    let head = v[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    let rows = v[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    (head, rows)
}

/// A JSON cell as the page writes it into data-raw.
fn raw(v: &J) -> String {
    match v {
        J::Null => String::new(),
        J::String(s) => s.clone(),
        J::Array(a) => a.iter().map(raw).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn assert_table_matches(
    dr: &Driver,
    d: &Daemon,
    (canonical, now): (&str, i64),
    selector: &str,
    limit: usize,
) {
    let (head, rows) = page_table(dr, selector);
    let api = api_query(d, canonical, now);
    let cols: Vec<String> = api["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(head, cols, "{canonical}: columns");
    let want: Vec<Vec<String>> = api["rows"]
        .as_array()
        .unwrap()
        .iter()
        .take(limit)
        .map(|r| r.as_array().unwrap().iter().map(raw).collect())
        .collect();
    assert!(!want.is_empty(), "{canonical}: the API has rows");
    assert_eq!(rows, want, "{canonical}: the rendered table");
}

#[test]
fn web_page_runs_queries_and_keeps_pinned_panels() {
    let dir = tempfile::tempdir().unwrap();
    let (site, inv, mmdb) = common::site_files(dir.path(), 200);
    let d = Daemon::start(
        &dir.path().join("state"),
        &[
            "--inventory",
            inv.to_str().unwrap(),
            "--geoip",
            mmdb.to_str().unwrap(),
        ],
    );
    // half an hour of traffic that ended two minutes ago
    let now = jiff::Timestamp::now().as_millisecond();
    let g = site.generate(now - 32 * 60_000, now - 2 * 60_000, 0.3, 5);
    let mut em = Emitter::new(d.udp[0], None);
    for c in g.chunks(100) {
        em.send(c, now).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let sent = em.records as f64;
    d.wait_metrics(60, "records rolled up", |m| {
        common::metric_sum(m, "nagare_rollup_records_total") >= sent
    });
    std::thread::sleep(Duration::from_secs(6));

    let dr = Driver::start(&dir.path().join("chromium-profile"));
    let page = format!("http://{}/", d.http);
    dr.go(&page);
    dr.wait(
        "the page script",
        "return document.getElementById('run') !== null && document.readyState === 'complete';",
    );

    // a group-by query: bar chart and table
    let (canonical, now) = run_in_page(&dr, "flows group by Destination Country");
    assert!(
        canonical.contains("group by Destination Country"),
        "{canonical}"
    );
    assert_table_matches(&dr, &d, (&canonical, now), "#result-table", usize::MAX);
    let bars = dr.js(
        "return document.querySelectorAll('#bars svg rect.bar').length;",
        json!([]),
    );
    let api_rows = api_query(&d, &canonical, now)["rows"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        bars.as_u64().unwrap() as usize,
        api_rows.min(15),
        "one bar per group"
    );
    dr.screenshot("groupby-destination-country");

    // a series query (S4): three charts, one line per country
    let s4 = "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of flows group by Destination Country order by sum(Total Traffic)";
    let (canonical, now) = run_in_page(&dr, s4);
    assert_table_matches(&dr, &d, (&canonical, now), "#result-table", usize::MAX);
    let api = api_query(&d, &canonical, now);
    let groups = api["rows"].as_array().unwrap().len();
    assert!(groups >= 3, "several countries: {groups}");
    let charts = dr.js(
        "return [...document.querySelectorAll('#charts svg[data-metric]')].map(s => [s.dataset.metric, s.querySelectorAll('path.line').length, [...s.querySelectorAll('path.line')].map(p => p.dataset.group)]);",
        json!([]),
    );
    let charts = charts.as_array().unwrap();
    let metrics: Vec<&str> = charts.iter().map(|c| c[0].as_str().unwrap()).collect();
    assert_eq!(
        metrics,
        ["sum(session count)", "sum(packets)", "sum(bytes rate)"]
    );
    // the page draws the 8 largest groups and folds the rest into one "other" line
    let lines_expected = if groups > 8 { 9 } else { groups };
    for c in charts {
        assert_eq!(
            c[1].as_u64().unwrap() as usize,
            lines_expected,
            "{}: one line per group",
            c[0]
        );
        let names: Vec<&str> = c[2]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        let first = api["rows"][0][0].as_str().unwrap_or("Unknown");
        assert!(
            names.contains(&first),
            "{}: the largest group {first} has a line ({names:?})",
            c[0]
        );
    }
    let shot = dr.screenshot("s4-countries-three-charts");
    // the legend hides a line (the largest group) and the scale follows what is shown
    let top_label = "return document.querySelectorAll('#charts .chart')[0].querySelectorAll('svg .axis text')[4].textContent;";
    let before = dr.js(top_label, json!([]));
    dr.js("document.querySelectorAll('#charts .chart')[0].querySelector('.legend span[data-i=\"0\"]').click();", json!([]));
    let after = dr.js(top_label, json!([]));
    assert_ne!(before, after, "the y scale follows the visible lines");
    let hidden = dr.js(
        "return document.querySelectorAll('#charts .chart')[0].querySelector('path.line').getAttribute('visibility');",
        json!([]),
    );
    assert_eq!(hidden, "hidden");
    dr.screenshot("s4-largest-group-hidden");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    // pin it to a new dashboard, reload, and find it there with its rendering
    dr.js(
        "document.getElementById('pin-name').value = 'Browser test'; document.getElementById('pin').click();",
        json!([]),
    );
    dr.wait(
        "the pin",
        "return document.getElementById('status').textContent.includes('pinned');",
    );
    dr.go(&page);
    dr.wait(
        "the page script",
        "return document.getElementById('run') !== null && document.readyState === 'complete';",
    );
    dr.js("document.getElementById('tab-dash').click();", json!([]));
    dr.wait("the dashboard list", "return [...document.querySelectorAll('#dash-select option')].some(o => o.value === 'Browser test');");
    dr.js(
        "const s = document.getElementById('dash-select'); s.value = 'Browser test'; s.dispatchEvent(new Event('change'));",
        json!([]),
    );
    dr.wait(
        "the pinned panel's charts",
        "const p = document.querySelector('#panels .panel'); return p !== null && p.querySelectorAll('svg[data-metric]').length === 3 && p.querySelector('table') !== null;",
    );
    let q = dr.js(
        "return document.querySelector('#panels .panel .q').textContent;",
        json!([]),
    );
    assert_eq!(q.as_str(), Some(s4), "the panel keeps the query as written");
    let lines = dr.js(
        "return [...document.querySelectorAll('#panels .panel svg[data-metric]')].map(s => s.querySelectorAll('path.line').length);",
        json!([]),
    );
    for l in lines.as_array().unwrap() {
        assert_eq!(l.as_u64().unwrap() as usize, lines_expected);
    }
    // panel tables show the first 10 rows of the same answer (its own evaluation time:
    // compare the columns that do not depend on it)
    let (head, rows) = page_table(&dr, "#panels .panel table");
    let api = api_query(&d, &canonical, jiff::Timestamp::now().as_second());
    let names: Vec<&str> = api["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(head, names);
    let rate = names.iter().position(|n| *n == "sum(bytes rate)").unwrap();
    let strip = |r: &[String]| -> Vec<String> {
        r.iter()
            .enumerate()
            .filter(|(i, _)| *i != rate)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let want: Vec<Vec<String>> = api["rows"]
        .as_array()
        .unwrap()
        .iter()
        .take(10)
        .map(|r| strip(&r.as_array().unwrap().iter().map(raw).collect::<Vec<_>>()))
        .collect();
    let got: Vec<Vec<String>> = rows.iter().map(|r| strip(r)).collect();
    assert_eq!(got, want, "the panel's table");
    dr.screenshot("dashboard-after-reload");
    // stored by the daemon, not the browser
    let mut r = ureq::get(&format!("http://{}/api/v1/dashboards", d.http))
        .call()
        .unwrap();
    let dashes: J = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let mine = dashes["dashboards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "Browser test")
        .expect("dashboard stored");
    assert_eq!(mine["panels"][0]["query"], s4);
    drop(dr);
    d.terminate();
}

/// With tokens on, the page asks for a token, keeps it for the tab, and sends it: it
/// signs in from its field, and from `?token=` (which it removes from the address).
#[test]
fn web_page_signs_in_with_a_token() {
    use nagare::api::auth::{Role, new_token};
    let dir = tempfile::tempdir().unwrap();
    let (secret, line) = new_token(Role::Read, "browser").unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{line}\n")).unwrap();
    let d = Daemon::start(
        &dir.path().join("state"),
        &["--tokens-file", tokens.to_str().unwrap()],
    );
    let page = format!("http://{}/", d.http);
    let signed_in = "return document.getElementById('login').classList.contains('hidden')
         && document.querySelectorAll('#dash-select option').length > 0;";

    // without a token: the sign-in field, then the page's data once signed in
    let dr = Driver::start(&dir.path().join("profile-1"));
    dr.go(&page);
    dr.wait(
        "the sign-in field",
        "return !document.getElementById('login').classList.contains('hidden');",
    );
    assert_eq!(
        dr.js(
            "return document.querySelectorAll('#dash-select option').length;",
            json!([])
        ),
        json!(0),
        "no data without the token"
    );
    dr.js(
        "document.getElementById('token').value = arguments[0];
         document.getElementById('login-go').click();",
        json!([secret]),
    );
    dr.wait("the dashboards after signing in", signed_in);
    run_in_page(&dr, "flows group by Destination Country");
    drop(dr);

    // ?token= once: kept in sessionStorage and taken out of the address
    let dr = Driver::start(&dir.path().join("profile-2"));
    dr.go(&format!("{page}?token={secret}"));
    dr.wait("the dashboards with ?token=", signed_in);
    let v = dr.js(
        "return [location.search, sessionStorage.getItem('nagare.token')];",
        json!([]),
    );
    assert_eq!(v, json!(["", secret]));
    dr.screenshot("signed-in-with-token");
    d.terminate();
}
