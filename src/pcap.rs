//! Reading UDP datagrams out of pcap and pcapng captures (for `nagare replay` and tests).
//!
//! Supports classic pcap (micro/nanosecond, either byte order) and pcapng (SHB, IDB,
//! EPB, SPB), link types Ethernet (with 802.1Q/802.1ad tags), Linux cooked (SLL, SLL2),
//! raw IP and BSD loopback, IPv4 (fragments reassembled) and IPv6 (extension headers
//! skipped, fragments reassembled).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not a pcap or pcapng file (magic {0:#010x})")]
    BadMagic(u32),
    #[error("capture truncated at byte {0}")]
    Truncated(usize),
    #[error("unsupported link type {0}")]
    LinkType(u32),
}

/// One UDP datagram from a capture.
#[derive(Debug, Clone)]
pub struct UdpDatagram {
    /// Capture timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// What was in a capture besides UDP datagrams.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PcapStats {
    pub frames: usize,
    pub udp: usize,
    pub non_udp: usize,
    pub fragments_pending: usize,
}

pub fn read_file(path: &std::path::Path) -> Result<(Vec<UdpDatagram>, PcapStats), PcapError> {
    let data = std::fs::read(path).map_err(|source| PcapError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(&data)
}

fn rd16(b: &[u8], at: usize, le: bool) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(if le {
        u16::from_le_bytes([s[0], s[1]])
    } else {
        u16::from_be_bytes([s[0], s[1]])
    })
}
fn rd32(b: &[u8], at: usize, le: bool) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(if le {
        u32::from_le_bytes([s[0], s[1], s[2], s[3]])
    } else {
        u32::from_be_bytes([s[0], s[1], s[2], s[3]])
    })
}

/// Parses a whole capture held in memory.
pub fn parse(data: &[u8]) -> Result<(Vec<UdpDatagram>, PcapStats), PcapError> {
    let magic = rd32(data, 0, false).ok_or(PcapError::Truncated(0))?;
    let mut ex = Extractor::default();
    match magic {
        0xa1b2c3d4 | 0xd4c3b2a1 | 0xa1b23c4d | 0x4d3cb2a1 => {
            let le = matches!(magic, 0xd4c3b2a1 | 0x4d3cb2a1);
            let nanos = matches!(magic, 0xa1b23c4d | 0x4d3cb2a1);
            let link = rd32(data, 20, le).ok_or(PcapError::Truncated(20))? & 0x0fff_ffff;
            let mut pos = 24;
            while pos + 16 <= data.len() {
                let sec = rd32(data, pos, le).ok_or(PcapError::Truncated(pos))?;
                let frac = rd32(data, pos + 4, le).ok_or(PcapError::Truncated(pos))?;
                let incl = rd32(data, pos + 8, le).ok_or(PcapError::Truncated(pos))? as usize;
                let frame = data
                    .get(pos + 16..pos + 16 + incl)
                    .ok_or(PcapError::Truncated(pos))?;
                let ts = i64::from(sec) * 1_000_000_000
                    + if nanos {
                        i64::from(frac)
                    } else {
                        i64::from(frac) * 1000
                    };
                ex.frame(link, ts, frame)?;
                pos += 16 + incl;
            }
        }
        0x0a0d0d0a => parse_pcapng(data, &mut ex)?,
        m => return Err(PcapError::BadMagic(m)),
    }
    ex.stats.fragments_pending = ex.frags.len();
    Ok((ex.out, ex.stats))
}

