//! A receive thread's user-space work per record, without the socket: decoding NetFlow
//! v9 datagrams, the pipeline's counting, routing, session folding, enrichment and the
//! finest rollup, exactly as `nagare serve` does it when its shard is idle (the receive
//! thread ingests inline), on one thread.
//!
//! The stream is nfblast's (../shared/tools/nfblast.c): every record a new flow and a
//! new session, sources 10.x.y.z, destinations 198.18.x.y, 30 records per datagram.
//! Datagrams are handed over as receives of `--receive` datagrams (recvmmsg's batch),
//! the records in parts of the listener's default `batch_records`.
//!
//! Two figures: `decode` (decoding alone) and `receive` (the whole path). Between
//! receives, `--cold MIB` writes a buffer of that size (evicting the core's caches), and
//! `--sleep US` sleeps, as the daemon's receive thread does between an exporter's
//! bursts. On the microVM this was written on, a thread that slept comes back slower,
//! in proportion to how long it slept, not to how often: 43 datagrams after 12 ms of
//! sleep and 172 after 50 ms cost the same per record, about 40% more than without
//! sleeping. The machine's speed drifts: compare builds by running them alternately.
//!
//! With `--site RATE`, the stream is `nagare gen`'s VMware site instead (ESXi hosts'
//! IPFIX with VMware's elements and switches' NetFlow v9 from their own addresses,
//! conversations that recur), as the site sends it at RATE records/s: the stream
//! covers records / RATE seconds of flow time up to now, and the warm-up the span
//! before it.
//!
//! Usage: cargo bench --bench receive [-- --records N] [--receive K] [--cold MIB]
//!                                        [--sleep US] [--rounds R] [--site RATE]

#[path = "common/flags.rs"]
mod flags;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nagare::decode::{DecodeConfig, Decoder};
use nagare::enrich::Enricher;
use nagare::enrich::geoip::GeoTable;
use nagare::enrich::inventory::Inventory;
use nagare::generate::encode::{Exporter, GenRecord};
use nagare::listener::ListenerConfig;
use nagare::model::FlowRecord;
use nagare::pipeline::{Handover, Pipeline, RecordSink};
use nagare::rollup::{Rollup, RollupConfig};

struct Args {
    records: usize,
    receive: usize,
    cold_mib: usize,
    sleep_us: usize,
    rounds: usize,
    site_rate: usize,
}

fn args() -> Args {
    let mut a = Args {
        records: 600_000,
        receive: 16,
        cold_mib: 0,
        sleep_us: 0,
        rounds: 3,
        site_rate: 0,
    };
    for (name, n) in flags::numeric_flags() {
        let n = n as usize;
        match name.as_str() {
            "--records" => a.records = n.max(30),
            "--receive" => a.receive = n.max(1),
            "--cold" => a.cold_mib = n,
            "--sleep" => a.sleep_us = n,
            "--rounds" => a.rounds = n.max(1),
            "--site" => a.site_rate = n,
            _ => {}
        }
    }
    a
}

/// Record `i` of nfblast's stream (a new flow for every `i`), flow time `now_ms`.
fn blast_record(i: usize, now_ms: i64) -> GenRecord {
    let i = i as u32;
    GenRecord {
        src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i & 0xff_ffff))),
        dst: IpAddr::V4(Ipv4Addr::from(0xc612_0000 | ((i >> 8) & 0xffff))),
        src_port: 1024 + (i % 60_000) as u16,
        dst_port: 443,
        protocol: 6,
        tcp_flags: 0x18,
        bytes: 64 + u64::from(i % 1400),
        packets: 1,
        start_ms: now_ms - 10,
        end_ms: now_ms,
        in_if: 1,
        out_if: 2,
        vlan: 0,
        direction: 0,
        vmware: None,
    }
}

/// Datagrams and the address each came from.
type Stream = Vec<(IpAddr, Vec<u8>)>;

/// nfblast's stream from record `from` on: datagrams of 30 records, the template in
/// front.
fn blast_stream(from: usize, records: usize, now: i64) -> Stream {
    let src: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let mut e = Exporter::new(9, 1, now - 86_400_000);
    e.template_every = u32::MAX;
    let mut dgs = vec![(src, e.templates_only(now))];
    let recs: Vec<GenRecord> = (from..from + records)
        .map(|i| blast_record(i, now))
        .collect();
    for chunk in recs.chunks(30) {
        dgs.extend(e.encode(chunk, now).into_iter().map(|d| (src, d)));
    }
    dgs
}

