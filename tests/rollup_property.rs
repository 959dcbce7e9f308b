//! Random enriched flows -> rollups: totals per bucket and per resolution equal a naive
//! computation over the same flows (bytes, packets, sessions, distinct flows), the
//! overflow row included.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use nagare::enrich::Tables;
use nagare::enrich::fold::FoldLimits;
use nagare::enrich::geoip::GeoTable;
use nagare::enrich::inventory::Inventory;
use nagare::model::{ExporterId, FlowRecord};
use nagare::rollup::shard::Shard;
use nagare::rollup::store::Store;
use nagare::rollup::{FlowIn, ResolutionConfig};
use proptest::prelude::*;

const NOW_MS: i64 = 1_764_000_000_000;

#[derive(Debug, Clone)]
struct Session {
    client: u8,
    server: u8,
    cport: u16,
    sport: u16,
    proto: u8,
    exporter: u8,
    /// (offset seconds from the session start, forward?, bytes, packets)
    records: Vec<(u16, bool, u32, u16)>,
    start: u32,
}

fn arb_session() -> impl Strategy<Value = Session> {
    (
        0u8..12,
        0u8..12,
        40_000u16..40_030,
        prop_oneof![Just(22u16), Just(443), Just(53), Just(3389)],
        prop_oneof![Just(6u8), Just(17)],
        0u8..2,
        proptest::collection::vec((0u16..400, any::<bool>(), 1u32..100_000, 1u16..50), 1..6),
        0u32..7200,
    )
        .prop_map(
            |(client, server, cport, sport, proto, exporter, records, start)| Session {
                client,
                server: if server == client {
                    (server + 1) % 12
                } else {
                    server
                },
                cport,
                sport,
                proto,
                exporter,
                records,
                start,
            },
        )
}

fn ip(i: u8) -> IpAddr {
    format!("10.0.{}.{}", i / 4, i + 1).parse().unwrap()
}

/// One record of a session as a shard receives it.
fn flow_in(s: &Session, rec: (u16, bool, u32, u16), first: bool) -> FlowIn {
    flow_in_at(s, rec, first, NOW_MS - 3 * 3_600_000)
}

/// The same, with the session start relative to `base_ms`.
fn flow_in_at(s: &Session, rec: (u16, bool, u32, u16), first: bool, base_ms: i64) -> FlowIn {
    let (off, fwd, bytes, packets) = rec;
    // the first record is the client's SYN so the client is known for sure
    let fwd = fwd || first;
    let (src, sp, dst, dp) = if fwd {
        (ip(s.client), s.cport, ip(s.server), s.sport)
    } else {
        (ip(s.server), s.sport, ip(s.client), s.cport)
    };
    let start_ms = base_ms + i64::from(s.start + u32::from(off)) * 1000;
    let mut r = FlowRecord::empty(
        ExporterId::new(format!("192.0.2.{}", s.exporter + 1).parse().unwrap(), 0),
        10,
    );
    r.src = src;
    r.dst = dst;
    r.src_port = sp;
    r.dst_port = dp;
    r.protocol = s.proto;
    r.tcp_flags = if first { 0x02 } else { 0x18 };
    r.bytes = u64::from(bytes);
    r.packets = u64::from(packets);
    r.start_ms = start_ms;
    r.end_ms = start_ms + 500;
    // replies enter where requests leave
    r.in_if = if fwd { 1 } else { 2 };
    r.out_if = if fwd { 2 } else { 1 };
    FlowIn::from_record(&r)
}

#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
struct Tot {
    flows: u64,
    bytes: u64,
    packets: u64,
    sessions: u64,
}

fn resolutions(cap: usize) -> Vec<ResolutionConfig> {
    [60u32, 300, 3600]
        .iter()
        .map(|&s| ResolutionConfig {
            seconds: s,
            retention_secs: 30 * 86_400,
            max_rows: cap,
            grace_secs: 10,
            max_future_secs: 300,
        })
        .collect()
}

/// Totals per (resolution, bucket start).
type PerBucket = BTreeMap<(u32, i64), Tot>;
/// Distinct flow keys (client, server, port, proto, observation) per bucket.
type FlowKeys = HashMap<(u32, i64), BTreeSet<(IpAddr, IpAddr, u16, u8, u8)>>;
/// The same as stored (the exporter by address).
type StoredKeys = HashMap<(u32, i64), BTreeSet<(IpAddr, IpAddr, u16, u8, IpAddr)>>;

