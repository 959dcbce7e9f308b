//! A vector stored in fixed-size shared segments, written copy-on-write, so that
//! snapshots of a growing table share what does not change.
//!
//! An open bucket keeps its rows and endpoints in a `SegVec` and publishes a snapshot
//! of them for queries every few seconds ([`SegVec::snapshot`]). The snapshot shares
//! every full segment the bucket only appended to, and gets its own copy of the
//! partial tail and of the segments the bucket updated since the previous snapshot
//! (those it is likely to write again, so the copy happens on the publishing tick and
//! not in the ingest loop). Should the bucket write to a segment a snapshot shares, it
//! copies that segment first ([`SegVec::get_mut`], [`SegVec::push`]). A snapshot never
//! changes. A bucket filled with new flows and then only overflowing (a flood past the
//! cardinality cap) is published without copying its rows at all.
//!
//! Every segment but the last holds exactly [`SEG_LEN`] elements; the last holds
//! `len % SEG_LEN` or more slots (it grows geometrically, like a `Vec`), and the slots
//! past `len` are never read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Elements per segment (the last segment may be shorter).
pub const SEG_LEN: usize = 1 << SEG_SHIFT;
const SEG_SHIFT: u32 = 12;
/// Slots of a new tail segment.
const MIN_TAIL: usize = 16;

/// Fixed-size shared segments (all full but the last).
pub struct SegVec<T> {
    segs: Vec<Arc<[T]>>,
    len: usize,
    /// Segments this vector holds alone (bit per segment), established by a write
    /// since its last clone: writing to them needs no reference-count check.
    own: Vec<u64>,
    /// Set by `clone` (the clone shares every segment); the next write forgets `own`.
    cloned: AtomicBool,
}

impl<T> Clone for SegVec<T> {
    fn clone(&self) -> Self {
        self.cloned.store(true, Ordering::Relaxed);
        Self {
            segs: self.segs.clone(),
            len: self.len,
            own: Vec::new(),
            cloned: AtomicBool::new(false),
        }
    }
}

impl<T> Default for SegVec<T> {
    fn default() -> Self {
        Self {
            segs: Vec::new(),
            len: 0,
            own: Vec::new(),
            cloned: AtomicBool::new(false),
        }
    }
}

impl<T: Clone> SegVec<T> {
    /// Segment `s` for writing, copied first when another vector shares it.
    ///
    /// `Arc::make_mut` makes a segment unique with an atomic compare-and-swap, which
    /// stalls the pipeline; done once per segment between clones, every later write
    /// reaches the segment directly.
    #[inline]
    fn seg_mut(&mut self, s: usize) -> Option<&mut [T]> {
        if std::mem::take(self.cloned.get_mut()) {
            self.own.clear();
        }
        let seg = self.segs.get_mut(s)?;
        let (w, bit) = (s >> 6, 1u64 << (s & 63));
        if self.own.get(w).is_some_and(|x| x & bit != 0) {
            let p = Arc::as_ptr(seg) as *mut T;
            // SAFETY: the bit of segment `s` is set only right after `Arc::make_mut`
            // below made this vector the segment's only holder. It is cleared whenever
            // the segment is shared since: by every clone of the vector (`clone` sets
            // `cloned`, read above) and by `snapshot` for the segments it shares. The
            // segments are private: those two are the only ways their reference counts
            // grow, and no `Weak` is ever made. `clone` takes `&self`, which cannot
            // coexist with this `&mut self`. So no other reference to the segment
            // exists, as `Arc::get_mut` would have checked.
            return Some(unsafe { &mut *std::ptr::slice_from_raw_parts_mut(p, seg.len()) });
        }
        if w >= self.own.len() {
            self.own.resize(w + 1, 0);
        }
        if let Some(x) = self.own.get_mut(w) {
            *x |= bit;
        }
        Some(Arc::make_mut(seg))
    }
}

impl<T: Copy> SegVec<T> {
    /// A copy of `v` in segments.
    pub fn from_slice(v: &[T]) -> Self {
        Self {
            segs: v.chunks(SEG_LEN).map(Arc::from).collect(),
            len: v.len(),
            ..Self::default()
        }
    }

    /// Appends `v`. The tail segment is copied first when a snapshot shares it, and
    /// grows by doubling up to [`SEG_LEN`]; a full tail starts a new segment.
    #[inline]
    pub fn push(&mut self, v: T) {
        let at = self.len & (SEG_LEN - 1);
        let room = at > 0 && self.segs.last().is_some_and(|t| t.len() > at);
        if !room {
            self.grow_tail(at, v);
        }
        let last = self.segs.len().saturating_sub(1);
        if let Some(slot) = self.seg_mut(last).and_then(|t| t.get_mut(at)) {
            *slot = v;
            self.len += 1;
        }
    }

