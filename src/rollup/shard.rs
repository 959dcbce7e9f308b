//! One rollup shard: folds its flows into sessions, accumulates them into open buckets
//! at every resolution, and hands closed buckets to the store. A shard is owned by one
//! thread; nothing here takes a lock per flow.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use std::hash::Hash;

use rustc_hash::FxHashMap;

use super::chunk::{Chunk, ChunkBuilder, IfaceRow, InternMaps, ObsPoint, Overflow, Row};
use super::idtable::{IdMap, IdSet, Sketch};
use super::segvec::{DirtySegs, SegVec};
use super::store::Store;
use super::{Enriched, FlowIn, ResolutionConfig, ShardMetrics};
use crate::enrich::fold::{FoldLimits, FoldMetrics, Folder, session_hash};
use crate::enrich::geoip::GeoTable;
use crate::enrich::{Tables, classify};
use crate::model::ip_to_u128;

/// Distinct overflowed flows counted exactly per bucket; past it the overflow's flow
/// count is a HyperLogLog estimate (1.6% standard error, 4 KiB per bucket): exact
/// tracking of a cardinality explosion would cost memory and a cache miss per record.
const OVERFLOW_TRACK: usize = 4_096;
/// Observation points a shard interns; past it they share id 0.
const MAX_OBS: usize = 1 << 20;
/// A bucket that receives late records stays open this long after it reopened.
const LATE_LINGER_MS: i64 = 2_000;
/// How many records ahead of folding a session set is prefetched (and of accumulating,
/// a row's index slot).
const PREFETCH_AHEAD: usize = 8;
/// How many records ahead of accumulating a row is looked up in the index (its slot
/// loaded by then) and the row itself prefetched.
const ROW_AHEAD: usize = 4;
/// Open buckets per resolution; past it the oldest-opened closes early.
const MAX_OPEN: usize = 512;

/// A row's identity: (client, server, server port, protocol, observation point),
/// kept as a 64-bit hash (see [`row_hash`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RowKey {
    client: u128,
    server: u128,
    port: u16,
    proto: u8,
    obs: u32,
}

/// The 64-bit identity of a row key, never 0. Two keys of one bucket sharing it is a
/// ~1e-10 event per bucket of 100 000 rows; tables keyed by it need no further hashing
/// ([`super::idtable`]) and hold 8 bytes per key instead of 48.
fn row_hash(k: &RowKey) -> u64 {
    crate::model::hash64(k).max(1)
}

#[derive(Default, Clone, Copy)]
struct IfaceAcc {
    bytes: u64,
    packets: u64,
}

/// An open bucket keeps its rows in chunk form: endpoints and observation points are
/// interned once, when a row is created, so publishing a snapshot is a copy and not a
/// rebuild (a minute of a busy shard is published sixty times).
struct OpenBucket {
    start: i64,
    seq: u64,
    closes_at_ms: i64,
    opened_ms: i64,
    /// row identity ([`row_hash`]) -> index in `rows`
    index: IdMap,
    /// Lookups once the bucket is full: found a row, went to the overflow
    full_hits: u64,
    full_misses: u64,
    /// Flows in the overflow (a flow is a row or here, never both), the first
    /// OVERFLOW_TRACK of them
    overflow_keys: IdSet,
    /// every flow in the overflow (allocated at the first)
    overflow_sketch: Option<Sketch>,
    /// rows in shared copy-on-write segments (see [`SegVec::snapshot`])
    rows: SegVec<Row>,
    /// row segments updated (not only appended to) since the last snapshot: the
    /// snapshot copies them, the bucket goes on writing its own
    updated: DirtySegs,
    /// identity of each row
    row_ids: Vec<u64>,
    cb: ChunkBuilder,
    /// shard observation id -> index in `cb.chunk_obs`
    obs_at: FxHashMap<u32, u32>,
    /// (row, outer source, outer destination) for overlay rows, by row
    outer: Vec<(u32, u32, u32)>,
    overflow: Overflow,
    /// per (flow-direction) observation-point id: traffic as recorded [in client ->
    /// server direction, in server -> client direction] (for switch ports)
    ifaces: FxHashMap<u32, [IfaceAcc; 2]>,
    covers: Vec<u64>,
    /// The last snapshot published for queries, whether the bucket changed since,
    /// and when it was built.
    published: Option<Arc<Chunk>>,
    changed: bool,
    /// A closed finer bucket was merged in: publish at the next tick whatever the
    /// coarse publishing interval says (the finer bucket left the open snapshot).
    merged: bool,
    published_ms: i64,
}

/// What a record or a merged row adds to a row.
fn accumulate(r: &mut Row, a: &Row) {
    r.src_bytes = r.src_bytes.saturating_add(a.src_bytes);
    r.dst_bytes = r.dst_bytes.saturating_add(a.dst_bytes);
    r.packets = r.packets.saturating_add(a.packets);
    r.sessions = r.sessions.saturating_add(a.sessions);
    r.first = r.first.min(a.first);
    r.last = r.last.max(a.last);
    r.tags |= a.tags;
    if a.rule != 0 {
        r.rule = a.rule;
    }
}

