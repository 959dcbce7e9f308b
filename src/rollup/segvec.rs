//! A read-only vector stored in fixed-size shared segments, so that successive
//! snapshots of a growing table share what did not change.
//!
//! An open bucket keeps its rows and endpoints in plain vectors and publishes a
//! snapshot of them for queries every few seconds. Copying the whole table each time
//! costs, over a minute, several copies of every row. With segments, a snapshot reuses
//! every segment of the previous one that is full and was not written since
//! ([`SegVec::republish`]), and copies only the others: the tail and the segments
//! whose rows were updated ([`DirtySegs`]).

use std::sync::Arc;

/// Elements per segment (the last segment may be shorter).
pub const SEG_LEN: usize = 1 << SEG_SHIFT;
const SEG_SHIFT: u32 = 12;

/// Fixed-size shared segments (all full but the last).
pub struct SegVec<T> {
    segs: Vec<Arc<[T]>>,
    len: usize,
}

impl<T> Clone for SegVec<T> {
    fn clone(&self) -> Self {
        Self {
            segs: self.segs.clone(),
            len: self.len,
        }
    }
}

impl<T> Default for SegVec<T> {
    fn default() -> Self {
        Self {
            segs: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Copy> SegVec<T> {
    /// A copy of `v` in segments.
    pub fn from_slice(v: &[T]) -> Self {
        Self {
            segs: v.chunks(SEG_LEN).map(Arc::from).collect(),
            len: v.len(),
        }
    }

    /// A snapshot of `cur`, sharing with `prev` (an earlier snapshot of a prefix of
    /// the same vector) every segment that is full in both and not marked in `dirty`.
    pub fn republish(prev: &SegVec<T>, cur: &[T], dirty: &DirtySegs) -> Self {
        let segs = cur
            .chunks(SEG_LEN)
            .enumerate()
            .map(|(s, part)| match prev.segs.get(s) {
                Some(old) if old.len() == SEG_LEN && part.len() == SEG_LEN && !dirty.is(s) => {
                    old.clone()
                }
                _ => Arc::from(part),
            })
            .collect();
        Self {
            segs,
            len: cur.len(),
        }
    }

    pub fn to_vec(&self) -> Vec<T> {
        self.iter().copied().collect()
    }
}

impl<T> SegVec<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn get(&self, i: usize) -> Option<&T> {
        self.segs.get(i >> SEG_SHIFT)?.get(i & (SEG_LEN - 1))
    }

    pub fn iter(&self) -> Iter<'_, T> {
        self.segs.iter().flat_map(|s| &s[..])
    }

    /// Memory held (segments shared with another snapshot are counted in both).
    pub fn heap_bytes(&self) -> usize {
        self.segs.capacity() * std::mem::size_of::<Arc<[T]>>()
            + self.len * std::mem::size_of::<T>()
            + self.segs.len() * 2 * std::mem::size_of::<usize>()
    }

    /// Segments in common with `other` (the same allocation).
    pub fn shared_with(&self, other: &SegVec<T>) -> usize {
        self.segs
            .iter()
            .zip(&other.segs)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count()
    }
}

pub type Iter<'a, T> =
    std::iter::FlatMap<std::slice::Iter<'a, Arc<[T]>>, &'a [T], fn(&'a Arc<[T]>) -> &'a [T]>;

impl<'a, T> IntoIterator for &'a SegVec<T> {
    type Item = &'a T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T: Copy> From<Vec<T>> for SegVec<T> {
    fn from(v: Vec<T>) -> Self {
        Self::from_slice(&v)
    }
}

impl<T: Copy> FromIterator<T> for SegVec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut segs = Vec::new();
        let mut part: Vec<T> = Vec::with_capacity(SEG_LEN);
        let mut len = 0;
        for x in iter {
            part.push(x);
            len += 1;
            if part.len() == SEG_LEN {
                segs.push(Arc::from(&part[..]));
                part.clear();
            }
        }
        if !part.is_empty() {
            segs.push(Arc::from(part));
        }
        Self { segs, len }
    }
}

