//! Exporter values that do not fit where they go (times past year 9999, numbers wider
//! than their field, counters that overflow 64 bits once scaled by the sampling rate)
//! are counted as `value_out_of_range` and their record dropped: never a panic (this
//! suite runs with overflow checks) and never a wrapped number. Datagrams are built
//! byte by byte here; expected values are written out by hand.

use nagare::decode::{DecodeConfig, DecodeError, DecodeMode, Decoder};
use nagare::model::FlowRecord;

const SRC: &str = "192.0.2.1";
const EXPORT_S: u32 = 1_764_000_100;

/// One IPFIX field specifier: (element id, length).
type Spec = (u16, u16);

/// An IPFIX message with a template set (id 256, `specs`) and one data set of `records`
/// (each already encoded in template order).
fn ipfix(specs: &[Spec], records: &[Vec<u8>]) -> Vec<u8> {
    let mut tset = Vec::new();
    tset.extend_from_slice(&256u16.to_be_bytes());
    tset.extend_from_slice(&(specs.len() as u16).to_be_bytes());
    for (id, len) in specs {
        tset.extend_from_slice(&id.to_be_bytes());
        tset.extend_from_slice(&len.to_be_bytes());
    }
    let mut sets = Vec::new();
    sets.extend_from_slice(&2u16.to_be_bytes());
    sets.extend_from_slice(&((tset.len() + 4) as u16).to_be_bytes());
    sets.extend_from_slice(&tset);
    let body: Vec<u8> = records.concat();
    sets.extend_from_slice(&256u16.to_be_bytes());
    sets.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    sets.extend_from_slice(&body);
    let mut m = Vec::new();
    m.extend_from_slice(&10u16.to_be_bytes());
    m.extend_from_slice(&((sets.len() + 16) as u16).to_be_bytes());
    m.extend_from_slice(&EXPORT_S.to_be_bytes());
    m.extend_from_slice(&0u32.to_be_bytes()); // sequence
    m.extend_from_slice(&1u32.to_be_bytes()); // observation domain
    m.extend_from_slice(&sets);
    m
}

fn be(v: u64, len: usize) -> Vec<u8> {
    v.to_be_bytes()[8 - len..].to_vec()
}

/// Decodes `datagram` in both modes; returns, per mode, the records and the number of
/// `value_out_of_range` errors counted.
fn decode_both(datagram: &[u8]) -> Vec<(Vec<FlowRecord>, u64)> {
    [DecodeMode::Auto, DecodeMode::Reference]
        .into_iter()
        .map(|mode| {
            let d = Decoder::new(DecodeConfig {
                mode,
                ..Default::default()
            });
            let mut out = Vec::new();
            d.decode(SRC.parse().unwrap(), 0, datagram, &mut out);
            (out, d.metrics.error_count(DecodeError::ValueOutOfRange))
        })
        .collect()
}

/// The input `cargo fuzz run decode` found, as the issue ("Fuzzing finds a panic in the
/// decoder") shows it: its header announces 3 456 bytes, of which the issue shows the
/// first 200, so it ends in a template that does not parse. It must still go through
/// (and any error be counted); the complete case, a data set held until its template
/// with a variable-length flowEndSeconds arrives, is built byte by byte below.
#[test]
fn fuzz_crash_input_as_shown_goes_through() {
    let hex = "000a0d80000e0c00ff0c090494002b000004000c01000001000bffff01000030000a000a090000000a0cff0001000bffff01\
               000030000a000a0900ff09fb4900ff0cffff000000f3ffff01000000005600001f1f1f17002600000000f4040419000000f7\
               0000ffff0cffffff0a0000f900b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1\
               b1b1b1b10100000100010000000000000000090494002b000000000c010000010097ffff1c0000300a090e0c00ff0c09";
    let data: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    for mode in [DecodeMode::Auto, DecodeMode::Reference] {
        let d = Decoder::new(DecodeConfig {
            mode,
            ..Default::default()
        });
        let mut out = Vec::new();
        // as the fuzz target does: twice, so that held sets may be released
        for _ in 0..2 {
            let st = d.decode(SRC.parse().unwrap(), 0, &data, &mut out);
            assert!(st.error.is_some());
            assert!(d.metrics.total_errors() > 0);
        }
        assert!(out.is_empty());
    }
}

