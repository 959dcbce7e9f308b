//! Folding records into vRNI flows and sessions, with bounded state.
//!
//! A session is a 5-tuple; its client is decided once (see [`super::classify`]) and the
//! decision applies to every later record of the session, in either direction, so a
//! reply B:443 -> A:51514 folds into the flow A -> B:443 as destination (server) bytes.
//!
//! **Dedup rule.** A VDS exports per port, so the same packets can be reported by two
//! observation points (the sending VM's port and the receiving VM's port, or a host
//! uplink and a switch). For each session and direction, the first observation point
//! that reports it owns it; records of the same session and direction from another
//! observation point are duplicates: they are counted (metric) and do not add to the
//! flow's bytes, packets or sessions (they still count for the switch ports they
//! crossed). An observation point is (exporter IP, observation domain, ingress and
//! egress interface, VMware port attributes, virtualObsID, flow direction).
//!
//! **Bounds.** Sessions live in two generations of hash tables: lookups check both,
//! inserts go to the current one, and the old generation is dropped when the current
//! one is older than the idle timeout or holds half the session cap. A session idle for
//! longer than the timeout (by flow time, so back-filled history works too) starts over
//! as a new session.

use std::hash::{Hash, Hasher};

use rustc_hash::{FxHashMap, FxHasher};

use super::classify::{Initiator, decide};
use crate::model::{FlowRecord, ip_to_u128};
use crate::telemetry::Counter;

/// Limits of the session table (per rollup shard).
#[derive(Debug, Clone, Copy)]
pub struct FoldLimits {
    pub max_sessions: usize,
    pub idle_ms: i64,
}

