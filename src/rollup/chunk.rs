//! The unit of stored data: the rows of one bucket (or part of one) from one shard.
//!
//! A chunk is self-contained: rows refer to the chunk's own endpoint table (each distinct
//! end of a flow once, with its enrichment at ingest time) and observation-point table,
//! so a chunk decodes on its own and a corrupt one loses nothing else. Queries evaluate
//! endpoint predicates once per endpoint and then scan rows.

use std::collections::hash_map::Entry;
use std::net::IpAddr;

use super::segvec::SegVec;
use crate::enrich::Endpoint;
use crate::model::ExporterId;

/// One vRNI flow in one bucket: (client, server, server port, protocol) seen at one
/// observation point, with the reply folded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Row {
    /// Bytes sent by the client / by the server.
    pub src_bytes: u64,
    pub dst_bytes: u64,
    /// Packets in both directions.
    pub packets: u64,
    /// Sessions (5-tuples) that started in the bucket.
    pub sessions: u32,
    /// Index into the chunk's endpoint table.
    pub src: u32,
    pub dst: u32,
    /// Index into the chunk's observation-point table.
    pub obs: u32,
    /// Flow-type tag bits.
    pub tags: u32,
    /// NSX distributed-firewall rule id (0 = none).
    pub rule: u32,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
    /// First and last second seen, relative to the bucket start.
    pub first: u16,
    pub last: u16,
}

impl Row {
    pub fn bytes(&self) -> u64 {
        self.src_bytes.saturating_add(self.dst_bytes)
    }
}

/// Where records were observed: exporter and interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObsPoint {
    pub exporter: ExporterId,
    pub in_if: u32,
    pub out_if: u32,
}

/// Traffic through one switch port in a bucket (every record counts for its input and
/// its output interface, duplicates included: the port did carry them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IfaceRow {
    pub exporter: ExporterId,
    pub ifindex: u32,
    pub in_bytes: u64,
    pub out_bytes: u64,
    pub in_packets: u64,
    pub out_packets: u64,
}

/// Totals of the flows that did not get a row because the bucket reached its
/// cardinality cap. Keeps every total exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Overflow {
    pub src_bytes: u64,
    pub dst_bytes: u64,
    pub packets: u64,
    pub sessions: u64,
    /// Distinct flows merged here.
    pub flows: u64,
    /// False when more flows overflowed than are counted one by one (4 096 per bucket):
    /// `flows` is then a HyperLogLog estimate (1.6% standard error), or a sum over
    /// merged chunks (which may count a flow more than once).
    pub flows_exact: bool,
}

impl Overflow {
    pub fn is_empty(&self) -> bool {
        self.flows == 0
            && self.packets == 0
            && self.src_bytes == 0
            && self.dst_bytes == 0
            && self.sessions == 0
    }
}

/// The rows of one bucket from one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Bucket size in seconds.
    pub res: u32,
    /// Bucket start, Unix seconds.
    pub start: i64,
    pub shard: u16,
    /// Globally unique, increasing id.
    pub seq: u64,
    /// For coarse resolutions: ids of the finest-resolution chunks whose records are in
    /// this chunk (used to rebuild coarse buckets after a crash).
    pub covers: Vec<u64>,
    pub endpoints: SegVec<Endpoint>,
    pub obs: Vec<ObsPoint>,
    pub rows: SegVec<Row>,
    /// Overlay rows: (row index, outer source, outer destination) endpoints, i.e. the
    /// VTEP pair of flows whose inner (tenant) pair is the row's. Sorted by row.
    pub outer: Vec<(u32, u32, u32)>,
    pub ifaces: Vec<IfaceRow>,
    pub overflow: Overflow,
}

impl Chunk {
    /// The outer (VTEP) pair of row `i`, if the flow was an overlay flow.
    pub fn outer_of(&self, i: u32) -> Option<(&Endpoint, &Endpoint)> {
        let k = self.outer.binary_search_by_key(&i, |o| o.0).ok()?;
        let (_, s, d) = self.outer[k];
        Some((
            self.endpoints.get(s as usize)?,
            self.endpoints.get(d as usize)?,
        ))
    }

    pub fn end(&self) -> i64 {
        self.start + i64::from(self.res)
    }

    /// Approximate memory held by the chunk.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Chunk>()
            + self.rows.heap_bytes()
            + self.endpoints.heap_bytes()
            + self.obs.capacity() * std::mem::size_of::<ObsPoint>()
            + self.ifaces.capacity() * std::mem::size_of::<IfaceRow>()
            + self.covers.capacity() * 8
            + self.outer.capacity() * 12
    }

    /// Totals of the chunk (rows and overflow).
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        let mut b = self
            .overflow
            .src_bytes
            .saturating_add(self.overflow.dst_bytes);
        let mut p = self.overflow.packets;
        let mut s = self.overflow.sessions;
        for r in &self.rows {
            b = b.saturating_add(r.bytes());
            p = p.saturating_add(r.packets);
            s = s.saturating_add(u64::from(r.sessions));
        }
        (self.rows.len() as u64 + self.overflow.flows, b, p, s)
    }
}

/// A [`ChunkBuilder`]'s interning maps (endpoints, observation points).
pub type InternMaps = (
    rustc_hash::FxHashMap<Endpoint, u32>,
    rustc_hash::FxHashMap<ObsPoint, u32>,
);

/// A helper for building chunks: deduplicates endpoints and observation points.
#[derive(Default)]
pub struct ChunkBuilder {
    eps: rustc_hash::FxHashMap<Endpoint, u32>,
    obs: rustc_hash::FxHashMap<ObsPoint, u32>,
    pub chunk_endpoints: SegVec<Endpoint>,
    pub chunk_obs: Vec<ObsPoint>,
}

impl ChunkBuilder {
    /// A builder that interns with `maps` (empty ones: another builder's, emptied,
    /// their memory kept).
    pub fn with_maps(maps: InternMaps) -> Self {
        let (eps, obs) = maps;
        debug_assert!(eps.is_empty() && obs.is_empty());
        Self {
            eps,
            obs,
            ..Self::default()
        }
    }

    /// The interning maps, for a builder of a later bucket.
    pub fn take_maps(&mut self) -> InternMaps {
        (std::mem::take(&mut self.eps), std::mem::take(&mut self.obs))
    }

    pub fn endpoint(&mut self, e: &Endpoint) -> u32 {
        match self.eps.entry(*e) {
            Entry::Occupied(o) => *o.get(),
            Entry::Vacant(v) => {
                let i = self.chunk_endpoints.len() as u32;
                self.chunk_endpoints.push(*e);
                *v.insert(i)
            }
        }
    }
    pub fn obs(&mut self, o: &ObsPoint) -> u32 {
        match self.obs.entry(*o) {
            Entry::Occupied(o) => *o.get(),
            Entry::Vacant(v) => {
                let i = self.chunk_obs.len() as u32;
                self.chunk_obs.push(*v.key());
                *v.insert(i)
            }
        }
    }
}

/// Placeholder endpoint for rows that lost theirs (never shown: overflow has none).
pub fn unknown_endpoint() -> Endpoint {
    Endpoint {
        ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        vm: crate::sym::Sym::NONE,
        host: crate::sym::Sym::NONE,
        cluster: crate::sym::Sym::NONE,
        l2: crate::sym::Sym::NONE,
        subnet_name: crate::sym::Sym::NONE,
        subnet_len: 32,
        vlan: 0,
        country: 0,
        asn: 0,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_is_compact() {
        assert_eq!(std::mem::size_of::<Row>(), 56);
    }
}
