//! Every capture in ../shared/captures decodes, and its record count and byte/packet
//! totals equal tshark's (the cflow dissector, an independent decoder); the VMware VDS
//! capture matches the beats golden decode field by field.
//!
//! Needs ../shared and tshark: `cargo test --features interop` (.ci/run installs tshark).
#![cfg(feature = "interop")]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Totals, beats_sequences, dat_datagrams, read_pcap, shared_dir, tshark_totals};
use nagare::decode::{DecodeConfig, DecodeMode, Decoder};
use nagare::model::FlowRecord;
use nagare::pcap::UdpDatagram;

struct Decoded {
    records: Vec<FlowRecord>,
    errors: u64,
    held_decoded: u64,
    held_pending: u64,
}

fn decode_all(dgs: &[UdpDatagram], mode: DecodeMode) -> Decoded {
    let dec = Decoder::new(DecodeConfig {
        mode,
        ..DecodeConfig::default()
    });
    let mut records = Vec::new();
    for d in dgs {
        dec.decode(d.src.ip(), d.ts_ns / 1_000_000, &d.payload, &mut records);
    }
    Decoded {
        records,
        errors: dec.metrics.total_errors(),
        held_decoded: dec.metrics.held_decoded_records.get(),
        held_pending: dec.metrics.held_now.get(),
    }
}

/// Totals before sampling (what the exporter put on the wire, as tshark shows it).
fn raw_totals(records: &[FlowRecord]) -> Totals {
    let mut t = Totals::default();
    for r in records {
        let s = u64::from(r.sampling_rate.max(1));
        assert_eq!(
            r.bytes % s,
            0,
            "sampled bytes must be a multiple of the rate"
        );
        t.records += 1;
        t.bytes += (r.bytes + r.reverse_bytes) / s;
        t.packets += (r.packets + r.reverse_packets) / s;
    }
    t
}

/// Where tshark does not decode the whole datagram, the oracle is netflow_parser (the
/// reference decoder, which shares no framing code with the fast path), and the reason
/// is written here.
fn tshark_cannot(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    if n.contains("invalid 01") || n.contains("invalid-01") || n.contains("netflow9_test_invalid01")
    {
        Some("tshark stops after the header's record count (2) although three more flowsets follow")
    } else if n.contains("h3c") && !n.contains("varstring") {
        Some(
            "tshark refuses the H3C template's 2-byte field in an IPv4 element and stops at the first record",
        )
    } else {
        None
    }
}

/// Inputs that are broken on purpose: decode errors are expected (and counted).
fn expects_errors(name: &str) -> bool {
    name.contains("netflow5_test_invalid")
}

#[derive(Default)]
struct Report {
    lines: Vec<String>,
    failures: Vec<String>,
}

impl Report {
    fn check(&mut self, name: &str, dgs: &[UdpDatagram]) {
        let got = decode_all(dgs, DecodeMode::Auto);
        let mine = raw_totals(&got.records);
        if expects_errors(name) {
            // The v5 header's record count disagrees with the datagram length: nagare
            // refuses the datagram (counted) instead of guessing which records are real.
            let line = format!(
                "{name}: refused as expected, {} records, {} errors",
                mine.records, got.errors
            );
            if got.errors == 0 || mine.records != 0 {
                self.failures.push(format!("EXPECTED A REFUSAL {line}"));
            }
            self.lines.push(line);
            return;
        }
        // Differential: the fast path and netflow_parser agree record for record.
        let reference = decode_all(dgs, DecodeMode::Reference);
        if reference.records != got.records {
            let first = got
                .records
                .iter()
                .zip(&reference.records)
                .position(|(a, b)| a != b)
                .unwrap_or(got.records.len().min(reference.records.len()));
            self.failures.push(format!(
                "FAST != REFERENCE {name}: {} vs {} records, first difference at {first}:\n  fast {:?}\n  ref  {:?}",
                got.records.len(),
                reference.records.len(),
                got.records.get(first),
                reference.records.get(first)
            ));
        }
        let (oracle, which) = match tshark_cannot(name) {
            Some(why) => (raw_totals(&reference.records), why),
            None => (tshark_totals(dgs), "tshark"),
        };
        let line = format!(
            "{name}: nagare {}/{}/{} vs {} {}/{}/{} (records/bytes/packets), errors {}",
            mine.records,
            mine.bytes,
            mine.packets,
            which,
            oracle.records,
            oracle.bytes,
            oracle.packets,
            got.errors
        );
        if mine != oracle {
            self.failures.push(format!("MISMATCH {line}"));
        }
        if got.errors != 0 {
            self.failures.push(format!("DECODE ERRORS {line}"));
        }
        self.lines.push(line);
    }

