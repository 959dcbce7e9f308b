//! Junk and spoofed sources cannot take the exporter table or the template store from
//! working exporters (issue "Trust"): header-only floods hold no slot, one source holds
//! a bounded share, a flood of unused templates evicts only unused templates, and the
//! per-exporter bound is kept by eviction, not refusal. Datagrams are built byte by
//! byte; expected totals are written out by hand.

mod common;

use std::net::{IpAddr, UdpSocket};

use common::{Daemon, metric_sum};
use nagare::decode::{DecodeConfig, Decoder};

/// An IPFIX message header only (16 bytes): version, length, time, sequence, domain.
fn ipfix_header_only(domain: u32) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&10u16.to_be_bytes());
    m.extend_from_slice(&16u16.to_be_bytes());
    m.extend_from_slice(&1_764_000_000u32.to_be_bytes());
    m.extend_from_slice(&0u32.to_be_bytes());
    m.extend_from_slice(&domain.to_be_bytes());
    m
}

/// A NetFlow v9 datagram (source id 7) with `flowsets` (each: id, body).
fn v9(seq: u32, flowsets: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&9u16.to_be_bytes());
    m.extend_from_slice(&(flowsets.len() as u16).to_be_bytes());
    m.extend_from_slice(&3_600_000u32.to_be_bytes()); // sysUpTime
    m.extend_from_slice(&1_764_000_100u32.to_be_bytes()); // unix secs
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&7u32.to_be_bytes()); // source id
    for (id, body) in flowsets {
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
        m.extend_from_slice(body);
    }
    m
}

/// The legitimate exporter: options (system scope, samplingInterval 100), a data
/// template (src, dst, bytes, packets, first, last switched) and `n` records of 1 000
/// bytes and 2 packets each.
fn sampled_v9_exporter(n: u32) -> Vec<Vec<u8>> {
    let mut opt_tpl = Vec::new();
    for v in [300u16, 4, 4, 1, 4, 34, 4] {
        // template 300, scope length 4, option length 4, scope system/4, samplingInterval/4
        opt_tpl.extend_from_slice(&v.to_be_bytes());
    }
    let mut opt_data = vec![0, 0, 0, 0];
    opt_data.extend_from_slice(&100u32.to_be_bytes());
    let mut tpl = Vec::new();
    for v in [256u16, 6, 8, 4, 12, 4, 1, 4, 2, 4, 22, 4, 21, 4] {
        tpl.extend_from_slice(&v.to_be_bytes());
    }
    let mut out = vec![v9(0, &[(1, opt_tpl), (300, opt_data), (0, tpl)])];
    let mut data = Vec::new();
    for i in 0..n {
        data.extend_from_slice(&[10, 1, (i / 250) as u8, (i % 250) as u8 + 1]);
        data.extend_from_slice(&[192, 0, 2, 80]);
        data.extend_from_slice(&1000u32.to_be_bytes());
        data.extend_from_slice(&2u32.to_be_bytes());
        data.extend_from_slice(&3_590_000u32.to_be_bytes()); // 10 s before export
        data.extend_from_slice(&3_595_000u32.to_be_bytes());
        if data.len() >= 24 * 50 {
            out.push(v9(out.len() as u32, &[(256, std::mem::take(&mut data))]));
        }
    }
    if !data.is_empty() {
        out.push(v9(out.len() as u32, &[(256, data)]));
    }
    out
}

