use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use nagare::decode::{DecodeConfig, DecodeError, DecodeMode, Decoder};
use nagare::model::FlowRecord;

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Capture file (pcap or pcapng).
    pub file: PathBuf,
    /// Collector to send to. Without it, the capture is decoded offline and summarized.
    #[arg(long)]
    pub to: Option<SocketAddr>,
    /// Replay at X times the capture's pace (default 1 = real time).
    #[arg(long, conflicts_with = "max")]
    pub speed: Option<f64>,
    /// Send as fast as possible (a short pause every 64 datagrams keeps the receiver's
    /// socket buffer from overflowing on loopback).
    #[arg(long)]
    pub max: bool,
    /// Only datagrams to this UDP destination port (default: all UDP datagrams).
    #[arg(long)]
    pub port: Option<u16>,
    /// When sending to a loopback collector, send each original exporter from its own
    /// 127.0.1.x address so that exporters stay apart (default on; --no-source-map to disable).
    #[arg(long = "no-source-map")]
    pub no_source_map: bool,
    /// Offline: print every decoded record as a JSON line.
    #[arg(long)]
    pub records: bool,
    /// Offline: decode with netflow_parser only (no fast path).
    #[arg(long)]
    pub reference: bool,
    /// Offline: print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let (dgs, stats) = nagare::pcap::read_file(&a.file)?;
    let dgs: Vec<_> = dgs
        .into_iter()
        .filter(|d| a.port.is_none_or(|p| d.dst.port() == p))
        .collect();
    if dgs.is_empty() {
        bail!(
            "{}: no UDP datagrams{}",
            a.file.display(),
            a.port.map(|p| format!(" to port {p}")).unwrap_or_default()
        );
    }
    match a.to {
        Some(to) => send(&a, to, &dgs),
        None => offline(&a, &dgs, &stats),
    }
}

fn send(
    a: &ReplayArgs,
    to: SocketAddr,
    dgs: &[nagare::pcap::UdpDatagram],
) -> anyhow::Result<ExitCode> {
    let speed = a.speed.unwrap_or(1.0);
    if !a.max && (speed.is_nan() || speed <= 0.0) {
        bail!("--speed must be positive");
    }
    // One socket per original exporter address.
    let map_sources = !a.no_source_map && to.ip().is_loopback() && to.is_ipv4();
    let mut sockets: BTreeMap<IpAddr, UdpSocket> = BTreeMap::new();
    let default_bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let mut next_alias: u32 = 1;
    let mut mapping = Vec::new();
    for d in dgs {
        let key = d.src.ip();
        if sockets.contains_key(&key) {
            continue;
        }
        let bind_addr = if map_sources {
            let ip = Ipv4Addr::new(127, 0, 1, next_alias as u8);
            next_alias += 1;
            if next_alias > 254 {
                bail!("more than 253 exporters in the capture; use --no-source-map");
            }
            mapping.push((key, ip));
            SocketAddr::new(IpAddr::V4(ip), 0)
        } else {
            default_bind
        };
        let s = UdpSocket::bind(bind_addr).with_context(|| format!("cannot bind {bind_addr}"))?;
        sockets.insert(key, s);
    }
    for (orig, alias) in &mapping {
        eprintln!("replay: exporter {orig} is sent from {alias}");
    }
    let start = Instant::now();
    let t0 = dgs[0].ts_ns;
    let mut last_report = Instant::now();
    let mut sent = 0usize;
    let mut bytes = 0usize;
    for (i, d) in dgs.iter().enumerate() {
        if a.max {
            if i % 64 == 63 {
                std::thread::sleep(Duration::from_micros(200));
            }
        } else {
            let due = Duration::from_nanos(((d.ts_ns - t0).max(0) as f64 / speed) as u64);
            let el = start.elapsed();
            if due > el {
                std::thread::sleep(due - el);
            }
        }
        let s = sockets.get(&d.src.ip()).context("socket for exporter")?;
        s.send_to(&d.payload, to)
            .with_context(|| format!("cannot send to {to}"))?;
        sent += 1;
        bytes += d.payload.len();
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!("replay: {sent}/{} datagrams sent", dgs.len());
            last_report = Instant::now();
        }
    }
    eprintln!(
        "replay: sent {sent} datagrams ({bytes} bytes) to {to} in {:.2}s",
        start.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Default, serde::Serialize)]
struct ExporterSummary {
    datagrams: u64,
    records: u64,
    bytes: u64,
    packets: u64,
}

