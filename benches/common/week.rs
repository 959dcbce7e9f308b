//! A stored week of a 500-VM data centre, shared by the rollup and query benchmarks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use nagare::enrich::Enricher;
use nagare::enrich::fold::FoldLimits;
use nagare::enrich::geoip::GeoTable;
use nagare::enrich::inventory::Inventory;
use nagare::generate::profile::Site;
use nagare::generate::{site_for, to_flow_record};
use nagare::rollup::shard::Shard;
use nagare::rollup::store::Store;
use nagare::rollup::{FlowIn, RollupConfig};

pub const SHARDS: usize = 2;

/// Where the week lives: $NAGARE_BENCH_DIR or target/bench-week.
pub fn bench_dir() -> PathBuf {
    std::env::var_os("NAGARE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-week"))
}

pub fn site() -> Site {
    site_for("127.0.0.1:2055".parse().unwrap(), 500)
}

pub fn enricher(site: &Site) -> Arc<Enricher> {
    let inv = Inventory::parse(&site.inventory_toml(), "bench").unwrap();
    let geo = GeoTable::from_prefixes(
        site.geo_prefixes()
            .into_iter()
            .map(|(n, c)| (n, nagare::enrich::countries::pack(c))),
    );
    Arc::new(Enricher::from_parts(inv, geo))
}

pub struct Built {
    pub end_s: i64,
    pub records: u64,
    pub ingest_s: f64,
    pub store: Arc<Store>,
}

/// The end of the stored week: a fixed hour so that reruns reuse the data.
pub fn week_end_s() -> i64 {
    let now = nagare::util::now_ms() / 1000;
    now - now.rem_euclid(3600)
}

/// Ingests a week ending at `end_s` into `dir` (replacing what is there).
pub fn build(dir: &Path, end_s: i64, progress: bool) -> Built {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let site = site();
    let enr = enricher(&site);
    let cfg = RollupConfig::default();
    let res = cfg.resolutions().unwrap();
    let store = Store::new(Some(dir.join("rollup")), res, SHARDS, 0);
    let mut shards: Vec<Shard> = (0..SHARDS)
        .map(|i| {
            Shard::detached(
                i,
                store.clone(),
                FoldLimits {
                    max_sessions: 2_000_000 / SHARDS,
                    idle_ms: 300_000,
                },
            )
        })
        .collect();
    let start_s = end_s - 7 * 86_400;
    let t0 = Instant::now();
    let mut records = 0u64;
    let tables = enr.tables();
    let geo = enr.geo();
    for h in 0..(7 * 24) {
        let hs = start_s + h * 3600;
        let g = site.generate(hs * 1000, (hs + 3600) * 1000, 1.0, 7);
        records += g.len() as u64;
        // one batch per simulated second, ticks once a simulated minute
        let mut i = 0;
        let mut minute = hs;
        while i < g.len() {
            let sec_end = (g[i].record.start_ms / 1000 + 1) * 1000;
            let mut per: Vec<Vec<FlowIn>> = vec![Vec::new(); SHARDS];
            while i < g.len() && g[i].record.start_ms < sec_end {
                let r = to_flow_record(&g[i], site.exporter_ip(g[i].source));
                let f = FlowIn::from_record(&r);
                per[f.shard_of(SHARDS)].push(f);
                i += 1;
            }
            let now_ms = sec_end + 30_000;
            for (k, v) in per.iter().enumerate() {
                shards[k].ingest(v, &tables, &geo, now_ms);
            }
            if sec_end / 1000 >= minute + 60 {
                minute += 60;
                for s in shards.iter_mut() {
                    s.tick_and_commit(now_ms);
                }
            }
        }
        if progress && h % 24 == 23 {
            eprintln!(
                "  day {} of 7 ingested ({} records, {:.1}s)",
                h / 24 + 1,
                records,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    for s in shards.iter_mut() {
        s.tick_and_commit((end_s + 3600) * 1000);
        s.commit_final();
    }
    let ingest_s = t0.elapsed().as_secs_f64();
    store.expire(end_s);
    Built {
        end_s,
        records,
        ingest_s,
        store,
    }
}

/// Loads the stored week (building it if missing or stale).
pub fn load_or_build(progress: bool) -> (Arc<Store>, i64) {
    let dir = bench_dir();
    let marker = dir.join("week_end");
    let want = week_end_s();
    let have: Option<i64> = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let end = match have {
        // the week is reusable while its first hour is within every retention
        Some(e) if want - e < 86_400 => e,
        _ => {
            if progress {
                eprintln!("building a stored week in {} ...", dir.display());
            }
            let b = build(&dir, want, progress);
            b.store.close();
            std::fs::write(&marker, want.to_string()).unwrap();
            want
        }
    };
    let cfg = RollupConfig::default();
    let res = cfg.resolutions().unwrap();
    let caps: Vec<usize> = res.iter().map(|r| r.max_rows).collect();
    let store = Store::new(Some(dir.join("rollup")), res, SHARDS, 0);
    store.load(nagare::util::now_ms() / 1000, &caps).unwrap();
    (store, end)
}
