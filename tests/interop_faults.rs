//! Writes failing like on a full disk, injected into the running daemon with a file
//! size limit (`prlimit --fsize=0` on its pid: every write that would grow a file fails
//! with EFBIG, as with ENOSPC; root included):
//! - decoder.json: the failed write leaves no temporary file and the last good file in
//!   place, /healthz answers 503 naming it; once the limit is lifted the new templates
//!   are written and /healthz is 200 again;
//! - rollup segments: the bucket waits and is written after the fault.
#![cfg(feature = "interop")]

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Daemon, metric_sum};
use nagare::generate::encode::{Exporter, GenRecord};

fn set_fsize(pid: u32, limit: u64) {
    let lim = libc::rlimit {
        rlim_cur: limit,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit with a valid pointer to a local rlimit; old value not requested.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

fn health(d: &Daemon) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(d.http).expect("connect");
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut t = String::new();
    s.read_to_string(&mut t).unwrap();
    let code = t.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        code,
        t.split_once("\r\n\r\n").map_or("", |x| x.1).to_string(),
    )
}

fn wait_health(d: &Daemon, code: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (c, b) = health(d);
        if c == code {
            return b;
        }
        assert!(Instant::now() < deadline, "/healthz {c} {b}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ipfix_templates(first_id: u16, count: u16) -> Vec<u8> {
    let mut set = Vec::new();
    for i in 0..count {
        set.extend_from_slice(&(first_id + i).to_be_bytes());
        set.extend_from_slice(&2u16.to_be_bytes());
        for (id, len) in [(1u16, 4u16), (2, 4)] {
            set.extend_from_slice(&id.to_be_bytes());
            set.extend_from_slice(&len.to_be_bytes());
        }
    }
    let total = 20 + set.len();
    let mut d = Vec::new();
    d.extend_from_slice(&10u16.to_be_bytes());
    d.extend_from_slice(&(total as u16).to_be_bytes());
    d.extend_from_slice(&1_764_000_000u32.to_be_bytes());
    d.extend_from_slice(&0u32.to_be_bytes());
    d.extend_from_slice(&1u32.to_be_bytes());
    d.extend_from_slice(&2u16.to_be_bytes());
    d.extend_from_slice(&((4 + set.len()) as u16).to_be_bytes());
    d.extend_from_slice(&set);
    d
}

#[test]
fn a_full_disk_keeps_the_last_good_decoder_state_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = dir.path().join("nagare.toml");
    std::fs::write(
        &cfg,
        "[decoder_state]\nmin_interval_secs = 1\n[rollup.write]\nretry_initial_ms = 200\nretry_max_ms = 800\n",
    )
    .unwrap();
    let d = Daemon::start(&state, &["--config", cfg.to_str().unwrap()]);
    d.send(&[ipfix_templates(256, 10)]);
    d.wait_metrics(30, "first write", |m| {
        metric_sum(m, "nagare_decode_state_writes_total") >= 1.0
    });
    let good = std::fs::read(state.join("decoder.json")).unwrap();

    set_fsize(d.child.id(), 0);
    d.send(&[ipfix_templates(400, 10)]);
    // and a minute of flows from a quarter of an hour ago: closed at once, not writable
    let now = jiff::Timestamp::now().as_millisecond();
    let minute = (now - 15 * 60_000).div_euclid(60_000) * 60_000;
    let recs: Vec<GenRecord> = (0..30u32)
        .map(|i| GenRecord {
            src: format!("10.4.0.{}", i + 1).parse().unwrap(),
            dst: "10.4.1.1".parse().unwrap(),
            src_port: 40_000 + i as u16,
            dst_port: 22,
            protocol: 6,
            tcp_flags: 0x1b,
            bytes: 900,
            packets: 2,
            start_ms: minute + i64::from(i) * 1000,
            end_ms: minute + i64::from(i) * 1000 + 100,
            in_if: 1,
            out_if: 2,
            vlan: 0,
            direction: 0,
            vmware: None,
        })
        .collect();
    d.send(&Exporter::new(10, 3, 1_700_000_000_000).encode(&recs, now));
    d.wait_metrics(30, "failed writes", |m| {
        metric_sum(m, "nagare_decode_state_write_errors_total") >= 1.0
            && metric_sum(m, "nagare_rollup_write_errors_total") >= 1.0
            && metric_sum(m, "nagare_rollup_write_pending_buckets") >= 1.0
    });
    let body = wait_health(&d, 503);
    assert!(body.contains("decoder state"), "{body}");
    assert!(body.contains("rollup segments"), "{body}");
    assert!(
        !state.join("decoder.json.tmp").exists(),
        "temporary file left"
    );
    assert_eq!(std::fs::read(state.join("decoder.json")).unwrap(), good);

    set_fsize(d.child.id(), libc::RLIM_INFINITY);
    assert_eq!(wait_health(&d, 200), "ok\n");
    let m = d.wait_metrics(30, "the minute written", |m| {
        metric_sum(m, "nagare_rollup_write_pending_buckets") == 0.0
    });
    assert!(metric_sum(&m, "nagare_rollup_chunks_written_total") >= 1.0);
    assert_eq!(
        metric_sum(&m, "nagare_rollup_write_dropped_buckets_total"),
        0.0
    );
    d.terminate();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("decoder.json")).unwrap()).unwrap();
    // the templates of observation domain 1: both batches, before and during the fault
    let mut ids: Vec<u64> = v["templates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["key"]["domain"] == 1)
        .map(|t| t["key"]["template_id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (256..266).chain(400..410).collect::<Vec<u64>>());
}
