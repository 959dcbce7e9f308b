//! One rollup shard: folds its flows into sessions, accumulates them into open buckets
//! at every resolution, and hands closed buckets to the store. A shard is owned by one
//! thread; nothing here takes a lock per flow.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet, FxHasher};

use super::chunk::{Chunk, ChunkBuilder, IfaceRow, ObsPoint, Overflow, Row};
use super::store::Store;
use super::{FlowIn, ResolutionConfig, ShardMetrics};
use crate::enrich::Endpoint;
use crate::enrich::classify;
use crate::enrich::fold::{FoldLimits, FoldMetrics, Folder};
use crate::model::ip_to_u128;

/// Distinct overflowed flows tracked per bucket (past it the overflow's flow count is a
/// lower bound).
const OVERFLOW_TRACK: usize = 250_000;
/// Observation points a shard interns; past it they share id 0.
const MAX_OBS: usize = 1 << 20;
/// A bucket that receives late records stays open this long after it reopened.
const LATE_LINGER_MS: i64 = 2_000;
/// Open buckets per resolution; past it the oldest-opened closes early.
const MAX_OPEN: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RowKey {
    client: u128,
    server: u128,
    port: u16,
    proto: u8,
    obs: u32,
}

struct OpenRow {
    src: Endpoint,
    dst: Endpoint,
    outer: Option<Box<(Endpoint, Endpoint)>>,
    src_bytes: u64,
    dst_bytes: u64,
    packets: u64,
    sessions: u32,
    first_s: i64,
    last_s: i64,
    tags: u32,
    rule: u32,
}

#[derive(Default, Clone, Copy)]
struct IfaceAcc {
    bytes: u64,
    packets: u64,
}

struct OpenBucket {
    start: i64,
    seq: u64,
    closes_at_ms: i64,
    opened_ms: i64,
    rows: FxHashMap<RowKey, OpenRow>,
    overflow: Overflow,
    overflow_keys: FxHashSet<u64>,
    /// per (flow-direction) observation-point id: traffic as recorded [in client ->
    /// server direction, in server -> client direction] (for switch ports)
    ifaces: FxHashMap<u32, [IfaceAcc; 2]>,
    covers: Vec<u64>,
    /// The last snapshot published for queries, whether the bucket changed since,
    /// and when it was built.
    published: Option<Arc<Chunk>>,
    changed: bool,
    published_ms: i64,
}

/// Coarse open buckets (every level but the finest) are re-published at most this
/// often: rebuilding an hour's rows every second would cost more than ingesting them.
/// With the one-second tick, a record is still visible within five seconds.
const COARSE_PUBLISH_MS: i64 = 3_500;

struct Level {
    cfg: ResolutionConfig,
    open: BTreeMap<i64, OpenBucket>,
}

pub struct Shard {
    pub id: usize,
    levels: Vec<Level>,
    folder: Folder,
    obs_ids: FxHashMap<ObsPoint, u32>,
    obs_list: Vec<ObsPoint>,
    /// observation ids that are switch ports
    obs_switch: Vec<bool>,
    store: Arc<Store>,
    pub metrics: Arc<ShardMetrics>,
    pub fold_metrics: Arc<FoldMetrics>,
    dirty: bool,
}

fn key_hash(k: &RowKey) -> u64 {
    let mut h = FxHasher::default();
    k.hash(&mut h);
    h.finish()
}

