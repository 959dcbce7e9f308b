//! An open-addressing table keyed by well-mixed 64-bit identities (row hashes), whose
//! probe position is known before the lookup, so a batch can prefetch it.
//!
//! Linear probing over a power-of-two array of keys (0 = free) at most half full, with a
//! parallel array of one-byte tags: a lookup reads one cache line of tags, and a key
//! only where its tag matches. Values live in a third array read only on a hit.
//! Nothing is ever removed (a bucket's tables die with it).

/// Smallest allocated capacity.
const MIN_CAP: usize = 1024;

/// The keys of an [`IdMap`] or [`IdSet`], with a one-byte tag per slot.
///
/// The tags (an eighth of the keys' size: 256 KiB for a bucket of 100 000 rows) stay in
/// the core's cache where the keys do not, so a lookup of an absent identity (every
/// record of a flood past the cardinality cap) reads no key at all in nearly every
/// case: a probed slot is read only when its tag matches (1 in 128 for another key).
#[derive(Debug, Default, Clone)]
struct Keys {
    keys: Vec<u64>,
    /// 0 = free, else [`tag`] of the key in the same slot
    tags: Vec<u8>,
    len: usize,
}

/// A slot's tag: 7 high bits of the identity (the low ones choose the slot), never 0.
#[inline]
fn tag(id: u64) -> u8 {
    ((id >> 57) as u8) | 0x80
}

impl Keys {
    fn mask(&self) -> usize {
        self.keys.len().wrapping_sub(1)
    }