/// A shard of `store` whose sessions never idle out within a test.
fn shard(id: usize, store: &Arc<Store>) -> Shard {
    Shard::detached(
        id,
        store.clone(),
        FoldLimits {
            max_sessions: 1_000_000,
            idle_ms: 86_400_000,
        },
    )
}

/// One generated session per 5-tuple (two would be one session to any collector).
fn distinct_sessions(sessions: &[Session]) -> Vec<Session> {
    let mut seen = BTreeSet::new();
    sessions
        .iter()
        .filter(|s| {
            let a = (s.client, s.cport);
            let b = (s.server, s.sport);
            seen.insert((a.min(b), a.max(b), s.proto))
        })
        .cloned()
        .collect()
}

/// Naive totals per (resolution, bucket) of records (start ms, session, flow).
fn naive_totals(sessions: &[Session], recs: &[(i64, usize, FlowIn)]) -> PerBucket {
    let mut tot: PerBucket = BTreeMap::new();
    let mut keys: FlowKeys = HashMap::new();
    let mut seen_session = BTreeSet::new();
    for (ms, si, f) in recs {
        let s = &sessions[*si];
        let new_session = seen_session.insert(*si);
        for res in [60u32, 300, 3600] {
            let b = (ms / 1000).div_euclid(i64::from(res)) * i64::from(res);
            let e = tot.entry((res, b)).or_default();
            e.bytes += f.bytes;
            e.packets += f.packets;
            e.sessions += u64::from(new_session);
            keys.entry((res, b)).or_default().insert((
                ip(s.client),
                ip(s.server),
                s.sport,
                s.proto,
                s.exporter,
            ));
        }
    }
    for (k, v) in keys {
        if let Some(e) = tot.get_mut(&k) {
            e.flows = v.len() as u64;
        }
    }
    tot
}

fn run(sessions: &[Session], cap: usize, shards: usize) -> (PerBucket, PerBucket) {
    let sessions = &distinct_sessions(sessions)[..];
    let t = Tables::build(Inventory::empty(), 1);
    // records in time order, as an exporter would send them
    let mut recs: Vec<(i64, usize, FlowIn)> = Vec::new();
    for (si, s) in sessions.iter().enumerate() {
        let mut rs = s.records.clone();
        rs.sort_by_key(|r| r.0);
        for (k, r) in rs.iter().enumerate() {
            let f = flow_in(s, *r, k == 0);
            recs.push((f.start_ms, si, f));
        }
    }
    recs.sort_by_key(|r| (r.0, r.1));

    let naive = naive_totals(sessions, &recs);

    // Rollups.
    let store = Store::new(None, resolutions(cap), shards, 0);
    let mut sh: Vec<Shard> = (0..shards).map(|i| shard(i, &store)).collect();
    for chunk in recs.chunks(37) {
        let mut per: Vec<Vec<FlowIn>> = vec![vec![]; shards];
        for (_, _, f) in chunk {
            per[f.shard_of(shards)].push(*f);
        }
        for (i, v) in per.iter().enumerate() {
            sh[i].ingest(v, &t, &GeoTable::default(), NOW_MS);
        }
    }
    // tick once (closes the late buckets), then flush the rest
    for s in sh.iter_mut() {
        s.tick_and_commit(NOW_MS + 10_000);
        s.commit_final();
    }
    let view = store.view();
    let mut got: BTreeMap<(u32, i64), Tot> = BTreeMap::new();
    for idx in &view.closed {
        for (b, cs) in &idx.buckets {
            let e = got.entry((idx.res, *b)).or_default();
            for c in cs {
                let (flows, bytes, packets, sessions) = c.totals();
                e.flows += flows;
                e.bytes += bytes;
                e.packets += packets;
                e.sessions += sessions;
                assert!(c.rows.len() <= cap);
                assert!(c.overflow.flows_exact);
            }
        }
    }
    assert!(
        view.open.iter().all(|o| o.is_empty()),
        "open buckets left after the final flush"
    );
    (naive, got)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(60))]
    #[test]
    fn rollup_totals_equal_naive(sessions in proptest::collection::vec(arb_session(), 1..120), cap in prop_oneof![Just(3usize), Just(20), Just(100_000)], shards in 1usize..3) {
        let (naive, got) = run(&sessions, cap, shards);
        prop_assert_eq!(naive, got);
    }
}