    fn finish(self) {
        for l in &self.lines {
            eprintln!("{l}");
        }
        assert!(self.failures.is_empty(), "\n{}", self.failures.join("\n"));
        assert!(!self.lines.is_empty());
    }
}

#[test]
fn beats_dat_sequences_match_tshark() {
    let shared = shared_dir();
    let caps = shared.join("captures");
    let yaml =
        std::fs::read_to_string(caps.join("beats-golden/dat_tests.yaml")).expect("dat_tests.yaml");
    let seqs = beats_sequences(&yaml);
    assert!(seqs.len() >= 40, "parsed only {} sequences", seqs.len());
    let dat = caps.join("logstash-codec-netflow");
    let mut r = Report::default();
    let mut used = std::collections::BTreeSet::new();
    for (name, files) in &seqs {
        used.extend(files.iter().cloned());
        r.check(name, &dat_datagrams(&dat, files));
    }
    // .dat files no beats test names: each alone (templates before data where paired).
    let mut rest: Vec<String> = std::fs::read_dir(&dat)
        .expect("dat dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".dat") && !used.contains(f))
        .collect();
    rest.sort();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in rest {
        // netflow9_test_cisco_aci_tpl256-258.dat + netflow9_test_cisco_aci_data256.dat
        let key = f
            .split("_tpl")
            .next()
            .and_then(|s| s.split("_data").next())
            .unwrap_or(&f)
            .to_string();
        groups.entry(key).or_default().push(f);
    }
    for (key, mut files) in groups {
        files.sort_by_key(|f| (!f.contains("tpl"), f.clone()));
        r.check(
            &format!("{key} ({})", files.join(", ")),
            &dat_datagrams(&dat, &files),
        );
    }
    r.finish();
}

fn pcaps_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    v.sort();
    v
}

#[test]
fn derived_and_pmacct_pcaps_match_tshark() {
    let caps = shared_dir().join("captures");
    let mut r = Report::default();
    for p in pcaps_in(&caps.join("derived-pcaps")) {
        let name = p
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        r.check(&name, &read_pcap(&p));
    }
    let mut dirs: Vec<_> = std::fs::read_dir(caps.join("pmacct-tests"))
        .expect("pmacct-tests")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut n = 0;
    for d in dirs {
        for p in pcaps_in(&d) {
            let dgs: Vec<UdpDatagram> = read_pcap(&p);
            if dgs.is_empty() {
                continue;
            }
            n += 1;
            r.check(
                &format!("pmacct {}", p.strip_prefix(&caps).unwrap_or(&p).display()),
                &dgs,
            );
        }
    }
    assert!(n >= 10, "expected the pmacct traffic captures, found {n}");
    r.finish();
}

