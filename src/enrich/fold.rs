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
//! **Bounds.** Sessions live in a fixed-size set-associative table sized from the cap:
//! a session's 64-bit key hash picks a set of [`WAYS`] slots, and the slot keeps the
//! rest of the hash as its identity (two live sessions sharing 64 hash bits is a
//! ~1e-13 event per lookup). A new session takes a free slot of its set, else the one
//! idle longest; taking a slot from a session that was not idle yet is counted
//! (`capacity_evictions`: raise `max_sessions`). A session idle for longer than the
//! timeout (by flow time, so back-filled history works too) starts over as a new
//! session (idle time is counted in whole seconds). One lookup touches one set (one
//! cache line of four 16-byte slots), which
//! [`Folder::prefetch`] can load ahead of time: at high rates nearly every record is a
//! miss in a table far larger than the caches.

use std::hash::{Hash, Hasher};

use rustc_hash::FxHasher;

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

/// Slots per set.
pub const WAYS: usize = 4;

/// A session in 16 bytes (a set of four is one cache line).
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The key hash with bit 1 set (so never 0: 0 is a free slot) and bit 0 saying
    /// whether the lower (address, port) end is the client.
    key: u64,
    /// Last flow second (low 32 bits, wrapping), then the observation points owning
    /// each direction (lo -> hi, hi -> lo) as 16-bit tags (0 = none yet).
    meta: u64,
}

impl Slot {
    fn ident(h: u64) -> u64 {
        (h | 2) & !1
    }
    fn is(&self, ident: u64) -> bool {
        self.key & !1 == ident
    }
    fn is_free(&self) -> bool {
        self.key == 0
    }
    fn client_is_lo(&self) -> bool {
        self.key & 1 == 1
    }
    fn last_s(&self) -> u32 {
        self.meta as u32
    }
    fn owners(&self) -> (u16, u16) {
        ((self.meta >> 32) as u16, (self.meta >> 48) as u16)
    }
    fn set(&mut self, last_s: u32, owners: (u16, u16)) {
        self.meta = u64::from(last_s) | (u64::from(owners.0) << 32) | (u64::from(owners.1) << 48);
    }
}

/// Seconds from `then` to `now`, both flow seconds wrapped to 32 bits.
fn age(now: u32, then: u32) -> i64 {
    i64::from(now.wrapping_sub(then) as i32)
}

/// The 16-bit tag of an observation point (never 0). Two points reporting one session
/// share a tag once in 65 535 pairs; their duplicates then count (as they would in a
/// collector without deduplication).
fn owner_tag(obs: u32) -> u16 {
    ((obs ^ (obs >> 16)) as u16).max(1)
}

/// One set: 64 bytes, one cache line.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Set {
    slots: [Slot; WAYS],
}

#[derive(Default)]
pub struct FoldMetrics {
    pub sessions_new: Counter,
    pub duplicates: Counter,
    /// Sessions whose slot was taken by a new session (idle or not).
    pub evicted: Counter,
    /// Of those, sessions that were not idle yet (the table is too small).
    pub capacity_evictions: Counter,
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

/// Counts kept by the folder between [`Folder::publish`] calls (an atomic add per
/// record is a full memory barrier: it would wait for every pending cache miss).
#[derive(Default)]
struct LocalCounts {
    sessions_new: u64,
    duplicates: u64,
    evicted: u64,
    capacity_evictions: u64,
    restarted_idle: u64,
}

/// A shard's session table.
pub struct Folder {
    counts: LocalCounts,
    sets: Vec<Set>,
    used: usize,
    limits: FoldLimits,
}

/// The observation point of a record (never 0).
pub fn observation_point(r: &FlowRecord) -> u32 {
    let mut h = FxHasher::default();
    r.exporter.hash(&mut h);
    r.in_if.hash(&mut h);
    r.out_if.hash(&mut h);
    r.direction.hash(&mut h);
    // without VMware elements these are the defaults: hashing them tells nothing
    if r.vmware.present {
        r.vmware.ingress_attr.hash(&mut h);
        r.vmware.egress_attr.hash(&mut h);
        r.vmware.virtual_obs_id.hash(&mut h);
        r.vmware.flow_direction.hash(&mut h);
    }
    (h.finish() as u32).max(1)
}

/// A session's ends in canonical order: (lower address, its port, higher address, its
/// port, whether the source is the lower end). ICMP sessions have no ports (type/code
/// is not a session key part, the echo id is unknown: one session per address pair).
fn canonical(
    src: std::net::IpAddr,
    src_port: u16,
    dst: std::net::IpAddr,
    dst_port: u16,
    proto: u8,
) -> (u128, u16, u128, u16, bool) {
    let (s, d) = (ip_to_u128(src), ip_to_u128(dst));
    let (sp, dp) = if proto == 1 || proto == 58 {
        (0, 0)
    } else {
        (src_port, dst_port)
    };
    if (s, sp) <= (d, dp) {
        (s, sp, d, dp, true)
    } else {
        (d, dp, s, sp, false)
    }
}

/// The 64-bit hash identifying a session (either direction gives the same), never 0.
pub fn session_hash(
    src: std::net::IpAddr,
    src_port: u16,
    dst: std::net::IpAddr,
    dst_port: u16,
    proto: u8,
) -> u64 {
    let (lo, lo_port, hi, hi_port, _) = canonical(src, src_port, dst, dst_port, proto);
    // every bit depends on every input bit: the set index and the identity are
    // independent
    crate::model::hash64(&(lo, hi, lo_port, hi_port, proto)).max(1)
}

impl Folder {
    pub fn new(limits: FoldLimits) -> Self {
        let n = (limits.max_sessions / WAYS).max(1);
        let mut sets: Vec<Set> = Vec::with_capacity(n);
        advise_huge_pages(&sets);
        sets.resize(n, Set::default());
        Self {
            counts: LocalCounts::default(),
            sets,
            used: 0,
            limits,
        }
    }