/// `n` fixed sessions among 12 clients and 12 servers on SSH, HTTPS and DNS, seen by
/// two exporters: session `i` has `records(i)` and starts at second `start(i)`.
fn fixed_sessions(
    n: usize,
    records: impl Fn(usize) -> Vec<(u16, bool, u32, u16)>,
    start: impl Fn(usize) -> u32,
) -> Vec<Session> {
    (0..n)
        .map(|i| Session {
            client: (i % 12) as u8,
            server: ((i / 12) % 12) as u8 ^ 1,
            cport: 40_000 + (i % 30) as u16,
            sport: [22, 443, 53][i % 3],
            proto: if i % 3 == 2 { 17 } else { 6 },
            exporter: (i % 2) as u8,
            records: records(i),
            start: start(i),
        })
        .collect()
}

/// The same with the cap so small that most flows overflow, checked on one fixed input.
#[test]
fn overflow_row_keeps_totals_exact() {
    let sessions = fixed_sessions(
        200,
        |i| vec![(0, true, 1000 + i as u32, 3), (5, false, 500, 2)],
        |i| (i * 17 % 3600) as u32,
    );
    let (naive, got) = run(&sessions, 2, 1);
    assert_eq!(naive, got);
    assert!(
        naive.values().any(|t| t.flows > 2),
        "the cap must be exceeded"
    );
}

/// What queries read while buckets are open: coarse buckets are fed by the finest ones as
/// those close, so every resolution must answer the same totals (as `StoreView::chunks`
/// returns them) with everything open, after the finest buckets closed into the coarse
/// ones, and with new records pending in an open finest bucket again.
#[test]
fn open_buckets_answer_at_every_resolution() {
    let hour = NOW_MS.div_euclid(3_600_000) * 3_600_000;
    let base = hour + 10 * 60_000;
    let now = hour + 35 * 60_000;
    let sessions = fixed_sessions(
        150,
        |i| {
            vec![
                (0, true, 1000 + i as u32, 3),
                (90, false, 500, 2),
                (200, true, 7, 1),
            ]
        },
        |i| (i * 7 % 1200) as u32,
    );
    let sessions = distinct_sessions(&sessions);
    let t = Tables::build(Inventory::empty(), 1);
    let mut recs: Vec<(i64, usize, FlowIn)> = Vec::new();
    for (si, s) in sessions.iter().enumerate() {
        for (k, r) in s.records.iter().enumerate() {
            let f = flow_in_at(s, *r, k == 0, base);
            recs.push((f.start_ms, si, f));
        }
    }
    recs.sort_by_key(|r| (r.0, r.1));
    // a last record in the current minute, ingested after the finest buckets closed
    let late_ms = now + 85_000;
    let late = {
        let s = &sessions[0];
        let mut f = flow_in_at(s, (0, true, 4242, 4), false, base);
        f.start_ms = late_ms;
        f.end_ms = late_ms + 100;
        f
    };

    let naive = |recs: &[(i64, usize, FlowIn)]| naive_totals(&sessions, recs);
    // totals per (resolution, bucket) from what a query at that resolution reads;
    // flows are distinct (client, server, port, proto, exporter) across chunks
    let read = |store: &Store| -> PerBucket {
        let view = store.view();
        let mut tot: PerBucket = BTreeMap::new();
        let mut keys: StoredKeys = HashMap::new();
        for res in [60u32, 300, 3600] {
            for c in view.chunks(res, 0, i64::MAX) {
                let b = c.start.div_euclid(i64::from(res)) * i64::from(res);
                assert!(c.overflow.is_empty());
                let e = tot.entry((res, b)).or_default();
                let (_, bytes, packets, sessions) = c.totals();
                e.bytes += bytes;
                e.packets += packets;
                e.sessions += sessions;
                for r in &c.rows {
                    keys.entry((res, b)).or_default().insert((
                        c.endpoints.get(r.src as usize).unwrap().ip,
                        c.endpoints.get(r.dst as usize).unwrap().ip,
                        r.port,
                        r.proto,
                        c.obs[r.obs as usize].exporter.ip,
                    ));
                }
            }
        }
        for (k, v) in keys {
            if let Some(e) = tot.get_mut(&k) {
                e.flows = v.len() as u64;
            }
        }
        tot
    };

    let store = Store::new(None, resolutions(100_000), 1, 0);
    let mut sh = shard(0, &store);
    let flows: Vec<FlowIn> = recs.iter().map(|r| r.2).collect();
    sh.ingest(&flows, &t, &GeoTable::default(), now);
    // everything open
    sh.tick_and_commit(now + 1_000);
    let view = store.view();
    assert!(view.closed.iter().all(|i| i.buckets.is_empty()));
    assert_eq!(read(&store), naive(&recs));
    // the finest buckets closed into the coarse ones, which stay open a moment (a
    // bucket first opened by a merge lingers like one reopened by late records)
    sh.tick_and_commit(now + 80_000);
    let closed = |res: u32| {
        store
            .view()
            .closed
            .iter()
            .find(|i| i.res == res)
            .map_or(0, |i| i.buckets.len())
    };
    assert!(closed(60) >= 20, "finest buckets closed: {}", closed(60));
    assert_eq!((closed(300), closed(3600)), (0, 0));
    assert_eq!(read(&store), naive(&recs));
    // then the 5-minute buckets close; the hour stays open
    sh.tick_and_commit(now + 84_000);
    assert!(closed(300) >= 4, "5-minute buckets closed: {}", closed(300));
    assert_eq!(closed(3600), 0);
    assert_eq!(read(&store), naive(&recs));
    // a new record pending in an open finest bucket of the same hour
    sh.ingest(&[late], &t, &GeoTable::default(), late_ms + 1_000);
    sh.tick_and_commit(late_ms + 2_000);
    let mut all = recs.clone();
    all.push((late_ms, 0, late));
    assert_eq!(read(&store), naive(&all));
    // and after the final flush, from closed chunks only
    sh.commit_final();
    assert_eq!(read(&store), naive(&all));
}

