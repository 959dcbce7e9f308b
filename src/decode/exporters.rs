//! The exporter table: per (exporter IP, observation domain) options (sampling,
//! interface names), sequence numbers and counters.
//!
//! Fair and bounded: a source is admitted only once it sent something valid (a
//! template, decodable data, a v5 datagram), so header-only junk holds no slot; each
//! source IP holds at most `max_exporters_per_source` observation domains; exporters
//! silent for `exporter_idle_secs` are forgotten; past `max_exporters`, the exporter
//! that sent no data and was heard from longest ago goes first. The eviction order is a
//! B-tree: O(log n) per admission or eviction, and last-seen times move in it at most
//! once a minute per exporter.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use dashmap::DashMap;

use super::options::ExporterOptions;
use crate::model::ExporterId;
use crate::telemetry::Counter;

/// Counters of one exporter (bounded label set).
#[derive(Default)]
pub struct ExporterCounters {
    pub datagrams: Counter,
    pub records: Counter,
    pub errors: Counter,
    pub template_misses: Counter,
    pub lost_records: Counter,
    pub lost_datagrams: Counter,
}

#[derive(Default, Clone, Copy)]
pub(crate) struct SeqState {
    next: Option<u32>,
}

impl SeqState {
    /// Feeds a sequence number; returns how many units were skipped since the last one.
    pub(crate) fn observe(&mut self, seq: u32, advance: u32, valid_advance: bool) -> u64 {
        let mut lost = 0;
        match self.next {
            Some(n) => {
                let gap = seq.wrapping_sub(n);
                if gap < (1 << 20) {
                    lost = u64::from(gap);
                    self.next = Some(seq.wrapping_add(advance));
                } else if n.wrapping_sub(seq) < 1024 {
                    // a reordered, older datagram: leave the expectation alone
                } else {
                    self.next = Some(seq.wrapping_add(advance)); // exporter restarted
                }
            }
            None => self.next = Some(seq.wrapping_add(advance)),
        }
        if !valid_advance {
            self.next = None;
        }
        lost
    }
}

/// What nagare knows about one exporter (IP + observation domain).
pub struct ExporterState {
    pub id: ExporterId,
    pub options: RwLock<ExporterOptions>,
    pub(crate) seq: Mutex<SeqState>,
    pub counters: Arc<ExporterCounters>,
    /// Whether the table holds this state. A source is admitted once it sent something
    /// valid (a template, decodable data, a v5 datagram); until then each datagram gets
    /// a state of its own that is forgotten afterwards.
    pub admitted: bool,
    /// Unix seconds of the last datagram, kept to the minute in the eviction order.
    last_seen: AtomicI64,
    /// Whether data records were decoded from it: exporters that sent data are evicted
    /// after those that did not.
    sent_data: AtomicBool,
}

impl ExporterState {
    fn new(id: ExporterId, counters: Arc<ExporterCounters>, admitted: bool, now_s: i64) -> Self {
        Self {
            id,
            options: RwLock::new(ExporterOptions::default()),
            seq: Mutex::new(SeqState::default()),
            counters,
            admitted,
            last_seen: AtomicI64::new(now_s),
            sent_data: AtomicBool::new(false),
        }
    }
}

/// Why an exporter left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExporterEviction {
    /// Silent for longer than `exporter_idle_secs`.
    Idle,
    /// The table reached `max_exporters`.
    Full,
    /// Its source IP reached `max_exporters_per_source`.
    PerSource,
}

impl ExporterEviction {
    pub fn reason(&self) -> &'static str {
        match self {
            ExporterEviction::Idle => "idle",
            ExporterEviction::Full => "full",
            ExporterEviction::PerSource => "per_source",
        }
    }
}

/// Bounds of the exporter table.
#[derive(Debug, Clone, Copy)]
pub struct ExporterLimits {
    pub max_exporters: usize,
    pub max_per_source: usize,
    pub idle_secs: i64,
}

/// Eviction rank: exporters that sent no data first, then the longest silent.
type Rank = (bool, i64, ExporterId);

#[derive(Default)]
struct Order {
    all: BTreeSet<Rank>,
    /// (last seen, domain) per source IP
    by_ip: HashMap<IpAddr, BTreeSet<Rank>>,
    rank: HashMap<ExporterId, (bool, i64)>,
}