impl Default for FoldLimits {
    fn default() -> Self {
        Self {
            max_sessions: 1_000_000,
            idle_ms: 300_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SessionKey {
    lo: u128,
    hi: u128,
    lo_port: u16,
    hi_port: u16,
    proto: u8,
}

#[derive(Debug, Clone, Copy)]
struct Session {
    client_is_lo: bool,
    /// Observation point owning each direction (lo -> hi, hi -> lo); 0 = none yet.
    owner_up: u32,
    owner_down: u32,
    last_ms: i64,
}

#[derive(Default)]
pub struct FoldMetrics {
    pub sessions_new: Counter,
    pub duplicates: Counter,
    pub evicted: Counter,
    pub forced_rotations: Counter,
    pub restarted_idle: Counter,
}

/// What folding says about one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Folded {
    /// The record's source is the flow's client (else its bytes are the server's).
    pub src_is_client: bool,
    /// The record starts a session (count it once).
    pub new_session: bool,
    /// Another observation point already reports this session direction.
    pub duplicate: bool,
}

/// A shard's session table.
pub struct Folder {
    cur: FxHashMap<SessionKey, Session>,
    prev: FxHashMap<SessionKey, Session>,
    rotated_at_ms: i64,
    limits: FoldLimits,
}

/// The observation point of a record (never 0).
pub fn observation_point(r: &FlowRecord) -> u32 {
    let mut h = FxHasher::default();
    r.exporter.hash(&mut h);
    r.in_if.hash(&mut h);
    r.out_if.hash(&mut h);
    r.direction.hash(&mut h);
    r.vmware.ingress_attr.hash(&mut h);
    r.vmware.egress_attr.hash(&mut h);
    r.vmware.virtual_obs_id.hash(&mut h);
    r.vmware.flow_direction.hash(&mut h);
    (h.finish() as u32).max(1)
}

impl Folder {
    pub fn new(limits: FoldLimits) -> Self {
        Self {
            cur: FxHashMap::default(),
            prev: FxHashMap::default(),
            rotated_at_ms: 0,
            limits,
        }
    }

    pub fn len(&self) -> usize {
        self.cur.len() + self.prev.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current generation becomes the old one; the old one's table (cleared, its
    /// allocation kept) becomes the current one, so a steady load does not reallocate.
    fn rotate(&mut self, m: &FoldMetrics) {
        m.evicted.add(self.prev.len() as u64);
        std::mem::swap(&mut self.prev, &mut self.cur);
        self.cur.clear();
    }

    /// Drops the old generation when the current one is older than the idle timeout.
    /// `now_ms` is wall-clock time.
    pub fn maintain(&mut self, now_ms: i64, m: &FoldMetrics) {
        if now_ms - self.rotated_at_ms >= self.limits.idle_ms {
            self.rotate(m);
            self.rotated_at_ms = now_ms;
        }
    }

    /// Folds one record (its effective 5-tuple: tenant pair for overlays).
    #[allow(clippy::too_many_arguments)]
    pub fn fold(
        &mut self,
        src: std::net::IpAddr,
        src_port: u16,
        dst: std::net::IpAddr,
        dst_port: u16,
        proto: u8,
        tcp_flags: u16,
        biflow_direction: u8,
        biflow: bool,
        dst_is_group: bool,
        obs: u32,
        flow_ms: i64,
        m: &FoldMetrics,
    ) -> Folded {
        let (s, d) = (ip_to_u128(src), ip_to_u128(dst));
        // ICMP: type/code is not a session key part, the echo id is unknown: one session
        // per address pair.
        let (sp, dp) = if proto == 1 || proto == 58 {
            (0, 0)
        } else {
            (src_port, dst_port)
        };
        let src_is_lo = (s, sp) <= (d, dp);
        let key = if src_is_lo {
            SessionKey {
                lo: s,
                hi: d,
                lo_port: sp,
                hi_port: dp,
                proto,
            }
        } else {
            SessionKey {
                lo: d,
                hi: s,
                lo_port: dp,
                hi_port: sp,
                proto,
            }
        };
        if self.cur.len() >= (self.limits.max_sessions / 2).max(1) {
            m.forced_rotations.inc();
            self.rotate(m);
        }
        // one hash of the key in the current generation (lookup and insert), a second
        // one in the old generation only for sessions not seen in this one
        let slot = self.cur.entry(key);
        let existing = match &slot {
            std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
            std::collections::hash_map::Entry::Vacant(_) => self.prev.remove(&key),
        };
        let mut new_session = false;
        let mut st = match existing {
            Some(st) if flow_ms - st.last_ms <= self.limits.idle_ms => st,
            other => {
                if other.is_some() {
                    m.restarted_idle.inc();
                }
                new_session = true;
                let (who, _) = decide(
                    proto,
                    src,
                    src_port,
                    dst,
                    dst_port,
                    tcp_flags,
                    biflow_direction,
                    dst_is_group,
                );
                Session {
                    client_is_lo: (who == Initiator::Src) == src_is_lo,
                    owner_up: 0,
                    owner_down: 0,
                    last_ms: flow_ms,
                }
            }
        };
        st.last_ms = st.last_ms.max(flow_ms);
        // Ownership of this record's direction (both directions for biflow records).
        let mut duplicate = false;
        {
            let (mine, other) = if src_is_lo {
                (&mut st.owner_up, &mut st.owner_down)
            } else {
                (&mut st.owner_down, &mut st.owner_up)
            };
            if *mine == 0 {
                *mine = obs;
            } else if *mine != obs {
                duplicate = true;
            }
            if biflow && !duplicate && *other == 0 {
                *other = obs;
            }
        }
        if duplicate {
            m.duplicates.inc();
            new_session = false;
        }
        if new_session {
            m.sessions_new.inc();
        }
        match slot {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                e.insert(st);
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(st);
            }
        }
        Folded {
            src_is_client: st.client_is_lo == src_is_lo,
            new_session,
            duplicate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    fn f(
        folder: &mut Folder,
        m: &FoldMetrics,
        src: &str,
        sp: u16,
        dst: &str,
        dp: u16,
        flags: u16,
        obs: u32,
        t: i64,
    ) -> Folded {
        folder.fold(
            src.parse().unwrap(),
            sp,
            dst.parse().unwrap(),
            dp,
            6,
            flags,
            255,
            false,
            false,
            obs,
            t,
            m,
        )
    }

    #[test]
    fn reply_folds_into_the_request_flow() {
        let m = FoldMetrics::default();
        let mut fo = Folder::new(FoldLimits::default());
        // request then reply of one session
        let a = f(
            &mut fo, &m, "10.0.0.1", 51514, "10.0.0.2", 443, 0x1b, 7, 1000,
        );
        let b = f(
            &mut fo, &m, "10.0.0.2", 443, "10.0.0.1", 51514, 0x1b, 7, 1000,
        );
        assert_eq!(
            a,
            Folded {
                src_is_client: true,
                new_session: true,
                duplicate: false
            }
        );
        assert_eq!(
            b,
            Folded {
                src_is_client: false,
                new_session: false,
                duplicate: false
            }
        );
        // reply first: still one session, client decided by the service port
        let c = f(
            &mut fo, &m, "10.0.0.2", 443, "10.0.0.1", 51515, 0x1b, 7, 1000,
        );
        assert!(!c.src_is_client && c.new_session);
        // a SYN-only record decides even against the port heuristic...
        let d = f(
            &mut fo, &m, "10.0.0.9", 443, "10.0.0.1", 40000, 0x02, 7, 1000,
        );
        assert!(d.src_is_client);
        // ...and the decision sticks for the session's later records
        let e = f(
            &mut fo, &m, "10.0.0.1", 40000, "10.0.0.9", 443, 0x12, 7, 1000,
        );
        assert!(!e.src_is_client);
        assert_eq!(m.sessions_new.get(), 3);
    }

    #[test]
    fn second_observation_point_is_a_duplicate() {
        let m = FoldMetrics::default();
        let mut fo = Folder::new(FoldLimits::default());
        let a = f(
            &mut fo,
            &m,
            "172.18.65.91",
            138,
            "172.18.65.255",
            138,
            0,
            1,
            0,
        );
        let b = f(
            &mut fo,
            &m,
            "172.18.65.91",
            138,
            "172.18.65.255",
            138,
            0,
            2,
            0,
        );
        let c = f(
            &mut fo,
            &m,
            "172.18.65.91",
            138,
            "172.18.65.255",
            138,
            0,
            1,
            500,
        );
        assert!(!a.duplicate && a.new_session);
        assert!(b.duplicate && !b.new_session);
        assert!(!c.duplicate && !c.new_session); // same point, later record: counted
        // the other direction may be owned by another point
        let d = f(
            &mut fo,
            &m,
            "172.18.65.255",
            138,
            "172.18.65.91",
            138,
            0,
            2,
            600,
        );
        assert!(!d.duplicate);
        assert_eq!(m.duplicates.get(), 1);
    }

    #[test]
    fn idle_sessions_start_over_and_table_is_bounded() {
        let m = FoldMetrics::default();
        let mut fo = Folder::new(FoldLimits {
            max_sessions: 100,
            idle_ms: 1000,
        });
        assert!(f(&mut fo, &m, "10.0.0.1", 5000, "10.0.0.2", 22, 0x18, 1, 0).new_session);
        assert!(!f(&mut fo, &m, "10.0.0.1", 5000, "10.0.0.2", 22, 0x18, 1, 900).new_session);
        assert!(f(&mut fo, &m, "10.0.0.1", 5000, "10.0.0.2", 22, 0x18, 1, 5000).new_session);
        for i in 0..1000u16 {
            f(
                &mut fo,
                &m,
                "10.0.0.1",
                10000 + i,
                "10.0.0.3",
                80,
                0x18,
                1,
                6000,
            );
            assert!(fo.len() <= 100, "{}", fo.len());
        }
        assert!(m.forced_rotations.get() > 0 && m.evicted.get() > 0);
    }
}