/// Seconds relative to a bucket start, as a row stores them.
fn rel(t: i64, start: i64) -> u16 {
    (t - start).clamp(0, i64::from(u16::MAX)) as u16
}

/// The lookup tables of a closed bucket, kept for the level's next bucket: a bucket
/// of a busy shard grows its tables to hundreds of thousands of entries, and fresh
/// memory for them costs the kernel a zeroed page per 4 KiB, once per bucket. Emptied
/// when the bucket closes (on the ticking thread, not the receive path); the rows
/// themselves live on in the closed chunk and are not reused.
struct Spare {
    index: IdMap,
    row_ids: Vec<u64>,
    maps: InternMaps,
    obs_at: FxHashMap<u32, u32>,
}

impl Spare {
    fn of(b: &mut OpenBucket) -> Self {
        let mut s = Self {
            index: std::mem::take(&mut b.index),
            row_ids: std::mem::take(&mut b.row_ids),
            maps: b.cb.take_maps(),
            obs_at: std::mem::take(&mut b.obs_at),
        };
        s.index.clear();
        s.row_ids.clear();
        s.maps.0.clear();
        s.maps.1.clear();
        s.obs_at.clear();
        s
    }
}

impl OpenBucket {
    fn new(start: i64, seq: u64, closes_at_ms: i64, now_ms: i64, spare: Option<Spare>) -> Self {
        let Spare {
            index,
            row_ids,
            maps,
            obs_at,
        } = spare.unwrap_or_else(|| Spare {
            index: IdMap::default(),
            row_ids: Vec::new(),
            maps: InternMaps::default(),
            obs_at: FxHashMap::default(),
        });
        Self {
            start,
            seq,
            closes_at_ms,
            opened_ms: now_ms,
            index,
            full_hits: 0,
            full_misses: 0,
            rows: SegVec::default(),
            updated: DirtySegs::default(),
            row_ids,
            cb: ChunkBuilder::with_maps(maps),
            obs_at,
            outer: Vec::new(),
            overflow: Overflow {
                flows_exact: true,
                ..Default::default()
            },
            overflow_keys: IdSet::default(),
            overflow_sketch: None,
            ifaces: FxHashMap::default(),
            covers: Vec::new(),
            published: None,
            changed: true,
            merged: false,
            published_ms: 0,
        }
    }

    /// The chunk index of shard observation point `id`.
    fn obs_index(&mut self, id: u32, obs_list: &[ObsPoint]) -> u32 {
        if let Some(&i) = self.obs_at.get(&id) {
            return i;
        }
        let o = obs_list
            .get(id as usize)
            .copied()
            .unwrap_or_else(unknown_obs);
        let i = self.cb.obs(&o);
        self.obs_at.insert(id, i);
        i
    }

    fn add_overflow(&mut self, id: u64, a: &Row) {
        let o = &mut self.overflow;
        o.src_bytes = o.src_bytes.saturating_add(a.src_bytes);
        o.dst_bytes = o.dst_bytes.saturating_add(a.dst_bytes);
        o.packets = o.packets.saturating_add(a.packets);
        o.sessions = o.sessions.saturating_add(u64::from(a.sessions));
        self.count_overflow_flow(id);
    }

    fn count_overflow_flow(&mut self, id: u64) {
        self.overflow_sketch
            .get_or_insert_with(Sketch::default)
            .add(id);
        if !self.overflow.flows_exact {
            return;
        }
        if self.overflow_keys.len() < OVERFLOW_TRACK {
            if self.overflow_keys.insert(id) {
                self.overflow.flows = self.overflow.flows.saturating_add(1);
            }
        } else if !self.overflow_keys.contains(id) {
            self.overflow.flows_exact = false;
        }
    }

    /// The overflow as stored: an exact distinct-flow count, or the sketch's estimate
    /// (never below what was counted exactly).
    fn overflow_totals(&self) -> Overflow {
        let mut o = self.overflow;
        if !o.flows_exact
            && let Some(s) = &self.overflow_sketch
        {
            o.flows = o.flows.max(s.estimate());
        }
        o
    }

    /// Whether a lookup in the full bucket finds a row often enough (a fifth of the
    /// time) to be worth loading the row key ahead: when nearly every lookup misses (a
    /// flood of new flows past the cap), the slot tags alone answer it.
    fn full_hits_matter(&self) -> bool {
        self.full_hits.saturating_mul(4) >= self.full_misses
    }

