//! On-disk format of rollups (documented in docs/storage.md).
//!
//! `state_dir/rollup/r<seconds>/<file start>.seg` holds the chunks of one resolution
//! whose buckets start in `[file start, file start + 60 buckets)`. A file is a sequence
//! of frames, appended and fsynced as buckets close:
//!
//! ```text
//! frame   = "NGRC" version:u8 reserved:u8 length:u32le crc32:u32le payload[length]
//! payload = chunk encoded with LEB128 varints (see `encode`)
//! ```
//!
//! A frame with a bad checksum, a bad length or an undecodable payload is reported and
//! skipped; reading resumes at the next "NGRC" marker, so one damaged frame loses one
//! chunk, not the file.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use super::chunk::{Chunk, IfaceRow, ObsPoint, Overflow, Row};
use super::segvec::SegVec;
use crate::enrich::Endpoint;
use crate::model::ExporterId;
use crate::sym::{self, Sym};

pub const MAGIC: &[u8; 4] = b"NGRC";
pub const VERSION: u8 = 1;
const HEADER: usize = 14;
/// Frames larger than this are corrupt by definition (a chunk is bounded by caps).
const MAX_FRAME: usize = 1 << 30;
/// Bucket starts further than this from 1970 (about 34 800 years) are corrupt: within
/// it, a start plus or minus any bucket size or offset stays an `i64`.
const MAX_START: i64 = 1 << 40;

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("corrupt chunk: {0}")]
    Corrupt(&'static str),
}

struct W(Vec<u8>);

impl W {
    fn v(&mut self, mut x: u64) {
        loop {
            let b = (x & 0x7f) as u8;
            x >>= 7;
            if x == 0 {
                self.0.push(b);
                return;
            }
            self.0.push(b | 0x80);
        }
    }
    fn z(&mut self, x: i64) {
        self.v(((x << 1) ^ (x >> 63)) as u64);
    }
    fn u8(&mut self, x: u8) {
        self.0.push(x);
    }
    fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => {
                self.u8(4);
                self.0.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                self.u8(6);
                self.0.extend_from_slice(&a.octets());
            }
        }
    }
}

struct R<'a> {
    b: &'a [u8],
    p: usize,
}

impl R<'_> {
    fn u8(&mut self) -> Result<u8, SegmentError> {
        let x = *self
            .b
            .get(self.p)
            .ok_or(SegmentError::Corrupt("truncated"))?;
        self.p += 1;
        Ok(x)
    }
    fn v(&mut self) -> Result<u64, SegmentError> {
        let mut x = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            x |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(x);
            }
        }
        Err(SegmentError::Corrupt("varint too long"))
    }
    fn v32(&mut self) -> Result<u32, SegmentError> {
        u32::try_from(self.v()?).map_err(|_| SegmentError::Corrupt("value out of range"))
    }
    fn z(&mut self) -> Result<i64, SegmentError> {
        let u = self.v()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }
    fn bytes(&mut self, n: usize) -> Result<&[u8], SegmentError> {
        let s = self
            .b
            .get(
                self.p
                    ..self
                        .p
                        .checked_add(n)
                        .ok_or(SegmentError::Corrupt("length"))?,
            )
            .ok_or(SegmentError::Corrupt("truncated"))?;
        self.p += n;
        Ok(s)
    }
    fn ip(&mut self) -> Result<IpAddr, SegmentError> {
        match self.u8()? {
            4 => {
                let b = self.bytes(4)?;
                Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
            }
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(self.bytes(16)?);
                Ok(IpAddr::V6(Ipv6Addr::from(a)))
            }
            _ => Err(SegmentError::Corrupt("address family")),
        }
    }
    /// A count, sanity-checked against the bytes left (each item takes >= 1 byte).
    fn count(&mut self) -> Result<usize, SegmentError> {
        let n = self.v()? as usize;
        if n > self.b.len().saturating_sub(self.p) {
            return Err(SegmentError::Corrupt("count larger than the chunk"));
        }
        Ok(n)
    }
}