fn offline(
    a: &ReplayArgs,
    dgs: &[nagare::pcap::UdpDatagram],
    stats: &nagare::pcap::PcapStats,
) -> anyhow::Result<ExitCode> {
    let cfg = DecodeConfig {
        mode: if a.reference {
            DecodeMode::Reference
        } else {
            DecodeMode::Auto
        },
        ..DecodeConfig::default()
    };
    let dec = Decoder::new(cfg);
    let mut out: Vec<FlowRecord> = Vec::new();
    let mut per: BTreeMap<String, ExporterSummary> = BTreeMap::new();
    let stdout = std::io::stdout();
    let mut lock = std::io::BufWriter::new(stdout.lock());
    for d in dgs {
        out.clear();
        // Offline, the capture's own clock times templates and held sets.
        let now_ms = d.ts_ns / 1_000_000;
        let st = dec.decode(d.src.ip(), now_ms, &d.payload, &mut out);
        let _ = st;
        for r in &out {
            let e = per.entry(r.exporter.to_string()).or_default();
            e.records += 1;
            e.bytes += r.bytes + r.reverse_bytes;
            e.packets += r.packets + r.reverse_packets;
            if a.records {
                use std::io::Write;
                writeln!(lock, "{}", record_json(r))?;
            }
        }
    }
    drop(lock);
    let m = &dec.metrics;
    let errors: BTreeMap<&str, u64> = DecodeError::ALL
        .iter()
        .map(|e| (e.kind(), m.error_count(*e)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let total_records: u64 = per.values().map(|e| e.records).sum();
    let total_bytes: u64 = per.values().map(|e| e.bytes).sum();
    let total_packets: u64 = per.values().map(|e| e.packets).sum();
    let summary = serde_json::json!({
        "file": a.file.display().to_string(),
        "frames": stats.frames,
        "datagrams": dgs.len(),
        "records": total_records,
        "bytes": total_bytes,
        "packets": total_packets,
        "template_misses": m.template_misses.get(),
        "held_decoded_records": m.held_decoded_records.get(),
        "held_pending": m.held_now.get(),
        "templates": dec.templates.len(),
        "errors": errors,
        "exporters": per,
    });
    if a.json {
        println!("{summary}");
    } else if !a.records {
        println!(
            "{}: {} frames, {} UDP datagrams",
            a.file.display(),
            stats.frames,
            dgs.len()
        );
        println!("records {total_records}  bytes {total_bytes}  packets {total_packets}");
        println!(
            "templates {}  template misses {}  decoded after their template arrived {}  still waiting {}",
            dec.templates.len(),
            m.template_misses.get(),
            m.held_decoded_records.get(),
            m.held_now.get()
        );
        if errors.is_empty() {
            println!("errors none");
        } else {
            let list: Vec<String> = errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("errors {}", list.join(" "));
        }
        for (k, e) in &per {
            println!(
                "  exporter {k}: {} records, {} bytes, {} packets",
                e.records, e.bytes, e.packets
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn record_json(r: &FlowRecord) -> serde_json::Value {
    let v = &r.vmware;
    let mut j = serde_json::json!({
        "exporter": r.exporter.to_string(),
        "version": r.version,
        "start_ms": r.start_ms,
        "end_ms": r.end_ms,
        "src": r.src.to_string(),
        "dst": r.dst.to_string(),
        "src_port": r.src_port,
        "dst_port": r.dst_port,
        "protocol": r.protocol,
        "tcp_flags": r.tcp_flags,
        "bytes": r.bytes,
        "packets": r.packets,
        "sampling_rate": r.sampling_rate,
        "in_if": r.in_if,
        "out_if": r.out_if,
        "vlan": r.vlan,
        "direction": r.direction,
    });
    if r.reverse_bytes > 0 || r.reverse_packets > 0 {
        j["reverse_bytes"] = r.reverse_bytes.into();
        j["reverse_packets"] = r.reverse_packets.into();
    }
    if v.present {
        j["vmware"] = serde_json::json!({
            "tenant_protocol": v.tenant_protocol,
            "tenant_src": v.tenant_src.map(|a| a.to_string()),
            "tenant_dst": v.tenant_dst.map(|a| a.to_string()),
            "tenant_src_port": v.tenant_src_port,
            "tenant_dst_port": v.tenant_dst_port,
            "ingress_attr": v.ingress_attr,
            "egress_attr": v.egress_attr,
            "vxlan_export_role": v.vxlan_export_role,
            "virtual_obs_id": v.virtual_obs_id.as_str(),
            "rule_id": v.rule_id,
            "flow_direction": v.flow_direction,
        });
    }
    j
}