impl Order {
    fn set(&mut self, id: ExporterId, data: bool, seen: i64) {
        self.unset(&id);
        self.all.insert((data, seen, id));
        self.by_ip
            .entry(id.ip)
            .or_default()
            .insert((data, seen, id));
        self.rank.insert(id, (data, seen));
    }

    fn unset(&mut self, id: &ExporterId) {
        let Some((data, seen)) = self.rank.remove(id) else {
            return;
        };
        self.all.remove(&(data, seen, *id));
        if let Some(s) = self.by_ip.get_mut(&id.ip) {
            s.remove(&(data, seen, *id));
            if s.is_empty() {
                self.by_ip.remove(&id.ip);
            }
        }
    }
}

/// The exporters the decoder remembers.
pub struct ExporterTable {
    map: DashMap<ExporterId, Arc<ExporterState>>,
    order: Mutex<Order>,
    limits: ExporterLimits,
    /// Evictions by reason: idle, full, per source.
    pub evicted: [Counter; 3],
}

impl ExporterTable {
    pub fn new(limits: ExporterLimits) -> Self {
        Self {
            map: DashMap::new(),
            order: Mutex::new(Order::default()),
            limits,
            evicted: Default::default(),
        }
    }

    fn order(&self) -> MutexGuard<'_, Order> {
        match self.order.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The admitted state of `id`, if any (no side effect).
    pub fn get(&self, id: &ExporterId) -> Option<Arc<ExporterState>> {
        self.map.get(id).map(|e| e.clone())
    }

    /// Every admitted state.
    pub fn states(&self) -> Vec<Arc<ExporterState>> {
        self.map.iter().map(|e| e.value().clone()).collect()
    }

    /// The state for a datagram from `id` at `now_s`: the admitted one (its last-seen
    /// time refreshed), or a fresh one that is not remembered.
    pub fn for_datagram(
        &self,
        id: ExporterId,
        now_s: i64,
        counters: impl FnOnce() -> Arc<ExporterCounters>,
    ) -> Arc<ExporterState> {
        if let Some(st) = self.get(&id) {
            // written at most once a minute: no shared cache line written per datagram
            let before = st.last_seen.load(Ordering::Relaxed);
            if before.div_euclid(60) != now_s.div_euclid(60)
                && st.last_seen.swap(now_s, Ordering::Relaxed).div_euclid(60)
                    != now_s.div_euclid(60)
            {
                self.rerank(&st, now_s);
            }
            return st;
        }
        Arc::new(ExporterState::new(id, counters(), false, now_s))
    }

    fn rerank(&self, st: &ExporterState, seen: i64) {
        let mut o = self.order();
        if o.rank.contains_key(&st.id) {
            o.set(st.id, st.sent_data.load(Ordering::Relaxed), seen);
        }
    }

    /// Notes that data records were decoded from `st` (ranks it after the exporters
    /// that sent none, once).
    pub fn sent_data(&self, st: &ExporterState) {
        if st.admitted
            && !st.sent_data.load(Ordering::Relaxed)
            && !st.sent_data.swap(true, Ordering::Relaxed)
        {
            self.rerank(st, st.last_seen.load(Ordering::Relaxed));
        }
    }

    /// Admits the source of `st` (which sent something valid): returns the state to use
    /// from now on (with `counters`, the exporter's labelled counters, and what `st`
    /// learned so far) and the evictions that made room.
    pub fn admit(
        &self,
        st: &Arc<ExporterState>,
        now_s: i64,
        counters: impl FnOnce() -> Arc<ExporterCounters>,
    ) -> (Arc<ExporterState>, Vec<ExporterEviction>) {
        if st.admitted {
            return (st.clone(), Vec::new());
        }
        let id = st.id;
        let mut o = self.order();
        if let Some(existing) = self.map.get(&id) {
            // admitted meanwhile by another receive thread
            return (existing.clone(), Vec::new());
        }
        let mut gone = Vec::new();
        if o.by_ip.get(&id.ip).map_or(0, BTreeSet::len) >= self.limits.max_per_source.max(1)
            && let Some(v) = o.by_ip.get(&id.ip).and_then(|s| s.first()).map(|r| r.2)
        {
            o.unset(&v);
            self.map.remove(&v);
            gone.push(ExporterEviction::PerSource);
        } else if o.all.len() >= self.limits.max_exporters.max(1)
            && let Some(v) = o.all.first().map(|r| r.2)
        {
            o.unset(&v);
            self.map.remove(&v);
            gone.push(ExporterEviction::Full);
        }
        let data = st.sent_data.load(Ordering::Relaxed);
        let fresh = ExporterState {
            id,
            options: RwLock::new(match st.options.read() {
                Ok(g) => g.clone(),
                Err(p) => p.into_inner().clone(),
            }),
            seq: Mutex::new(match st.seq.lock() {
                Ok(g) => *g,
                Err(p) => *p.into_inner(),
            }),
            counters: counters(),
            admitted: true,
            last_seen: AtomicI64::new(now_s),
            sent_data: AtomicBool::new(data),
        };
        let fresh = Arc::new(fresh);
        self.map.insert(id, fresh.clone());
        o.set(id, data, now_s);
        drop(o);
        for e in &gone {
            self.count(*e);
        }
        (fresh, gone)
    }