impl<T: PartialEq> PartialEq for SegVec<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<T: Eq> Eq for SegVec<T> {}

impl<T: std::fmt::Debug> std::fmt::Debug for SegVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Segments written since the last snapshot.
#[derive(Debug, Default, Clone)]
pub struct DirtySegs(Vec<u64>);

impl DirtySegs {
    /// Element `i` was written.
    #[inline]
    pub fn mark(&mut self, i: usize) {
        let s = i >> SEG_SHIFT;
        let w = s >> 6;
        if w >= self.0.len() {
            self.0.resize(w + 1, 0);
        }
        if let Some(x) = self.0.get_mut(w) {
            *x |= 1 << (s & 63);
        }
    }

    pub fn is(&self, seg: usize) -> bool {
        self.0
            .get(seg >> 6)
            .is_some_and(|x| x & (1 << (seg & 63)) != 0)
    }

    pub fn clear(&mut self) {
        self.0.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_fixed_size_and_indexable() {
        for n in [0, 1, SEG_LEN - 1, SEG_LEN, SEG_LEN + 1, 3 * SEG_LEN + 17] {
            let v: Vec<u32> = (0..n as u32).collect();
            let a = SegVec::from_slice(&v);
            let b: SegVec<u32> = v.iter().copied().collect();
            assert_eq!(a.len(), n);
            assert_eq!(a, b);
            assert_eq!(a.to_vec(), v);
            assert_eq!(b.to_vec(), v);
            for i in [0, n / 2, n.saturating_sub(1)] {
                assert_eq!(a.get(i), v.get(i), "n={n} i={i}");
                assert_eq!(b.get(i), v.get(i), "n={n} i={i}");
            }
            assert_eq!(a.get(n), None);
            assert_eq!(a.segs.len(), n.div_ceil(SEG_LEN));
        }
    }

    #[test]
    fn republish_shares_clean_full_segments_and_copies_the_rest() {
        // 3 full segments and a partial one
        let mut cur: Vec<u64> = (0..(3 * SEG_LEN + 10) as u64).collect();
        let first = SegVec::from_slice(&cur);
        let mut dirty = DirtySegs::default();
        // update one element of segment 1, append into the tail and a new segment
        cur[SEG_LEN + 5] += 1_000_000;
        dirty.mark(SEG_LEN + 5);
        for x in 0..SEG_LEN as u64 {
            dirty.mark(cur.len());
            cur.push(x * 7);
        }
        let second = SegVec::republish(&first, &cur, &dirty);
        assert_eq!(second.to_vec(), cur);
        // segments 0 and 2 shared; 1 (written), 3 (was partial) and 4 (new) copied
        assert!(Arc::ptr_eq(&first.segs[0], &second.segs[0]));
        assert!(!Arc::ptr_eq(&first.segs[1], &second.segs[1]));
        assert!(Arc::ptr_eq(&first.segs[2], &second.segs[2]));
        assert!(!Arc::ptr_eq(&first.segs[3], &second.segs[3]));
        assert_eq!(second.shared_with(&first), 2);
        // the earlier snapshot is untouched
        assert_eq!(first.get(SEG_LEN + 5), Some(&(SEG_LEN as u64 + 5)));
        assert_eq!(first.len(), 3 * SEG_LEN + 10);
        // nothing written: everything full is shared
        dirty.clear();
        let third = SegVec::republish(&second, &cur, &dirty);
        assert_eq!(third.to_vec(), cur);
        assert_eq!(third.shared_with(&second), cur.len() / SEG_LEN);
    }

    #[test]
    fn dirty_marks_are_per_segment() {
        let mut d = DirtySegs::default();
        d.mark(0);
        d.mark(130 * SEG_LEN + 1);
        assert!(d.is(0) && d.is(130));
        assert!(!d.is(1) && !d.is(129) && !d.is(131) && !d.is(100_000));
        d.clear();
        assert!(!d.is(0) && !d.is(130));
    }
}