/// The crash's path: a data set arrives before its template, is held, and is decoded
/// by the walker when the template (flowEndSeconds as a variable-length field) comes.
#[test]
fn held_set_with_a_wide_flow_end_seconds_is_counted_when_released() {
    let specs = [(8, 4), (1, 4), (151, 0xffff)];
    let rec = |last: u8, end: &[u8]| {
        [
            vec![10, 0, 0, last],
            be(9, 4),
            vec![end.len() as u8],
            end.to_vec(),
        ]
        .concat()
    };
    let both = ipfix(
        &specs,
        &[
            rec(1, &[0xff; 8]),                                        // 2^64 - 1 seconds
            rec(2, &[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), // 2^63 - 1
            rec(3, &be(1_764_000_060, 5)),                             // 5 bytes, fits
        ],
    );
    // the same message cut in two: data set first, template after
    let tlen = 4 + 4 + 4 * specs.len();
    let (hdr, sets) = both.split_at(16);
    let (tset, dset) = sets.split_at(tlen);
    let message = |set: &[u8]| {
        let mut m = hdr.to_vec();
        m[2..4].copy_from_slice(&((16 + set.len()) as u16).to_be_bytes());
        m.extend_from_slice(set);
        m
    };
    for mode in [DecodeMode::Auto, DecodeMode::Reference] {
        let d = Decoder::new(DecodeConfig {
            mode,
            ..Default::default()
        });
        let mut out = Vec::new();
        let held = d.decode(SRC.parse().unwrap(), 0, &message(dset), &mut out);
        assert_eq!(held.records, 0);
        let released = d.decode(SRC.parse().unwrap(), 0, &message(tset), &mut out);
        assert_eq!(released.records, 1, "{mode:?}");
        assert_eq!(d.metrics.error_count(DecodeError::ValueOutOfRange), 2);
        assert_eq!(
            (out.len(), out[0].bytes, out[0].end_ms),
            (1, 9, 1_764_000_060_000)
        );
    }
}

#[test]
fn times_in_seconds_beyond_year_9999_drop_the_record() {
    // sourceIPv4Address, destinationIPv4Address, octetDeltaCount, flowStartSeconds and
    // flowEndSeconds as 8-byte values.
    let specs = [(8, 4), (12, 4), (1, 8), (150, 8), (151, 8)];
    let rec = |last: u8, start: u64, end: u64| {
        [
            vec![10, 0, 0, last],
            vec![10, 0, 1, 1],
            be(1000 + u64::from(last), 8),
            be(start, 8),
            be(end, 8),
        ]
        .concat()
    };
    let datagram = ipfix(
        &specs,
        &[
            rec(1, 1_764_000_000, 1_764_000_060),
            rec(2, 1_764_000_000, 1 << 62), // * 1000 overflows i64
            rec(3, 1_764_000_000, 253_402_300_800), // 10000-01-01: one second too late
            rec(4, 253_402_300_799, 253_402_300_799), // 9999-12-31T23:59:59: the last that fits
            rec(5, u64::MAX, 1_764_000_060),
        ],
    );
    for (out, bad) in decode_both(&datagram) {
        assert_eq!(bad, 3);
        let got: Vec<(u64, i64, i64)> = out
            .iter()
            .map(|r| (r.bytes, r.start_ms, r.end_ms))
            .collect();
        assert_eq!(
            got,
            vec![
                (1001, 1_764_000_000_000, 1_764_000_060_000),
                (1004, 253_402_300_799_000, 253_402_300_799_000)
            ]
        );
    }
}

#[test]
fn milliseconds_with_the_top_bit_set_are_out_of_range_not_negative() {
    // flowStartMilliseconds / flowEndMilliseconds: the fast path's 64-bit operations
    let specs = [(8, 4), (1, 4), (152, 8), (153, 8)];
    let rec = |last: u8, start: u64, end: u64| {
        [vec![10, 0, 0, last], be(77, 4), be(start, 8), be(end, 8)].concat()
    };
    let datagram = ipfix(
        &specs,
        &[
            rec(1, 1 << 63, 1_764_000_000_500),
            rec(2, 1_764_000_000_000, u64::MAX),
            rec(3, 1_764_000_000_000, 1_764_000_000_500),
        ],
    );
    for (out, bad) in decode_both(&datagram) {
        assert_eq!(bad, 2);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].start_ms, out[0].end_ms),
            (1_764_000_000_000, 1_764_000_000_500)
        );
    }
}

