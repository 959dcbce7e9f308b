//! Every seed query over a stored week (the rollup benchmark's data): p50 and p99
//! latency per query.
//!
//! Run: `cargo bench --bench query` (builds the week first if target/bench-week has none).

#[path = "../tests/seeds.rs"]
mod seeds;
#[path = "common/week.rs"]
mod week;

use std::sync::Arc;
use std::time::Instant;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("seed_queries: bench");
        return;
    }
    let (store, end) = week::load_or_build(true);
    let site = week::site();
    let enr = week::enricher(&site);
    let mut qcfg = nagare::query::QueryConfig::default();
    if let Some(t) = std::env::var("NAGARE_QUERY_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        qcfg.threads = t;
    }
    let ctx = nagare::query::Context::new(store, enr, Arc::new(|_, _| None), qcfg);
    let runs: usize = std::env::var("NAGARE_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    println!("\n== seed queries over a stored week ({runs} runs each, 2 query threads) ==");
    println!(
        "{:<5} {:>9} {:>9} {:>10} {:>8}  query",
        "id", "p50 ms", "p99 ms", "rows read", "rows out"
    );
    let only: Option<Vec<String>> = std::env::var("NAGARE_BENCH_ONLY")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    for (id, q) in seeds::SEEDS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == id)) {
            continue;
        }
        let mut times = Vec::with_capacity(runs);
        let mut last = None;
        for _ in 0..runs {
            let t = Instant::now();
            let r = nagare::query::run(&ctx, q, end)
                .unwrap_or_else(|e| panic!("{id}: {}", e.render(q)));
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            last = Some(r);
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
        let r = last.unwrap();
        println!(
            "{:<5} {:>9.1} {:>9.1} {:>10} {:>8}  {}",
            id,
            p(0.5),
            p(0.99),
            r.stats.rows_scanned,
            r.rows.len(),
            q
        );
    }
}
