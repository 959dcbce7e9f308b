//! Truncated and mutated datagrams go through both decoders without a panic, and every
//! error is counted. Datagrams come from the project's own encoder (no ../shared needed);
//! `interop_robustness` does the same over every real capture.

mod robust;

use nagare::generate::encode::{Exporter, GenRecord, GenVmware};

fn records(n: usize) -> Vec<GenRecord> {
    (0..n)
        .map(|i| GenRecord {
            src: format!("10.0.{}.{}", i / 250, i % 250 + 1).parse().unwrap(),
            dst: if i % 3 == 0 {
                "2001:db8::9".parse().unwrap()
            } else {
                "192.0.2.7".parse().unwrap()
            },
            src_port: 1024 + i as u16,
            dst_port: 443,
            protocol: 6,
            tcp_flags: 0x12,
            bytes: 5000 + i as u64,
            packets: 5,
            start_ms: 1_764_000_000_000,
            end_ms: 1_764_000_001_000,
            in_if: 3,
            out_if: 4,
            vlan: 1105,
            direction: 0,
            vmware: (i % 4 == 1).then(|| GenVmware {
                tenant_src: "172.16.0.1".parse().unwrap(),
                tenant_dst: "172.16.0.2".parse().unwrap(),
                tenant_src_port: 5000,
                tenant_dst_port: 22,
                tenant_protocol: 6,
                ingress_attr: 2,
                egress_attr: 2,
                virtual_obs_id: "vm-1.eth0".into(),
                rule_id: 7,
            }),
        })
        .collect()
}

#[test]
fn generated_datagrams_survive_truncation_and_mutation() {
    let mut corpus = Vec::new();
    for v in [5u8, 9, 10] {
        let mut e = Exporter::new(v, 1, 1_763_990_000_000);
        e.template_every = 1;
        e.sampling = 64;
        e.if_names = vec![(3, "uplink".into())];
        let recs: Vec<GenRecord> = records(60)
            .into_iter()
            .filter(|r| v == 10 || (r.vmware.is_none() && (v == 9 || r.dst.is_ipv4())))
            .collect();
        corpus.extend(e.encode(&recs, 1_764_000_002_000));
    }
    let stats = robust::hammer(&corpus, 0x5eed);
    assert!(stats.variants > 5_000, "{stats:?}");
    assert!(
        stats.errors_returned > 0,
        "mutations should produce errors: {stats:?}"
    );
}