/// A cardinality explosion (a scan): past the exactly counted overflow flows, the
/// overflow's distinct-flow count is an estimate within 5% (three standard errors of
/// the sketch), in the finest bucket and in the coarse buckets it cascades into; every
/// other total stays exact.
#[test]
fn overflow_flow_count_is_estimated_past_exact_tracking() {
    let hour = NOW_MS.div_euclid(3_600_000) * 3_600_000;
    let t_ms = hour + 10 * 60_000 + 5_000;
    let n: u64 = 30_000;
    let cap = 10;
    let t = Tables::build(Inventory::empty(), 1);
    let flows: Vec<FlowIn> = (0..n)
        .map(|i| {
            let mut r = FlowRecord::empty(ExporterId::new("192.0.2.1".parse().unwrap(), 0), 10);
            r.src = IpAddr::from([10, 1, 0, 1]);
            r.dst = IpAddr::from([10, 2, (i >> 8) as u8, i as u8]);
            r.src_port = 40_000;
            r.dst_port = 22;
            r.protocol = 6;
            r.tcp_flags = 0x02;
            r.bytes = 60;
            r.packets = 1;
            r.start_ms = t_ms;
            r.end_ms = t_ms;
            FlowIn::from_record(&r)
        })
        .collect();
    let store = Store::new(None, resolutions(cap), 1, 0);
    let mut sh = shard(0, &store);
    for chunk in flows.chunks(2048) {
        sh.ingest(chunk, &t, &GeoTable::default(), t_ms + 1_000);
    }
    sh.commit_final();
    let view = store.view();
    for idx in &view.closed {
        let cs: Vec<_> = idx.buckets.values().flatten().collect();
        assert_eq!(cs.len(), 1, "res {}", idx.res);
        let c = cs[0];
        let (rows, bytes, packets, sessions) = c.totals();
        assert_eq!(c.rows.len(), cap);
        assert_eq!(
            (bytes, packets, sessions),
            (60 * n, n, n),
            "res {}",
            idx.res
        );
        let want = (n - cap as u64) as f64;
        let got = c.overflow.flows as f64;
        assert!(!c.overflow.flows_exact);
        assert!(
            (got - want).abs() / want <= 0.05,
            "res {}: estimated {got} overflowed flows of {want}",
            idx.res
        );
        assert_eq!(rows, cap as u64 + c.overflow.flows);
    }
}