/// Akvorado's captures come as template and data files: replayed template-first they
/// must match tshark; replayed data-first, the data is held and decoded when the
/// template arrives, giving the same totals.
#[test]
fn akvorado_pcaps_match_tshark_in_both_orders() {
    let dir = shared_dir().join("captures/akvorado-testdata/netflow");
    let files: Vec<String> = pcaps_in(&dir)
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(String::from))
        .collect();
    let mut r = Report::default();
    let mut singles = Vec::new();
    let mut paired = std::collections::BTreeSet::new();
    let stems: Vec<&str> = files
        .iter()
        .filter_map(|f| {
            f.strip_suffix("-template.pcap")
                .or_else(|| f.strip_suffix("-templates.pcap"))
        })
        .collect();
    for f in &files {
        let stem = if f == "template.pcap" {
            Some("") // template.pcap + data.pcap
        } else {
            f.strip_suffix("-template.pcap")
                .or_else(|| f.strip_suffix("-templates.pcap"))
        };
        // multiplesamplingrates-options-template.pcap belongs to multiplesamplingrates
        let stem = stem.filter(|s| {
            !stems
                .iter()
                .any(|o| !o.is_empty() && o.len() < s.len() && s.starts_with(&format!("{o}-")))
        });
        if let Some(stem) = stem {
            // every file of the family: templates (data and options) first, then data
            let mut family: Vec<&String> = if stem.is_empty() {
                files
                    .iter()
                    .filter(|g| *g == "template.pcap" || *g == "data.pcap")
                    .collect()
            } else {
                files
                    .iter()
                    .filter(|g| g.starts_with(&format!("{stem}-")))
                    .collect()
            };
            family.sort_by_key(|g| {
                let rank = if g.ends_with("template.pcap") && !g.contains("options")
                    || g.ends_with("-templates.pcap")
                {
                    0
                } else if g.contains("options-template") {
                    1
                } else if g.contains("options-data") {
                    2
                } else {
                    3
                };
                (rank, (*g).clone())
            });
            let mut fwd = Vec::new();
            for g in &family {
                paired.insert((*g).clone());
                fwd.extend(read_pcap(&dir.join(g)));
            }
            let names: Vec<&str> = family.iter().map(|s| s.as_str()).collect();
            r.check(&format!("akvorado {}", names.join(" + ")), &fwd);

            // data first: everything but the data templates, then the data templates
            let expected = raw_totals(&decode_all(&fwd, DecodeMode::Auto).records);
            let mut rev = Vec::new();
            for g in family.iter().rev() {
                rev.extend(read_pcap(&dir.join(g)));
            }
            let got = decode_all(&rev, DecodeMode::Auto);
            let mine = raw_totals(&got.records);
            let line = format!(
                "akvorado {} data-first: {}/{}/{} (held then decoded {})",
                stem, mine.records, mine.bytes, mine.packets, got.held_decoded
            );
            if mine != expected
                || (expected.records > 0 && got.held_decoded == 0)
                || got.held_pending != 0
            {
                r.failures
                    .push(format!("DATA-FIRST {line}, expected {expected:?}"));
            }
            r.lines.push(line);
        }
    }
    for f in &files {
        if !paired.contains(f) {
            singles.push(f.clone());
        }
    }
    for f in singles {
        r.check(&format!("akvorado {f}"), &read_pcap(&dir.join(&f)));
    }
    r.finish();
}

/// The VDS capture against the beats golden decode, field by field.
#[test]
fn vmware_vds_matches_beats_golden() {
    let caps = shared_dir().join("captures");
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            caps.join("beats-golden/IPFIX-VMware-virtual-distributed-switch.golden.json"),
        )
        .expect("golden"),
    )
    .expect("golden json");
    let yaml = std::fs::read_to_string(caps.join("beats-golden/dat_tests.yaml")).expect("yaml");
    let seqs = beats_sequences(&yaml);
    let (_, files) = seqs
        .iter()
        .find(|(n, _)| n == "IPFIX VMware virtual distributed switch")
        .expect("VDS sequence");
    for mode in [DecodeMode::Auto, DecodeMode::Reference] {
        let got = decode_all(
            &dat_datagrams(&caps.join("logstash-codec-netflow"), files),
            mode,
        );
        let events = golden["events"].as_array().expect("events");
        assert_eq!(got.records.len(), events.len());
        assert_eq!(got.errors, 0);
        for (r, e) in got.records.iter().zip(events) {
            let n = &e["Fields"]["netflow"];
            let src = n["source_ipv4_address"]
                .as_str()
                .or(n["source_ipv6_address"].as_str())
                .expect("src");
            let dst = n["destination_ipv4_address"]
                .as_str()
                .or(n["destination_ipv6_address"].as_str())
                .expect("dst");
            assert_eq!(r.src.to_string(), src);
            assert_eq!(r.dst.to_string(), dst);
            assert_eq!(
                u64::from(r.src_port),
                n["source_transport_port"].as_u64().expect("sport")
            );
            assert_eq!(
                u64::from(r.dst_port),
                n["destination_transport_port"].as_u64().expect("dport")
            );
            assert_eq!(
                u64::from(r.protocol),
                n["protocol_identifier"].as_u64().expect("proto")
            );
            assert_eq!(r.bytes, n["octet_delta_count"].as_u64().expect("bytes"));
            assert_eq!(
                r.packets,
                n["packet_delta_count"].as_u64().expect("packets")
            );
            assert_eq!(
                u64::from(r.in_if),
                n["ingress_interface"].as_u64().expect("in")
            );
            assert_eq!(
                u64::from(r.out_if),
                n["egress_interface"].as_u64().expect("out")
            );
            assert_eq!(
                u64::from(r.direction),
                n["flow_direction"].as_u64().expect("dir")
            );
            assert_eq!(
                u64::from(r.tcp_flags),
                n["tcp_control_bits"].as_u64().expect("flags")
            );
            assert_eq!(
                u64::from(r.flow_end_reason),
                n["flow_end_reason"].as_u64().expect("end reason")
            );
            assert_eq!(
                r.layer2_segment_id,
                n["layer2_segment_id"].as_u64().expect("l2 segment")
            );
            assert_eq!(
                u64::from(r.vmware.ingress_attr),
                n["vmware_ingress_interface_attr"]
                    .as_u64()
                    .expect("ingress attr")
            );
            assert_eq!(
                u64::from(r.vmware.egress_attr),
                n["vmware_egress_interface_attr"]
                    .as_u64()
                    .expect("egress attr")
            );
            assert_eq!(
                u64::from(r.vmware.vxlan_export_role),
                n["vmware_vxlan_export_role"].as_u64().expect("role")
            );
            assert!(r.vmware.present);
            let start = jiff::Timestamp::from_millisecond(r.start_ms).expect("ts");
            let end = jiff::Timestamp::from_millisecond(r.end_ms).expect("ts");
            // golden timestamps have second precision
            assert_eq!(
                start.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                n["flow_start_milliseconds"].as_str().expect("start")
            );
            assert_eq!(
                end.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                n["flow_end_milliseconds"].as_str().expect("end")
            );
        }
    }
}