fn parse_pcapng(data: &[u8], ex: &mut Extractor) -> Result<(), PcapError> {
    let mut pos = 0;
    let mut le = true;
    // (link type, timestamp units per second)
    let mut ifaces: Vec<(u32, u64)> = Vec::new();
    while pos + 12 <= data.len() {
        let btype_be = rd32(data, pos, false).ok_or(PcapError::Truncated(pos))?;
        if btype_be == 0x0a0d0d0a {
            // Section header: the byte-order magic decides endianness for the section.
            let bom = rd32(data, pos + 8, false).ok_or(PcapError::Truncated(pos))?;
            le = bom == 0x4d3c2b1a;
            ifaces.clear();
        }
        let btype = rd32(data, pos, le).ok_or(PcapError::Truncated(pos))?;
        let blen = rd32(data, pos + 4, le).ok_or(PcapError::Truncated(pos))? as usize;
        if blen < 12 || pos + blen > data.len() {
            return Err(PcapError::Truncated(pos));
        }
        let body = &data[pos + 8..pos + blen - 4];
        match btype {
            1 => {
                // Interface description: link type, then options (if_tsresol = 9).
                let link = u32::from(rd16(body, 0, le).ok_or(PcapError::Truncated(pos))?);
                let mut units = 1_000_000u64;
                let mut o = 8;
                while o + 4 <= body.len() {
                    let code = rd16(body, o, le).unwrap_or(0);
                    let len = usize::from(rd16(body, o + 2, le).unwrap_or(0));
                    if code == 0 {
                        break;
                    }
                    if code == 9 && len >= 1 {
                        let v = body.get(o + 4).copied().unwrap_or(6);
                        units = if v & 0x80 != 0 {
                            1u64 << (v & 0x7f).min(63)
                        } else {
                            10u64.saturating_pow(u32::from(v))
                        };
                    }
                    o += 4 + len.div_ceil(4) * 4;
                }
                ifaces.push((link, units));
            }
            6 => {
                let iface = rd32(body, 0, le).ok_or(PcapError::Truncated(pos))? as usize;
                let hi = u64::from(rd32(body, 4, le).ok_or(PcapError::Truncated(pos))?);
                let lo = u64::from(rd32(body, 8, le).ok_or(PcapError::Truncated(pos))?);
                let cap = rd32(body, 12, le).ok_or(PcapError::Truncated(pos))? as usize;
                let frame = body.get(20..20 + cap).ok_or(PcapError::Truncated(pos))?;
                let (link, units) = ifaces.get(iface).copied().unwrap_or((1, 1_000_000));
                let t = (hi << 32) | lo;
                let ts = (u128::from(t) * 1_000_000_000 / u128::from(units.max(1))) as i64;
                ex.frame(link, ts, frame)?;
            }
            3 => {
                let (link, _) = ifaces.first().copied().unwrap_or((1, 1_000_000));
                let frame = body.get(4..).unwrap_or(&[]);
                ex.frame(link, 0, frame)?;
            }
            _ => {}
        }
        pos += blen;
    }
    Ok(())
}

/// Fragments of one datagram: pieces by offset, total length once known, protocol.
type FragState = (Vec<(usize, Vec<u8>)>, Option<usize>, u8);

#[derive(Default)]
struct Extractor {
    out: Vec<UdpDatagram>,
    stats: PcapStats,
    /// Fragments being reassembled: (src, dst, id) -> (pieces by offset, total length).
    frags: HashMap<(IpAddr, IpAddr, u32), FragState>,
}

impl Extractor {
    fn frame(&mut self, link: u32, ts: i64, f: &[u8]) -> Result<(), PcapError> {
        self.stats.frames += 1;
        let (ethertype, l3) = match link {
            1 => {
                let mut et = rd16(f, 12, false).unwrap_or(0);
                let mut off = 14;
                while matches!(et, 0x8100 | 0x88a8 | 0x9100) {
                    et = rd16(f, off + 2, false).unwrap_or(0);
                    off += 4;
                }
                (et, f.get(off..).unwrap_or(&[]))
            }
            113 => (rd16(f, 14, false).unwrap_or(0), f.get(16..).unwrap_or(&[])),
            276 => (rd16(f, 0, false).unwrap_or(0), f.get(20..).unwrap_or(&[])),
            101 | 12 | 14 => match f.first().map(|b| b >> 4) {
                Some(4) => (0x0800, f),
                Some(6) => (0x86dd, f),
                _ => (0, f),
            },
            0 | 108 => {
                let fam = rd32(f, 0, true).unwrap_or(0);
                let et = match fam {
                    2 => 0x0800,
                    24 | 28 | 30 => 0x86dd,
                    _ => 0,
                };
                (et, f.get(4..).unwrap_or(&[]))
            }
            other => return Err(PcapError::LinkType(other)),
        };
        match ethertype {
            0x0800 => self.ipv4(ts, l3),
            0x86dd => self.ipv6(ts, l3),
            _ => self.stats.non_udp += 1,
        }
        Ok(())
    }

