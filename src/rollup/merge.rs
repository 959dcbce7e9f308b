//! Merging chunks into one (rebuilding a coarse bucket from fine ones after a crash).

use std::net::IpAddr;

use rustc_hash::FxHashMap;

use super::chunk::{Chunk, ChunkBuilder, Overflow, Row};
use crate::model::ExporterId;

#[derive(Hash, PartialEq, Eq)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    proto: u8,
    exporter: ExporterId,
    in_if: u32,
    out_if: u32,
}

/// Merges `chunks` into one chunk of resolution `res` starting at `start`, keeping at
/// most `cap` rows (the rest go to the overflow totals).
pub fn merge_chunks(res: u32, start: i64, chunks: &[&Chunk], cap: usize) -> Chunk {
    let mut b = ChunkBuilder::default();
    let mut rows: Vec<Row> = Vec::new();
    let mut outer: Vec<(u32, u32, u32)> = Vec::new();
    let mut at: FxHashMap<Key, usize> = FxHashMap::default();
    let mut overflow = Overflow {
        flows_exact: true,
        ..Default::default()
    };
    let mut overflow_keys: rustc_hash::FxHashSet<Key> = Default::default();
    let mut ifaces: FxHashMap<(ExporterId, u32), super::chunk::IfaceRow> = FxHashMap::default();
    for c in chunks {
        let offset = c.start - start;
        for (ri, r) in c.rows.iter().enumerate() {
            let (Some(se), Some(de), Some(o)) = (
                c.endpoints.get(r.src as usize),
                c.endpoints.get(r.dst as usize),
                c.obs.get(r.obs as usize),
            ) else {
                continue;
            };
            let key = Key {
                src: se.ip,
                dst: de.ip,
                port: r.port,
                proto: r.proto,
                exporter: o.exporter,
                in_if: o.in_if,
                out_if: o.out_if,
            };
            let first = (i64::from(r.first) + offset).clamp(0, i64::from(u16::MAX)) as u16;
            let last = (i64::from(r.last) + offset).clamp(0, i64::from(u16::MAX)) as u16;
            match at.get(&key) {
                Some(&i) => {
                    let m = &mut rows[i];
                    m.src_bytes = m.src_bytes.saturating_add(r.src_bytes);
                    m.dst_bytes = m.dst_bytes.saturating_add(r.dst_bytes);
                    m.packets = m.packets.saturating_add(r.packets);
                    m.sessions = m.sessions.saturating_add(r.sessions);
                    m.first = m.first.min(first);
                    m.last = m.last.max(last);
                    m.tags |= r.tags;
                    if r.rule != 0 {
                        m.rule = r.rule;
                    }
                }
                None if rows.len() < cap => {
                    let src = b.endpoint(se);
                    let dst = b.endpoint(de);
                    let obs = b.obs(o);
                    at.insert(key, rows.len());
                    if let Some((os, od)) = c.outer_of(ri as u32) {
                        let (os, od) = (*os, *od);
                        outer.push((rows.len() as u32, b.endpoint(&os), b.endpoint(&od)));
                    }
                    rows.push(Row {
                        src,
                        dst,
                        obs,
                        first,
                        last,
                        ..*r
                    });
                }
                None => {
                    overflow.src_bytes = overflow.src_bytes.saturating_add(r.src_bytes);
                    overflow.dst_bytes = overflow.dst_bytes.saturating_add(r.dst_bytes);
                    overflow.packets = overflow.packets.saturating_add(r.packets);
                    overflow.sessions = overflow.sessions.saturating_add(u64::from(r.sessions));
                    if overflow_keys.insert(key) {
                        overflow.flows = overflow.flows.saturating_add(1);
                    }
                }
            }
        }
        let o = &c.overflow;
        overflow.src_bytes = overflow.src_bytes.saturating_add(o.src_bytes);
        overflow.dst_bytes = overflow.dst_bytes.saturating_add(o.dst_bytes);
        overflow.packets = overflow.packets.saturating_add(o.packets);
        overflow.sessions = overflow.sessions.saturating_add(o.sessions);
        overflow.flows = overflow.flows.saturating_add(o.flows);
        if o.flows > 0 {
            // flows overflowed in several source chunks may be the same flow
            overflow.flows_exact = false;
        }
        for f in &c.ifaces {
            let e = ifaces
                .entry((f.exporter, f.ifindex))
                .or_insert(super::chunk::IfaceRow {
                    exporter: f.exporter,
                    ifindex: f.ifindex,
                    ..Default::default()
                });
            e.in_bytes = e.in_bytes.saturating_add(f.in_bytes);
            e.out_bytes = e.out_bytes.saturating_add(f.out_bytes);
            e.in_packets = e.in_packets.saturating_add(f.in_packets);
            e.out_packets = e.out_packets.saturating_add(f.out_packets);
        }
    }
    let mut ifaces: Vec<_> = ifaces.into_values().collect();
    ifaces.sort_by_key(|f| (f.exporter, f.ifindex));
    Chunk {
        res,
        start,
        shard: chunks.first().map_or(0, |c| c.shard),
        seq: 0,
        covers: Vec::new(),
        endpoints: b.chunk_endpoints.trimmed(),
        obs: b.chunk_obs,
        rows: rows.into(),
        outer,
        ifaces,
        overflow,
    }
}