impl Shard {
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
            })
            .collect();
        Self {
            id,
            levels,
            folder: Folder::new(fold),
            obs_ids: FxHashMap::default(),
            obs_list: vec![],
            obs_switch: vec![],
            store,
            metrics,
            fold_metrics,
            dirty: false,
        }
    }

    fn obs_id(&mut self, o: &ObsPoint, switch_port: bool) -> u32 {
        if let Some(&i) = self.obs_ids.get(o) {
            return i;
        }
        if self.obs_list.len() >= MAX_OBS {
            return 0;
        }
        let i = self.obs_list.len() as u32;
        self.obs_list.push(*o);
        self.obs_switch.push(switch_port);
        self.obs_ids.insert(*o, i);
        i
    }

    /// Sessions currently tracked.
    pub fn sessions(&self) -> usize {
        self.folder.len()
    }

    pub fn open_buckets(&self) -> usize {
        self.levels.iter().map(|l| l.open.len()).sum()
    }

    /// Folds and accumulates a batch of flows. `now_ms` is wall-clock time.
    pub fn ingest(&mut self, flows: &[FlowIn], now_ms: i64) {
        let now_s = now_ms.div_euclid(1000);
        for f in flows {
            self.metrics.records.inc();
            let start_s = f.start_ms.div_euclid(1000);
            if start_s > now_s + self.store_max_future() {
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
            let fo = self.folder.fold(
                f.src.ip,
                f.src_port,
                f.dst.ip,
                f.dst_port,
                f.proto,
                f.tcp_flags,
                f.biflow_direction,
                biflow,
                f.dst
                    .is(crate::enrich::flag::MULTICAST | crate::enrich::flag::BROADCAST),
                f.obs_hash,
                f.start_ms,
                &self.fold_metrics,
            );
            let (client, server, server_port, cb, sb, outer) = if fo.src_is_client {
                (&f.src, &f.dst, f.dst_port, f.bytes, f.rev_bytes, f.outer)
            } else {
                (
                    &f.dst,
                    &f.src,
                    f.src_port,
                    f.rev_bytes,
                    f.bytes,
                    f.outer.map(|(a, b)| (b, a)),
                )
            };
            // ICMP flows are keyed without ports.
            let port = if f.proto == 1 || f.proto == 58 {
                0
            } else {
                server_port
            };
            let packets = f.packets.saturating_add(f.rev_packets);
            let tags = classify::tags(client, server);
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
            let reply = usize::from(!fo.src_is_client);
            let key = RowKey {
                client: ip_to_u128(client.ip),
                server: ip_to_u128(server.ip),
                port,
                proto: f.proto,
                obs: obs_id,
            };
            let end_s = f.end_ms.div_euclid(1000).max(start_s);
            let all_bytes = f.bytes.saturating_add(f.rev_bytes);
            let mut fine_seq = None;
            for (li, level) in self.levels.iter_mut().enumerate() {
                if start_s < now_s - level.cfg.retention_secs {
                    continue;
                }
                let res = i64::from(level.cfg.seconds);
                let b = start_s.div_euclid(res) * res;
                let store = &self.store;
                let bucket = level.open.entry(b).or_insert_with(|| {
                    let due = (b + res + level.cfg.grace_secs) * 1000;
                    OpenBucket {
                        start: b,
                        seq: store.next_seq(),
                        closes_at_ms: due.max(now_ms + LATE_LINGER_MS),
                        opened_ms: now_ms,
                        rows: FxHashMap::default(),
                        overflow: Overflow {
                            flows_exact: true,
                            ..Default::default()
                        },
                        overflow_keys: FxHashSet::default(),
                        ifaces: FxHashMap::default(),
                        covers: Vec::new(),
                        published: None,
                        changed: true,
                        published_ms: 0,
                    }
                });
                bucket.changed = true;
                if li == 0 {
                    fine_seq = Some(bucket.seq);
                } else if let Some(s) = fine_seq
                    && bucket.covers.last() != Some(&s)
                {
                    bucket.covers.push(s);
                }
                if f.switch_port {
                    let acc = &mut bucket.ifaces.entry(obs_id).or_default()[reply];
                    acc.bytes = acc.bytes.saturating_add(all_bytes);
                    acc.packets = acc.packets.saturating_add(packets);
                }
                if fo.duplicate {
                    continue;
                }
                let sessions = u32::from(fo.new_session);
                if let Some(r) = bucket.rows.get_mut(&key) {
                    r.src_bytes = r.src_bytes.saturating_add(cb);
                    r.dst_bytes = r.dst_bytes.saturating_add(sb);
                    r.packets = r.packets.saturating_add(packets);
                    r.sessions = r.sessions.saturating_add(sessions);
                    r.first_s = r.first_s.min(start_s);
                    r.last_s = r.last_s.max(end_s);
                    if f.rule != 0 {
                        r.rule = f.rule;
                    }
                } else if bucket.rows.len() < level.cfg.max_rows {
                    bucket.rows.insert(
                        key,
                        OpenRow {
                            src: *client,
                            dst: *server,
                            outer: outer.map(Box::new),
                            src_bytes: cb,
                            dst_bytes: sb,
                            packets,
                            sessions,
                            first_s: start_s,
                            last_s: end_s,
                            tags,
                            rule: f.rule,
                        },
                    );
                } else {
                    let o = &mut bucket.overflow;
                    o.src_bytes = o.src_bytes.saturating_add(cb);
                    o.dst_bytes = o.dst_bytes.saturating_add(sb);
                    o.packets = o.packets.saturating_add(packets);
                    o.sessions += u64::from(sessions);
                    if bucket.overflow_keys.len() < OVERFLOW_TRACK {
                        if bucket.overflow_keys.insert(key_hash(&key)) {
                            o.flows += 1;
                        }
                    } else if !bucket.overflow_keys.contains(&key_hash(&key)) {
                        o.flows_exact = false;
                    }
                    self.metrics.overflow_records.inc();
                }
            }
            self.dirty = true;
        }
    }

    fn store_max_future(&self) -> i64 {
        self.levels.first().map_or(300, |l| l.cfg.max_future_secs)
    }

    /// Builds the chunk of a bucket. Closed chunks get a deterministic row order (by
    /// bytes, then key: the same data gives the same file); snapshots of open buckets,
    /// rebuilt often and never stored, keep the table's order.
    fn build(&self, res: u32, b: &OpenBucket, sorted: bool) -> Chunk {
        let mut cb = ChunkBuilder::default();
        let mut rows = Vec::with_capacity(b.rows.len());
        let mut outer_rows = Vec::new();
        let mut order: Vec<(&RowKey, &OpenRow)> = b.rows.iter().collect();
        if sorted {
            order.sort_unstable_by(|a, b| {
                (b.1.src_bytes + b.1.dst_bytes)
                    .cmp(&(a.1.src_bytes + a.1.dst_bytes))
                    .then_with(|| {
                        (a.0.client, a.0.server, a.0.port, a.0.proto, a.0.obs)
                            .cmp(&(b.0.client, b.0.server, b.0.port, b.0.proto, b.0.obs))
                    })
            });
        }
        for (k, r) in order {
            let obs = self
                .obs_list
                .get(k.obs as usize)
                .copied()
                .unwrap_or(ObsPoint {
                    exporter: crate::model::ExporterId::new(
                        std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                        0,
                    ),
                    in_if: 0,
                    out_if: 0,
                });
            let row = Row {
                src_bytes: r.src_bytes,
                dst_bytes: r.dst_bytes,
                packets: r.packets,
                sessions: r.sessions,
                src: cb.endpoint(&r.src),
                dst: cb.endpoint(&r.dst),
                obs: cb.obs(&obs),
                tags: r.tags,
                rule: r.rule,
                port: k.port,
                proto: k.proto,
                _pad: 0,
                first: (r.first_s - b.start).clamp(0, i64::from(u16::MAX)) as u16,
                last: (r.last_s - b.start).clamp(0, i64::from(u16::MAX)) as u16,
            };
            if let Some(o) = &r.outer {
                outer_rows.push((rows.len() as u32, cb.endpoint(&o.0), cb.endpoint(&o.1)));
            }
            rows.push(row);
        }
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
                    e.in_bytes += acc.bytes;
                    e.in_packets += acc.packets;
                } else {
                    e.out_bytes += acc.bytes;
                    e.out_packets += acc.packets;
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
            endpoints: cb.chunk_endpoints,
            obs: cb.chunk_obs,
            rows,
            outer: outer_rows,
            ifaces,
            overflow: b.overflow,
        }
    }

    /// Closes due buckets and snapshots the open ones. Returns (closed chunks, new
    /// snapshot of open buckets if anything changed).
    pub fn tick(&mut self, now_ms: i64) -> (Vec<Arc<Chunk>>, Option<Vec<Arc<Chunk>>>) {
        self.folder.maintain(now_ms, &self.fold_metrics);
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
                if let Some(b) = self.levels[li].open.remove(&k) {
                    closed.push(Arc::new(self.build(res, &b, true)));
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
                    || (b.changed && (li == 0 || now_ms - b.published_ms >= COARSE_PUBLISH_MS));
                let chunk = if due {
                    Arc::new(self.build(res, b, false))
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
            for b in open.values() {
                closed.push(Arc::new(self.build(res, b, true)));
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