    /// Admits `id` with persisted options (start-up).
    pub fn restore(
        &self,
        id: ExporterId,
        options: ExporterOptions,
        now_s: i64,
        counters: Arc<ExporterCounters>,
    ) {
        let st = Arc::new(ExporterState::new(id, counters.clone(), false, now_s));
        if let Ok(mut o) = st.options.write() {
            *o = options;
        }
        // exporters with options were sending data
        st.sent_data.store(true, Ordering::Relaxed);
        self.admit(&st, now_s, || counters);
    }

    /// Forgets exporters silent for longer than the idle limit; returns how many.
    pub fn expire(&self, now_s: i64) -> usize {
        let cutoff = now_s.saturating_sub(self.limits.idle_secs);
        let mut o = self.order();
        let stale: Vec<ExporterId> = o
            .rank
            .iter()
            .filter(|(_, (_, seen))| *seen < cutoff)
            .map(|(id, _)| *id)
            .collect();
        for id in &stale {
            o.unset(id);
            self.map.remove(id);
        }
        drop(o);
        self.evicted[0].add(stale.len() as u64);
        stale.len()
    }

    fn count(&self, e: ExporterEviction) {
        let i = match e {
            ExporterEviction::Idle => 0,
            ExporterEviction::Full => 1,
            ExporterEviction::PerSource => 2,
        };
        self.evicted[i].inc();
    }
}

/// The decoder's use of the table: which state a datagram gets, admission, eviction
/// logs.
impl super::Decoder {
    /// The state for a datagram from `id`: the remembered one, or one of its own
    /// until the source sends something valid (see [`exporters`]).
    pub(super) fn exporter(&self, id: ExporterId, now_ms: i64) -> Arc<ExporterState> {
        self.exporters
            .for_datagram(id, now_ms.div_euclid(1000), || {
                self.metrics.per_exporter.get_or_other(&id)
            })
    }

    /// Remembers the source of `st`, which sent something valid; returns its state.
    pub(super) fn admit(&self, st: &Arc<ExporterState>, now_ms: i64) -> Arc<ExporterState> {
        if st.admitted {
            return st.clone();
        }
        let (st, gone) = self.exporters.admit(st, now_ms.div_euclid(1000), || {
            self.metrics.per_exporter.get(&st.id)
        });
        for e in gone {
            self.log_exporter_eviction(st.id, e, now_ms);
        }
        st
    }

    fn log_exporter_eviction(&self, admitted: ExporterId, why: ExporterEviction, now_ms: i64) {
        if let Some(held) = self.evict_log.check(now_ms) {
            tracing::warn!(
                exporter = %admitted.ip,
                domain = admitted.domain,
                reason = why.reason(),
                similar_messages_suppressed = held,
                "exporter table: an exporter was forgotten to make room for a new one (nagare_decode_exporter_evictions_total)"
            );
        }
    }

    /// Forgets exporters silent for longer than `exporter_idle_secs`.
    pub fn expire_exporters(&self, now_ms: i64) -> usize {
        self.exporters.expire(now_ms.div_euclid(1000))
    }

    /// Interface name an exporter announced in options data.
    pub fn interface_name(&self, id: ExporterId, ifindex: u32) -> Option<String> {
        let s = self.exporters.get(&id)?;
        let o = s.options.read().ok()?;
        o.if_names.get(&ifindex).cloned()
    }