    /// Adds `a` (its port and protocol set) to the row `id`, creating it below the cap
    /// with the endpoints, observation point, outer pair and tags `ends` interns into
    /// this bucket, else to the overflow. Returns false when it went to the overflow.
    fn upsert(
        &mut self,
        id: u64,
        cap: usize,
        a: &Row,
        ends: impl FnOnce(&mut Self) -> (u32, u32, u32, Option<(u32, u32)>, u32),
    ) -> bool {
        let n = self.rows.len();
        let full = n >= cap;
        if let Some(at) = self.index.get(id) {
            if let Some(r) = self.rows.get_mut(at as usize) {
                accumulate(r, a);
                self.updated.mark(at as usize);
            }
            self.full_hits += u64::from(full);
            return true;
        }
        self.full_misses += u64::from(full);
        // a flow merged into the overflow earlier (from a finer bucket) stays there
        if n < cap && (self.overflow_keys.is_empty() || !self.overflow_keys.contains(id)) {
            self.index.insert(id, n as u32);
            let (src, dst, obs, outer, tags) = ends(self);
            if let Some((os, od)) = outer {
                self.outer.push((n as u32, os, od));
            }
            self.rows.push(Row {
                src,
                dst,
                obs,
                tags,
                ..*a
            });
            self.row_ids.push(id);
            return true;
        }
        self.add_overflow(id, a);
        false
    }
}

fn unknown_obs() -> ObsPoint {
    ObsPoint {
        exporter: crate::model::ExporterId::new(
            std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            0,
        ),
        in_if: 0,
        out_if: 0,
    }
}

/// A record after folding: what accumulation needs besides the record itself.
struct Prepared {
    /// index of the record in its batch
    i: u32,
    /// row identity
    id: u64,
    fo: crate::enrich::fold::Folded,
    port: u16,
    obs_id: u32,
    start_s: i64,
    end_s: i64,
    /// within the finest level's retention
    fine: bool,
}

/// An open bucket's rows and endpoints as a snapshot shows them.
type OpenParts = (SegVec<Row>, SegVec<crate::enrich::Endpoint>);

/// Coarse open buckets (every level but the finest) are re-published at most this
/// often when records reach them directly (history older than the finest retention);
/// a merged finer bucket publishes them at the next tick.
const COARSE_PUBLISH_MS: i64 = 3_500;
/// A finest open bucket with at least this many rows is re-published like a coarse
/// one: its copy (rows and endpoints, megabytes) would cost more every second than
/// the records it shows.
const LARGE_OPEN_ROWS: usize = 16_384;

struct Level {
    cfg: ResolutionConfig,
    open: BTreeMap<i64, OpenBucket>,
    /// tables of the last bucket closed, for the next one opened
    spare: Option<Spare>,
}

pub struct Shard {
    pub id: usize,
    levels: Vec<Level>,
    folder: Folder,
    obs_ids: FxHashMap<ObsPoint, u32>,
    obs_list: Vec<ObsPoint>,
    /// observation ids that are switch ports
    obs_switch: Vec<bool>,
    /// the last observation point looked up (records of a datagram share it)
    obs_last: Option<(ObsPoint, u32)>,
    store: Arc<Store>,
    pub metrics: Arc<ShardMetrics>,
    pub fold_metrics: Arc<FoldMetrics>,
    dirty: bool,
    /// session hashes and folded records of the batch being ingested (kept for their
    /// allocations)
    hashes: Vec<u64>,
    prepared: Vec<Prepared>,
    /// The latest wall-clock time given by `ingest` or `tick` (retention at the final
    /// flush is judged by it).
    now_ms: i64,
    /// Tests: the next `ingest` panics, as a bug would.
    #[cfg(test)]
    pub(crate) panic_on_next_ingest: bool,
}

/// The open bucket starting at `b` of a level, opened if needed.
fn open_bucket<'a>(
    level: &'a mut Level,
    b: i64,
    now_ms: i64,
    store: &Store,
    close_after_s: i64,
) -> &'a mut OpenBucket {
    let res = i64::from(level.cfg.seconds);
    let grace = level.cfg.grace_secs.max(close_after_s);
    let spare = &mut level.spare;
    level.open.entry(b).or_insert_with(|| {
        let due = (b + res + grace) * 1000;
        OpenBucket::new(
            b,
            store.next_seq(),
            due.max(now_ms + LATE_LINGER_MS),
            now_ms,
            spare.take(),
        )
    })
}

impl Shard {
    /// A shard with metrics of its own (not exported): tests, benchmarks, tools.
    pub fn detached(id: usize, store: Arc<Store>, fold: FoldLimits) -> Self {
        Self::new(
            id,
            store,
            fold,
            Arc::new(ShardMetrics::default()),
            Arc::new(FoldMetrics::default()),
        )
    }

    pub fn new(
        id: usize,
        store: Arc<Store>,
        fold: FoldLimits,
        metrics: Arc<ShardMetrics>,
        fold_metrics: Arc<FoldMetrics>,
    ) -> Self {
        let levels = store
            .resolutions()
            .iter()
            .map(|cfg| Level {
                cfg: cfg.clone(),
                open: BTreeMap::new(),
                spare: None,
            })
            .collect();
        Self {
            id,
            levels,
            folder: Folder::new(fold),
            obs_ids: FxHashMap::default(),
            obs_list: vec![],
            obs_switch: vec![],
            obs_last: None,
            store,
            metrics,
            fold_metrics,
            dirty: false,
            hashes: Vec::new(),
            prepared: Vec::new(),
            now_ms: 0,
            #[cfg(test)]
            panic_on_next_ingest: false,
        }
    }

