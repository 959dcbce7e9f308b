//! Enrichment against real data:
//! - the real country database in ../shared/geoip, flattened into nagare's
//!   longest-prefix-match table, answers exactly what the maxminddb reader answers;
//! - the VMware VDS capture, with an inventory naming its VMs, yields VM-to-VM flows
//!   with VM names, and a conversation's two directions become one flow.
//!
//! Needs ../shared: `cargo test --features interop`.
#![cfg(feature = "interop")]

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use common::{beats_sequences, dat_datagrams, shared_dir};
use nagare::decode::{DecodeConfig, Decoder};
use nagare::enrich::countries;
use nagare::enrich::fold::FoldLimits;
use nagare::enrich::geoip::GeoTable;
use nagare::enrich::inventory::Inventory;
use nagare::enrich::{Enricher, flag};
use nagare::rollup::shard::Shard;
use nagare::rollup::store::Store;
use nagare::rollup::{FlowIn, RollupConfig};
use serde_json::Value as J;

fn mmdb_path() -> std::path::PathBuf {
    shared_dir().join("geoip/geo-whois-asn-country.mmdb")
}

#[test]
fn real_country_database_known_addresses() {
    let geo = GeoTable::load(&mmdb_path()).expect("load the real mmdb");
    let code = |s: &str| geo.lookup(s.parse().unwrap()).and_then(countries::unpack);
    assert_eq!(code("81.2.69.142").as_deref(), Some("GB"));
    assert_eq!(code("8.8.8.8").as_deref(), Some("US"));
    assert_eq!(code("2001:4860:4860::8888").as_deref(), Some("US"));
    assert_eq!(
        countries::name(geo.lookup("81.2.69.142".parse().unwrap()).unwrap()),
        Some("United Kingdom")
    );
    // 1.1.1.1 is registered (APNIC research, announced by Cloudflare): whatever the
    // registry data says, it is an Internet address with a country
    assert!(code("1.1.1.1").is_some());
    // the documentation range is neither internal nor Internet, and has no country
    let enr = Enricher::from_parts(Inventory::default(), geo);
    let e = enr
        .tables()
        .endpoint(&enr.geo(), "203.0.113.7".parse().unwrap(), 0, 0);
    assert!(!e.is(flag::INTERNET) && !e.is(flag::INTERNAL));
    assert_eq!(e.country, 0, "203.0.113.7 has no country");
    let e = enr
        .tables()
        .endpoint(&enr.geo(), "81.2.69.142".parse().unwrap(), 0, 0);
    assert!(e.is(flag::INTERNET));
    assert_eq!(countries::unpack(e.country).as_deref(), Some("GB"));
}

/// The flattened table agrees with the maxminddb reader on 200 000 addresses spread over
/// the whole IPv4 space and the populated IPv6 space.
#[test]
fn flattened_table_agrees_with_the_mmdb_reader() {
    let path = mmdb_path();
    let geo = GeoTable::load(&path).expect("load");
    let reader = maxminddb::Reader::open_readfile(&path).expect("reader");
    #[derive(serde::Deserialize)]
    struct Flat {
        country_code: Option<String>,
    }
    let mut x: u64 = 0x1234_5678_9abc_def0;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut checked = 0;
    let mut with_country = 0;
    for i in 0..200_000 {
        let ip: IpAddr = if i % 4 == 3 {
            // 2000::/4 holds the allocated IPv6 space
            let hi = 0x2000_0000_0000_0000u64 | (next() & 0x0fff_ffff_ffff_ffff);
            IpAddr::V6(std::net::Ipv6Addr::from(
                (u128::from(hi) << 64) | u128::from(next()),
            ))
        } else {
            IpAddr::V4(std::net::Ipv4Addr::from(next() as u32))
        };
        let want: Option<String> = reader
            .lookup(ip)
            .ok()
            .and_then(|r| r.decode::<Flat>().ok().flatten())
            .and_then(|f| f.country_code);
        let got = geo.lookup(ip).and_then(countries::unpack);
        assert_eq!(got, want, "{ip}");
        checked += 1;
        with_country += usize::from(want.is_some());
    }
    assert_eq!(checked, 200_000);
    assert!(
        with_country > 50_000,
        "the sample hits the database ({with_country})"
    );
}