    /// Makes room for element `at` of the tail: a new tail when every segment is full
    /// (or there is none), else the tail doubled (up to [`SEG_LEN`]) and `v` as filler.
    #[cold]
    fn grow_tail(&mut self, at: usize, v: T) {
        if at == 0 {
            self.segs.push(std::iter::repeat_n(v, MIN_TAIL).collect());
        } else if let Some(t) = self.segs.last_mut() {
            let cap = (at * 2).min(SEG_LEN);
            *t = t[..at]
                .iter()
                .copied()
                .chain(std::iter::repeat_n(v, cap - at))
                .collect();
        }
    }

    /// Element `i` for writing; its segment is copied first when a snapshot shares it.
    #[inline]
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i >= self.len {
            return None;
        }
        self.seg_mut(i >> SEG_SHIFT)?.get_mut(i & (SEG_LEN - 1))
    }

    /// A snapshot for readers. It shares every segment but those in `copy`, of which
    /// it gets its own copy, and the tail when partial (copied likewise): segments this
    /// vector goes on writing stay its own, and a write to them needs no copy in the
    /// writer's hot path. A segment only appended to, once full, is never copied.
    pub fn snapshot(&mut self, copy: &DirtySegs) -> Self {
        if std::mem::take(self.cloned.get_mut()) {
            self.own.clear();
        }
        let tail = if !self.len.is_multiple_of(SEG_LEN) {
            self.segs.len().checked_sub(1)
        } else {
            None
        };
        let mut segs = Vec::with_capacity(self.segs.len());
        for (s, seg) in self.segs.iter().enumerate() {
            if copy.is(s) || Some(s) == tail {
                let used = if Some(s) == tail {
                    self.len & (SEG_LEN - 1)
                } else {
                    seg.len()
                };
                segs.push(Arc::from(&seg[..used.min(seg.len())]));
            } else {
                // shared from now on: the next write here copies it first
                if let Some(x) = self.own.get_mut(s >> 6) {
                    *x &= !(1u64 << (s & 63));
                }
                segs.push(seg.clone());
            }
        }
        Self {
            segs,
            len: self.len,
            ..Self::default()
        }
    }

    /// The same elements with the tail cut to its length (full segments shared): for
    /// tables kept long after their last write.
    pub fn trimmed(&self) -> Self {
        let mut t = self.clone();
        let used = self
            .len
            .saturating_sub(self.segs.len().saturating_sub(1) << SEG_SHIFT);
        if let Some(last) = t.segs.last_mut()
            && last.len() > used
        {
            *last = Arc::from(&last[..used]);
        }
        t
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
        if i >= self.len {
            return None;
        }
        self.segs.get(i >> SEG_SHIFT)?.get(i & (SEG_LEN - 1))
    }

    /// Starts loading element `i` (a hint: nothing when out of range).
    #[inline]
    pub fn prefetch(&self, i: usize) {
        if let Some(x) = self.get(i) {
            crate::model::prefetch(x);
        }
    }

    pub fn iter(&self) -> Iter<'_, T> {
        let f: fn(&Arc<[T]>) -> &[T] = |s| s;
        self.segs.iter().flat_map(f).take(self.len)
    }

    /// Memory held (segments shared with another snapshot are counted in both).
    pub fn heap_bytes(&self) -> usize {
        self.segs.capacity() * std::mem::size_of::<Arc<[T]>>()
            + self.segs.iter().map(|s| s.len()).sum::<usize>() * std::mem::size_of::<T>()
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

pub type Iter<'a, T> = std::iter::Take<
    std::iter::FlatMap<std::slice::Iter<'a, Arc<[T]>>, &'a [T], fn(&'a Arc<[T]>) -> &'a [T]>,
>;

/// Indexing as a slice does: out of range panics (callers index below `len()`).
impl<T> std::ops::Index<usize> for SegVec<T> {
    type Output = T;
    #[inline]
    fn index(&self, i: usize) -> &T {
        assert!(
            i < self.len,
            "index {i} out of range for SegVec of length {}",
            self.len
        );
        &self.segs[i >> SEG_SHIFT][i & (SEG_LEN - 1)]
    }
}

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
        let iter = iter.into_iter();
        let mut segs = Vec::new();
        // as much as the iterator promises, up to a segment: a one-row chunk does not
        // allocate a whole segment
        let mut part: Vec<T> = Vec::with_capacity(iter.size_hint().0.min(SEG_LEN));
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
        Self {
            segs,
            len,
            ..Self::default()
        }
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
    fn push_and_write_copy_only_shared_segments() {
        let mut v: SegVec<u64> = SegVec::default();
        let mut model: Vec<u64> = Vec::new();
        for x in 0..(3 * SEG_LEN + 10) as u64 {
            v.push(x);
            model.push(x);
        }
        assert_eq!(v.to_vec(), model);
        assert_eq!(v.segs.len(), 4);
        // the tail grew by doubling: 10 elements in 16 slots
        assert_eq!(v.segs[3].len(), 16);
        let first = v.clone();
        assert_eq!(first.shared_with(&v), 4);
        // update one element of segment 1, append into the tail and a new segment
        *v.get_mut(SEG_LEN + 5).unwrap() += 1_000_000;
        model[SEG_LEN + 5] += 1_000_000;
        for x in 0..SEG_LEN as u64 {
            v.push(x * 7);
            model.push(x * 7);
        }
        assert_eq!(v.to_vec(), model);
        assert_eq!(v.len(), model.len());
        // segments 0 and 2 still shared; 1 (written) and 3 (the tail) copied
        assert!(Arc::ptr_eq(&first.segs[0], &v.segs[0]));
        assert!(!Arc::ptr_eq(&first.segs[1], &v.segs[1]));
        assert!(Arc::ptr_eq(&first.segs[2], &v.segs[2]));
        assert!(!Arc::ptr_eq(&first.segs[3], &v.segs[3]));
        assert_eq!(v.shared_with(&first), 2);
        // the snapshot is untouched, and reads nothing past its length
        assert_eq!(first.get(SEG_LEN + 5), Some(&(SEG_LEN as u64 + 5)));
        assert_eq!(first.len(), 3 * SEG_LEN + 10);
        assert_eq!(first.get(3 * SEG_LEN + 10), None);
        assert_eq!(first.iter().count(), 3 * SEG_LEN + 10);
        assert_eq!(
            first.to_vec(),
            (0..(3 * SEG_LEN + 10) as u64).collect::<Vec<_>>()
        );
        // an unshared segment is written in place
        let seg0 = Arc::as_ptr(&v.segs[0]) as *const u64;
        drop(first);
        *v.get_mut(3).unwrap() = 42;
        assert_eq!(Arc::as_ptr(&v.segs[0]) as *const u64, seg0);
        assert_eq!(v.get(3), Some(&42));
        assert_eq!(v.get_mut(v.len()), None);
    }

    #[test]
    fn trimmed_cuts_the_tail_and_shares_full_segments() {
        for n in [0, 1, 17, SEG_LEN, SEG_LEN + 3] {
            let mut v: SegVec<u32> = SegVec::default();
            for x in 0..n as u32 {
                v.push(x);
            }
            let t = v.trimmed();
            assert_eq!(t.to_vec(), v.to_vec());
            let slots: usize = t.segs.iter().map(|s| s.len()).sum();
            assert_eq!(slots, n, "n={n}");
            assert_eq!(t.shared_with(&v), n / SEG_LEN);
            assert!(t.heap_bytes() <= v.heap_bytes());
        }
    }

    #[test]
    fn snapshot_copies_updated_segments_and_the_tail_and_shares_the_rest() {
        let mut v: SegVec<u64> = SegVec::default();
        for x in 0..(3 * SEG_LEN + 10) as u64 {
            v.push(x);
        }
        let mut updated = DirtySegs::default();
        *v.get_mut(SEG_LEN + 1).unwrap() += 5;
        updated.mark(SEG_LEN + 1);
        let s1 = v.snapshot(&updated);
        assert_eq!(s1.to_vec(), v.to_vec());
        // segments 0 and 2 shared; 1 (updated) and 3 (the tail) copied, cut to length
        assert!(Arc::ptr_eq(&s1.segs[0], &v.segs[0]));
        assert!(!Arc::ptr_eq(&s1.segs[1], &v.segs[1]));
        assert!(Arc::ptr_eq(&s1.segs[2], &v.segs[2]));
        assert!(!Arc::ptr_eq(&s1.segs[3], &v.segs[3]));
        assert_eq!(s1.segs[3].len(), 10);
        // the vector's own segments are written in place; shared ones are copied first
        let (p1, p3) = (Arc::as_ptr(&v.segs[1]), Arc::as_ptr(&v.segs[3]));
        *v.get_mut(SEG_LEN + 2).unwrap() = 7;
        v.push(99);
        *v.get_mut(1).unwrap() = 11;
        assert_eq!(Arc::as_ptr(&v.segs[1]), p1);
        assert_eq!(Arc::as_ptr(&v.segs[3]), p3);
        assert!(!Arc::ptr_eq(&s1.segs[0], &v.segs[0]));
        // the snapshot saw none of it
        assert_eq!(s1.get(1), Some(&1));
        assert_eq!(s1.get(SEG_LEN + 1), Some(&(SEG_LEN as u64 + 6)));
        assert_eq!(s1.get(SEG_LEN + 2), Some(&(SEG_LEN as u64 + 2)));
        assert_eq!(s1.len(), 3 * SEG_LEN + 10);
        assert_eq!(v.get(SEG_LEN + 2), Some(&7));
        assert_eq!(v.get(3 * SEG_LEN + 10), Some(&99));
        assert_eq!(v.get(1), Some(&11));
        // nothing updated, full tail: every segment shared
        let mut w: SegVec<u64> = (0..2 * SEG_LEN as u64).collect();
        let s2 = w.snapshot(&DirtySegs::default());
        assert_eq!(s2.shared_with(&w), 2);
        assert_eq!(s2.to_vec(), w.to_vec());
    }
}