/// Encodes a chunk's payload.
pub fn encode(c: &Chunk) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(64 + c.rows.len() * 24));
    w.v(u64::from(c.res));
    w.z(c.start);
    w.v(u64::from(c.shard));
    w.v(c.seq);
    w.v(c.covers.len() as u64);
    let mut prev = 0u64;
    for s in &c.covers {
        w.v(s.wrapping_sub(prev));
        prev = *s;
    }
    // local string table for the names the endpoints use
    let mut strings: Vec<Sym> = vec![Sym::NONE];
    let mut idx: rustc_hash::FxHashMap<Sym, u64> = rustc_hash::FxHashMap::default();
    idx.insert(Sym::NONE, 0);
    let mut local = |s: Sym, strings: &mut Vec<Sym>| -> u64 {
        *idx.entry(s).or_insert_with(|| {
            strings.push(s);
            (strings.len() - 1) as u64
        })
    };
    let mut ep_syms = Vec::with_capacity(c.endpoints.len() * 5);
    for e in &c.endpoints {
        for s in [e.vm, e.host, e.cluster, e.l2, e.subnet_name] {
            ep_syms.push(local(s, &mut strings));
        }
    }
    w.v(strings.len() as u64 - 1);
    for s in &strings[1..] {
        let t = sym::resolve(*s);
        w.v(t.len() as u64);
        w.0.extend_from_slice(t.as_bytes());
    }
    w.v(c.endpoints.len() as u64);
    for (i, e) in c.endpoints.iter().enumerate() {
        w.ip(e.ip);
        for k in 0..5 {
            w.v(ep_syms[i * 5 + k]);
        }
        w.u8(e.subnet_len);
        w.v(u64::from(e.vlan));
        w.v(u64::from(e.country));
        w.v(u64::from(e.asn));
        w.u8(e.flags);
    }
    w.v(c.obs.len() as u64);
    for o in &c.obs {
        w.ip(o.exporter.ip);
        w.v(u64::from(o.exporter.domain));
        w.v(u64::from(o.in_if));
        w.v(u64::from(o.out_if));
    }
    w.v(c.rows.len() as u64);
    for r in &c.rows {
        w.v(u64::from(r.src));
        w.v(u64::from(r.dst));
        w.v(u64::from(r.obs));
        w.v(u64::from(r.port));
        w.u8(r.proto);
        w.v(u64::from(r.tags));
        w.v(u64::from(r.rule));
        w.v(r.src_bytes);
        w.v(r.dst_bytes);
        w.v(r.packets);
        w.v(u64::from(r.sessions));
        w.v(u64::from(r.first));
        w.v(u64::from(r.last));
    }
    w.v(c.outer.len() as u64);
    for (r, s, d) in &c.outer {
        w.v(u64::from(*r));
        w.v(u64::from(*s));
        w.v(u64::from(*d));
    }
    w.v(c.ifaces.len() as u64);
    for f in &c.ifaces {
        w.ip(f.exporter.ip);
        w.v(u64::from(f.exporter.domain));
        w.v(u64::from(f.ifindex));
        w.v(f.in_bytes);
        w.v(f.out_bytes);
        w.v(f.in_packets);
        w.v(f.out_packets);
    }
    let o = &c.overflow;
    w.v(o.src_bytes);
    w.v(o.dst_bytes);
    w.v(o.packets);
    w.v(o.sessions);
    w.v(o.flows);
    w.u8(u8::from(o.flows_exact));
    w.0
}

