//! Writes the fuzzers' seed corpus from the project's own traffic, queries and files:
//! `cargo run --example fuzz_seeds -- DIR` fills `DIR/<target>/` for every fuzz target
//! in `fuzz/` (`fuzz/run.sh` calls it before each run; nothing here is committed).
//!
//! - `decode`: datagrams of the traffic generator (NetFlow v5, v9, IPFIX with the
//!   VMware templates), each whole, as the target decodes its input as one datagram;
//!   first datagrams carry their templates, so the data sets decode too.
//! - `query_parse`: the seed queries, the queries of the query-language tests and the
//!   fragments the language's documentation quotes.
//! - `inventory`: `config/inventory.example.toml` and generated sites' inventories
//!   (what `nagare gen --write-inventory` writes).
//! - `config`: `config/nagare.example.toml`, with and without its optional keys.
//! - `segment`: segment files the rollup writer wrote for a generated site, one frame
//!   of each, and bare chunk payloads.
//!
//! Each seed is checked to be what its target expects (datagrams decode, examples parse,
//! segments read back without a bad frame), so a drifting format fails here, loudly.

#[path = "../tests/seeds.rs"]
mod seeds;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use nagare::config::Config;
use nagare::decode::{DecodeConfig, Decoder};
use nagare::enrich::Enricher;
use nagare::enrich::fold::FoldLimits;
use nagare::enrich::geoip::GeoTable;
use nagare::enrich::inventory::Inventory;
use nagare::generate::{Emitter, site_for, to_flow_record};
use nagare::rollup::shard::Shard;
use nagare::rollup::store::Store;
use nagare::rollup::{FlowIn, RollupConfig, segment};

/// A fixed export time (2025-11-24 16:00 UTC), so the seeds are the same on every run.
const T0_MS: i64 = 1_764_000_000_000;

fn main() -> anyhow::Result<()> {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        bail!("usage: fuzz_seeds DIR (writes DIR/<fuzz target>/)");
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let n = [
        ("decode", decode_seeds()?),
        ("query_parse", query_seeds(root)?),
        ("inventory", inventory_seeds(root)?),
        ("config", config_seeds(root)?),
        ("segment", segment_seeds()?),
    ];
    for (target, seeds) in n {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for (name, bytes) in &seeds {
            let p = dir.join(format!("seed-{name}"));
            std::fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))?;
        }
        eprintln!("fuzz_seeds: {:>3} seeds in {}", seeds.len(), dir.display());
    }
    Ok(())
}

type Seeds = Vec<(String, Vec<u8>)>;

/// Datagrams of a small data centre, as its exporters send them, in every version.
fn decode_seeds() -> anyhow::Result<Seeds> {
    let to: SocketAddr = "127.0.0.1:2055".parse()?;
    let site = site_for(to, 40);
    let traffic = site.generate(T0_MS - 60_000, T0_MS, 0.5, 1);
    let mut seeds = Seeds::new();
    for (vname, version) in [
        ("mixed", None),
        ("v5", Some(5)),
        ("v9", Some(9)),
        ("ipfix", Some(10)),
    ] {
        let mut em = Emitter::new(to, version);
        for (source, dgs) in em.encode(&traffic, T0_MS) {
            // the first datagram carries the templates; one more without them
            for (i, d) in dgs.iter().take(2).enumerate() {
                seeds.push((
                    format!(
                        "{vname}-{}-{i}",
                        format!("{source:?}").replace(|c: char| !c.is_ascii_alphanumeric(), "")
                    ),
                    d.clone(),
                ));
            }
        }
    }
    // the target decodes each input alone, in a fresh decoder: first datagrams must
    // decode into records without an error
    let mut records = 0;
    for (name, d) in &seeds {
        let dec = Decoder::new(DecodeConfig::default());
        let st = dec.decode("192.0.2.1".parse()?, 0, d, &mut Vec::new());
        if name.ends_with("-0") {
            ensure!(st.error.is_none() && st.records > 0, "seed {name}: {st:?}");
        }
        records += st.records;
    }
    ensure!(
        seeds.len() >= 20,
        "only {} datagrams generated",
        seeds.len()
    );
    eprintln!("fuzz_seeds: the datagrams decode into {records} records");
    Ok(seeds)
}

/// String literals on one line of Rust source (the queries the tests write out).
fn rust_literals(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim().trim_end_matches(',');
            let inner = l.strip_prefix('"')?.strip_suffix('"')?;
            (!inner.contains('"') || inner.contains("\\\"")).then(|| inner.replace("\\\"", "\""))
        })
        .collect()
}

