//! Durability under faults, with the real binary:
//! - a second daemon on a state directory in use exits non-zero naming the holder's pid;
//! - a state directory where nothing can be written stops the daemon at start, before
//!   the history is read (a file size limit of 0: refuses writes even to root);
//! - segment writes failing across a minute boundary: /healthz answers 503 with the
//!   reason, the buckets wait in memory and are written once the fault clears (/healthz
//!   200 again), and `nagare export` gives exactly the totals of the records sent; a
//!   truncated last frame is reported by export (file, offset, exit status 3);
//! - SIGTERM while the fault lasts: one more try, then the log names what is lost.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, metric_sum};
use nagare::generate::encode::{Exporter, GenRecord};

/// (status, body) of GET `path` (any status, unlike `Daemon::get`).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: nagare\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// Polls /healthz until it answers `status`.
fn wait_health(d: &Daemon, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, body) = http_get(d.http, "/healthz");
        if s == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz still answers {s} ({body}), waiting for {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for a child to exit (at most 60 s; a daemon that keeps running fails).
fn wait_exit(mut child: std::process::Child) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (st, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the daemon kept running instead of refusing to start; stderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn serve(state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nagare"));
    c.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--log",
        "info",
    ])
    .arg("--state-dir")
    .arg(state)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

/// Start of the minute `ago` minutes before now.
fn minute_ago(ago: i64) -> i64 {
    let now = jiff::Timestamp::now().as_second();
    (now - ago * 60).div_euclid(60) * 60
}

/// `n` records starting in the minute at `minute` (distinct source addresses).
fn records(minute: i64, n: u32, salt: u8) -> Vec<GenRecord> {
    (0..n)
        .map(|i| GenRecord {
            src: format!("10.{salt}.{}.{}", i / 200, i % 200 + 1)
                .parse()
                .unwrap(),
            dst: "10.200.0.1".parse().unwrap(),
            src_port: 30_000 + i as u16,
            dst_port: 443,
            protocol: 6,
            tcp_flags: 0x1b,
            bytes: 1000 + u64::from(i) * 7,
            packets: 1 + u64::from(i % 5),
            start_ms: minute * 1000 + i64::from(i % 50) * 1000,
            end_ms: minute * 1000 + i64::from(i % 50) * 1000 + 500,
            in_if: 1,
            out_if: 2,
            vlan: 0,
            direction: 0,
            vmware: None,
        })
        .collect()
}

fn send(d: &Daemon, exp: &mut Exporter, recs: &[GenRecord]) {
    let now = jiff::Timestamp::now().as_millisecond();
    d.send(&exp.encode(recs, now));
}

/// (bytes, packets) per bucket start (RFC 3339) of an export in JSON lines.
fn export_totals(
    state: &Path,
    from: i64,
    to: i64,
    extra: &[&str],
) -> (i32, BTreeMap<String, (u64, u64)>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nagare"))
        .args(["export", "--format", "jsonl", "--resolution", "1m"])
        .arg("--state-dir")
        .arg(state)
        .args(["--from", &rfc3339(from), "--to", &rfc3339(to)])
        .args(extra)
        .output()
        .expect("run export");
    let mut totals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let t = totals
            .entry(v["bucket_start"].as_str().unwrap().to_string())
            .or_default();
        t.0 += v["src_bytes"].as_u64().unwrap() + v["dst_bytes"].as_u64().unwrap();
        t.1 += v["packets"].as_u64().unwrap();
    }
    (
        out.status.code().unwrap_or(-1),
        totals,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rfc3339(s: i64) -> String {
    jiff::Timestamp::from_second(s).unwrap().to_string()
}

/// Makes segment writes fail: `state/rollup` becomes a regular file (root or not,
/// nothing can be created under it).
fn break_segments(state: &Path) {
    let dir = state.join("rollup");
    if dir.is_dir() {
        std::fs::rename(&dir, state.join("rollup.away")).unwrap();
    }
    std::fs::write(&dir, b"not a directory").unwrap();
}

fn repair_segments(state: &Path) {
    std::fs::remove_file(state.join("rollup")).unwrap();
    if state.join("rollup.away").is_dir() {
        std::fs::rename(state.join("rollup.away"), state.join("rollup")).unwrap();
    }
}

const FAST_RETRY: &str = "[rollup.write]\nretry_initial_ms = 200\nretry_max_ms = 800\n";

fn config(dir: &Path, body: &str) -> String {
    let p = dir.join("nagare.toml");
    std::fs::write(&p, body).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn a_second_instance_on_the_same_state_dir_exits_naming_the_pid() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let first = Daemon::start(&state, &[]);
    let pid = first.child.id();
    let (status, err) = wait_exit(serve(&state).spawn().unwrap());
    assert!(!status.success(), "the second instance must not run");
    assert!(
        err.contains(&format!("pid {pid}")),
        "the message names the holder's pid {pid}:\n{err}"
    );
    assert_eq!(
        std::fs::read_to_string(state.join("lock")).unwrap().trim(),
        pid.to_string()
    );
    // the first one is unaffected
    assert_eq!(http_get(first.http, "/healthz").0, 200);
    first.terminate();
}

#[test]
fn an_unwritable_state_dir_stops_the_start_before_history_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // some history first
    let d = Daemon::start(&state, &[]);
    let mut exp = Exporter::new(10, 5, 1_700_000_000_000);
    send(&d, &mut exp, &records(minute_ago(20), 10, 1));
    d.wait_metrics(60, "a bucket on disk", |m| {
        metric_sum(m, "nagare_rollup_chunks_written_total") >= 1.0
    });
    d.terminate();

    // no file may grow past 0 bytes (RLIMIT_FSIZE binds root too)
    let mut cmd = serve(&state);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child here.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (status, err) = wait_exit(cmd.spawn().unwrap());
    assert!(!status.success(), "must not start:\n{err}");
    assert!(err.contains("not writable"), "{err}");
    assert!(
        err.contains(state.to_str().unwrap()),
        "names the directory: {err}"
    );
    assert!(
        !err.contains("history loaded"),
        "refused before reading history:\n{err}"
    );
}

#[test]
fn failed_segment_writes_are_retried_and_the_minutes_exported_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = config(dir.path(), FAST_RETRY);
    let d = Daemon::start(&state, &["--config", &cfg]);
    assert_eq!(http_get(d.http, "/healthz"), (200, "ok\n".to_string()));
    break_segments(&state);

    // two minutes ten minutes ago: closed at once, their writes fail
    let m0 = minute_ago(10);
    let (r0, r1) = (records(m0, 120, 1), records(m0 + 60, 80, 2));
    let mut exp = Exporter::new(10, 7, 1_700_000_000_000);
    send(&d, &mut exp, &r0);
    send(&d, &mut exp, &r1);
    d.wait_metrics(60, "writes failing with both minutes waiting", |m| {
        metric_sum(m, "nagare_rollup_records_total") >= 200.0
            && metric_sum(m, "nagare_rollup_write_errors_total") >= 1.0
            && metric_sum(m, "nagare_rollup_write_pending_buckets") >= 2.0
    });
    let body = wait_health(&d, 503);
    assert!(
        body.contains("cannot write rollup segments"),
        "the reason: {body}"
    );
    assert_eq!(
        metric_sum(&d.metrics(), "nagare_rollup_chunks_written_total"),
        0.0
    );

    repair_segments(&state);
    assert_eq!(wait_health(&d, 200), "ok\n");
    let m = d.wait_metrics(60, "everything written", |m| {
        metric_sum(m, "nagare_rollup_write_pending_buckets") == 0.0
    });
    assert_eq!(
        metric_sum(&m, "nagare_rollup_write_dropped_buckets_total"),
        0.0
    );
    d.terminate();

    // the totals of the records sent, minute by minute
    let sum = |r: &[GenRecord]| {
        (
            r.iter().map(|x| x.bytes).sum::<u64>(),
            r.iter().map(|x| x.packets).sum::<u64>(),
        )
    };
    let expected: BTreeMap<String, (u64, u64)> =
        [(rfc3339(m0), sum(&r0)), (rfc3339(m0 + 60), sum(&r1))].into();
    let (code, got, err) = export_totals(&state, m0, m0 + 120, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(got, expected, "{err}");

    // a truncated last frame is reported: file, offset, exit status 3
    let seg = nagare::rollup::segment::file_for(&state.join("rollup"), 60, m0);
    let mut bytes = std::fs::read(&seg).unwrap();
    let mut last = 0usize;
    let mut p = 0usize;
    while p < bytes.len() {
        assert_eq!(&bytes[p..p + 4], b"NGRC");
        last = p;
        p += 14 + u32::from_le_bytes(bytes[p + 6..p + 10].try_into().unwrap()) as usize;
    }
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&seg, &bytes).unwrap();
    let (code, _, err) = export_totals(&state, m0, m0 + 120, &[]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!(
            "{} at byte {last}: truncated last frame",
            seg.display()
        )),
        "{err}"
    );
    let (code, _, err) = export_totals(&state, m0, m0 + 120, &["--allow-damaged"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("truncated last frame"), "{err}");
}

#[test]
fn sigterm_during_a_write_fault_names_the_lost_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = config(dir.path(), FAST_RETRY);
    let d = Daemon::start(&state, &["--config", &cfg]);
    break_segments(&state);
    let m0 = minute_ago(30);
    let mut exp = Exporter::new(10, 9, 1_700_000_000_000);
    send(&d, &mut exp, &records(m0, 40, 3));
    d.wait_metrics(60, "a write failing", |m| {
        metric_sum(m, "nagare_rollup_records_total") >= 40.0
            && metric_sum(m, "nagare_rollup_write_pending_buckets") >= 1.0
    });
    let log = d.terminate();
    assert!(log.contains("bucket lost"), "{log}");
    assert!(
        log.contains(&format!("60s bucket {}", rfc3339(m0))),
        "the lost minute is named:\n{log}"
    );
}