fn send_from(from: IpAddr, to: std::net::SocketAddr, payloads: &[Vec<u8>]) {
    let s = UdpSocket::bind((from, 0)).expect("bind a loopback source address");
    for (i, p) in payloads.iter().enumerate() {
        s.send_to(p, to).expect("send");
        if i % 32 == 31 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// 5 000 header-only IPFIX datagrams from one address, one per observation domain, used
/// to fill the exporter table (4 096 slots): the v9 exporter that comes afterwards
/// announcing 1:100 sampling lost its options, and 100 000 bytes were stored instead
/// of 10 000 000.
#[test]
fn a_header_only_flood_does_not_cost_a_sampled_exporter_its_options() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("state"), &[]);
    // in parts, each decoded before the next is sent: a busy machine's socket buffer
    // does not overflow (more than the table's 4 096 slots must arrive)
    let junk: Vec<Vec<u8>> = (0..5_000).map(ipfix_header_only).collect();
    for (i, part) in junk.chunks(500).enumerate() {
        send_from("127.0.0.2".parse().unwrap(), d.udp[0], part);
        d.wait_metrics(30, "a part of the flood decoded", |m| {
            metric_sum(m, "nagare_decode_datagrams_total") >= (500 * (i + 1)) as f64
        });
    }
    // 100 records of 1 000 bytes, sampled 1:100: the options and template first
    let exporter = sampled_v9_exporter(100);
    send_from("127.0.0.1".parse().unwrap(), d.udp[0], &exporter[..1]);
    d.wait_metrics(30, "the exporter's options", |m| {
        metric_sum(m, "nagare_decode_options_records_total") >= 1.0
    });
    send_from("127.0.0.1".parse().unwrap(), d.udp[0], &exporter[1..]);
    let m = d.wait_metrics(30, "the exporter's records", |m| {
        // one scrape renders the decoder's counters before the pipeline's: wait for both
        metric_sum(m, "nagare_decode_records_total") >= 100.0
            && metric_sum(m, "nagare_pipeline_flow_bytes_total") >= 10_000_000.0
    });
    assert_eq!(
        metric_sum(&m, "nagare_pipeline_flow_bytes_total"),
        10_000_000.0
    );
    assert_eq!(metric_sum(&m, "nagare_decode_records_total"), 100.0);
    // the junk took no slot: nothing was evicted to make room
    assert_eq!(
        metric_sum(&m, "nagare_decode_exporter_evictions_total"),
        0.0
    );
    d.terminate();
}

fn decoder(cfg: DecodeConfig) -> Decoder {
    Decoder::new(cfg)
}

/// Valid templates from many spoofed sources used to fill the global template cap, and
/// new exporters were refused for up to 7 days.
#[test]
fn spoofed_templates_evict_each_other_not_a_working_exporters() {
    let d = decoder(DecodeConfig {
        max_templates: 1_000,
        ..Default::default()
    });
    let working: IpAddr = "198.51.100.1".parse().unwrap();
    let mut out = Vec::new();
    let exporter = sampled_v9_exporter(100);
    d.decode(working, 1_000, &exporter[0], &mut out);
    d.decode(working, 1_000, &exporter[1], &mut out);
    assert_eq!(out.len(), 50);
    // 3 000 spoofed sources, each with a valid data template and no data
    let mut set = Vec::new();
    for v in [256u16, 2, 8, 4, 12, 4] {
        set.extend_from_slice(&v.to_be_bytes());
    }
    let tpl = &v9(0, &[(0, set)]);
    for i in 0..3_000u32 {
        let src = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        d.decode(src, 2_000 + i64::from(i), tpl, &mut out);
    }
    assert_eq!(d.templates.len(), 1_000);
    // the working exporter's data still decodes, sampled
    out.clear();
    d.decode(working, 9_000, &exporter[2], &mut out);
    assert_eq!(out.len(), 50);
    assert_eq!(out.iter().map(|r| r.bytes).sum::<u64>(), 50 * 1000 * 100);
    // and a new exporter is admitted, not refused
    let newcomer: IpAddr = "198.51.100.2".parse().unwrap();
    out.clear();
    d.decode(newcomer, 9_500, &exporter[0], &mut out);
    d.decode(newcomer, 9_500, &exporter[1], &mut out);
    assert_eq!(out.iter().map(|r| r.bytes).sum::<u64>(), 50 * 1000 * 100);
}

/// At the per-exporter cap, every new template id scanned the whole map: 5 000 ids
/// stalled a receive thread for 8.5 s. Now each eviction is a B-tree step; the time is
/// printed for information (no timing assert).
#[test]
fn five_thousand_template_ids_from_one_exporter_are_bounded() {
    let d = decoder(DecodeConfig::default());
    let src: IpAddr = "192.0.2.9".parse().unwrap();
    let mut out = Vec::new();
    let t0 = std::time::Instant::now();
    for id in 0..5_000u16 {
        let mut tpl = Vec::new();
        for v in [256 + id, 2, 8, 4, 1, 4] {
            tpl.extend_from_slice(&v.to_be_bytes());
        }
        d.decode(
            src,
            1_000 + i64::from(id),
            &v9(u32::from(id), &[(0, tpl)]),
            &mut out,
        );
    }
    eprintln!("5 000 template ids from one exporter: {:?}", t0.elapsed());
    assert_eq!(d.templates.count_for(&src), 1024);
    assert_eq!(d.templates.evicted.get(), 5_000 - 1024);
    // a v5 datagram from another exporter decodes as usual afterwards
    let mut v5 = vec![0, 5, 0, 1];
    v5.extend_from_slice(&[0; 20]);
    let mut rec = vec![0u8; 48];
    rec[0..4].copy_from_slice(&[10, 0, 0, 1]);
    rec[16..20].copy_from_slice(&7u32.to_be_bytes()); // packets
    rec[20..24].copy_from_slice(&700u32.to_be_bytes()); // bytes
    v5.extend_from_slice(&rec);
    d.decode("192.0.2.10".parse().unwrap(), 1_000, &v5, &mut out);
    assert_eq!(out.last().map(|r| r.bytes), Some(700));
}

