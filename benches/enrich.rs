//! Enrichment cost per flow: GeoIP, subnets, inventory and flow-type tags, as the
//! pipeline does it for every record (`FlowIn::from_record` + `classify::tags`), over the
//! data centre profile's traffic mix (VM, physical, branch and Internet addresses).
//!
//! Also compares the GeoIP lookup itself: nagare's flattened longest-prefix-match table
//! against a per-lookup maxminddb query on the same database. The database is the real
//! one in ../shared/geoip when present ($NAGARE_SHARED_DIR), else a small one written
//! from the profile's prefixes (printed at start).
//!
//! Run: `cargo bench --bench enrich`. Throughput is in flows (or lookups) per second;
//! ns per flow = 1e9 / throughput.

use std::net::IpAddr;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nagare::enrich::geoip::GeoTable;
use nagare::enrich::inventory::Inventory;
use nagare::enrich::{Enricher, classify};
use nagare::generate::profile::Site;
use nagare::generate::{site_for, to_flow_record};
use nagare::rollup::FlowIn;

fn database() -> (Vec<u8>, String) {
    let shared = std::env::var_os("NAGARE_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let real = shared.join("geoip/geo-whois-asn-country.mmdb");
    if let Ok(b) = std::fs::read(&real) {
        return (b, real.display().to_string());
    }
    let site = Site::datacenter(500);
    let b = nagare::enrich::geoip::write_mmdb(&site.geo_prefixes()).expect("mmdb");
    (b, "a database of the profile's prefixes".into())
}

fn bench(c: &mut Criterion) {
    let (mmdb, name) = database();
    eprintln!("GeoIP database: {name}");
    let site = site_for("127.0.0.1:2055".parse().unwrap(), 500);
    let inv = Inventory::parse(&site.inventory_toml(), "bench").unwrap();
    let geo = GeoTable::from_bytes(mmdb.clone(), &name).unwrap();
    let enr = Enricher::from_parts(inv, geo);
    let t0 = 1_764_000_000_000;
    let recs: Vec<_> = site
        .generate(t0, t0 + 120_000, 1.0, 3)
        .iter()
        .map(|g| to_flow_record(g, site.exporter_ip(g.source)))
        .collect();
    let tables = enr.tables();
    let geo = enr.geo();

    let mut g = c.benchmark_group("enrich");
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function("per_flow", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for r in &recs {
                let (s, d, _) = FlowIn::from_record(r).enrich(&tables, &geo);
                acc ^= classify::tags(&s, &d);
            }
            acc
        })
    });
    g.finish();

    // GeoIP alone on public addresses (the ones that get a lookup)
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let addrs: Vec<IpAddr> = (0..10_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            IpAddr::V4(std::net::Ipv4Addr::from((x as u32) | 0x0100_0000))
        })
        .collect();
    let reader = maxminddb::Reader::from_source(mmdb).unwrap();
    #[derive(serde::Deserialize)]
    struct Country<'a> {
        #[serde(borrow)]
        country_code: Option<&'a str>,
    }
    let mut g = c.benchmark_group("geoip");
    g.throughput(Throughput::Elements(addrs.len() as u64));
    g.bench_function("lpm_table", |b| {
        b.iter(|| addrs.iter().filter(|a| geo.lookup(**a).is_some()).count())
    });
    g.bench_function("maxminddb_lookup", |b| {
        b.iter(|| {
            addrs
                .iter()
                .filter(|a| {
                    reader
                        .lookup(**a)
                        .ok()
                        .and_then(|r| r.decode::<Country>().ok().flatten())
                        .and_then(|c| c.country_code)
                        .is_some()
                })
                .count()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