    /// Adds the counts since the last call to the shared metrics (once per batch).
    pub fn publish(&mut self, m: &FoldMetrics) {
        let c = std::mem::take(&mut self.counts);
        m.sessions_new.add(c.sessions_new);
        m.duplicates.add(c.duplicates);
        m.evicted.add(c.evicted);
        m.capacity_evictions.add(c.capacity_evictions);
        m.restarted_idle.add(c.restarted_idle);
    }

    /// Sessions held (live or idle, until their slot is reused).
    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    fn set_of(&self, h: u64) -> usize {
        // multiply-shift range reduction over the high bits
        (((h >> 32) * self.sets.len() as u64) >> 32) as usize
    }

    /// Starts loading the set of session hash `h` into the cache.
    #[inline]
    pub fn prefetch(&self, h: u64) {
        if let Some(set) = self.sets.get(self.set_of(h)) {
            crate::model::prefetch(set);
        }
    }

    /// Folds one record (its effective 5-tuple: tenant pair for overlays), given its
    /// [`session_hash`]. `dst_is_group` (multicast or broadcast destination) is asked
    /// only for a new session. The counts reach the metrics at the next
    /// [`Self::publish`].
    #[allow(clippy::too_many_arguments)]
    pub fn fold_hashed(
        &mut self,
        h: u64,
        src: std::net::IpAddr,
        src_port: u16,
        dst: std::net::IpAddr,
        dst_port: u16,
        proto: u8,
        tcp_flags: u16,
        biflow_direction: u8,
        biflow: bool,
        dst_is_group: impl FnOnce() -> bool,
        obs: u32,
        flow_ms: i64,
    ) -> Folded {
        let (.., src_is_lo) = canonical(src, src_port, dst, dst_port, proto);
        let si = self.set_of(h);
        let idle_ms = self.limits.idle_ms;
        let ident = Slot::ident(h);
        let flow_s = flow_ms.div_euclid(1000) as u32;
        let obs = owner_tag(obs);
        let Some(set) = self.sets.get_mut(si) else {
            // unreachable (set_of is in range); answer as a new session
            return Folded {
                src_is_client: true,
                new_session: true,
                duplicate: false,
            };
        };
        let mut hit = None;
        let mut victim = 0;
        for (w, slot) in set.slots.iter().enumerate() {
            if slot.is(ident) {
                hit = Some(w);
                break;
            }
            let v = &set.slots[victim];
            if !v.is_free()
                && (slot.is_free() || age(flow_s, slot.last_s()) > age(flow_s, v.last_s()))
            {
                victim = w;
            }
        }
        let mut new_session = false;
        let way = match hit {
            Some(w) if age(flow_s, set.slots[w].last_s()) * 1000 <= idle_ms => w,
            other => {
                let w = match other {
                    Some(w) => {
                        self.counts.restarted_idle += 1;
                        w
                    }
                    None => {
                        let v = &set.slots[victim];
                        if v.is_free() {
                            self.used += 1;
                        } else {
                            self.counts.evicted += 1;
                            if age(flow_s, v.last_s()).abs() * 1000 <= idle_ms {
                                self.counts.capacity_evictions += 1;
                            }
                        }
                        victim
                    }
                };
                new_session = true;
                let (who, _) = decide(
                    proto,
                    src,
                    src_port,
                    dst,
                    dst_port,
                    tcp_flags,
                    biflow_direction,
                    dst_is_group(),
                );
                let mut slot = Slot {
                    key: ident | u64::from((who == Initiator::Src) == src_is_lo),
                    meta: 0,
                };
                slot.set(flow_s, (0, 0));
                set.slots[w] = slot;
                w
            }
        };
        let st = &mut set.slots[way];
        let last = if age(flow_s, st.last_s()) > 0 {
            flow_s
        } else {
            st.last_s()
        };
        // Ownership of this record's direction (both directions for biflow records).
        let mut duplicate = false;
        let (mut up, mut down) = st.owners();
        {
            let (mine, other) = if src_is_lo {
                (&mut up, &mut down)
            } else {
                (&mut down, &mut up)
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
        st.set(last, (up, down));
        if duplicate {
            self.counts.duplicates += 1;
            new_session = false;
        }
        if new_session {
            self.counts.sessions_new += 1;
        }
        let client_is_lo = st.client_is_lo();
        Folded {
            src_is_client: client_is_lo == src_is_lo,
            new_session,
            duplicate,
        }
    }
}

/// Asks for transparent huge pages on a large table (fewer TLB misses on random
/// access); a no-op where unsupported.
fn advise_huge_pages<T>(v: &Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    #[cfg(target_os = "linux")]
    if bytes >= 4 << 20 {
        let page = 4096usize;
        let start = (v.as_ptr() as usize).div_ceil(page) * page;
        let end = (v.as_ptr() as usize + bytes) / page * page;
        if end > start {
            // SAFETY: the range lies inside the vector's own allocation; MADV_HUGEPAGE
            // only changes how the kernel backs it
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
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
        let (src, dst) = (src.parse().unwrap(), dst.parse().unwrap());
        let folded = folder.fold_hashed(
            session_hash(src, sp, dst, dp, 6),
            src,
            sp,
            dst,
            dp,
            6,
            flags,
            255,
            false,
            || false,
            obs,
            t,
        );
        folder.publish(m);
        folded
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
        assert!(m.capacity_evictions.get() > 0 && m.evicted.get() > 0);
    }
}