    fn ipv4(&mut self, ts: i64, p: &[u8]) {
        let Some(&vihl) = p.first() else { return };
        let ihl = usize::from(vihl & 0x0f) * 4;
        let total = usize::from(rd16(p, 2, false).unwrap_or(0)).min(p.len());
        if ihl < 20 || total < ihl {
            self.stats.non_udp += 1;
            return;
        }
        let id = u32::from(rd16(p, 4, false).unwrap_or(0));
        let fl = rd16(p, 6, false).unwrap_or(0);
        let proto = p[9];
        let src = IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15]));
        let dst = IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19]));
        let payload = &p[ihl..total];
        let more = fl & 0x2000 != 0;
        let offset = usize::from(fl & 0x1fff) * 8;
        if more || offset > 0 {
            if let Some(whole) = self.reassemble((src, dst, id), offset, more, payload, proto) {
                self.l4(ts, src, dst, proto, &whole);
            }
            return;
        }
        self.l4(ts, src, dst, proto, payload);
    }

    fn ipv6(&mut self, ts: i64, p: &[u8]) {
        if p.len() < 40 {
            self.stats.non_udp += 1;
            return;
        }
        let plen = usize::from(rd16(p, 4, false).unwrap_or(0));
        let mut next = p[6];
        let mut a = [0u8; 16];
        a.copy_from_slice(&p[8..24]);
        let src = IpAddr::V6(Ipv6Addr::from(a));
        a.copy_from_slice(&p[24..40]);
        let dst = IpAddr::V6(Ipv6Addr::from(a));
        let end = (40 + plen).min(p.len());
        let mut off = 40;
        loop {
            match next {
                0 | 43 | 60 => {
                    let (Some(&nh), Some(&len)) = (p.get(off), p.get(off + 1)) else {
                        return;
                    };
                    next = nh;
                    off += (usize::from(len) + 1) * 8;
                }
                44 => {
                    let (Some(&nh), Some(fo)) = (p.get(off), rd16(p, off + 2, false)) else {
                        return;
                    };
                    let id = rd32(p, off + 4, false).unwrap_or(0);
                    let frag_off = usize::from(fo & 0xfff8);
                    let more = fo & 1 != 0;
                    let payload = p.get(off + 8..end).unwrap_or(&[]);
                    if let Some(whole) =
                        self.reassemble((src, dst, id), frag_off, more, payload, nh)
                    {
                        self.l4(ts, src, dst, nh, &whole);
                    }
                    return;
                }
                _ => break,
            }
        }
        let payload = p.get(off..end).unwrap_or(&[]);
        self.l4(ts, src, dst, next, payload);
    }

    fn reassemble(
        &mut self,
        key: (IpAddr, IpAddr, u32),
        offset: usize,
        more: bool,
        payload: &[u8],
        proto: u8,
    ) -> Option<Vec<u8>> {
        let e = self
            .frags
            .entry(key)
            .or_insert_with(|| (Vec::new(), None, proto));
        e.0.push((offset, payload.to_vec()));
        if !more {
            e.1 = Some(offset + payload.len());
        }
        if e.0.iter().any(|(o, _)| *o == 0) {
            e.2 = proto.max(e.2);
        }
        let total = e.1?;
        e.0.sort_by_key(|(o, _)| *o);
        let mut covered = 0;
        for (o, d) in &e.0 {
            if *o > covered {
                return None;
            }
            covered = covered.max(o + d.len());
        }
        if covered < total {
            return None;
        }
        let (pieces, _, _) = self.frags.remove(&key)?;
        let mut whole = vec![0u8; total];
        for (o, d) in pieces {
            let n = d.len().min(total.saturating_sub(o));
            whole[o..o + n].copy_from_slice(&d[..n]);
        }
        Some(whole)
    }

    fn l4(&mut self, ts: i64, src: IpAddr, dst: IpAddr, proto: u8, p: &[u8]) {
        if proto != 17 || p.len() < 8 {
            self.stats.non_udp += 1;
            return;
        }
        let sport = rd16(p, 0, false).unwrap_or(0);
        let dport = rd16(p, 2, false).unwrap_or(0);
        let ulen = usize::from(rd16(p, 4, false).unwrap_or(0));
        let end = if ulen >= 8 {
            ulen.min(p.len())
        } else {
            p.len()
        };
        self.stats.udp += 1;
        self.out.push(UdpDatagram {
            ts_ns: ts,
            src: SocketAddr::new(src, sport),
            dst: SocketAddr::new(dst, dport),
            payload: p[8..end].to_vec(),
        });
    }
}

