//! Decode throughput: nagare's fast path against netflow_parser on NetFlow v9 and IPFIX
//! datagrams of 25 records (templates already known).
//!
//! - `fast`: nagare's zero-copy path, producing normalized `FlowRecord`s (field offsets
//!   for fixed-length records; the field walker for `ipfix_vmware`, ESXi's records
//!   with VMware's variable-length names);
//! - `reference`: nagare with netflow_parser framing each data set (+ mapping);
//! - `netflow_parser`: netflow_parser's own stateful `parse_bytes`, no mapping at all.
//!
//! Run: `cargo bench --bench decode`. Throughput is in records per second.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nagare::decode::{DecodeConfig, DecodeMode, Decoder};
use nagare::generate::encode::{Exporter, GenRecord, GenVmware};

const T0: i64 = 1_764_000_000_000;

fn records(n: usize) -> Vec<GenRecord> {
    (0..n)
        .map(|i| GenRecord {
            src: format!("10.{}.{}.{}", i % 3, i / 250, i % 250 + 1)
                .parse()
                .unwrap(),
            dst: format!("172.16.{}.{}", i % 7, i % 200 + 1).parse().unwrap(),
            src_port: 32768 + i as u16,
            dst_port: [443, 80, 53, 22, 3389][i % 5],
            protocol: if i % 5 == 2 { 17 } else { 6 },
            tcp_flags: 0x1b,
            bytes: 1200 + i as u64 * 13,
            packets: 4 + i as u64 % 9,
            start_ms: T0 - 20_000,
            end_ms: T0 - 500,
            in_if: 1 + i as u32 % 4,
            out_if: 9,
            vlan: 1105,
            direction: 0,
            vmware: None,
        })
        .collect()
}

/// (template datagram, data datagram with `n` records), with VMware's elements or not
fn datagrams(version: u8, vmware: bool, n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut e = Exporter::new(version, 1, T0 - 86_400_000);
    e.template_every = u32::MAX;
    e.mtu = 1500;
    let tpl = e.templates_only(T0);
    let mut recs = records(n);
    if vmware {
        for (i, r) in recs.iter_mut().enumerate() {
            r.vmware = Some(GenVmware {
                tenant_src: format!("192.168.{}.{}", i % 4, i + 1).parse().unwrap(),
                tenant_dst: "192.168.9.10".parse().unwrap(),
                tenant_src_port: r.src_port,
                tenant_dst_port: r.dst_port,
                tenant_protocol: r.protocol,
                ingress_attr: 2,
                egress_attr: 3,
                virtual_obs_id: format!("vmnic{}-pg-web-{}", i % 2, i % 3),
                rule_id: 1001,
            });
        }
    }
    let data = e.encode(&recs, T0);
    assert_eq!(data.len(), 1, "{n} records fit one datagram");
    (tpl, data.into_iter().next().unwrap_or_default())
}

fn bench(c: &mut Criterion) {
    let src = "192.0.2.1".parse().unwrap();
    // ESXi's records are longer: 10 fill a 1500-byte datagram
    for (name, version, vmware, n) in [
        ("v9", 9u8, false, 25usize),
        ("ipfix", 10u8, false, 25),
        ("ipfix_vmware", 10u8, true, 10),
    ] {
        let (tpl, data) = datagrams(version, vmware, n);
        let mut g = c.benchmark_group(format!("decode_{name}_{n}_records"));
        g.throughput(Throughput::Elements(n as u64));
        for (label, mode) in [
            ("fast", DecodeMode::Auto),
            ("reference", DecodeMode::Reference),
        ] {
            let d = Decoder::new(DecodeConfig {
                mode,
                ..Default::default()
            });
            let mut out = Vec::with_capacity(64);
            d.decode(src, T0, &tpl, &mut out);
            g.bench_function(label, |b| {
                b.iter(|| {
                    out.clear();
                    let st = d.decode(src, T0, std::hint::black_box(&data), &mut out);
                    assert_eq!(st.records, n);
                })
            });
        }
        let mut p = netflow_parser::NetflowParser::default();
        let _ = p.parse_bytes(&tpl);
        g.bench_function("netflow_parser", |b| {
            b.iter(|| {
                let r = p.parse_bytes(std::hint::black_box(&data));
                assert!(r.error.is_none());
                std::hint::black_box(r.packets.len())
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