#[test]
fn counters_that_overflow_once_sampled_drop_the_record() {
    // octetDeltaCount (8), packetDeltaCount (8), samplingInterval (4)
    let specs = [(8, 4), (1, 8), (2, 8), (34, 4)];
    let rec = |last: u8, bytes: u64, packets: u64, interval: u64| {
        [
            vec![10, 0, 0, last],
            be(bytes, 8),
            be(packets, 8),
            be(interval, 4),
        ]
        .concat()
    };
    // 18 446 744 073 709 551 615 / 1000 = 18 446 744 073 709 551 (rounded down)
    let datagram = ipfix(
        &specs,
        &[
            rec(1, 1 << 40, 10, 1 << 24), // 2^64 bytes
            rec(2, 100, 1 << 60, 16),     // 2^64 packets
            rec(3, 18_446_744_073_709_551, 3, 1000),
            rec(4, 18_446_744_073_709_552, 3, 1000), // one more overflows
        ],
    );
    for (out, bad) in decode_both(&datagram) {
        assert_eq!(bad, 3);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].bytes, out[0].packets, out[0].sampling_rate),
            (18_446_744_073_709_551_000, 3000, 1000)
        );
    }
}

#[test]
fn numbers_wider_than_their_field_drop_the_record() {
    // protocolIdentifier sent in 2 bytes; octetDeltaCount sent in 16 bytes
    let specs = [(8, 4), (4, 2), (1, 16)];
    let rec = |last: u8, proto: u64, hi: u64, lo: u64| {
        [vec![10, 0, 0, last], be(proto, 2), be(hi, 8), be(lo, 8)].concat()
    };
    let datagram = ipfix(
        &specs,
        &[
            rec(1, 6, 0, 4242),      // fits: protocol 6, 4242 bytes
            rec(2, 262, 0, 4242),    // protocol 262 does not fit a byte
            rec(3, 17, 1, 4242),     // 2^64 + 4242 bytes
            rec(4, 17, 0, u64::MAX), // the widest that fits
        ],
    );
    for (out, bad) in decode_both(&datagram) {
        assert_eq!(bad, 2);
        let got: Vec<(u8, u64)> = out.iter().map(|r| (r.protocol, r.bytes)).collect();
        assert_eq!(got, vec![(6, 4242), (17, u64::MAX)]);
    }
}

#[test]
fn variable_length_records_check_their_values_too() {
    // interfaceName (82) variable-length puts the template on the walker
    let specs = [(8, 4), (1, 4), (151, 8), (82, 0xffff)];
    let rec = |last: u8, end: u64| {
        [
            vec![10, 0, 0, last],
            be(500, 4),
            be(end, 8),
            vec![2, b'e', b'0'],
        ]
        .concat()
    };
    let datagram = ipfix(&specs, &[rec(1, 1 << 61), rec(2, 1_764_000_060)]);
    for (out, bad) in decode_both(&datagram) {
        assert_eq!(bad, 1);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].bytes, out[0].end_ms), (500, 1_764_000_060_000));
    }
}