/// The site's warm-up and measured streams: `records` each at `rate` records/s, the
/// measured one ending now, sent in twentieths of a second as `nagare gen` sends.
fn site_streams(records: usize, rate: usize, now: i64) -> (Stream, Stream) {
    let to = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, 2055));
    let site = nagare::generate::site_for(to, 500);
    // the site's natural rate, from an hour of it
    let hour = site.generate(now - 3_600_000, now, 1.0, 1).len().max(1);
    let intensity = rate as f64 * 3600.0 / hour as f64;
    let span_ms = (records as i64 * 1000 / rate.max(1) as i64).max(1000);
    let mut em = nagare::generate::Emitter::new(to, None);
    let mut stream = |t0: i64, seed: u64| {
        let mut g = site.generate(t0, t0 + span_ms, intensity, seed);
        g.truncate(records);
        let mut dgs = Stream::new();
        for part in g.chunks((rate / 20).max(1)) {
            let at = part.last().map_or(t0, |x| x.record.end_ms);
            for (s, d) in em.encode(part, at) {
                let ip = em.source_ip(s);
                dgs.extend(d.into_iter().map(|d| (ip, d)));
            }
        }
        dgs
    };
    let warm = stream(now - 2 * span_ms, 7);
    (warm, stream(now - span_ms, 8))
}

fn main() {
    let a = args();
    let now = nagare::util::now_ms();
    // the warm-up stream (other flows) fills the tables, as a running collector's are
    let (warm, dgs) = if a.site_rate > 0 {
        site_streams(a.records, a.site_rate, now)
    } else {
        (
            blast_stream(8 << 20, a.records, now),
            blast_stream(0, a.records, now),
        )
    };
    let part = ListenerConfig::default().batch_records;
    let mut cold = vec![0u8; a.cold_mib << 20];
    let sleep = Duration::from_micros(a.sleep_us as u64);
    let mut cool = |k: usize| {
        for (j, b) in cold.iter_mut().step_by(64).enumerate() {
            *b = b.wrapping_add((j + k) as u8);
        }
        if !sleep.is_zero() {
            std::thread::sleep(sleep);
        }
    };
    println!(
        "{} records in {} datagrams, receives of {} datagrams, parts of {part} records{}",
        a.records,
        dgs.len(),
        a.receive,
        if a.cold_mib > 0 {
            format!(", {} MiB written between receives", a.cold_mib)
        } else {
            String::new()
        }
    );
    for round in 0..a.rounds {
        // decoding alone
        let dec = Decoder::new(DecodeConfig::default());
        let mut out: Vec<FlowRecord> = Vec::with_capacity(part + 64);
        let (mut n, mut busy) = (0usize, Duration::ZERO);
        for (k, recv) in dgs.chunks(a.receive).enumerate() {
            cool(k);
            let t = Instant::now();
            for (src, d) in recv {
                let _ = dec.decode(*src, now, d, &mut out);
                n += out.len();
                out.clear();
            }
            busy += t.elapsed();
        }
        let decode_ns = busy.as_nanos() as f64 / n.max(1) as f64;

        // the whole path, into a fresh rollup (so every record is a new flow)
        let dec = Decoder::new(DecodeConfig::default());
        let enr = Arc::new(Enricher::from_parts(
            Inventory::default(),
            GeoTable::default(),
        ));
        let Ok((rollup, _)) = Rollup::start(&RollupConfig::default(), None, enr) else {
            eprintln!("rollup did not start");
            return;
        };
        let pipeline = {
            let r = rollup.clone();
            Pipeline::with_next(Box::new(move |b, how| r.ingest(b, how)))
        };
        let mut run = |dgs: &[(IpAddr, Vec<u8>)]| {
            let mut busy = Duration::ZERO;
            for (k, recv) in dgs.chunks(a.receive).enumerate() {
                cool(k);
                let t = Instant::now();
                for (src, d) in recv {
                    let _ = dec.decode(*src, now, d, &mut out);
                    if out.len() >= part {
                        pipeline.ingest(&mut out, Handover::Part { backlog: false });
                    }
                }
                pipeline.ingest(&mut out, Handover::End { backlog: false });
                busy += t.elapsed();
            }
            busy
        };
        run(&warm);
        let before = pipeline.metrics.records.get();
        let busy = run(&dgs);
        let measured = pipeline.metrics.records.get() - before;
        rollup.stop();
        println!(
            "round {}: decode {decode_ns:.1} ns/record, receive {:.1} ns/record ({measured} records after {before} of warm-up)",
            round + 1,
            busy.as_nanos() as f64 / measured.max(1) as f64,
        );
    }
}
