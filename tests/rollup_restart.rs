//! Rollups survive restarts of the real binary:
//! - SIGTERM then start keeps every bucket (open ones are written on the way out);
//! - kill -9 then start keeps every closed bucket (and coarse buckets are rebuilt from
//!   the finest ones they cover);
//! - a corrupted segment is skipped with an error and the other segments load.
//!
//! "Keeps" is checked by answering the same queries, at each resolution, with the same
//! evaluation time before and after the restart.

mod common;

use std::path::Path;

use common::{Daemon, metric_sum};
use nagare::generate::Emitter;
use nagare::generate::profile::Site;
use serde_json::Value as J;

/// Queries that read each resolution (1m, 5m, 1h series buckets force it).
const QUERIES: [&str; 4] = [
    "series(sum(bytes), 60), series(sum(session count), 60) of flows group by port in last 6 hours",
    "series(sum(bytes), 300), series(sum(packets), 300) of flows group by Source Subnet in last 6 hours",
    "series(sum(bytes), 3600), series(sum(session count), 3600) of flows group by Destination Country in last 6 hours",
    "flows where port = 443 in last 6 hours limit 1000",
];

fn query(d: &Daemon, q: &str, now: i64) -> J {
    let url = format!("http://{}/api/v1/query", d.http);
    let body = serde_json::json!({"query": q, "now": now}).to_string();
    let mut resp = ureq::post(&url)
        .header("content-type", "application/json")
        .send(body.as_bytes())
        .unwrap_or_else(|e| panic!("POST {q}: {e}"));
    let mut v: J = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert!(v.get("error").is_none(), "{q}: {v}");
    if let Some(s) = v.get_mut("stats").and_then(|s| s.as_object_mut()) {
        s.remove("took_ms");
        s.remove("rows_scanned");
    }
    v
}

fn snapshot(d: &Daemon, now: i64) -> Vec<J> {
    QUERIES.iter().map(|q| query(d, q, now)).collect()
}

/// Sends `minutes` of the data centre's traffic that started `ago_min` minutes ago.
fn feed(d: &Daemon, ago_min: i64, minutes: i64, seed: u64) -> u64 {
    let site = Site::datacenter(60);
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let t0 = (now_ms - ago_min * 60_000).div_euclid(60_000) * 60_000;
    let g = site.generate(t0, t0 + minutes * 60_000, 0.1, seed);
    let mut em = Emitter::new(d.udp[0], None);
    for c in g.chunks(100) {
        em.send(c, now_ms).unwrap();
        // a debug build decodes slowly: keep the socket buffer from overflowing
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    let n = em.records;
    d.wait_metrics(60, "records rolled up", |m| {
        metric_sum(m, "nagare_rollup_records_total") >= n as f64
    });
    n
}

/// The answers once every record fed is published: two answers 1.5 s apart agree
/// (open buckets are re-published every second; a loaded machine may lag).
fn settled(d: &Daemon, now: i64) -> Vec<J> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut last = snapshot(d, now);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(1_500));
        let next = snapshot(d, now);
        if next == last {
            return next;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "answers still changing after 60 s"
        );
        last = next;
    }
}

fn rows_of(s: &[J]) -> usize {
    s.iter()
        .map(|v| v["rows"].as_array().map_or(0, |r| r.len()))
        .sum()
}

#[test]
fn sigterm_keeps_every_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let d = Daemon::start(&state, &[]);
    // recent traffic: its buckets are still open when the daemon stops
    feed(&d, 4, 4, 1);
    let now = jiff::Timestamp::now().as_second();
    let before = settled(&d, now);
    assert!(rows_of(&before) > 50, "the snapshot holds data");
    assert!(
        d.metric_sum("nagare_rollup_open_buckets") > 0.0,
        "some buckets are open at shutdown"
    );
    d.terminate();
    let d = Daemon::start(&state, &[]);
    assert_eq!(snapshot(&d, now), before, "answers after SIGTERM and start");
    d.terminate();
}

#[test]
fn kill9_keeps_every_closed_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let d = Daemon::start(&state, &[]);
    // traffic from two to three hours ago: its buckets reopen for the late records and
    // close two seconds later
    feed(&d, 180, 30, 2);
    d.wait_metrics(30, "late buckets closed and written", |m| {
        metric_sum(m, "nagare_rollup_open_buckets") == 0.0
            && metric_sum(m, "nagare_rollup_chunks_written_total") > 0.0
    });
    let now = jiff::Timestamp::now().as_second();
    let before = snapshot(&d, now);
    assert!(rows_of(&before) > 50);
    d.kill9();
    let d = Daemon::start(&state, &[]);
    assert_eq!(snapshot(&d, now), before, "answers after kill -9 and start");
    d.terminate();
}

fn segments(state: &Path, res: u32) -> Vec<std::path::PathBuf> {
    nagare::rollup::segment::list(&state.join("rollup"), res)
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

#[test]
fn corrupted_segment_is_skipped_and_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let d = Daemon::start(&state, &[]);
    feed(&d, 180, 30, 3);
    d.terminate();
    let d = Daemon::start(&state, &[]);
    let now = jiff::Timestamp::now().as_second();
    let before = snapshot(&d, now);
    d.terminate();

    // damage the middle of the first 1-minute segment
    let segs = segments(&state, 60);
    assert!(
        !segs.is_empty(),
        "1-minute segments exist under {}",
        state.display()
    );
    let victim = &segs[0];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(victim, &bytes).unwrap();

    let d = Daemon::start(&state, &[]);
    assert!(
        d.metric_sum("nagare_rollup_corrupt_frames_total") >= 1.0,
        "the damage is counted"
    );
    let after = snapshot(&d, now);
    // 5-minute and 1-hour data live in other files: unchanged
    assert_eq!(after[1], before[1], "5-minute answers");
    assert_eq!(after[2], before[2], "1-hour answers");
    // the 1-minute answer lost only part of its data
    let bytes_of = |v: &J| -> f64 {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[2].as_f64().unwrap_or(0.0))
            .sum()
    };
    let (b0, b1) = (bytes_of(&before[0]), bytes_of(&after[0]));
    assert!(b1 < b0 && b1 > 0.0, "1-minute bytes {b1} of {b0}");
    let log = d.terminate();
    assert!(
        log.contains(victim.file_name().unwrap().to_str().unwrap()),
        "the error names the damaged file:\n{log}"
    );
}