    fn obs_id(&mut self, o: &ObsPoint, switch_port: bool) -> u32 {
        if let Some((last, i)) = &self.obs_last
            && last == o
        {
            return *i;
        }
        let i = if let Some(&i) = self.obs_ids.get(o) {
            i
        } else if self.obs_list.len() >= MAX_OBS {
            0
        } else {
            let i = self.obs_list.len() as u32;
            self.obs_list.push(*o);
            self.obs_switch.push(switch_port);
            self.obs_ids.insert(*o, i);
            i
        };
        self.obs_last = Some((*o, i));
        i
    }

    /// Sessions currently tracked.
    pub fn sessions(&self) -> usize {
        self.folder.len()
    }

    pub fn open_buckets(&self) -> usize {
        self.levels.iter().map(|l| l.open.len()).sum()
    }

    /// Grace of the finest level: a coarse bucket stays open until its last finer
    /// bucket closed and merged into it.
    fn fine_grace(&self) -> i64 {
        self.levels.first().map_or(0, |l| l.cfg.grace_secs)
    }

    /// Folds and accumulates a batch of flows. `now_ms` is wall-clock time.
    ///
    /// A record within the finest level's retention is accumulated there only; coarse
    /// levels receive the finest buckets as they close ([`Self::cascade`]). Older
    /// records (history) go directly to every coarse level that still keeps them.
    ///
    /// At high rates nearly every lookup misses the caches (session table, row index,
    /// overflow set), so the batch goes in passes that know each record's table slots
    /// before they are needed: hash the sessions; fold (session sets prefetched a few
    /// records ahead) and compute each row's identity; accumulate (row index and
    /// overflow slots prefetched a few records ahead).
    pub fn ingest(&mut self, flows: &[FlowIn], tables: &Tables, geo: &GeoTable, now_ms: i64) {
        #[cfg(test)]
        if std::mem::take(&mut self.panic_on_next_ingest) {
            panic!("test: shard {} ingest", self.id);
        }
        self.now_ms = self.now_ms.max(now_ms);
        let now_s = now_ms.div_euclid(1000);
        self.metrics.records.add(flows.len() as u64);
        let mut hashes = std::mem::take(&mut self.hashes);
        hashes.clear();
        hashes.extend(
            flows
                .iter()
                .map(|f| session_hash(f.src, f.src_port, f.dst, f.dst_port, f.proto)),
        );
        let mut prep = std::mem::take(&mut self.prepared);
        prep.clear();
        let fine_from = self
            .levels
            .first()
            .map_or(i64::MAX, |l| now_s - l.cfg.retention_secs);
        let max_future = self.store_max_future();
        for &h in hashes.iter().take(PREFETCH_AHEAD) {
            self.folder.prefetch(h);
        }
        for (i, f) in flows.iter().enumerate() {
            if let Some(&h) = hashes.get(i + PREFETCH_AHEAD) {
                self.folder.prefetch(h);
            }
            let start_s = f.start_ms.div_euclid(1000);
            if start_s > now_s + max_future {
                self.metrics.refused_future.inc();
                continue;
            }
            if self
                .levels
                .iter()
                .all(|l| start_s < now_s - l.cfg.retention_secs)
            {
                self.metrics.refused_old.inc();
                continue;
            }
            let biflow = f.rev_bytes > 0 || f.rev_packets > 0;
            let fo = self.folder.fold_hashed(
                hashes.get(i).copied().unwrap_or(1),
                f.src,
                f.src_port,
                f.dst,
                f.dst_port,
                f.proto,
                f.tcp_flags,
                f.biflow_direction,
                biflow,
                || tables.is_group(f.dst),
                f.obs_hash,
                f.start_ms,
            );
            let (client, server, server_port) = if fo.src_is_client {
                (f.src, f.dst, f.dst_port)
            } else {
                (f.dst, f.src, f.src_port)
            };
            // ICMP flows are keyed without ports.
            let port = if f.proto == 1 || f.proto == 58 {
                0
            } else {
                server_port
            };
            // The row's observation point is expressed in the client -> server direction,
            // so a reply (which enters where the request left) joins its request's row.
            let obs_dir = if fo.src_is_client {
                f.obs
            } else {
                ObsPoint {
                    in_if: f.obs.out_if,
                    out_if: f.obs.in_if,
                    ..f.obs
                }
            };
            let obs_id = self.obs_id(&obs_dir, f.switch_port);
            let id = row_hash(&RowKey {
                client: ip_to_u128(client),
                server: ip_to_u128(server),
                port,
                proto: f.proto,
                obs: obs_id,
            });
            prep.push(Prepared {
                i: i as u32,
                id,
                fo,
                port,
                obs_id,
                start_s,
                end_s: f.end_ms.div_euclid(1000).max(start_s),
                fine: start_s >= fine_from,
            });
        }
        self.folder.publish(&self.fold_metrics);
        let overflowed = self.accumulate(flows, &prep, tables, geo, now_ms);
        self.metrics.overflow_records.add(overflowed);
        self.hashes = hashes;
        self.prepared = prep;
    }

