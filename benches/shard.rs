//! The shard's share of ingest, without sockets or threads: CPU per record to fold and
//! accumulate a stream at a given rate (flow time = wall time of the simulated stream).
//!
//! Two streams: `unique` (every record a new flow and session, as nfblast sends) and
//! `site` (two hours of the 500-VM data centre of `nagare gen`, with its inventory,
//! replayed in a loop at the rate with fresh timestamps: flows repeat, as they do).
//! Records are routed into two shards in batches of 2048, as in the daemon; a shard
//! tick runs every simulated second (publishing open buckets, closing due ones).
//!
//! Usage: cargo bench --bench shard [-- SECONDS RATE]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use nagare::enrich::Tables;
use nagare::enrich::fold::FoldLimits;
use nagare::enrich::geoip::GeoTable;
use nagare::enrich::inventory::Inventory;
use nagare::generate::site_for;
use nagare::generate::to_flow_record;
use nagare::model::{ExporterId, FlowRecord};
use nagare::rollup::shard::Shard;
use nagare::rollup::store::Store;
use nagare::rollup::{FlowIn, RollupConfig};

const SHARDS: usize = 2;
const BATCH: usize = 2048;

/// nfblast's records: source 10.x.y.z unique, destination 198.18.x.y, port 443.
fn unique(i: u64, t_ms: i64) -> FlowRecord {
    let mut r = FlowRecord::empty(
        ExporterId::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 1),
        10,
    );
    r.src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i as u32 & 0xff_ffff)));
    r.dst = IpAddr::V4(Ipv4Addr::from(0xc612_0000 | ((i as u32 >> 8) & 0xffff)));
    r.src_port = 1024 + (i % 60_000) as u16;
    r.dst_port = 443;
    r.protocol = 6;
    r.tcp_flags = 0x18;
    r.packets = 1;
    r.bytes = 64 + i % 1400;
    r.start_ms = t_ms - 10;
    r.end_ms = t_ms;
    r.in_if = 1;
    r.out_if = 2;
    r
}

fn run(
    name: &str,
    seconds: i64,
    rate: u64,
    tables: &Tables,
    geo: &GeoTable,
    make: &dyn Fn(u64, i64) -> FlowRecord,
) {
    let cfg = RollupConfig::default();
    let store = Store::new(None, cfg.resolutions().unwrap(), SHARDS, 0);
    let mut shards: Vec<Shard> = (0..SHARDS)
        .map(|i| {
            Shard::detached(
                i,
                store.clone(),
                FoldLimits {
                    max_sessions: cfg.max_sessions / SHARDS,
                    idle_ms: 300_000,
                },
            )
        })
        .collect();
    // start mid-minute of a fixed hour
    let t0_ms: i64 = (nagare::util::now_ms() / 3_600_000) * 3_600_000 + 20_000;
    let total = seconds as u64 * rate;
    let mut per: Vec<Vec<FlowIn>> = (0..SHARDS).map(|_| Vec::with_capacity(BATCH)).collect();
    let mut ticked_s = t0_ms / 1000;
    let mut busy = std::time::Duration::ZERO;
    let mut i = 0u64;
    while i < total {
        let n = (total - i).min(BATCH as u64);
        let t_ms = t0_ms + (i * 1000 / rate) as i64;
        let recs: Vec<FlowRecord> = (i..i + n).map(|k| make(k, t_ms)).collect();
        let c = Instant::now();
        for r in &recs {
            let f = FlowIn::from_record(r);
            per[f.shard_of(SHARDS)].push(f);
        }
        for (s, v) in shards.iter_mut().zip(per.iter_mut()) {
            s.ingest(v, tables, geo, t_ms);
            v.clear();
        }
        if t_ms / 1000 > ticked_s {
            ticked_s = t_ms / 1000;
            for s in shards.iter_mut() {
                s.tick_and_commit(t_ms);
            }
        }
        busy += c.elapsed();
        i += n;
    }
    println!(
        "{name:>7}: {total} records at {rate}/s of flow time for {seconds}s: {:.1} ns/record",
        busy.as_nanos() as f64 / total as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let seconds: i64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(10);
    let rate: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(400_000);
    run(
        "unique",
        seconds,
        rate,
        &Tables::build(Inventory::empty(), 1),
        &GeoTable::default(),
        &unique,
    );

    let site = site_for("127.0.0.1:2055".parse().unwrap(), 500);
    let inv = Inventory::parse(&site.inventory_toml(), "bench").unwrap();
    let geo = GeoTable::from_prefixes(
        site.geo_prefixes()
            .into_iter()
            .map(|(n, c)| (n, nagare::enrich::countries::pack(c))),
    );
    let t0 = 1_764_000_000_000;
    let recs: Vec<FlowRecord> = site
        .generate(t0, t0 + 2 * 3_600_000, 1.0, 3)
        .iter()
        .map(|g| to_flow_record(g, site.exporter_ip(g.source)))
        .collect();
    let replay = |i: u64, t_ms: i64| {
        let mut r = recs[(i % recs.len() as u64) as usize];
        let d = r.end_ms - r.start_ms;
        r.end_ms = t_ms;
        r.start_ms = t_ms - d.clamp(0, 60_000);
        r
    };
    run("site", seconds, rate, &Tables::build(inv, 1), &geo, &replay);
}