/// Writes UDP datagrams as a classic pcap (Ethernet / IPv4 or IPv6 / UDP, checksums
/// zero). Tests use it to make captures for tshark, softflowd and replay.
pub fn write_pcap(datagrams: &[UdpDatagram]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for d in datagrams {
        let frame = build_frame(d.src, d.dst, &d.payload);
        let sec = d.ts_ns.div_euclid(1_000_000_000) as u32;
        let usec = (d.ts_ns.rem_euclid(1_000_000_000) / 1000) as u32;
        out.extend_from_slice(&sec.to_le_bytes());
        out.extend_from_slice(&usec.to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    out
}

/// An Ethernet frame carrying one UDP datagram.
pub fn build_frame(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    let udp_len = 8 + payload.len();
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let total = 20 + udp_len;
            let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
            ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let mut sum: u32 = 0;
            for c in ip.chunks(2) {
                sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
            }
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            let ck = !(sum as u16);
            ip[10..12].copy_from_slice(&ck.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        (s, d) => {
            let to6 = |a: IpAddr| match a {
                IpAddr::V4(v) => v.to_ipv6_mapped(),
                IpAddr::V6(v) => v,
            };
            f.extend_from_slice(&[0x86, 0xdd]);
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(udp_len as u16).to_be_bytes());
            f.extend_from_slice(&[17, 64]);
            f.extend_from_slice(&to6(s).octets());
            f.extend_from_slice(&to6(d).octets());
        }
    }
    f.extend_from_slice(&udp);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trip_v4_v6() {
        let dgs = vec![
            UdpDatagram {
                ts_ns: 1_600_000_000_123_456_000,
                src: "192.0.2.1:4444".parse().unwrap(),
                dst: "127.0.0.1:2055".parse().unwrap(),
                payload: vec![0, 10, 1, 2, 3],
            },
            UdpDatagram {
                ts_ns: 1_600_000_001_000_000_000,
                src: "[2001:db8::1]:5000".parse().unwrap(),
                dst: "[2001:db8::2]:4739".parse().unwrap(),
                payload: vec![9; 300],
            },
        ];
        let bytes = write_pcap(&dgs);
        let (back, stats) = parse(&bytes).unwrap();
        assert_eq!(stats.udp, 2);
        assert_eq!(back.len(), 2);
        for (a, b) in dgs.iter().zip(&back) {
            assert_eq!(a.src, b.src);
            assert_eq!(a.dst, b.dst);
            assert_eq!(a.payload, b.payload);
            assert_eq!(a.ts_ns, b.ts_ns);
        }
    }

    #[test]
    fn ipv4_fragments_are_reassembled() {
        let payload: Vec<u8> = (0..100u8).collect();
        let frame = build_frame(
            "10.0.0.1:1000".parse().unwrap(),
            "10.0.0.2:2055".parse().unwrap(),
            &payload,
        );
        let ip = &frame[14..];
        let udp = &ip[20..];
        // split the UDP datagram in two fragments of 64 and the rest
        let mk = |off: usize, more: bool, data: &[u8]| {
            let mut h = ip[..20].to_vec();
            h[2..4].copy_from_slice(&((20 + data.len()) as u16).to_be_bytes());
            let fl = ((off / 8) as u16) | if more { 0x2000 } else { 0 };
            h[6..8].copy_from_slice(&fl.to_be_bytes());
            h.extend_from_slice(data);
            let mut f = frame[..14].to_vec();
            f.extend_from_slice(&h);
            f
        };
        let f2 = mk(64, false, &udp[64..]);
        let f1 = mk(0, true, &udp[..64]);
        let mut ex = Extractor::default();
        ex.frame(1, 0, &f2).unwrap();
        assert!(ex.out.is_empty());
        ex.frame(1, 0, &f1).unwrap();
        assert_eq!(ex.out.len(), 1);
        assert_eq!(ex.out[0].payload, payload);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            parse(&[1, 2, 3, 4, 5]),
            Err(PcapError::BadMagic(_))
        ));
        assert!(parse(&[]).is_err());
    }
}
