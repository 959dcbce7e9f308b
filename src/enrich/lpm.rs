//! Longest-prefix match flattened into disjoint ranges.
//!
//! Prefixes (possibly nested) are painted onto the address line once, at build time, so
//! that the most specific prefix wins; a lookup is then a binary search among range
//! starts, narrowed by a 65 536-entry index on the top 16 bits. Used for GeoIP (the
//! whole mmdb flattened), configured subnets and internal prefixes.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

/// An address family's key type.
pub trait Key: Copy + Ord + Default + std::fmt::Debug {
    const BITS: u32;
    const MAX: Self;
    fn top16(self) -> usize;
    fn from_top16(t: usize) -> Self;
    fn checked_inc(self) -> Option<Self>;
}

impl Key for u32 {
    const BITS: u32 = 32;
    const MAX: Self = u32::MAX;
    fn top16(self) -> usize {
        (self >> 16) as usize
    }
    fn from_top16(t: usize) -> Self {
        (t as u32) << 16
    }
    fn checked_inc(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl Key for u128 {
    const BITS: u32 = 128;
    const MAX: Self = u128::MAX;
    fn top16(self) -> usize {
        (self >> 112) as usize
    }
    fn from_top16(t: usize) -> Self {
        (t as u128) << 112
    }
    fn checked_inc(self) -> Option<Self> {
        self.checked_add(1)
    }
}

/// Disjoint ranges `[starts[i], starts[i+1])` with a value each (None = no prefix).
#[derive(Debug, Clone)]
pub struct RangeTable<K: Key, V: Copy + PartialEq> {
    starts: Vec<K>,
    values: Vec<Option<V>>,
    /// index[t] = first range whose start's top 16 bits are >= t (65 537 entries).
    index: Vec<u32>,
}

impl<K: Key, V: Copy + PartialEq> Default for RangeTable<K, V> {
    fn default() -> Self {
        Self::build(Vec::new())
    }
}

impl<K: Key, V: Copy + PartialEq> RangeTable<K, V> {
    /// Builds from `(first address, last address, prefix length, value)`.
    /// Nested prefixes: the longer one wins; equal prefixes: the later one wins.
    pub fn build(mut items: Vec<(K, K, u8, V)>) -> Self {
        // containing prefixes first, then by position of definition (stable)
        items.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
        let mut starts: Vec<K> = Vec::with_capacity(items.len() * 2 + 1);
        let mut values: Vec<Option<V>> = Vec::with_capacity(items.len() * 2 + 1);
        let mut push = |start: K, v: Option<V>| {
            if let Some(last) = values.last()
                && *last == v
            {
                return;
            }
            if let Some(last_start) = starts.last()
                && *last_start == start
            {
                // a zero-length range is replaced
                values.pop();
                starts.pop();
                if let Some(last) = values.last()
                    && *last == v
                {
                    return;
                }
            }
            starts.push(start);
            values.push(v);
        };
        let mut stack: Vec<(K, V)> = Vec::new();
        let mut pos: Option<K> = Some(K::default()); // next address not yet covered
        for (s, e, _, v) in items {
            // close containers that end before this prefix
            while let Some(&(end, tv)) = stack.last() {
                if end >= s {
                    break;
                }
                if let Some(p) = pos
                    && p <= end
                {
                    push(p, Some(tv));
                    pos = end.checked_inc();
                }
                stack.pop();
            }
            if let Some(p) = pos
                && p < s
            {
                push(p, stack.last().map(|x| x.1));
                pos = Some(s);
            }
            if pos.is_some() {
                stack.push((e, v));
            }
        }
        while let Some((end, tv)) = stack.pop() {
            if let Some(p) = pos
                && p <= end
            {
                push(p, Some(tv));
                pos = end.checked_inc();
            }
        }
        if let Some(p) = pos {
            push(p, None);
        }
        if starts.is_empty() {
            starts.push(K::default());
            values.push(None);
        }
        // index on the top 16 bits
        let mut index = Vec::with_capacity(65_537);
        let mut j = 0usize;
        for t in 0..=65_536usize {
            if t == 65_536 {
                index.push(starts.len() as u32);
                break;
            }
            let k = K::from_top16(t);
            while j < starts.len() && starts[j] < k {
                j += 1;
            }
            index.push(j as u32);
        }
        Self {
            starts,
            values,
            index,
        }
    }

    #[inline]
    pub fn get(&self, k: K) -> Option<V> {
        let t = k.top16();
        // ranges starting within this /16 block, plus the one covering its start
        let lo = (self.index[t] as usize).saturating_sub(1);
        let hi = (self.index[t + 1] as usize).min(self.starts.len());
        let slice = &self.starts[lo..hi.max(lo + 1).min(self.starts.len())];
        let i = match slice.binary_search(&k) {
            Ok(i) => lo + i,
            Err(0) => lo,
            Err(i) => lo + i - 1,
        };
        self.values.get(i).copied().flatten()
    }

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.len() <= 1 && self.values.first().is_none_or(|v| v.is_none())
    }

    /// Approximate heap size.
    pub fn heap_bytes(&self) -> usize {
        self.starts.len() * std::mem::size_of::<K>()
            + self.values.len() * std::mem::size_of::<Option<V>>()
            + self.index.len() * 4
    }
}

/// An IPv4 and an IPv6 table together.
#[derive(Debug, Clone, Default)]
pub struct IpTable<V: Copy + PartialEq> {
    pub v4: RangeTable<u32, V>,
    pub v6: RangeTable<u128, V>,
}

/// First and last address of a prefix, as keys of its family.
pub fn v4_bounds(net: ipnetwork::Ipv4Network) -> (u32, u32) {
    let start = u32::from(net.network());
    let host_bits = 32 - u32::from(net.prefix());
    let end = if host_bits >= 32 {
        u32::MAX
    } else {
        start | ((1u32 << host_bits) - 1)
    };
    (start, end)
}

pub fn v6_bounds(net: ipnetwork::Ipv6Network) -> (u128, u128) {
    let start = u128::from(net.network());
    let host_bits = 128 - u32::from(net.prefix());
    let end = if host_bits >= 128 {
        u128::MAX
    } else {
        start | ((1u128 << host_bits) - 1)
    };
    (start, end)
}

impl<V: Copy + PartialEq> IpTable<V> {
    /// Builds both tables from prefixes; IPv4-mapped IPv6 prefixes go to the v4 table.
    pub fn build(prefixes: impl IntoIterator<Item = (IpNetwork, V)>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (net, v) in prefixes {
            match net {
                IpNetwork::V4(n) => {
                    let (s, e) = v4_bounds(n);
                    v4.push((s, e, n.prefix(), v));
                }
                IpNetwork::V6(n) => {
                    let (s, e) = v6_bounds(n);
                    v6.push((s, e, n.prefix(), v));
                }
            }
        }
        Self {
            v4: RangeTable::build(v4),
            v6: RangeTable::build(v6),
        }
    }

