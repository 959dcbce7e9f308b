//! Data sets that arrive before their template: held (bounded in sets, bytes and age)
//! and decoded when the template comes.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use super::exporters::ExporterState;
use super::template::TemplateKey;
use super::{Decoder, Hdr, lock};
use crate::model::FlowRecord;

/// A data set waiting for its template.
pub(super) struct Held {
    key: TemplateKey,
    export_ms: i64,
    sys_uptime_ms: Option<u32>,
    body: Vec<u8>,
    at_ms: i64,
}

#[derive(Default)]
pub(super) struct Pending {
    sets: VecDeque<Held>,
    bytes: usize,
}

impl Decoder {
    pub(super) fn hold(&self, key: TemplateKey, hdr: Hdr, body: &[u8], now_ms: i64) {
        let mut p = lock(&self.pending);
        self.expire_held_locked(&mut p, now_ms);
        while !p.sets.is_empty()
            && (p.sets.len() >= self.cfg.hold_max_sets
                || p.bytes + body.len() > self.cfg.hold_max_bytes)
        {
            if let Some(old) = p.sets.pop_front() {
                p.bytes -= old.body.len();
                self.metrics.held_overflow.inc();
            }
        }
        if body.len() > self.cfg.hold_max_bytes || self.cfg.hold_max_sets == 0 {
            self.metrics.held_overflow.inc();
            return;
        }
        p.bytes += body.len();
        p.sets.push_back(Held {
            key,
            export_ms: hdr.export_ms,
            sys_uptime_ms: hdr.sys_uptime_ms,
            body: body.to_vec(),
            at_ms: now_ms,
        });
        self.metrics.held_sets.inc();
        self.pending_len.store(p.sets.len(), Ordering::Relaxed);
        self.metrics.held_now.set(p.sets.len() as u64);
    }

    fn expire_held_locked(&self, p: &mut Pending, now_ms: i64) {
        let ttl_ms = self.cfg.hold_ttl_secs.saturating_mul(1000);
        while let Some(front) = p.sets.front() {
            if now_ms - front.at_ms <= ttl_ms {
                break;
            }
            if let Some(old) = p.sets.pop_front() {
                p.bytes -= old.body.len();
                self.metrics.held_expired.inc();
            }
        }
        self.pending_len.store(p.sets.len(), Ordering::Relaxed);
        self.metrics.held_now.set(p.sets.len() as u64);
    }

    /// Drops held sets past their TTL (called periodically by the daemon).
    pub fn expire_held(&self, now_ms: i64) {
        let mut p = lock(&self.pending);
        self.expire_held_locked(&mut p, now_ms);
    }

    /// Decodes the sets held for `key` now that its template is known.
    pub(super) fn release_held(
        &self,
        key: &TemplateKey,
        st: &ExporterState,
        out: &mut Vec<FlowRecord>,
    ) -> usize {
        let Some(t) = self.templates.get_for_data(key) else {
            return 0;
        };
        let mine: Vec<Held> = {
            let mut p = lock(&self.pending);
            let (mine, rest): (VecDeque<Held>, VecDeque<Held>) =
                p.sets.drain(..).partition(|h| h.key == *key);
            p.sets = rest;
            p.bytes = p.sets.iter().map(|h| h.body.len()).sum();
            self.pending_len.store(p.sets.len(), Ordering::Relaxed);
            self.metrics.held_now.set(p.sets.len() as u64);
            mine.into_iter().collect()
        };
        let mut total = 0;
        for h in mine {
            let hdr = Hdr {
                version: key.version,
                export_ms: h.export_ms,
                sys_uptime_ms: h.sys_uptime_ms,
            };
            match self.decode_set(&t, st, hdr, &h.body, out) {
                Ok(set) => total += set.records,
                Err((set, e)) => {
                    total += set.records;
                    self.count_error(e, Some(&st.counters));
                }
            }
        }
        self.metrics.held_decoded_records.add(total as u64);
        total
    }
}