    /// The accumulation pass of [`Self::ingest`]. Returns the records that went to an
    /// overflow row.
    fn accumulate(
        &mut self,
        flows: &[FlowIn],
        prep: &[Prepared],
        tables: &Tables,
        geo: &GeoTable,
        now_ms: i64,
    ) -> u64 {
        let now_s = now_ms.div_euclid(1000);
        let fine_grace = self.fine_grace();
        let mut overflowed = 0u64;
        let obs_list = &self.obs_list;
        for (j, p) in prep.iter().enumerate() {
            let Some(f) = flows.get(p.i as usize) else {
                continue;
            };
            let packets = f.packets.saturating_add(f.rev_packets);
            let (cb, sb) = if p.fo.src_is_client {
                (f.bytes, f.rev_bytes)
            } else {
                (f.rev_bytes, f.bytes)
            };
            let mut add = Row {
                src_bytes: cb,
                dst_bytes: sb,
                packets,
                sessions: u32::from(p.fo.new_session),
                rule: f.rule,
                port: p.port,
                proto: f.proto,
                ..Default::default()
            };
            let reply = usize::from(!p.fo.src_is_client);
            let all_bytes = f.bytes.saturating_add(f.rev_bytes);
            // enrichment, done once a row needs it: (client, server, outer pair)
            let mut ends: Option<Enriched> = None;
            for (li, level) in self.levels.iter_mut().enumerate() {
                if p.fine != (li == 0) || p.start_s < now_s - level.cfg.retention_secs {
                    continue;
                }
                let res = i64::from(level.cfg.seconds);
                let b = p.start_s.div_euclid(res) * res;
                let cap = level.cfg.max_rows;
                let close_after = if li == 0 { 0 } else { fine_grace };
                let bucket = open_bucket(level, b, now_ms, &self.store, close_after);
                // the row slot of a record a few ahead (same bucket in nearly every case)
                if let Some(q) = prep.get(j + PREFETCH_AHEAD)
                    && q.start_s.div_euclid(res) * res == b
                {
                    let full = bucket.rows.len() >= cap;
                    bucket
                        .index
                        .prefetch(q.id, !full || bucket.full_hits_matter());
                    if full {
                        bucket.overflow_keys.prefetch(q.id);
                    }
                }
                // the row of a record nearer (its index slot prefetched above), unless
                // lookups in the full bucket rarely find one
                if let Some(q) = prep.get(j + ROW_AHEAD)
                    && q.start_s.div_euclid(res) * res == b
                    && (bucket.rows.len() < cap || bucket.full_hits_matter())
                    && let Some(at) = bucket.index.get(q.id)
                {
                    bucket.rows.prefetch(at as usize);
                }
                bucket.changed = true;
                if f.switch_port {
                    let acc = &mut bucket.ifaces.entry(p.obs_id).or_default()[reply];
                    acc.bytes = acc.bytes.saturating_add(all_bytes);
                    acc.packets = acc.packets.saturating_add(packets);
                }
                if p.fo.duplicate {
                    continue;
                }
                add.first = rel(p.start_s, b);
                add.last = rel(p.end_s, b);
                let stored = bucket.upsert(p.id, cap, &add, |b| {
                    let (c, s, outer) = ends.get_or_insert_with(|| {
                        let (se, de, outer) = f.enrich(tables, geo);
                        if p.fo.src_is_client {
                            (se, de, outer)
                        } else {
                            (de, se, outer.map(|(a, b)| (b, a)))
                        }
                    });
                    (
                        b.cb.endpoint(c),
                        b.cb.endpoint(s),
                        b.obs_index(p.obs_id, obs_list),
                        outer.map(|(os, od)| (b.cb.endpoint(&os), b.cb.endpoint(&od))),
                        classify::tags(c, s),
                    )
                });
                if !stored {
                    overflowed += 1;
                }
            }
            self.dirty = true;
        }
        overflowed
    }

    fn store_max_future(&self) -> i64 {
        self.levels.first().map_or(300, |l| l.cfg.max_future_secs)
    }

