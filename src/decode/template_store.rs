//! The shared template store: templates keyed by (exporter IP, version, observation
//! domain, template id), bounded per exporter IP and overall.
//!
//! Past a bound, the least useful template goes: one that no data set ever used before
//! one that decoded data, and among those the stalest. The order is kept in a B-tree,
//! so an eviction costs O(log n) whatever the number of templates: a source that sends
//! thousands of template ids, or spoofs thousands of exporters, costs each new template
//! a few tree operations, never a scan, and cannot push out the templates that working
//! exporters' data uses while unused ones remain.
//!
//! Lock order: the order's mutex may be taken while no map guard is held, and the map
//! may be changed while the order's mutex is held (never the other way round).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use super::template::{FieldSpec, Template, TemplateKey, TemplateKind};
use crate::telemetry::Counter;

/// What happened when a template was offered to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    New,
    Refreshed,
    /// Same id, different layout: the old one is replaced.
    Replaced,
}

/// Why a template left the store before it expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Its exporter IP reached `max_templates_per_exporter`.
    PerExporter,
    /// The store reached `max_templates`.
    Full,
}

struct Entry {
    template: Arc<Template>,
    /// Unix seconds of the last time the exporter sent this template.
    last_seen: AtomicI64,
    /// Whether a data set was decoded with it.
    used: AtomicBool,
}

/// Limits of the template store.
#[derive(Debug, Clone, Copy)]
pub struct TemplateLimits {
    pub max_per_exporter: usize,
    pub max_total: usize,
    /// Templates not refreshed for this long are expired.
    pub ttl_secs: i64,
}

/// Eviction rank: unused before used, then the stalest first.
type Rank = (bool, i64, TemplateKey);

#[derive(Default)]
struct Order {
    all: BTreeSet<Rank>,
    by_exporter: HashMap<IpAddr, BTreeSet<Rank>>,
    rank: HashMap<TemplateKey, (bool, i64)>,
}

impl Order {
    fn set(&mut self, key: TemplateKey, used: bool, seen: i64) {
        self.unset(&key);
        self.all.insert((used, seen, key));
        self.by_exporter
            .entry(key.exporter)
            .or_default()
            .insert((used, seen, key));
        self.rank.insert(key, (used, seen));
    }

    fn unset(&mut self, key: &TemplateKey) -> bool {
        let Some((used, seen)) = self.rank.remove(key) else {
            return false;
        };
        self.all.remove(&(used, seen, *key));
        if let Some(set) = self.by_exporter.get_mut(&key.exporter) {
            set.remove(&(used, seen, *key));
            if set.is_empty() {
                self.by_exporter.remove(&key.exporter);
            }
        }
        true
    }

    fn count_of(&self, exporter: &IpAddr) -> usize {
        self.by_exporter.get(exporter).map_or(0, BTreeSet::len)
    }

    fn first_of(&self, exporter: &IpAddr) -> Option<TemplateKey> {
        self.by_exporter
            .get(exporter)
            .and_then(|s| s.first())
            .map(|r| r.2)
    }

    fn first(&self) -> Option<TemplateKey> {
        self.all.first().map(|r| r.2)
    }
}

/// The shared template store. Lookups are lock-free per shard of the map (dashmap);
/// learning a template takes the order's mutex. Persisted by [`TemplateStore::snapshot`].
pub struct TemplateStore {
    map: DashMap<TemplateKey, Entry>,
    order: Mutex<Order>,
    limits: TemplateLimits,
    dirty: AtomicBool,
    /// Evicted because their exporter IP reached its bound.
    pub evicted: Counter,
    /// Evicted because the store reached its bound.
    pub evicted_full: Counter,
    pub expired: Counter,
}

/// Persisted form of one template.
#[derive(Debug, Serialize, Deserialize)]
pub struct PersistedTemplate {
    pub key: TemplateKey,
    pub kind: TemplateKind,
    pub fields: Vec<FieldSpec>,
    pub last_seen: i64,
}

impl TemplateStore {
    pub fn new(limits: TemplateLimits) -> Self {
        Self {
            map: DashMap::new(),
            order: Mutex::new(Order::default()),
            limits,
            dirty: AtomicBool::new(false),
            evicted: Default::default(),
            evicted_full: Default::default(),
            expired: Default::default(),
        }
    }

    fn order(&self) -> MutexGuard<'_, Order> {
        match self.order.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The template of `key`, for lookups that decode nothing with it.
    #[inline]
    pub fn get(&self, key: &TemplateKey) -> Option<Arc<Template>> {
        self.map.get(key).map(|e| e.template.clone())
    }