    /// Where `id` is, or the free slot where it would go (`keys` not empty).
    #[inline]
    fn find(&self, id: u64) -> (usize, bool) {
        let mask = self.mask();
        let t = tag(id);
        let mut i = (id as usize) & mask;
        loop {
            match self.tags.get(i).copied().unwrap_or(0) {
                0 => return (i, false),
                x if x == t && self.keys.get(i) == Some(&id) => return (i, true),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Starts loading the tag of `id`'s home slot, and with `key` its key too (for a
    /// lookup that is expected to find it).
    #[inline]
    fn prefetch(&self, id: u64, key: bool) {
        let i = (id as usize) & self.mask();
        if let Some(t) = self.tags.get(i) {
            crate::model::prefetch(t);
        }
        if key && let Some(k) = self.keys.get(i) {
            crate::model::prefetch(k);
        }
    }

    /// Room for one more key (doubling keeps the table at most half full). Returns the
    /// old keys when it grew, for the caller to re-insert with their values.
    fn reserve_one(&mut self) -> Option<Vec<u64>> {
        if (self.len + 1) * 2 <= self.keys.len() {
            return None;
        }
        let cap = (self.keys.len() * 2).max(MIN_CAP);
        let old = std::mem::replace(&mut self.keys, vec![0; cap]);
        self.tags = vec![0; cap];
        self.len = 0;
        Some(old)
    }

    /// Empties the table, keeping its memory: only the tags are reset (a free tag
    /// makes its key and value unread).
    fn clear(&mut self) {
        self.tags.fill(0);
        self.len = 0;
    }

    /// Stores `id` (room reserved) and returns its slot.
    fn put(&mut self, id: u64) -> usize {
        let (i, found) = self.find(id);
        self.keys[i] = id;
        self.tags[i] = tag(id);
        if !found {
            self.len += 1;
        }
        i
    }
}

/// Identity -> u32 (a row index).
#[derive(Debug, Default, Clone)]
pub struct IdMap {
    k: Keys,
    vals: Vec<u32>,
}

impl IdMap {
    /// Whether most of the table's memory went unused: under an eighth of its slots
    /// taken, where a table that grew to its contents has a quarter to a half.
    pub fn oversized(&self) -> bool {
        self.k.len.saturating_mul(8) < self.k.keys.len()
    }

    /// Slots allocated.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.k.keys.len()
    }

    /// Empties the map, keeping its memory for the next bucket.
    pub fn clear(&mut self) {
        self.k.clear();
    }

    pub fn get(&self, id: u64) -> Option<u32> {
        if self.k.keys.is_empty() {
            return None;
        }
        match self.k.find(id) {
            (i, true) => self.vals.get(i).copied(),
            _ => None,
        }
    }

    pub fn contains(&self, id: u64) -> bool {
        self.get(id).is_some()
    }

    /// Sets the value of `id` (0 is not an identity and is ignored).
    pub fn insert(&mut self, id: u64, v: u32) {
        if id == 0 {
            return;
        }
        if let Some(old) = self.k.reserve_one() {
            let old_vals = std::mem::replace(&mut self.vals, vec![0; self.k.keys.len()]);
            for (k, ov) in old.into_iter().zip(old_vals).filter(|(k, _)| *k != 0) {
                let i = self.k.put(k);
                self.vals[i] = ov;
            }
        }
        let i = self.k.put(id);
        self.vals[i] = v;
    }

    /// Starts loading the lines where `id` is looked up: its tag, and with `key` its
    /// key and value (worth it when the lookup is expected to find it).
    pub fn prefetch(&self, id: u64, key: bool) {
        self.k.prefetch(id, key);
        if key && let Some(v) = self.vals.get((id as usize) & self.k.mask()) {
            crate::model::prefetch(v);
        }
    }
}

/// A set of identities.
#[derive(Debug, Default, Clone)]
pub struct IdSet {
    k: Keys,
}

impl IdSet {
    pub fn len(&self) -> usize {
        self.k.len
    }

    pub fn is_empty(&self) -> bool {
        self.k.len == 0
    }

    pub fn contains(&self, id: u64) -> bool {
        !self.k.keys.is_empty() && self.k.find(id).1
    }

    /// Adds `id`; false when it was there already (0 is ignored).
    pub fn insert(&mut self, id: u64) -> bool {
        if id == 0 || self.contains(id) {
            return false;
        }
        if let Some(old) = self.k.reserve_one() {
            for k in old.into_iter().filter(|&k| k != 0) {
                self.k.put(k);
            }
        }
        self.k.put(id);
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.k.keys.iter().copied().filter(|&k| k != 0)
    }

    pub fn prefetch(&self, id: u64) {
        self.k.prefetch(id, true);
    }
}

/// Registers of a [`Sketch`] (2^12: 4 KiB, standard error 1.04/sqrt(4096) = 1.6%).
const SKETCH_BITS: u32 = 12;

/// A HyperLogLog estimate of how many distinct identities were added, in fixed memory.
#[derive(Debug, Clone)]
pub struct Sketch {
    regs: Box<[u8]>,
}

impl Default for Sketch {
    fn default() -> Self {
        Self {
            regs: vec![0; 1 << SKETCH_BITS].into_boxed_slice(),
        }
    }
}

impl Sketch {
    pub fn add(&mut self, id: u64) {
        let i = (id >> (64 - SKETCH_BITS)) as usize;
        // rank of the first 1 bit in the rest (a guard bit bounds it)
        let rest = (id << SKETCH_BITS) | (1 << (SKETCH_BITS - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        if let Some(r) = self.regs.get_mut(i)
            && rank > *r
        {
            *r = rank;
        }
    }

    /// Adds everything `other` saw.
    pub fn merge(&mut self, other: &Sketch) {
        for (a, b) in self.regs.iter_mut().zip(other.regs.iter()) {
            *a = (*a).max(*b);
        }
    }

    pub fn estimate(&self) -> u64 {
        let m = self.regs.len() as f64;
        let mut sum = 0.0;
        let mut zeros = 0usize;
        for &r in self.regs.iter() {
            sum += f64::powi(2.0, -i32::from(r));
            zeros += usize::from(r == 0);
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let e = if raw <= 2.5 * m && zeros > 0 {
            // small range: linear counting
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        e.round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// splitmix64, as the identities are produced
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).max(1)
    }

    /// Within 5% (three standard errors) from a thousand to a million distinct
    /// identities, duplicates not counted, and a merge estimates the union.
    #[test]
    fn sketch_estimates_distinct_counts() {
        for n in [1_000u64, 30_000, 1_000_000] {
            let mut s = Sketch::default();
            for i in 0..n {
                s.add(mix(i));
                s.add(mix(i / 2)); // repeats
            }
            let e = s.estimate() as f64;
            assert!((e - n as f64).abs() / n as f64 <= 0.05, "{n}: {e}");
        }
        let (mut a, mut b) = (Sketch::default(), Sketch::default());
        for i in 0..60_000u64 {
            a.add(mix(i));
            b.add(mix(i + 30_000));
        }
        a.merge(&b);
        let e = a.estimate() as f64;
        assert!((e - 90_000.0).abs() / 90_000.0 <= 0.05, "{e}");
    }

    #[test]
    fn map_agrees_with_std_through_growth() {
        let mut m = IdMap::default();
        let mut sm = HashMap::new();
        // repeated ids, and ids sharing low bits (same home slot)
        for i in 0..20_000u64 {
            let id = if i % 7 == 0 {
                mix(i / 7)
            } else if i % 11 == 0 {
                (i << 20) | 5
            } else {
                mix(i)
            };
            assert_eq!(m.contains(id), sm.contains_key(&id), "{id}");
            m.insert(id, i as u32);
            sm.insert(id, i as u32);
        }
        assert_eq!(m.k.len, sm.len());
        for (&k, &v) in &sm {
            assert_eq!(m.get(k), Some(v));
        }
        for i in 100_000..101_000u64 {
            assert_eq!(m.get(mix(i)), sm.get(&mix(i)).copied());
        }
        // 0 is not an identity
        m.insert(0, 1);
        assert_eq!(m.get(0), None);
    }
}