/// Decodes a chunk's payload (every index checked; never panics).
pub fn decode(b: &[u8]) -> Result<Chunk, SegmentError> {
    let mut r = R { b, p: 0 };
    let res = r.v32()?;
    if res == 0 {
        return Err(SegmentError::Corrupt("zero resolution"));
    }
    let start = r.z()?;
    if start.unsigned_abs() > MAX_START.unsigned_abs() {
        return Err(SegmentError::Corrupt("bucket start out of range"));
    }
    let shard = u16::try_from(r.v()?).map_err(|_| SegmentError::Corrupt("shard"))?;
    let seq = r.v()?;
    let n = r.count()?;
    let mut covers = Vec::with_capacity(n);
    let mut prev = 0u64;
    for _ in 0..n {
        prev = prev.wrapping_add(r.v()?);
        covers.push(prev);
    }
    let n = r.count()?;
    let mut strings = vec![Sym::NONE];
    for _ in 0..n {
        let len = r.count()?;
        let s = std::str::from_utf8(r.bytes(len)?)
            .map_err(|_| SegmentError::Corrupt("name is not UTF-8"))?;
        strings.push(sym::intern(s));
    }
    let s_at = |r: &mut R<'_>| -> Result<Sym, SegmentError> {
        let i = r.v()? as usize;
        strings
            .get(i)
            .copied()
            .ok_or(SegmentError::Corrupt("name index"))
    };
    let n = r.count()?;
    // straight into shared segments (no second copy)
    let endpoints = (0..n)
        .map(|_| -> Result<Endpoint, SegmentError> {
            let ip = r.ip()?;
            let vm = s_at(&mut r)?;
            let host = s_at(&mut r)?;
            let cluster = s_at(&mut r)?;
            let l2 = s_at(&mut r)?;
            let subnet_name = s_at(&mut r)?;
            let subnet_len = r.u8()?;
            let vlan = u16::try_from(r.v()?).map_err(|_| SegmentError::Corrupt("vlan"))?;
            let country = u16::try_from(r.v()?).map_err(|_| SegmentError::Corrupt("country"))?;
            let asn = r.v32()?;
            let flags = r.u8()?;
            Ok(Endpoint {
                ip,
                vm,
                host,
                cluster,
                l2,
                subnet_name,
                subnet_len,
                vlan,
                country,
                asn,
                flags,
            })
        })
        .collect::<Result<SegVec<Endpoint>, _>>()?;
    let n = r.count()?;
    let mut obs = Vec::with_capacity(n);
    for _ in 0..n {
        let ip = r.ip()?;
        let domain = r.v32()?;
        obs.push(ObsPoint {
            exporter: ExporterId::new(ip, domain),
            in_if: r.v32()?,
            out_if: r.v32()?,
        });
    }
    let n = r.count()?;
    let rows = (0..n)
        .map(|_| -> Result<Row, SegmentError> {
            let row = Row {
                src: r.v32()?,
                dst: r.v32()?,
                obs: r.v32()?,
                port: u16::try_from(r.v()?).map_err(|_| SegmentError::Corrupt("port"))?,
                proto: r.u8()?,
                tags: r.v32()?,
                rule: r.v32()?,
                src_bytes: r.v()?,
                dst_bytes: r.v()?,
                packets: r.v()?,
                sessions: r.v32()?,
                first: u16::try_from(r.v()?).map_err(|_| SegmentError::Corrupt("first"))?,
                last: u16::try_from(r.v()?).map_err(|_| SegmentError::Corrupt("last"))?,
                _pad: 0,
            };
            if row.src as usize >= endpoints.len()
                || row.dst as usize >= endpoints.len()
                || row.obs as usize >= obs.len()
            {
                return Err(SegmentError::Corrupt("row refers past its tables"));
            }
            Ok(row)
        })
        .collect::<Result<SegVec<Row>, _>>()?;
    let n = r.count()?;
    let mut outer = Vec::with_capacity(n);
    for _ in 0..n {
        let (row, s, d) = (r.v32()?, r.v32()?, r.v32()?);
        if row as usize >= rows.len()
            || s as usize >= endpoints.len()
            || d as usize >= endpoints.len()
        {
            return Err(SegmentError::Corrupt("overlay pair refers past its tables"));
        }
        outer.push((row, s, d));
    }
    if outer.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(SegmentError::Corrupt("overlay pairs out of order"));
    }
    let n = r.count()?;
    let mut ifaces = Vec::with_capacity(n);
    for _ in 0..n {
        let ip = r.ip()?;
        let domain = r.v32()?;
        ifaces.push(IfaceRow {
            exporter: ExporterId::new(ip, domain),
            ifindex: r.v32()?,
            in_bytes: r.v()?,
            out_bytes: r.v()?,
            in_packets: r.v()?,
            out_packets: r.v()?,
        });
    }
    let overflow = Overflow {
        src_bytes: r.v()?,
        dst_bytes: r.v()?,
        packets: r.v()?,
        sessions: r.v()?,
        flows: r.v()?,
        flows_exact: r.u8()? != 0,
    };
    if r.p != b.len() {
        return Err(SegmentError::Corrupt("trailing bytes"));
    }
    Ok(Chunk {
        res,
        start,
        shard,
        seq,
        covers,
        endpoints,
        obs,
        rows,
        outer,
        ifaces,
        overflow,
    })
}

/// A framed chunk, ready to append.
pub fn frame(c: &Chunk) -> Vec<u8> {
    let payload = encode(c);
    let mut f = Vec::with_capacity(HEADER + payload.len());
    f.extend_from_slice(MAGIC);
    f.push(VERSION);
    f.push(0);
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    f.extend_from_slice(&payload);
    f
}