/// One source address with thousands of observation domains holds at most
/// `max_exporters_per_source` slots; the others keep theirs.
#[test]
fn one_source_holds_a_bounded_share_of_the_exporter_table() {
    let d = decoder(DecodeConfig {
        max_exporters: 100,
        max_exporters_per_source: 8,
        ..Default::default()
    });
    let mut out = Vec::new();
    let working: IpAddr = "198.51.100.1".parse().unwrap();
    let exporter = sampled_v9_exporter(50);
    d.decode(working, 1_000, &exporter[0], &mut out);
    // a source sending a valid IPFIX template in each of 2 000 domains
    let flood: IpAddr = "203.0.113.5".parse().unwrap();
    for domain in 0..2_000u32 {
        let mut m = ipfix_header_only(domain);
        let mut set = Vec::new();
        for v in [2u16, 12, 256, 1, 1, 4] {
            set.extend_from_slice(&v.to_be_bytes());
        }
        m.extend_from_slice(&set);
        let len = m.len() as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        d.decode(flood, 2_000 + i64::from(domain) * 60, &m, &mut out);
    }
    let mut text = nagare::telemetry::Exposition::new();
    d.render_metrics(&mut text);
    let text = text.finish();
    let m = common::parse_metrics(&text);
    assert_eq!(
        m.get("nagare_decode_exporter_evictions_total{reason=\"per_source\"}"),
        Some(&1_992.0),
        "{text}"
    );
    // the working exporter kept its options: its data is scaled 1:100
    out.clear();
    d.decode(working, 200_000, &exporter[1], &mut out);
    assert_eq!(out.iter().map(|r| r.bytes).sum::<u64>(), 50 * 1000 * 100);
}

/// `[listener] allow`: datagrams from other sources are dropped before decoding and
/// counted; the allowed exporter's records are all there.
#[test]
fn sources_outside_the_allow_list_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("nagare.toml");
    std::fs::write(&cfg, "[listener]\nallow = [\"127.0.0.1/32\"]\n").unwrap();
    let d = Daemon::start(
        &dir.path().join("state"),
        &["--config", cfg.to_str().unwrap()],
    );
    let exporter = sampled_v9_exporter(100);
    send_from("127.0.0.2".parse().unwrap(), d.udp[0], &exporter);
    send_from("127.0.0.1".parse().unwrap(), d.udp[0], &exporter);
    let m = d.wait_metrics(30, "the allowed exporter's records", |m| {
        // one scrape renders the decoder's counters before the pipeline's: wait for both
        metric_sum(m, "nagare_listener_denied_datagrams_total") >= exporter.len() as f64
            && metric_sum(m, "nagare_decode_records_total") >= 100.0
            && metric_sum(m, "nagare_pipeline_flow_bytes_total") >= 10_000_000.0
    });
    assert_eq!(
        metric_sum(&m, "nagare_listener_denied_datagrams_total"),
        exporter.len() as f64
    );
    assert_eq!(metric_sum(&m, "nagare_decode_records_total"), 100.0);
    assert_eq!(
        metric_sum(&m, "nagare_pipeline_flow_bytes_total"),
        10_000_000.0
    );
    d.terminate();
}

/// A second instance on the same UDP port used to take half of the traffic without a
/// warning (SO_REUSEPORT): it now refuses to start and says why.
#[test]
fn a_second_instance_on_the_same_udp_port_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let first = std::process::Command::new(env!("CARGO_BIN_EXE_nagare"))
        .args(["serve", "--listen", &listen, "--http", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(dir.path().join("a"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = KillOnDrop(first);
    // wait until the first one listens
    let stdout = first.0.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    assert!(line.starts_with("nagare: listening"), "{line}");
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_nagare"))
        .args(["serve", "--listen", &listen, "--http", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(dir.path().join("b"))
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&format!("UDP {listen} is already in use")),
        "{err}"
    );
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