    /// The template of `key` for a data set: marks it used (once), which ranks it after
    /// every template that never decoded data when one has to go.
    #[inline]
    pub fn get_for_data(&self, key: &TemplateKey) -> Option<Arc<Template>> {
        let (t, first_use, seen) = {
            let e = self.map.get(key)?;
            let first = !e.used.load(Ordering::Relaxed) && !e.used.swap(true, Ordering::Relaxed);
            (
                e.template.clone(),
                first,
                e.last_seen.load(Ordering::Relaxed),
            )
        };
        if first_use {
            let mut o = self.order();
            if o.rank.contains_key(key) {
                o.set(*key, true, seen);
            }
        }
        Some(t)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Templates held for one exporter IP (all versions and domains).
    pub fn count_for(&self, exporter: &IpAddr) -> usize {
        self.order().count_of(exporter)
    }

    /// Offers a template; `now` is Unix seconds. A new template past a bound evicts the
    /// least useful one (see the module's documentation) and says which bound.
    pub fn learn(&self, t: Template, now: i64) -> (Learned, Option<Eviction>) {
        use dashmap::mapref::entry::Entry as DEntry;
        let key = t.key;
        // the common case: an exporter sends a template it sent before
        let refreshed = self.map.get(&key).and_then(|e| {
            e.template.same_layout(&t).then(|| {
                e.last_seen.store(now, Ordering::Relaxed);
                e.used.load(Ordering::Relaxed)
            })
        });
        let mut order = self.order();
        if let Some(used) = refreshed {
            if order.rank.contains_key(&key) {
                order.set(key, used, now);
            }
            return (Learned::Refreshed, None);
        }
        let mut evicted = None;
        if !order.rank.contains_key(&key) {
            let victim = if order.count_of(&key.exporter) >= self.limits.max_per_exporter {
                evicted = Some(Eviction::PerExporter);
                order.first_of(&key.exporter)
            } else if order.all.len() >= self.limits.max_total {
                evicted = Some(Eviction::Full);
                order.first()
            } else {
                None
            };
            if let Some(v) = victim {
                order.unset(&v);
                self.map.remove(&v);
                match evicted {
                    Some(Eviction::PerExporter) => self.evicted.inc(),
                    _ => self.evicted_full.inc(),
                }
            }
        }
        let t = Arc::new(t);
        let outcome = match self.map.entry(key) {
            DEntry::Occupied(mut o) => {
                let e = o.get_mut();
                let same = e.template.same_layout(&t);
                e.template = t;
                e.last_seen.store(now, Ordering::Relaxed);
                if same {
                    Learned::Refreshed
                } else {
                    // a new layout has decoded nothing yet
                    e.used.store(false, Ordering::Relaxed);
                    Learned::Replaced
                }
            }
            DEntry::Vacant(v) => {
                v.insert(Entry {
                    template: t,
                    last_seen: AtomicI64::new(now),
                    used: AtomicBool::new(false),
                });
                Learned::New
            }
        };
        let used = outcome == Learned::Refreshed
            && self
                .map
                .get(&key)
                .is_some_and(|e| e.used.load(Ordering::Relaxed));
        order.set(key, used, now);
        drop(order);
        if outcome != Learned::Refreshed {
            self.dirty.store(true, Ordering::Relaxed);
        }
        (outcome, evicted)
    }

    pub fn remove(&self, key: &TemplateKey) -> bool {
        let mut order = self.order();
        order.unset(key);
        if self.map.remove(key).is_some() {
            self.dirty.store(true, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// IPFIX withdrawal of all templates of one kind from (exporter, domain).
    pub fn withdraw_all(&self, exporter: IpAddr, version: u8, domain: u32, options: bool) -> usize {
        let keys: Vec<TemplateKey> = {
            let order = self.order();
            order
                .by_exporter
                .get(&exporter)
                .map(|s| s.iter().map(|r| r.2).collect())
                .unwrap_or_default()
        };
        keys.iter()
            .filter(|k| {
                k.version == version
                    && k.domain == domain
                    && self.map.get(k).is_some_and(|e| {
                        matches!(e.template.kind, TemplateKind::Options { .. }) == options
                    })
            })
            .filter(|k| self.remove(k))
            .count()
    }

    /// Expires templates not refreshed within the TTL. Returns how many went.
    pub fn expire(&self, now: i64) -> usize {
        let ttl = self.limits.ttl_secs;
        let keys: Vec<TemplateKey> = self
            .map
            .iter()
            .filter(|e| now.saturating_sub(e.last_seen.load(Ordering::Relaxed)) > ttl)
            .map(|e| *e.key())
            .collect();
        let n = keys.iter().filter(|k| self.remove(k)).count();
        self.expired.add(n as u64);
        n
    }

    /// Returns whether anything changed since the last call (and clears the flag).
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Vec<PersistedTemplate> {
        let mut v: Vec<PersistedTemplate> = self
            .map
            .iter()
            .map(|e| PersistedTemplate {
                key: *e.key(),
                kind: e.template.kind,
                fields: e.template.fields.to_vec(),
                last_seen: e.last_seen.load(Ordering::Relaxed),
            })
            .collect();
        v.sort_by_key(|p| p.key);
        v
    }

    /// Loads persisted templates (used at start-up, before any datagram).
    pub fn restore(&self, items: Vec<PersistedTemplate>, now: i64) -> usize {
        let mut n = 0;
        for p in items {
            if now.saturating_sub(p.last_seen) > self.limits.ttl_secs {
                continue;
            }
            let t = Template::new(p.key, p.kind, p.fields);
            self.learn(t, p.last_seen);
            n += 1;
        }
        self.dirty.store(false, Ordering::Relaxed);
        n.min(self.len())
    }
}

impl super::Decoder {
    /// Logs a template eviction, at most once per 10 s with the count held back.
    pub(super) fn log_template_eviction(&self, key: TemplateKey, why: Eviction, now_ms: i64) {
        if let Some(held) = self.evict_log.check(now_ms) {
            let reason = match why {
                Eviction::PerExporter => "max_templates_per_exporter",
                Eviction::Full => "max_templates",
            };
            tracing::warn!(
                exporter = %key.exporter,
                template = key.template_id,
                limit = reason,
                similar_messages_suppressed = held,
                "template store: a template was evicted to make room (nagare_decode_template_evictions_total)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn tpl(exporter: u8, id: u16, lens: &[u16]) -> Template {
        super::super::template::tests::tpl_at(ip(exporter), id, lens)
    }

    fn store(per_exporter: usize, total: usize) -> TemplateStore {
        TemplateStore::new(TemplateLimits {
            max_per_exporter: per_exporter,
            max_total: total,
            ttl_secs: 100,
        })
    }

    #[test]
    fn store_replaces_refreshes_and_bounds() {
        let s = store(2, 3);
        assert_eq!(s.learn(tpl(1, 256, &[4]), 1).0, Learned::New);
        assert_eq!(s.learn(tpl(1, 256, &[4]), 2).0, Learned::Refreshed);
        assert_eq!(s.learn(tpl(1, 256, &[8]), 3).0, Learned::Replaced);
        assert_eq!(s.learn(tpl(1, 257, &[4]), 4).0, Learned::New);
        // per-exporter cap 2: the stalest (256, last seen 3) is evicted
        assert_eq!(
            s.learn(tpl(1, 258, &[4]), 5),
            (Learned::New, Some(Eviction::PerExporter))
        );
        assert_eq!(s.len(), 2);
        assert!(s.get(&tpl(1, 256, &[4]).key).is_none());
        assert_eq!(s.evicted.get(), 1);
        // expiry
        assert_eq!(s.expire(105), 1); // 257 (4) is older than 100 s; 258 (5) is not
        assert_eq!(s.len(), 1);
        assert_eq!(s.count_for(&ip(1)), 1);
    }

    #[test]
    fn templates_that_decoded_data_outlive_unused_ones() {
        let s = store(10, 4);
        // a working exporter: two templates, both used by data
        for id in [256, 257] {
            s.learn(tpl(1, id, &[4]), 10);
            assert!(s.get_for_data(&tpl(1, id, &[4]).key).is_some());
        }
        // a flood of unused templates from other (spoofed) addresses, all newer
        for i in 0..50u8 {
            s.learn(tpl(100 + i, 300, &[4]), 20 + i64::from(i));
        }
        assert_eq!(s.len(), 4);
        assert_eq!(s.evicted_full.get(), 48);
        for id in [256, 257] {
            assert!(
                s.get(&tpl(1, id, &[4]).key).is_some(),
                "used template {id} kept"
            );
        }
        // the two newest unused ones are the others
        assert!(s.get(&tpl(149, 300, &[4]).key).is_some());
        assert!(s.get(&tpl(148, 300, &[4]).key).is_some());
        // a new exporter still gets in (it is never refused)
        assert_eq!(s.learn(tpl(7, 256, &[4]), 90).0, Learned::New);
        assert!(s.get(&tpl(7, 256, &[4]).key).is_some());
    }

    #[test]
    fn per_exporter_eviction_keeps_each_exporter_to_its_bound() {
        let s = store(1024, 65_536);
        for id in 0..5_000u16 {
            s.learn(tpl(1, 256 + id, &[4]), i64::from(id));
        }
        // another exporter is untouched by the first one's churn
        s.learn(tpl(2, 256, &[4]), 0);
        assert_eq!(s.count_for(&ip(1)), 1024);
        assert_eq!(s.count_for(&ip(2)), 1);
        assert_eq!(s.evicted.get(), 5_000 - 1024);
        // the newest 1 024 ids remain
        assert!(s.get(&tpl(1, 256 + 4_999, &[4]).key).is_some());
        assert!(s.get(&tpl(1, 256 + 3_976, &[4]).key).is_some());
        assert!(s.get(&tpl(1, 256 + 3_975, &[4]).key).is_none());
    }

    #[test]
    fn withdrawal_removes_only_that_domain_and_kind() {
        let s = store(10, 10);
        s.learn(tpl(1, 256, &[4]), 1);
        s.learn(tpl(1, 257, &[4]), 1);
        let mut other = tpl(1, 258, &[4]);
        other.key.domain = 5;
        let other = Template::new(other.key, TemplateKind::Data, other.fields.to_vec());
        s.learn(other, 1);
        assert_eq!(s.withdraw_all(ip(1), 10, 0, false), 2);
        assert_eq!(s.len(), 1);
        assert_eq!(s.count_for(&ip(1)), 1);
    }
}