    /// All exporters remembered, with their announced interface names.
    pub fn exporter_interfaces(&self) -> Vec<(ExporterId, Vec<(u32, String)>)> {
        self.exporters
            .states()
            .iter()
            .map(|e| {
                let names = e
                    .options
                    .read()
                    .map(|o| o.if_names.iter().map(|(k, v)| (*k, v.clone())).collect())
                    .unwrap_or_default();
                (e.id, names)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(last: u8, domain: u32) -> ExporterId {
        ExporterId::new(IpAddr::from([192, 0, 2, last]), domain)
    }

    fn table(max: usize, per_source: usize) -> ExporterTable {
        ExporterTable::new(ExporterLimits {
            max_exporters: max,
            max_per_source: per_source,
            idle_secs: 3600,
        })
    }

    fn counters() -> Arc<ExporterCounters> {
        Arc::new(ExporterCounters::default())
    }

    #[test]
    fn unadmitted_sources_hold_no_slot() {
        let t = table(4, 4);
        for d in 0..5_000 {
            let st = t.for_datagram(id(1, d), 100, counters);
            assert!(!st.admitted);
        }
        assert!(t.is_empty());
        // what a state learned before admission is kept by the admitted one
        let st = t.for_datagram(id(2, 0), 100, counters);
        st.options.write().unwrap().default_sampling = Some(100);
        let (adm, gone) = t.admit(&st, 100, counters);
        assert!(adm.admitted && gone.is_empty());
        assert_eq!(adm.options.read().unwrap().default_sampling, Some(100));
        assert!(Arc::ptr_eq(&t.for_datagram(id(2, 0), 101, counters), &adm));
    }

    #[test]
    fn one_source_cannot_take_more_than_its_share() {
        let t = table(100, 3);
        let legit = t.for_datagram(id(9, 0), 10, counters);
        let (legit, _) = t.admit(&legit, 10, counters);
        for d in 0..50 {
            let st = t.for_datagram(id(1, d), 20 + i64::from(d) * 60, counters);
            t.admit(&st, 20 + i64::from(d) * 60, counters);
        }
        assert_eq!(t.len(), 4);
        assert_eq!(t.evicted[2].get(), 47);
        assert!(t.get(&legit.id).is_some());
        // the newest three domains of the flooding source remain
        for d in 47..50 {
            assert!(t.get(&id(1, d)).is_some(), "domain {d}");
        }
    }

    #[test]
    fn past_the_bound_exporters_without_data_go_first_then_the_longest_silent() {
        let t = table(3, 10);
        let mk = |last: u8, now: i64| {
            let st = t.for_datagram(id(last, 0), now, counters);
            t.admit(&st, now, counters).0
        };
        let a = mk(1, 0);
        t.sent_data(&a);
        let b = mk(2, 60);
        t.sent_data(&b);
        let _c = mk(3, 120); // templates only
        // a fourth: c (no data) goes although a and b were heard from earlier
        mk(4, 180);
        assert!(t.get(&id(3, 0)).is_none());
        assert_eq!(t.evicted[1].get(), 1);
        // a is heard from again: b is now the longest silent of those with data
        t.for_datagram(id(1, 0), 240, counters);
        let d = t.get(&id(4, 0)).unwrap();
        t.sent_data(&d);
        mk(5, 300);
        assert!(t.get(&id(2, 0)).is_none());
        assert!(t.get(&id(1, 0)).is_some());
        // idle expiry: only 1 (240), 4 (180) and 5 (300) remain; at 3 900 + 1 the
        // cutoff is 301: all go
        assert_eq!(t.expire(3_840), 1); // cutoff 240: 4 (180) goes
        assert_eq!(t.expire(3_901), 2);
        assert!(t.is_empty());
    }

    #[test]
    fn sequence_tracking() {
        let mut s = SeqState::default();
        assert_eq!(s.observe(100, 10, true), 0);
        assert_eq!(s.observe(110, 10, true), 0);
        assert_eq!(s.observe(125, 10, true), 5); // 120..125 missing
        assert_eq!(s.observe(130, 10, true), 0); // reordered older one: ignored
        assert_eq!(s.observe(135, 10, true), 0);
        assert_eq!(s.observe(5_000_000, 10, true), 0); // restart
        assert_eq!(s.observe(17, 1, false), 0);
        assert_eq!(s.observe(99, 1, true), 0); // unknown advance: no expectation
    }
}