/// An open bucket's snapshots share what did not change: after new rows and one
/// updated row, the next snapshot reuses the previous one's full, untouched segments
/// of rows and endpoints, copies the rest, and both snapshots keep their own totals.
#[test]
fn open_snapshots_share_unchanged_segments() {
    use nagare::rollup::segvec::SEG_LEN;
    let hour = NOW_MS.div_euclid(3_600_000) * 3_600_000;
    let t_ms = hour + 10 * 60_000 + 5_000;
    let t = Tables::build(Inventory::empty(), 1);
    // flow i: client 10.1.x.y (one each), one server, SYN from the client
    let flow = |i: u32, bytes: u64| {
        let mut r = FlowRecord::empty(ExporterId::new("192.0.2.1".parse().unwrap(), 0), 10);
        r.src = IpAddr::from((0x0a01_0000u32 + i).to_be_bytes());
        r.dst = IpAddr::from([10, 2, 0, 1]);
        r.src_port = 40_000;
        r.dst_port = 443;
        r.protocol = 6;
        r.tcp_flags = 0x02;
        r.bytes = bytes;
        r.packets = 1;
        r.start_ms = t_ms;
        r.end_ms = t_ms;
        FlowIn::from_record(&r)
    };
    let first = 3 * SEG_LEN as u32 + 100;
    let store = Store::new(None, resolutions(1_000_000), 1, 0);
    let mut sh = shard(0, &store);
    let batch1: Vec<FlowIn> = (0..first).map(|i| flow(i, 100 + u64::from(i))).collect();
    sh.ingest(&batch1, &t, &GeoTable::default(), t_ms + 1_000);
    sh.tick_and_commit(t_ms + 1_000);
    let open_1m = |store: &Store| {
        let view = store.view();
        let cs: Vec<Arc<nagare::rollup::chunk::Chunk>> = view
            .open
            .iter()
            .flat_map(|s| s.iter())
            .filter(|c| c.res == 60)
            .cloned()
            .collect();
        assert_eq!(cs.len(), 1);
        cs[0].clone()
    };
    let s1 = open_1m(&store);
    let sum1: u64 = (0..first).map(|i| 100 + u64::from(i)).sum();
    assert_eq!(s1.rows.len(), first as usize);
    assert_eq!(s1.totals().1, sum1);
    // 50 new flows, and flow 5 (in the first segment) again with 1 000 bytes more
    let mut batch2: Vec<FlowIn> = (first..first + 50).map(|i| flow(i, 7)).collect();
    let mut again = flow(5, 1_000);
    again.tcp_flags = 0x18;
    batch2.push(again);
    sh.ingest(&batch2, &t, &GeoTable::default(), t_ms + 2_000);
    sh.tick_and_commit(t_ms + 2_000);
    let s2 = open_1m(&store);
    assert_eq!(s2.rows.len(), first as usize + 50);
    assert_eq!(s2.totals().1, sum1 + 50 * 7 + 1_000);
    // rows: segment 0 was written, 1 and 2 were not, 3 was partial
    assert_eq!(s2.rows.shared_with(&s1.rows), 2);
    // endpoints (client 0, the server, clients 1..): 3 full segments, never written
    assert_eq!(s1.endpoints.len(), first as usize + 1);
    assert_eq!(s2.endpoints.shared_with(&s1.endpoints), 3);
    // the earlier snapshot is unchanged, flow 5 included
    assert_eq!(s1.totals().1, sum1);
    let bytes_of = |c: &nagare::rollup::chunk::Chunk, ip: IpAddr| {
        c.rows
            .iter()
            .filter(|r| c.endpoints.get(r.src as usize).unwrap().ip == ip)
            .map(|r| r.bytes())
            .sum::<u64>()
    };
    let c5 = IpAddr::from([10, 1, 0, 5]);
    assert_eq!(bytes_of(&s1, c5), 105);
    assert_eq!(bytes_of(&s2, c5), 1_105);
    // nothing new: the next snapshot is the same chunk
    sh.tick_and_commit(t_ms + 3_000);
    assert!(Arc::ptr_eq(&open_1m(&store), &s2));
}