    /// Merges a closed finest-level bucket into the open buckets of every coarse level
    /// that keeps its time (rows by key, the overflow with its distinct-flow set, and
    /// the switch-port totals).
    fn cascade(&mut self, fine: &OpenBucket, now_ms: i64) {
        let now_s = now_ms.div_euclid(1000);
        let fine_grace = self.fine_grace();
        for level in self.levels.iter_mut().skip(1) {
            if fine.start < now_s - level.cfg.retention_secs {
                continue;
            }
            let res = i64::from(level.cfg.seconds);
            let b = fine.start.div_euclid(res) * res;
            let cap = level.cfg.max_rows;
            let bucket = open_bucket(level, b, now_ms, &self.store, fine_grace);
            bucket.changed = true;
            bucket.merged = true;
            bucket.covers.push(fine.seq);
            let off = fine.start - b;
            // fine endpoint / observation index -> this bucket's (u32::MAX: not yet)
            let mut ep_at = vec![u32::MAX; fine.cb.chunk_endpoints.len()];
            let mut obs_at = vec![u32::MAX; fine.cb.chunk_obs.len()];
            let mut ep = |cbd: &mut ChunkBuilder, i: u32| -> u32 {
                let Some(slot) = ep_at.get_mut(i as usize) else {
                    return cbd.endpoint(&super::chunk::unknown_endpoint());
                };
                if *slot == u32::MAX {
                    *slot = match fine.cb.chunk_endpoints.get(i as usize) {
                        Some(e) => cbd.endpoint(e),
                        None => cbd.endpoint(&super::chunk::unknown_endpoint()),
                    };
                }
                *slot
            };
            for (ri, (r, &id)) in fine.rows.iter().zip(&fine.row_ids).enumerate() {
                let ri = ri as u32;
                let mut add = *r;
                add.first = rel(i64::from(r.first) + off, 0);
                add.last = rel(i64::from(r.last) + off, 0);
                let outer = fine
                    .outer
                    .binary_search_by_key(&ri, |o| o.0)
                    .ok()
                    .and_then(|k| fine.outer.get(k))
                    .map(|o| (o.1, o.2));
                bucket.upsert(id, cap, &add, |b| {
                    let obs = match obs_at.get_mut(r.obs as usize) {
                        Some(slot) if *slot != u32::MAX => *slot,
                        Some(slot) => {
                            let o = fine.cb.chunk_obs.get(r.obs as usize).copied();
                            *slot = b.cb.obs(&o.unwrap_or_else(unknown_obs));
                            *slot
                        }
                        None => b.cb.obs(&unknown_obs()),
                    };
                    (
                        ep(&mut b.cb, r.src),
                        ep(&mut b.cb, r.dst),
                        obs,
                        outer.map(|(os, od)| (ep(&mut b.cb, os), ep(&mut b.cb, od))),
                        r.tags,
                    )
                });
            }
            let o = &fine.overflow;
            let t = &mut bucket.overflow;
            t.src_bytes = t.src_bytes.saturating_add(o.src_bytes);
            t.dst_bytes = t.dst_bytes.saturating_add(o.dst_bytes);
            t.packets = t.packets.saturating_add(o.packets);
            t.sessions = t.sessions.saturating_add(o.sessions);
            if o.flows_exact {
                for k in fine.overflow_keys.iter() {
                    // a flow with a row here is counted by its row (its overflowed
                    // traffic is in the overflow totals)
                    if !bucket.index.contains(k) {
                        bucket.count_overflow_flow(k);
                    }
                }
            } else {
                // the finer bucket only has an estimate: so does this one
                bucket.overflow.flows_exact = false;
                if let Some(s) = &fine.overflow_sketch {
                    bucket
                        .overflow_sketch
                        .get_or_insert_with(Sketch::default)
                        .merge(s);
                }
            }
            for (&id, accs) in &fine.ifaces {
                let t = bucket.ifaces.entry(id).or_default();
                for (t, a) in t.iter_mut().zip(accs) {
                    t.bytes = t.bytes.saturating_add(a.bytes);
                    t.packets = t.packets.saturating_add(a.packets);
                }
            }
        }
    }