/// `code` spans of a Markdown page.
fn markdown_code(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn query_seeds(root: &Path) -> anyhow::Result<Seeds> {
    let mut queries: BTreeSet<String> = BTreeSet::new();
    for (id, q) in seeds::SEEDS {
        let ast = nagare::query::parser::parse(q)
            .map_err(|e| anyhow::anyhow!("seed query {id}: {}", e.render(q)))?;
        queries.insert(q.to_string());
        queries.insert(ast.to_string());
    }
    let read =
        |p: &str| std::fs::read_to_string(root.join(p)).with_context(|| format!("cannot read {p}"));
    let tests = read("tests/query_language.rs")? + &read("tests/e2e_seeds.rs")?;
    queries.extend(
        rust_literals(&tests)
            .into_iter()
            .filter(|q| q.len() > 4 && q.contains(' ') && !q.contains('{')),
    );
    queries.extend(
        markdown_code(&read("docs/query-language.md")?)
            .into_iter()
            .filter(|q| q.len() > 2),
    );
    let parsed = queries
        .iter()
        .filter(|q| nagare::query::parser::parse(q).is_ok())
        .count();
    ensure!(
        parsed > seeds::SEEDS.len(),
        "only {parsed} of the query seeds parse"
    );
    Ok(queries
        .into_iter()
        .enumerate()
        .map(|(i, q)| (format!("{i:03}"), q.into_bytes()))
        .collect())
}

fn inventory_seeds(root: &Path) -> anyhow::Result<Seeds> {
    let example = std::fs::read_to_string(root.join("config/inventory.example.toml"))?;
    let mut seeds = vec![("example".to_string(), example)];
    for vms in [3, 12, 40] {
        // what `nagare gen --write-inventory` writes, for a site of `vms` VMs
        let site = site_for("127.0.0.1:2055".parse()?, vms);
        seeds.push((format!("gen-{vms}"), site.inventory_toml()));
    }
    for (name, text) in &seeds {
        Inventory::parse(text, name).with_context(|| format!("inventory seed {name}"))?;
    }
    Ok(seeds
        .into_iter()
        .map(|(n, t)| (n, t.into_bytes()))
        .collect())
}

fn config_seeds(root: &Path) -> anyhow::Result<Seeds> {
    let example = std::fs::read_to_string(root.join("config/nagare.example.toml"))?;
    // the optional keys set (commented-out `# key = "value"` lines), as a test does
    let optional: String = example
        .lines()
        .map(|l| {
            l.strip_prefix("# ")
                .filter(|x| x.contains(" = \""))
                .unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut seeds = vec![
        ("example".to_string(), example),
        ("example-optional".to_string(), optional),
    ];
    seeds.push((
        "minimal".to_string(),
        "[http]\nlisten = \"127.0.0.1:1\"\n".to_string(),
    ));
    for (name, text) in &seeds {
        Config::from_toml(text).map_err(|e| anyhow::anyhow!("config seed {name}: {e}"))?;
    }
    Ok(seeds
        .into_iter()
        .map(|(n, t)| (n, t.into_bytes()))
        .collect())
}

/// Ten minutes of a small site through two rollup shards into a state directory; the
/// segment files the writer leaves there, each frame alone and each chunk's payload.
fn segment_seeds() -> anyhow::Result<Seeds> {
    let dir = tempfile::tempdir()?;
    let site = site_for("127.0.0.1:2055".parse()?, 12);
    let inv = Inventory::parse(&site.inventory_toml(), "gen")?;
    let geo = GeoTable::from_prefixes(
        site.geo_prefixes()
            .into_iter()
            .map(|(n, c)| (n, nagare::enrich::countries::pack(c))),
    );
    let enr = Arc::new(Enricher::from_parts(inv, geo));
    let res = RollupConfig::default().resolutions()?;
    let store = Store::new(Some(dir.path().join("rollup")), res.clone(), 2, 0);
    let fold = FoldLimits {
        max_sessions: 10_000,
        idle_ms: 300_000,
    };
    let mut shards: Vec<Shard> = (0..2)
        .map(|i| Shard::detached(i, store.clone(), fold))
        .collect();
    let (tables, geo) = (enr.tables(), enr.geo());
    let t0 = T0_MS - 600_000;
    for minute in 0..10 {
        let m0 = t0 + minute * 60_000;
        let g = site.generate(m0, m0 + 60_000, 0.05, 3);
        let mut per: Vec<Vec<FlowIn>> = vec![Vec::new(); 2];
        for x in &g {
            let f = FlowIn::from_record(&to_flow_record(x, site.exporter_ip(x.source)));
            per[f.shard_of(2)].push(f);
        }
        for (s, v) in shards.iter_mut().zip(&per) {
            s.ingest(v, &tables, &geo, m0 + 90_000);
            s.tick_and_commit(m0 + 90_000);
        }
    }
    for s in &mut shards {
        s.commit_final();
    }
    store.close();
    let mut seeds = Seeds::new();
    for r in &res {
        for (start, path) in segment::list(&dir.path().join("rollup"), r.seconds) {
            let bytes = std::fs::read(&path)?;
            let mut chunks = Vec::new();
            let rep = segment::read_frames(&bytes, |c| chunks.push(c));
            ensure!(
                rep.bad_frames.is_empty() && !rep.truncated_tail && rep.chunks > 0,
                "{}: {rep:?}",
                path.display()
            );
            let name = format!("r{}-{start}", r.seconds);
            for (i, c) in chunks.iter().enumerate().take(3) {
                seeds.push((format!("{name}-frame{i}"), segment::frame(c)));
                seeds.push((format!("{name}-payload{i}"), segment::encode(c)));
            }
            // whole files only while small: a fuzzer is quicker on short inputs
            if bytes.len() <= 64 << 10 {
                seeds.push((format!("{name}-file"), bytes));
            }
        }
    }
    ensure!(
        seeds.len() >= 4,
        "the rollup wrote no segment ({} seeds)",
        seeds.len()
    );
    Ok(seeds)
}
