//! decoder.json (templates and exporter options) is bounded in write rate and size,
//! and a corrupt one is set aside:
//! - many new templates over several seconds: one write at the first change, none
//!   during the interval, the rest at SIGTERM, holding exactly the templates sent;
//! - a size cap: the file stays under it and keeps the templates seen last, and a
//!   restart restores what the file holds;
//! - a corrupt file becomes decoder.json.corrupt (same bytes), counted, and the daemon
//!   starts with no templates.

mod common;

use std::path::Path;

use common::{Daemon, metric_sum};

/// An IPFIX datagram of `count` data templates (ids from `first_id`) of `fields`
/// four-byte fields each, from observation domain 1.
fn ipfix_templates(first_id: u16, count: u16, fields: u16, seq: u32) -> Vec<u8> {
    let mut set = Vec::new();
    for i in 0..count {
        set.extend_from_slice(&(first_id + i).to_be_bytes());
        set.extend_from_slice(&fields.to_be_bytes());
        for f in 0..fields {
            set.extend_from_slice(&(f + 1).to_be_bytes()); // IE 1, 2, 3 ...
            set.extend_from_slice(&4u16.to_be_bytes());
        }
    }
    let set_len = 4 + set.len();
    let total = 16 + set_len;
    let mut d = Vec::with_capacity(total);
    d.extend_from_slice(&10u16.to_be_bytes());
    d.extend_from_slice(&(total as u16).to_be_bytes());
    d.extend_from_slice(&1_764_000_000u32.to_be_bytes());
    d.extend_from_slice(&seq.to_be_bytes());
    d.extend_from_slice(&1u32.to_be_bytes());
    d.extend_from_slice(&2u16.to_be_bytes());
    d.extend_from_slice(&(set_len as u16).to_be_bytes());
    d.extend_from_slice(&set);
    d
}

fn config(dir: &Path, body: &str) -> String {
    let p = dir.join("nagare.toml");
    std::fs::write(&p, body).unwrap();
    p.to_str().unwrap().to_string()
}

/// Template ids in a decoder.json.
fn saved_ids(state: &Path) -> Vec<u64> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("decoder.json")).unwrap())
            .expect("decoder.json parses");
    let mut ids: Vec<u64> = v["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .map(|t| t["key"]["template_id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

#[test]
fn templates_are_written_once_per_interval_not_every_second() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = config(dir.path(), "[decoder_state]\nmin_interval_secs = 3600\n");
    let d = Daemon::start(&state, &["--config", &cfg]);
    d.send(&[ipfix_templates(256, 50, 8, 0)]);
    // the first change is written at once
    d.wait_metrics(30, "first decoder state write", |m| {
        metric_sum(m, "nagare_decode_templates") >= 50.0
            && metric_sum(m, "nagare_decode_state_writes_total") >= 1.0
    });
    // nine more batches of new templates, over about three seconds of housekeeping
    // ticks (the old code rewrote the whole file at each of them)
    for k in 1..10u16 {
        d.send(&[ipfix_templates(256 + 50 * k, 50, 8, u32::from(k))]);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    d.wait_metrics(30, "all templates learned", |m| {
        metric_sum(m, "nagare_decode_templates") >= 500.0
    });
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let m = d.metrics();
    assert_eq!(
        metric_sum(&m, "nagare_decode_state_writes_total"),
        1.0,
        "one write per interval"
    );
    assert_eq!(
        metric_sum(&m, "nagare_decode_state_write_errors_total"),
        0.0
    );
    d.terminate();
    // SIGTERM wrote the rest: every template sent, nothing else
    assert_eq!(saved_ids(&state), (256..756).collect::<Vec<u64>>());
    assert!(!state.join("decoder.json.tmp").exists());
}

#[test]
fn decoder_json_stays_under_its_cap_and_keeps_the_newest_templates() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cap = 20_000u64;
    let cfg = config(
        dir.path(),
        &format!("[decoder_state]\nmin_interval_secs = 1\nmax_bytes = {cap}\n"),
    );
    let d = Daemon::start(&state, &["--config", &cfg]);
    // 400 templates of 20 fields: far more than 20 000 bytes of JSON
    for k in 0..8u16 {
        d.send(&[ipfix_templates(256 + 50 * k, 50, 20, u32::from(k))]);
    }
    d.wait_metrics(30, "templates learned", |m| {
        metric_sum(m, "nagare_decode_templates") >= 400.0
    });
    // five more, seen in a later second than all the others
    std::thread::sleep(std::time::Duration::from_millis(1100));
    d.send(&[ipfix_templates(1000, 5, 20, 9)]);
    d.wait_metrics(30, "the last templates learned", |m| {
        metric_sum(m, "nagare_decode_templates") >= 405.0
    });
    d.terminate();
    let size = std::fs::metadata(state.join("decoder.json")).unwrap().len();
    assert!(size <= cap, "decoder.json is {size} bytes, over {cap}");
    let ids = saved_ids(&state);
    assert!(
        !ids.is_empty() && ids.len() < 405,
        "{} templates kept",
        ids.len()
    );
    for id in 1000..1005 {
        assert!(ids.contains(&id), "template {id}, seen last, is kept");
    }
    // a restart restores exactly what the file holds
    let d = Daemon::start(&state, &["--config", &cfg]);
    let m = d.metrics();
    assert_eq!(metric_sum(&m, "nagare_decode_templates"), ids.len() as f64);
    d.terminate();
}

#[test]
fn a_corrupt_decoder_json_is_set_aside_and_the_daemon_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let garbage = b"{\"version\":1,\"templates\":[{\"key\":{\"exporter\":\"192.0.2.1\",";
    std::fs::write(state.join("decoder.json"), garbage).unwrap();
    let d = Daemon::start(&state, &[]);
    let m = d.metrics();
    assert_eq!(metric_sum(&m, "nagare_decode_state_corrupt_total"), 1.0);
    assert_eq!(metric_sum(&m, "nagare_decode_templates"), 0.0);
    assert_eq!(
        std::fs::read(state.join("decoder.json.corrupt")).unwrap(),
        garbage,
        "the corrupt file is kept, byte for byte"
    );
    d.send(&[ipfix_templates(300, 3, 4, 0)]);
    d.wait_metrics(30, "templates learned", |m| {
        metric_sum(m, "nagare_decode_templates") >= 3.0
    });
    let log = d.terminate();
    assert!(log.contains("set aside"), "the log says so:\n{log}");
    assert_eq!(saved_ids(&state), vec![300, 301, 302]);
    assert_eq!(
        std::fs::read(state.join("decoder.json.corrupt")).unwrap(),
        garbage
    );
}