/// What reading a segment found besides chunks.
#[derive(Debug, Default)]
pub struct ReadReport {
    pub chunks: usize,
    pub bad_frames: Vec<(usize, String)>,
    pub truncated_tail: bool,
    /// Where the truncated last frame starts (when `truncated_tail`).
    pub truncated_at: Option<usize>,
}

/// Reads every decodable chunk of a segment's bytes.
pub fn read_frames(b: &[u8], mut each: impl FnMut(Chunk)) -> ReadReport {
    let mut rep = ReadReport::default();
    let mut p = 0usize;
    while p < b.len() {
        if b.len() - p < HEADER {
            rep.truncated_tail = true;
            rep.truncated_at = Some(p);
            break;
        }
        if &b[p..p + 4] != MAGIC {
            rep.bad_frames.push((p, "no frame marker".into()));
            p = resync(b, p + 1);
            continue;
        }
        let ver = b[p + 4];
        let len = u32::from_le_bytes([b[p + 6], b[p + 7], b[p + 8], b[p + 9]]) as usize;
        let crc = u32::from_le_bytes([b[p + 10], b[p + 11], b[p + 12], b[p + 13]]);
        if ver != VERSION {
            rep.bad_frames
                .push((p, format!("unknown format version {ver}")));
            p = resync(b, p + 1);
            continue;
        }
        if len > MAX_FRAME {
            rep.bad_frames.push((p, "impossible frame length".into()));
            p = resync(b, p + 1);
            continue;
        }
        if p + HEADER + len > b.len() {
            rep.truncated_tail = true;
            // a damaged length in the middle of the file: try the next marker
            let next = resync(b, p + 1);
            if next < b.len() {
                rep.bad_frames
                    .push((p, "frame runs past the end of the file".into()));
                rep.truncated_tail = false;
                p = next;
                continue;
            }
            rep.truncated_at = Some(p);
            break;
        }
        let payload = &b[p + HEADER..p + HEADER + len];
        if crc32fast::hash(payload) != crc {
            rep.bad_frames.push((p, "checksum mismatch".into()));
            p = resync(b, p + 1);
            continue;
        }
        match decode(payload) {
            Ok(c) => {
                rep.chunks += 1;
                each(c);
            }
            Err(e) => rep.bad_frames.push((p, e.to_string())),
        }
        p += HEADER + len;
    }
    rep
}

fn resync(b: &[u8], from: usize) -> usize {
    if from >= b.len() {
        return b.len();
    }
    b[from..]
        .windows(4)
        .position(|w| w == MAGIC)
        .map_or(b.len(), |i| from + i)
}

/// Directory of a resolution.
pub fn res_dir(root: &Path, res: u32) -> PathBuf {
    root.join(format!("r{res}"))
}

/// Seconds covered by one segment file of a resolution (60 buckets).
pub fn file_span(res: u32) -> i64 {
    i64::from(res) * 60
}

/// Segment file that holds buckets starting at `start`.
pub fn file_for(root: &Path, res: u32, start: i64) -> PathBuf {
    let span = file_span(res);
    res_dir(root, res).join(format!("{}.seg", start.div_euclid(span) * span))
}

/// Appends a chunk to its segment file and syncs it. A failed append (a full disk)
/// cuts the file back to its previous length, so that a retry leaves no damaged frame.
pub fn append(root: &Path, c: &Chunk) -> Result<u64, SegmentError> {
    let path = file_for(root, c.res, c.start);
    let io = |source| SegmentError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let bytes = frame(c);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    let before = f.metadata().map_err(io)?.len();
    if let Err(e) = f.write_all(&bytes).and_then(|()| f.sync_data()) {
        if let Err(te) = f.set_len(before) {
            tracing::warn!(path = %path.display(), error = %te, "cannot cut a failed append back; the next read skips the partial frame");
        }
        return Err(io(e));
    }
    Ok(bytes.len() as u64)
}