    #[inline]
    pub fn get(&self, ip: IpAddr) -> Option<V> {
        match ip {
            IpAddr::V4(a) => self.v4.get(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => self.v4.get(u32::from(v4)),
                None => self.v6.get(u128::from(a)),
            },
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.v4.heap_bytes() + self.v6.heap_bytes()
    }

    pub fn ranges(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn nested_prefixes_most_specific_wins() {
        let t = IpTable::build(vec![
            (net("10.0.0.0/8"), 1),
            (net("10.1.0.0/16"), 2),
            (net("10.1.2.0/24"), 3),
            (net("10.1.2.128/25"), 4),
            (net("192.168.0.0/16"), 5),
            (net("2001:db8::/32"), 6),
            (net("2001:db8:1::/48"), 7),
        ]);
        let g = |s: &str| t.get(s.parse().unwrap());
        assert_eq!(g("10.9.9.9"), Some(1));
        assert_eq!(g("10.1.9.9"), Some(2));
        assert_eq!(g("10.1.2.3"), Some(3));
        assert_eq!(g("10.1.2.200"), Some(4));
        assert_eq!(g("10.1.3.0"), Some(2));
        assert_eq!(g("10.255.255.255"), Some(1));
        assert_eq!(g("11.0.0.0"), None);
        assert_eq!(g("9.255.255.255"), None);
        assert_eq!(g("192.168.255.255"), Some(5));
        assert_eq!(g("::ffff:10.1.2.3"), Some(3));
        assert_eq!(g("2001:db8:1::5"), Some(7));
        assert_eq!(g("2001:db8:2::5"), Some(6));
        assert_eq!(g("2001:db9::"), None);
    }

    #[test]
    fn full_range_and_edges() {
        let t = IpTable::build(vec![
            (net("0.0.0.0/0"), 1),
            (net("255.255.255.255/32"), 2),
            (net("0.0.0.0/32"), 3),
        ]);
        assert_eq!(t.get("0.0.0.0".parse().unwrap()), Some(3));
        assert_eq!(t.get("0.0.0.1".parse().unwrap()), Some(1));
        assert_eq!(t.get("255.255.255.254".parse().unwrap()), Some(1));
        assert_eq!(t.get("255.255.255.255".parse().unwrap()), Some(2));
        let e: IpTable<u8> = IpTable::build(vec![]);
        assert_eq!(e.get("1.2.3.4".parse().unwrap()), None);
    }

    fn naive(prefixes: &[(u32, u8, u16)], a: u32) -> Option<u16> {
        let mut best: Option<(u8, u16)> = None;
        for &(p, len, v) in prefixes {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            if a & mask == p & mask && best.is_none_or(|(bl, _)| len >= bl) {
                best = Some((len, v));
            }
        }
        best.map(|b| b.1)
    }

    proptest! {
        #[test]
        fn matches_naive_longest_prefix(
            prefixes in proptest::collection::vec((any::<u32>(), 0u8..=32, any::<u16>()), 0..40),
            probes in proptest::collection::vec(any::<u32>(), 50)
        ) {
            // dedupe identical prefixes (last wins in both implementations)
            let mut uniq: Vec<(u32, u8, u16)> = Vec::new();
            for (p, len, v) in prefixes {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
                uniq.retain(|(q, l, _)| !(*l == len && q & mask == p & mask));
                uniq.push((p & mask, len, v));
            }
            let t = IpTable::build(uniq.iter().map(|&(p, len, v)| {
                (IpNetwork::V4(ipnetwork::Ipv4Network::new(std::net::Ipv4Addr::from(p), len).unwrap()), v)
            }));
            let mut all = probes.clone();
            for &(p, len, _) in &uniq {
                all.push(p);
                let end = p | u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
                all.push(end);
                all.push(end.wrapping_add(1));
                all.push(p.wrapping_sub(1));
            }
            for a in all {
                prop_assert_eq!(t.v4.get(a), naive(&uniq, a), "addr {}", std::net::Ipv4Addr::from(a));
            }
        }
    }
}