#[test]
fn vds_capture_flows_know_their_vms_and_fold_the_reply() {
    let caps = shared_dir().join("captures");
    let yaml = std::fs::read_to_string(caps.join("beats-golden/dat_tests.yaml")).expect("yaml");
    let (_, files) = beats_sequences(&yaml)
        .into_iter()
        .find(|(n, _)| n == "IPFIX VMware virtual distributed switch")
        .expect("VDS sequence");
    let dec = Decoder::new(DecodeConfig::default());
    let mut recs = Vec::new();
    for d in dat_datagrams(&caps.join("logstash-codec-netflow"), &files) {
        dec.decode(d.src.ip(), d.ts_ns / 1_000_000, &d.payload, &mut recs);
    }
    assert_eq!(recs.len(), 5);
    // The capture holds one direction of each conversation. The reply to the first one
    // (172.18.65.21:61209 -> 172.18.65.211:5985, a SYN), as the receiving VM's port
    // exports it: addresses and ports swapped, SYN-ACK, 300 bytes in 3 packets.
    let first = recs[0];
    assert_eq!(first.src.to_string(), "172.18.65.21");
    assert_eq!(first.dst_port, 5985);
    let mut reply = first;
    std::mem::swap(&mut reply.src, &mut reply.dst);
    std::mem::swap(&mut reply.src_port, &mut reply.dst_port);
    std::mem::swap(&mut reply.in_if, &mut reply.out_if);
    reply.tcp_flags = 0x12;
    reply.bytes = 300;
    reply.packets = 3;
    reply.start_ms += 5;
    reply.end_ms += 5;
    recs.push(reply);

    let inv = Inventory::parse(
        r#"
[[host]]
name = "esxi-lab-01"
cluster = "lab"
ip = "172.18.65.2"
[[l2_network]]
name = "vds-lab-65"
vlan = 65
subnets = ["172.18.65.0/24"]
[[vm]]
name = "mgmt-win-01"
ips = ["172.18.65.21"]
host = "esxi-lab-01"
port_group = "vds-lab-65"
[[vm]]
name = "app-win-02"
ips = ["172.18.65.211"]
host = "esxi-lab-01"
port_group = "vds-lab-65"
"#,
        "vds-test",
    )
    .expect("inventory");
    let enr = Arc::new(Enricher::from_parts(inv, GeoTable::default()));
    let store = Store::new(None, RollupConfig::default().resolutions().unwrap(), 1, 0);
    let mut shard = Shard::detached(
        0,
        store.clone(),
        FoldLimits {
            max_sessions: 10_000,
            idle_ms: 300_000,
        },
    );
    let last = recs.iter().map(|r| r.end_ms).max().unwrap();
    let flows: Vec<FlowIn> = recs.iter().map(FlowIn::from_record).collect();
    shard.ingest(&flows, &enr.tables(), &enr.geo(), last + 1_000);
    shard.tick_and_commit(last + 3_600_000 * 2);
    shard.commit_final();

    let ctx = nagare::query::Context::new(
        store,
        enr,
        Arc::new(|_, _| None),
        nagare::query::QueryConfig::default(),
    );
    let now_s = last / 1000 + 60;
    let run = |q: &str| -> J {
        let r = nagare::query::run(&ctx, q, now_s).unwrap_or_else(|e| panic!("{}", e.render(q)));
        serde_json::to_value(r).unwrap()
    };
    let r = run("flows where flow type = 'Source is VM' and flow type = 'Destination is VM'");
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "one VM-to-VM flow: {r}");
    let row = &rows[0];
    let col = |n: &str| {
        r["columns"]
            .as_array()
            .unwrap()
            .iter()
            .position(|c| c["name"] == n)
            .unwrap()
    };
    assert_eq!(row[col("Source IP")], "172.18.65.21");
    assert_eq!(row[col("Source VM")], "mgmt-win-01");
    assert_eq!(row[col("Destination IP")], "172.18.65.211");
    assert_eq!(row[col("Destination VM")], "app-win-02");
    assert_eq!(row[col("Port")], 5985);
    // both directions in one flow: the request's 100 bytes and the reply's 300
    assert_eq!(row[col("Total Traffic")], 400);
    assert_eq!(row[col("Packets")], 5);
    assert_eq!(row[col("Session Count")], 1);
    let tags: Vec<&str> = row[col("Flow Type")]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for t in [
        "Source is VM",
        "Destination is VM",
        "VM-VM",
        "Same Host",
        "East-West",
        "Switched",
    ] {
        assert!(tags.contains(&t), "{t} missing from {tags:?}");
    }
    // split by direction: the client sent 100 bytes, the server 300
    let r = run("sum(Source Bytes), sum(Destination Bytes) of flows where port = 5985");
    let row = &r["rows"][0];
    assert_eq!(row[1], 100, "{r}");
    assert_eq!(row[2], 300, "{r}");
    // the other records: NetBIOS broadcast, LLMNR multicast (IPv4 and IPv6)
    let r = run("flows where port = 138");
    assert_eq!(
        r["rows"][0][0], "172.18.65.91",
        "the broadcast's sender is the client: {r}"
    );
    assert_eq!(r["rows"][0][2], "172.18.65.255");
    let r = run("flows group by Flow Type");
    let names: Vec<&str> = r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x[0].as_str())
        .collect();
    assert!(
        names.contains(&"Broadcast") && names.contains(&"Multicast"),
        "{names:?}"
    );
}