/// Segment files of a resolution with their start times, oldest first.
pub fn list(root: &Path, res: u32) -> Vec<(i64, PathBuf)> {
    let dir = res_dir(root, res);
    let mut v: Vec<(i64, PathBuf)> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let p = e.path();
                    let start: i64 = p.file_stem()?.to_str()?.parse().ok()?;
                    (p.extension()? == "seg").then_some((start, p))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::chunk::unknown_endpoint;

    fn chunk(seq: u64) -> Chunk {
        let mut e1 = unknown_endpoint();
        e1.ip = "10.0.0.1".parse().unwrap();
        e1.vm = sym::intern("web-01");
        e1.l2 = sym::intern("vlan-1105");
        e1.subnet_len = 24;
        e1.flags = 3;
        let mut e2 = unknown_endpoint();
        e2.ip = "2001:db8::5".parse().unwrap();
        e2.country = crate::enrich::countries::pack("GB");
        e2.asn = 64500;
        Chunk {
            res: 60,
            start: 1_764_000_000,
            shard: 1,
            seq,
            covers: vec![5, 9, 10],
            endpoints: vec![e1, e2].into(),
            obs: vec![ObsPoint {
                exporter: ExporterId::new("192.0.2.1".parse().unwrap(), 7),
                in_if: 3,
                out_if: 11,
            }],
            rows: vec![Row {
                src_bytes: 1 << 40,
                dst_bytes: 5,
                packets: 9,
                sessions: 2,
                src: 0,
                dst: 1,
                obs: 0,
                tags: 0x8123,
                rule: 1001,
                port: 443,
                proto: 6,
                _pad: 0,
                first: 3,
                last: 59,
            }]
            .into(),
            outer: vec![(0, 1, 0)],
            ifaces: vec![IfaceRow {
                exporter: ExporterId::new("192.0.2.1".parse().unwrap(), 7),
                ifindex: 3,
                in_bytes: 10,
                out_bytes: 0,
                in_packets: 1,
                out_packets: 0,
            }],
            overflow: Overflow {
                src_bytes: 1,
                dst_bytes: 2,
                packets: 3,
                sessions: 4,
                flows: 5,
                flows_exact: true,
            },
        }
    }

    #[test]
    fn round_trip() {
        let c = chunk(42);
        assert_eq!(decode(&encode(&c)).unwrap(), c);
    }

    /// A chunk whose bucket starts at the end of time decoded, and the time arithmetic
    /// on it (`start + res`, `start + first`) overflowed (the `segment` fuzz target
    /// checks that this cannot happen).
    #[test]
    fn bucket_starts_near_the_end_of_time_are_corrupt() {
        // res 60, start i64::MAX (zigzag varint), then every count and total zero
        let mut payload = vec![
            0x3c, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        payload.extend([0; 15]);
        assert!(matches!(
            decode(&payload),
            Err(SegmentError::Corrupt("bucket start out of range"))
        ));
        // the same chunk starting in 2025 decodes
        let mut ok = vec![0x3c];
        let mut w = W(Vec::new());
        w.z(1_764_000_000);
        ok.extend(w.0);
        ok.extend([0; 15]);
        assert_eq!(decode(&ok).map(|c| c.start).ok(), Some(1_764_000_000));
        for start in [MAX_START, -MAX_START] {
            assert!(decode(&encode(&Chunk { start, ..chunk(1) })).is_ok());
            let c = Chunk {
                start: start + start.signum(),
                ..chunk(1)
            };
            assert!(decode(&encode(&c)).is_err(), "{start}");
        }
    }

    #[test]
    fn damaged_frames_are_skipped_and_the_rest_read() {
        let mut file = Vec::new();
        for s in 0..5 {
            file.extend(frame(&chunk(s)));
        }
        let one = frame(&chunk(0)).len();
        // corrupt a payload byte of frame 1 and the length of frame 3; truncate frame 4
        file[one + HEADER + 3] ^= 0xff;
        let l = 3 * one + 6;
        file[l..l + 4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        file.truncate(file.len() - 5);
        let mut seqs = vec![];
        let rep = read_frames(&file, |c| seqs.push(c.seq));
        assert_eq!(seqs, vec![0, 2]);
        assert_eq!(rep.bad_frames.len(), 2, "{:?}", rep.bad_frames);
        assert!(rep.truncated_tail);
        assert_eq!(
            rep.truncated_at,
            Some(4 * one),
            "the last frame starts after four"
        );
        // garbage never panics
        let mut rng = 12345u64;
        for _ in 0..2000 {
            let mut g = frame(&chunk(1));
            for _ in 0..4 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let i = (rng as usize) % g.len();
                g[i] = (rng >> 32) as u8;
            }
            let _ = read_frames(&g, |_| {});
            let _ = decode(&g[HEADER.min(g.len())..]);
        }
    }
}