mod robust;

/// Truncated and mutated versions of every datagram of every capture go through both
/// decoders without a panic; every error is counted.
#[test]
fn every_capture_survives_truncation_and_mutation() {
    let caps = shared_dir().join("captures");
    let mut corpus = Vec::new();
    for entry in ["derived-pcaps", "akvorado-testdata/netflow"] {
        for p in pcaps_in(&caps.join(entry)) {
            corpus.extend(read_pcap(&p).into_iter().map(|d| d.payload));
        }
    }
    for d in std::fs::read_dir(caps.join("pmacct-tests")).expect("pmacct") {
        let d = d.expect("entry").path();
        if d.is_dir() {
            for p in pcaps_in(&d) {
                corpus.extend(read_pcap(&p).into_iter().map(|d| d.payload).take(40));
            }
        }
    }
    assert!(corpus.len() > 300, "corpus of {} datagrams", corpus.len());
    let stats = robust::hammer(&corpus, 0xfeed);
    eprintln!("{stats:?}");
    assert!(stats.errors_returned > 1000);
}

/// Sampling rates from options data (and per-sampler tables) are applied as Akvorado's
/// and the captures' own options records say.
#[test]
fn sampling_rates_from_options_are_applied() {
    let dir = shared_dir().join("captures/akvorado-testdata/netflow");
    let seq = |files: &[&str]| -> Vec<UdpDatagram> {
        files.iter().flat_map(|f| read_pcap(&dir.join(f))).collect()
    };
    let rates = |dgs: &[UdpDatagram]| -> BTreeMap<u32, usize> {
        let mut m = BTreeMap::new();
        for r in decode_all(dgs, DecodeMode::Auto).records {
            *m.entry(r.sampling_rate).or_insert(0) += 1;
        }
        m
    };
    assert_eq!(
        rates(&seq(&[
            "samplingrate-template.pcap",
            "samplingrate-data.pcap"
        ])),
        BTreeMap::from([(2048, 6)])
    );
    // sampler 1 announces 1 out of 2000, sampler 2 1 out of 4000 (SPM_1OUT4000)
    assert_eq!(
        rates(&seq(&[
            "multiplesamplingrates-options-template.pcap",
            "multiplesamplingrates-template.pcap",
            "multiplesamplingrates-options-data.pcap",
            "multiplesamplingrates-data.pcap"
        ])),
        BTreeMap::from([(2000, 11), (4000, 1)])
    );
    // samplingPacketInterval 1, samplingPacketSpace 999
    assert_eq!(
        rates(&seq(&["physicalinterfaces.pcap"])),
        BTreeMap::from([(1000, 8)])
    );
}