    /// Builds the chunk of a bucket. Closed chunks get a deterministic row order (by
    /// bytes, then key: the same data gives the same file); snapshots of open buckets,
    /// published often and never stored, keep the insertion order.
    fn build(&self, res: u32, b: &OpenBucket, open: Option<OpenParts>) -> Chunk {
        let (rows, endpoints, outer) = if let Some((rows, endpoints)) = open {
            (rows, endpoints, b.outer.clone())
        } else {
            // rows by bytes (descending), then (client, server, port, protocol,
            // observation point): the sort keys are gathered once, so comparing two
            // rows reads no endpoint
            let ep_key = |i: u32| match b.cb.chunk_endpoints.get(i as usize).map(|e| e.ip) {
                None => (0u8, 0u128),
                Some(IpAddr::V4(a)) => (1, u128::from(u32::from(a))),
                Some(IpAddr::V6(a)) => (2, u128::from(a)),
            };
            let mut keys: Vec<_> = b
                .rows
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    (
                        std::cmp::Reverse(r.bytes()),
                        ep_key(r.src),
                        ep_key(r.dst),
                        r.port,
                        r.proto,
                        r.obs,
                        i as u32,
                    )
                })
                .collect();
            keys.sort_unstable();
            let order: Vec<u32> = keys.iter().map(|k| k.6).collect();
            drop(keys);
            let mut pos = vec![0u32; b.rows.len()];
            for (new, &old) in order.iter().enumerate() {
                pos[old as usize] = new as u32;
            }
            let rows: SegVec<Row> = order.iter().map(|&i| b.rows[i as usize]).collect();
            let mut outer: Vec<(u32, u32, u32)> = b
                .outer
                .iter()
                .map(|&(r, s, d)| (pos.get(r as usize).copied().unwrap_or(r), s, d))
                .collect();
            outer.sort_unstable();
            let endpoints = b.cb.chunk_endpoints.trimmed();
            (rows, endpoints, outer)
        };
        // switch ports: each observation's traffic counts in on its input interface and
        // out on its output interface
        let mut ifs: FxHashMap<(crate::model::ExporterId, u32), IfaceRow> = FxHashMap::default();
        for (&id, accs) in &b.ifaces {
            let Some(o) = self.obs_list.get(id as usize) else {
                continue;
            };
            if !self.obs_switch.get(id as usize).copied().unwrap_or(false) {
                continue;
            }
            // replies entered on the row's output interface and left on its input one
            for (ifindex, inbound, acc) in [
                (o.in_if, true, accs[0]),
                (o.out_if, false, accs[0]),
                (o.out_if, true, accs[1]),
                (o.in_if, false, accs[1]),
            ] {
                if ifindex == 0 || (acc.bytes == 0 && acc.packets == 0) {
                    continue;
                }
                let e = ifs.entry((o.exporter, ifindex)).or_insert(IfaceRow {
                    exporter: o.exporter,
                    ifindex,
                    ..Default::default()
                });
                if inbound {
                    e.in_bytes = e.in_bytes.saturating_add(acc.bytes);
                    e.in_packets = e.in_packets.saturating_add(acc.packets);
                } else {
                    e.out_bytes = e.out_bytes.saturating_add(acc.bytes);
                    e.out_packets = e.out_packets.saturating_add(acc.packets);
                }
            }
        }
        let mut ifaces: Vec<IfaceRow> = ifs.into_values().collect();
        ifaces.sort_by_key(|f| (f.exporter, f.ifindex));
        let mut covers = b.covers.clone();
        covers.sort_unstable();
        covers.dedup();
        Chunk {
            res,
            start: b.start,
            shard: self.id as u16,
            seq: b.seq,
            covers,
            endpoints,
            obs: b.cb.chunk_obs.clone(),
            rows,
            outer,
            ifaces,
            overflow: b.overflow_totals(),
        }
    }

    /// Closes due buckets and snapshots the open ones. Returns (closed chunks, new
    /// snapshot of open buckets if anything changed).
    pub fn tick(&mut self, now_ms: i64) -> (Vec<Arc<Chunk>>, Option<Vec<Arc<Chunk>>>) {
        self.now_ms = self.now_ms.max(now_ms);
        let mut closed = Vec::new();
        for li in 0..self.levels.len() {
            let res = self.levels[li].cfg.seconds;
            let mut due: Vec<i64> = self.levels[li]
                .open
                .iter()
                .filter(|(_, b)| b.closes_at_ms <= now_ms)
                .map(|(k, _)| *k)
                .collect();
            let open_n = self.levels[li].open.len() - due.len();
            if open_n > MAX_OPEN {
                let mut rest: Vec<(i64, i64)> = self.levels[li]
                    .open
                    .iter()
                    .filter(|(_, b)| b.closes_at_ms > now_ms)
                    .map(|(k, b)| (b.opened_ms, *k))
                    .collect();
                rest.sort_unstable();
                due.extend(rest.iter().take(open_n - MAX_OPEN).map(|x| x.1));
            }
            for k in due {
                if let Some(mut b) = self.levels[li].open.remove(&k) {
                    closed.push(Arc::new(self.build(res, &b, None)));
                    if li == 0 {
                        self.cascade(&b, now_ms);
                    }
                    // a table grown by a burst is kept for one bucket that did not need it
                    if !b.index.oversized() {
                        self.levels[li].spare = Some(Spare::of(&mut b));
                    }
                }
            }
        }
        let changed = self.dirty || !closed.is_empty();
        self.dirty = false;
        let snapshot = changed.then(|| self.snapshot(now_ms));
        self.metrics.open_buckets.set(self.open_buckets() as u64);
        self.metrics.sessions.set(self.sessions() as u64);
        (closed, snapshot)
    }

    /// The open buckets as chunks: rebuilt when they changed (coarse levels at most
    /// every COARSE_PUBLISH_MS), else the previous snapshot.
    fn snapshot(&mut self, now_ms: i64) -> Vec<Arc<Chunk>> {
        let mut v = Vec::new();
        let mut pending = false;
        for li in 0..self.levels.len() {
            let res = self.levels[li].cfg.seconds;
            let keys: Vec<i64> = self.levels[li].open.keys().copied().collect();
            for k in keys {
                let Some(b) = self.levels[li].open.get(&k) else {
                    continue;
                };
                let due = b.published.is_none()
                    || b.merged
                    || (b.changed
                        && ((li == 0 && b.rows.len() < LARGE_OPEN_ROWS)
                            || now_ms - b.published_ms >= COARSE_PUBLISH_MS));
                let chunk = if due {
                    let Some(bm) = self.levels[li].open.get_mut(&k) else {
                        continue;
                    };
                    let parts = (
                        bm.rows.snapshot(&bm.updated),
                        bm.cb.chunk_endpoints.snapshot(&DirtySegs::default()),
                    );
                    bm.updated.clear();
                    let Some(b) = self.levels[li].open.get(&k) else {
                        continue;
                    };
                    Arc::new(self.build(res, b, Some(parts)))
                } else {
                    match &b.published {
                        Some(c) => c.clone(),
                        None => continue,
                    }
                };
                if let Some(b) = self.levels[li].open.get_mut(&k) {
                    if due {
                        b.published = Some(chunk.clone());
                        b.changed = false;
                        b.merged = false;
                        b.published_ms = now_ms;
                    }
                    pending |= b.changed;
                }
                v.push(chunk);
            }
        }
        // a change not yet published keeps the shard due for the next tick
        self.dirty |= pending;
        v
    }

    /// Closes every open bucket (shutdown).
    pub fn flush_all(&mut self) -> Vec<Arc<Chunk>> {
        let mut closed = Vec::new();
        for li in 0..self.levels.len() {
            let res = self.levels[li].cfg.seconds;
            let open = std::mem::take(&mut self.levels[li].open);
            let now_ms = self.now_ms;
            for b in open.values() {
                closed.push(Arc::new(self.build(res, b, None)));
                if li == 0 {
                    self.cascade(b, now_ms);
                }
            }
        }
        closed
    }

    /// Closes every open bucket and commits them, leaving an empty snapshot (shutdown).
    pub fn commit_final(&mut self) -> usize {
        let closed = self.flush_all();
        let n = closed.len();
        self.store.commit(self.id, closed, Some(Vec::new()));
        n
    }

    /// Runs tick and commits the result to the store.
    pub fn tick_and_commit(&mut self, now_ms: i64) {
        let (closed, snap) = self.tick(now_ms);
        self.store.commit(self.id, closed, snap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ExporterId;
    use crate::rollup::RollupConfig;
    use std::net::{IpAddr, Ipv4Addr};

    /// `n` flows of the rollup tests' stream (from `first` on) from `exporter`, one
    /// record each of `first + i` bytes, at `t_ms`.
    fn flows(first: u32, n: u32, exporter: u8, t_ms: i64) -> Vec<FlowIn> {
        (first..first + n)
            .map(|i| {
                let mut r = crate::rollup::tests::test_flow(i, t_ms);
                r.exporter = ExporterId::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, exporter)), 1);
                r.bytes = u64::from(i);
                (r.start_ms, r.end_ms) = (t_ms, t_ms);
                FlowIn::from_record(&r)
            })
            .collect()
    }

    /// A closed bucket hands its lookup tables to the next bucket of its level:
    /// emptied (the next bucket's rows, endpoints and observation points are its own
    /// only), their memory kept; a bucket that left most of them unused does not pass
    /// them on.
    #[test]
    fn closed_buckets_hand_their_tables_to_the_next() {
        let cfg = RollupConfig::default();
        let Ok(res) = cfg.resolutions() else {
            panic!("default resolutions")
        };
        let store = Store::new(None, res, 1, 0);
        let limits = FoldLimits {
            max_sessions: 100_000,
            idle_ms: 300_000,
        };
        let mut sh = Shard::detached(0, store, limits);
        let (tables, geo) = (Tables::default(), GeoTable::default());
        let t0 = 1_800_000_000_000i64; // a whole hour
        // flows at t0 + `at` ms, ingested 5 s later; slots of the open 1m bucket
        let ingest = |sh: &mut Shard, first: u32, n: u32, exporter: u8, at: i64| {
            let f = flows(first, n, exporter, t0 + at);
            sh.ingest(&f, &tables, &geo, t0 + at + 5_000);
        };
        let open_cap =
            |sh: &Shard| -> usize { sh.levels[0].open.values().map(|b| b.index.capacity()).sum() };
        ingest(&mut sh, 0, 3_000, 1, 10_000);
        let first_cap = open_cap(&sh);
        assert_eq!(first_cap, 8_192, "3 000 rows, at most half full");
        let (closed, _) = sh.tick(t0 + 180_000);
        assert_eq!(closed.iter().filter(|c| c.res == 60).count(), 1);
        assert!(sh.levels[0].spare.is_some());

        // minute 3: 200 other flows from another exporter
        ingest(&mut sh, 5_000, 200, 2, 190_000);
        assert!(sh.levels[0].spare.is_none(), "taken by the new bucket");
        assert_eq!(open_cap(&sh), first_cap);
        let (closed, _) = sh.tick(t0 + 300_000);
        let Some(c) = closed
            .iter()
            .find(|c| c.res == 60 && c.start == (t0 + 180_000) / 1000)
        else {
            panic!("minute 3 closed: {closed:?}")
        };
        assert_eq!(c.rows.len(), 200);
        let bytes: u64 = c.rows.iter().map(|r| r.bytes()).sum();
        assert_eq!(bytes, (5_000..5_200).sum::<u64>());
        let mut ips: Vec<IpAddr> = c.endpoints.iter().map(|e| e.ip).collect();
        ips.sort();
        assert_eq!(ips.len(), 201);
        assert_eq!(ips[0], IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 5_000)));
        assert_eq!(c.obs.len(), 1);
        assert_eq!(
            c.obs[0].exporter,
            ExporterId::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 1)
        );
        // 200 rows in 8 192 slots: not passed on, the next bucket grows its own
        assert!(sh.levels[0].spare.is_none());
        ingest(&mut sh, 9_000, 200, 2, 310_000);
        assert_eq!(open_cap(&sh), 1_024);
    }
}
