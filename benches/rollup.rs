//! Rollups over a week: ingests 7 days of a 500-VM data centre (~30k distinct flows per
//! hour) through enrichment and two shards into a persisted store, then reports rows per
//! resolution, bytes per stored row (disk and memory), RSS, and the load time after a
//! restart.
//!
//! Run: `cargo bench --bench rollup` (the week is kept in target/bench-week for the query
//! benchmark).

#[path = "common/week.rs"]
mod week;

use std::time::Instant;

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    let m = e.metadata().ok();
                    if m.as_ref().is_some_and(|m| m.is_dir()) {
                        dir_size(&e.path())
                    } else {
                        m.map_or(0, |m| m.len())
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("rollup_week: bench");
        return;
    }
    let dir = week::bench_dir();
    let end = week::week_end_s();
    eprintln!("ingesting a week of flows into {} ...", dir.display());
    let b = week::build(&dir, end, true);
    b.store.close();
    std::fs::write(dir.join("week_end"), end.to_string()).unwrap();
    let rows = b.store.rows_per_resolution();
    let mem = b.store.memory_bytes();
    let rss_ingest = rss_kb();
    println!("\n== rollups: one week, 500 VMs ==");
    println!(
        "records ingested        {:>12}  in {:.1}s ({:.0} records/s through enrichment, folding and 3 resolutions, 2 shards, one thread)",
        b.records,
        b.ingest_s,
        b.records as f64 / b.ingest_s
    );
    let mut total_rows = 0usize;
    let mut total_disk = 0u64;
    for r in b.store.resolutions() {
        let n = rows.get(&r.seconds).copied().unwrap_or(0);
        let disk = dir_size(&nagare::rollup::segment::res_dir(
            &dir.join("rollup"),
            r.seconds,
        ));
        total_rows += n;
        total_disk += disk;
        println!(
            "resolution {:>5}s  rows {:>10}  disk {:>9.1} MB  {:>5.1} bytes/row on disk",
            r.seconds,
            n,
            disk as f64 / 1e6,
            disk as f64 / n.max(1) as f64
        );
    }
    println!(
        "all resolutions    rows {:>10}  disk {:>9.1} MB  {:>5.1} bytes/row on disk",
        total_rows,
        total_disk as f64 / 1e6,
        total_disk as f64 / total_rows.max(1) as f64
    );
    println!(
        "in memory               {:>9.1} MB  {:>5.1} bytes/row (rows, endpoint tables, observation points)",
        mem as f64 / 1e6,
        mem as f64 / total_rows.max(1) as f64
    );
    println!(
        "RSS after ingest        {:>9.1} MB",
        rss_ingest as f64 / 1024.0
    );
    drop(b);
    // restart: load the history back
    let cfg = nagare::rollup::RollupConfig::default();
    let res = cfg.resolutions().unwrap();
    let caps: Vec<usize> = res.iter().map(|r| r.max_rows).collect();
    let t = Instant::now();
    let store = nagare::rollup::store::Store::new(Some(dir.join("rollup")), res, week::SHARDS, 0);
    let rep = store.load(nagare::util::now_ms() / 1000, &caps).unwrap();
    println!(
        "load on restart         {:>9.2} s   ({} chunks, {} rows, {} damaged frames, {} coarse buckets rebuilt)",
        t.elapsed().as_secs_f64(),
        rep.chunks,
        rep.rows,
        rep.bad_frames.len(),
        rep.recovered
    );
    println!(
        "RSS after reload        {:>9.1} MB (process total)",
        rss_kb() as f64 / 1024.0
    );
}
