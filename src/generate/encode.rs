//! Encoders that speak real NetFlow v5, v9 and IPFIX: templates (refreshed periodically,
//! as devices do), data sets packed up to an MTU. Used by `nagare gen`, the demo, tests
//! and benchmarks.

use std::net::IpAddr;

use crate::decode::fields::PEN_VMWARE;

/// What a generated record carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenRecord {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    pub tcp_flags: u8,
    pub bytes: u64,
    pub packets: u64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub in_if: u32,
    pub out_if: u32,
    pub vlan: u16,
    /// 0 ingress, 1 egress.
    pub direction: u8,
    /// VMware overlay (tenant) pair and the observation point name; when set, the record
    /// goes out with the VMware template (IPFIX only).
    pub vmware: Option<GenVmware>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenVmware {
    pub tenant_src: IpAddr,
    pub tenant_dst: IpAddr,
    pub tenant_src_port: u16,
    pub tenant_dst_port: u16,
    pub tenant_protocol: u8,
    pub ingress_attr: u16,
    pub egress_attr: u16,
    pub virtual_obs_id: String,
    pub rule_id: u32,
}

/// IPFIX template ids used by the encoder.
pub const TPL_V4: u16 = 256;
pub const TPL_V6: u16 = 257;
pub const TPL_VMWARE: u16 = 258;
pub const TPL_OPTIONS: u16 = 259;

/// (id, enterprise, length) of the IPv4 IPFIX template.
const IPFIX_V4: &[(u16, u32, u16)] = &[
    (8, 0, 4),
    (12, 0, 4),
    (7, 0, 2),
    (11, 0, 2),
    (4, 0, 1),
    (6, 0, 1),
    (1, 0, 8),
    (2, 0, 8),
    (152, 0, 8),
    (153, 0, 8),
    (10, 0, 4),
    (14, 0, 4),
    (58, 0, 2),
    (61, 0, 1),
];
const IPFIX_V6: &[(u16, u32, u16)] = &[
    (27, 0, 16),
    (28, 0, 16),
    (7, 0, 2),
    (11, 0, 2),
    (4, 0, 1),
    (6, 0, 1),
    (1, 0, 8),
    (2, 0, 8),
    (152, 0, 8),
    (153, 0, 8),
    (10, 0, 4),
    (14, 0, 4),
    (58, 0, 2),
    (61, 0, 1),
];
/// VMware VDS/NSX style: outer pair, tenant pair, port attributes, virtualObsID
/// (variable length), DFW rule id.
const IPFIX_VMWARE: &[(u16, u32, u16)] = &[
    (8, 0, 4),
    (12, 0, 4),
    (7, 0, 2),
    (11, 0, 2),
    (4, 0, 1),
    (6, 0, 1),
    (1, 0, 8),
    (2, 0, 8),
    (152, 0, 8),
    (153, 0, 8),
    (10, 0, 4),
    (14, 0, 4),
    (61, 0, 1),
    (880, PEN_VMWARE, 1),
    (881, PEN_VMWARE, 4),
    (882, PEN_VMWARE, 4),
    (886, PEN_VMWARE, 2),
    (887, PEN_VMWARE, 2),
    (890, PEN_VMWARE, 2),
    (888, PEN_VMWARE, 2),
    (950, PEN_VMWARE, 4),
    (898, PEN_VMWARE, 0xffff),
];
/// v9 template: 4-byte counters, sysUpTime-relative timestamps.
const V9_V4: &[(u16, u16)] = &[
    (8, 4),
    (12, 4),
    (7, 2),
    (11, 2),
    (4, 1),
    (6, 1),
    (1, 4),
    (2, 4),
    (22, 4),
    (21, 4),
    (10, 4),
    (14, 4),
    (58, 2),
    (61, 1),
];
const V9_V6: &[(u16, u16)] = &[
    (27, 16),
    (28, 16),
    (7, 2),
    (11, 2),
    (4, 1),
    (6, 1),
    (1, 4),
    (2, 4),
    (22, 4),
    (21, 4),
    (10, 4),
    (14, 4),
    (58, 2),
    (61, 1),
];

/// Largest datagram the encoders produce.
pub const MTU_PAYLOAD: usize = 1400;

fn put_addr(out: &mut Vec<u8>, a: IpAddr, len: u16) {
    match (a, len) {
        (IpAddr::V4(v), 4) => out.extend_from_slice(&v.octets()),
        (IpAddr::V6(v), 16) => out.extend_from_slice(&v.octets()),
        (IpAddr::V4(v), 16) => out.extend_from_slice(&v.to_ipv6_mapped().octets()),
        (IpAddr::V6(_), _) => out.extend_from_slice(&[0u8; 4]),
        _ => out.extend(std::iter::repeat_n(0u8, usize::from(len))),
    }
}

fn put_uint(out: &mut Vec<u8>, v: u64, len: u16) {
    let b = v.to_be_bytes();
    let n = usize::from(len).min(8);
    out.extend_from_slice(&b[8 - n..]);
}

/// Per-exporter encoder state (sequence numbers, template refresh).
#[derive(Debug, Clone)]
pub struct Exporter {
    pub version: u8,
    pub domain: u32,
    /// Exporter boot time (Unix ms) for v5/v9 sysUpTime.
    pub boot_ms: i64,
    /// Send templates every this many datagrams (and in the first one).
    pub template_every: u32,
    /// Sampling rate announced (IPFIX options / v5 header); 1 = none.
    pub sampling: u32,
    /// Interface names announced in options data (IPFIX and v9).
    pub if_names: Vec<(u32, String)>,
    /// Largest datagram produced (v9 and IPFIX).
    pub mtu: usize,
    seq: u32,
    datagrams: u32,
}

impl Exporter {
    pub fn new(version: u8, domain: u32, boot_ms: i64) -> Self {
        Self {
            version,
            domain,
            boot_ms,
            template_every: 20,
            sampling: 1,
            if_names: Vec::new(),
            mtu: MTU_PAYLOAD,
            seq: 0,
            datagrams: 0,
        }
    }

    /// Encodes `records` into datagrams exported at `now_ms`.
    pub fn encode(&mut self, records: &[GenRecord], now_ms: i64) -> Vec<Vec<u8>> {
        match self.version {
            5 => self.encode_v5(records, now_ms),
            9 => self.encode_v9(records, now_ms),
            _ => self.encode_ipfix(records, now_ms),
        }
    }

    fn templates_due(&mut self) -> bool {
        let due = self.datagrams.is_multiple_of(self.template_every.max(1));
        self.datagrams = self.datagrams.wrapping_add(1);
        due
    }

    fn uptime(&self, t_ms: i64) -> u32 {
        (t_ms - self.boot_ms).max(0) as u32
    }

    pub fn encode_v5(&mut self, records: &[GenRecord], now_ms: i64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for chunk in records.chunks(30) {
            let mut p = Vec::with_capacity(24 + 48 * chunk.len());
            p.extend_from_slice(&5u16.to_be_bytes());
            p.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            p.extend_from_slice(&self.uptime(now_ms).to_be_bytes());
            p.extend_from_slice(&((now_ms / 1000) as u32).to_be_bytes());
            p.extend_from_slice(&(((now_ms % 1000) * 1_000_000) as u32).to_be_bytes());
            p.extend_from_slice(&self.seq.to_be_bytes());
            p.push((self.domain >> 8) as u8);
            p.push(self.domain as u8);
            let si: u16 = if self.sampling > 1 {
                0x4000 | (self.sampling.min(0x3fff) as u16)
            } else {
                0
            };
            p.extend_from_slice(&si.to_be_bytes());
            for r in chunk {
                put_addr(&mut p, r.src, 4);
                put_addr(&mut p, r.dst, 4);
                p.extend_from_slice(&[0, 0, 0, 0]);
                p.extend_from_slice(&(r.in_if as u16).to_be_bytes());
                p.extend_from_slice(&(r.out_if as u16).to_be_bytes());
                p.extend_from_slice(&(r.packets.min(u64::from(u32::MAX)) as u32).to_be_bytes());
                p.extend_from_slice(&(r.bytes.min(u64::from(u32::MAX)) as u32).to_be_bytes());
                p.extend_from_slice(&self.uptime(r.start_ms).to_be_bytes());
                p.extend_from_slice(&self.uptime(r.end_ms).to_be_bytes());
                p.extend_from_slice(&r.src_port.to_be_bytes());
                p.extend_from_slice(&r.dst_port.to_be_bytes());
                p.push(0);
                p.push(r.tcp_flags);
                p.push(r.protocol);
                p.push(0);
                p.extend_from_slice(&[0, 0, 0, 0, 24, 24, 0, 0]);
            }
            self.seq = self.seq.wrapping_add(chunk.len() as u32);
            out.push(p);
        }
        out
    }

    fn v9_header(&mut self, now_ms: i64) -> Vec<u8> {
        let mut p = Vec::with_capacity(MTU_PAYLOAD);
        p.extend_from_slice(&9u16.to_be_bytes());
        p.extend_from_slice(&0u16.to_be_bytes()); // count, patched
        p.extend_from_slice(&self.uptime(now_ms).to_be_bytes());
        p.extend_from_slice(&((now_ms / 1000) as u32).to_be_bytes());
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.domain.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        p
    }

    fn v9_templates(&self, p: &mut Vec<u8>) -> u16 {
        let start = p.len();
        p.extend_from_slice(&[0, 0, 0, 0]);
        for (id, fields) in [(TPL_V4, V9_V4), (TPL_V6, V9_V6)] {
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&(fields.len() as u16).to_be_bytes());
            for (fid, len) in fields {
                p.extend_from_slice(&fid.to_be_bytes());
                p.extend_from_slice(&len.to_be_bytes());
            }
        }
        let len = (p.len() - start) as u16;
        p[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        let mut count = 2;
        if !self.if_names.is_empty() {
            // options template: scope interface (type 2), IF_NAME (82, 32 bytes)
            let s = p.len();
            p.extend_from_slice(&[0, 1, 0, 0]);
            p.extend_from_slice(&TPL_OPTIONS.to_be_bytes());
            p.extend_from_slice(&4u16.to_be_bytes());
            p.extend_from_slice(&4u16.to_be_bytes());
            p.extend_from_slice(&2u16.to_be_bytes());
            p.extend_from_slice(&4u16.to_be_bytes());
            p.extend_from_slice(&82u16.to_be_bytes());
            p.extend_from_slice(&32u16.to_be_bytes());
            while !(p.len() - s).is_multiple_of(4) {
                p.push(0);
            }
            let l = (p.len() - s) as u16;
            p[s + 2..s + 4].copy_from_slice(&l.to_be_bytes());
            // options data
            let s = p.len();
            p.extend_from_slice(&TPL_OPTIONS.to_be_bytes());
            p.extend_from_slice(&[0, 0]);
            for (idx, name) in &self.if_names {
                p.extend_from_slice(&idx.to_be_bytes());
                let mut b = name.as_bytes().to_vec();
                b.resize(32, 0);
                p.extend_from_slice(&b);
                count += 1;
            }
            while !(p.len() - s).is_multiple_of(4) {
                p.push(0);
            }
            let l = (p.len() - s) as u16;
            p[s + 2..s + 4].copy_from_slice(&l.to_be_bytes());
            count += 1;
        }
        count
    }

    pub fn encode_v9(&mut self, records: &[GenRecord], now_ms: i64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < records.len() || (records.is_empty() && out.is_empty()) {
            let mut p = self.v9_header(now_ms);
            let mut count: u16 = 0;
            if self.templates_due() {
                count += self.v9_templates(&mut p);
            }
            // one data flowset per address family run
            while i < records.len() {
                let v6 = records[i].src.is_ipv6() || records[i].dst.is_ipv6();
                let (tid, fields) = if v6 { (TPL_V6, V9_V6) } else { (TPL_V4, V9_V4) };
                let rec_len: usize = fields.iter().map(|f| usize::from(f.1)).sum();
                if p.len() + 4 + rec_len > self.mtu {
                    break;
                }
                let s = p.len();
                p.extend_from_slice(&tid.to_be_bytes());
                p.extend_from_slice(&[0, 0]);
                while i < records.len() && p.len() + rec_len <= self.mtu {
                    let r = &records[i];
                    if (r.src.is_ipv6() || r.dst.is_ipv6()) != v6 {
                        break;
                    }
                    for (fid, len) in fields {
                        match fid {
                            8 | 27 => put_addr(&mut p, r.src, *len),
                            12 | 28 => put_addr(&mut p, r.dst, *len),
                            7 => put_uint(&mut p, u64::from(r.src_port), *len),
                            11 => put_uint(&mut p, u64::from(r.dst_port), *len),
                            4 => put_uint(&mut p, u64::from(r.protocol), *len),
                            6 => put_uint(&mut p, u64::from(r.tcp_flags), *len),
                            1 => put_uint(&mut p, r.bytes.min(u64::from(u32::MAX)), *len),
                            2 => put_uint(&mut p, r.packets.min(u64::from(u32::MAX)), *len),
                            22 => put_uint(&mut p, u64::from(self.uptime(r.start_ms)), *len),
                            21 => put_uint(&mut p, u64::from(self.uptime(r.end_ms)), *len),
                            10 => put_uint(&mut p, u64::from(r.in_if), *len),
                            14 => put_uint(&mut p, u64::from(r.out_if), *len),
                            58 => put_uint(&mut p, u64::from(r.vlan), *len),
                            61 => put_uint(&mut p, u64::from(r.direction), *len),
                            _ => put_uint(&mut p, 0, *len),
                        }
                    }
                    count += 1;
                    i += 1;
                }
                while !(p.len() - s).is_multiple_of(4) {
                    p.push(0);
                }
                let l = (p.len() - s) as u16;
                p[s + 2..s + 4].copy_from_slice(&l.to_be_bytes());
            }
            p[2..4].copy_from_slice(&count.to_be_bytes());
            out.push(p);
            if records.is_empty() {
                break;
            }
        }
        out
    }

    fn ipfix_templates(&self, p: &mut Vec<u8>) {
        let s = p.len();
        p.extend_from_slice(&2u16.to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        for (id, fields) in [
            (TPL_V4, IPFIX_V4),
            (TPL_V6, IPFIX_V6),
            (TPL_VMWARE, IPFIX_VMWARE),
        ] {
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&(fields.len() as u16).to_be_bytes());
            for (fid, pen, len) in fields {
                if *pen != 0 {
                    p.extend_from_slice(&(fid | 0x8000).to_be_bytes());
                    p.extend_from_slice(&len.to_be_bytes());
                    p.extend_from_slice(&pen.to_be_bytes());
                } else {
                    p.extend_from_slice(&fid.to_be_bytes());
                    p.extend_from_slice(&len.to_be_bytes());
                }
            }
        }
        let l = (p.len() - s) as u16;
        p[s + 2..s + 4].copy_from_slice(&l.to_be_bytes());
        if self.sampling > 1 || !self.if_names.is_empty() {
            // Options template: scope ingressInterface (10); samplingInterval (34),
            // interfaceName (82, variable length).
            let s = p.len();
            p.extend_from_slice(&3u16.to_be_bytes());
            p.extend_from_slice(&[0, 0]);
            p.extend_from_slice(&TPL_OPTIONS.to_be_bytes());
            p.extend_from_slice(&3u16.to_be_bytes());
            p.extend_from_slice(&1u16.to_be_bytes());
            for (fid, len) in [(10u16, 4u16), (34, 4), (82, 0xffff)] {
                p.extend_from_slice(&fid.to_be_bytes());
                p.extend_from_slice(&len.to_be_bytes());
            }
            let l = (p.len() - s) as u16;
            p[s + 2..s + 4].copy_from_slice(&l.to_be_bytes());
            // Options data: one record per interface; the first also carries the rate
            // with ifIndex 0, which applies exporter-wide.
            let s = p.len();
            p.extend_from_slice(&TPL_OPTIONS.to_be_bytes());
            p.extend_from_slice(&[0, 0]);
            if self.sampling > 1 {
                p.extend_from_slice(&0u32.to_be_bytes());
                p.extend_from_slice(&self.sampling.to_be_bytes());
                p.push(0);
            }
            for (idx, name) in &self.if_names {
                p.extend_from_slice(&idx.to_be_bytes());
                p.extend_from_slice(&0u32.to_be_bytes());
                let b = &name.as_bytes()[..name.len().min(250)];
                p.push(b.len() as u8);
                p.extend_from_slice(b);
            }
            let l = (p.len() - s) as u16;
            p[s + 2..s + 4].copy_from_slice(&l.to_be_bytes());
        }
    }

    pub fn encode_ipfix(&mut self, records: &[GenRecord], now_ms: i64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            let mut p = Vec::with_capacity(self.mtu);
            p.extend_from_slice(&10u16.to_be_bytes());
            p.extend_from_slice(&[0, 0]);
            p.extend_from_slice(&((now_ms / 1000) as u32).to_be_bytes());
            p.extend_from_slice(&self.seq.to_be_bytes());
            p.extend_from_slice(&self.domain.to_be_bytes());
            if self.templates_due() {
                self.ipfix_templates(&mut p);
            }
            let mut n_data: u32 = 0;
            while i < records.len() {
                let kind = |r: &GenRecord| {
                    if r.vmware.is_some() {
                        TPL_VMWARE
                    } else if r.src.is_ipv6() || r.dst.is_ipv6() {
                        TPL_V6
                    } else {
                        TPL_V4
                    }
                };
                let tid = kind(&records[i]);
                let fields = match tid {
                    TPL_VMWARE => IPFIX_VMWARE,
                    TPL_V6 => IPFIX_V6,
                    _ => IPFIX_V4,
                };
                let max_rec: usize = fields
                    .iter()
                    .map(|f| {
                        if f.2 == 0xffff {
                            3 + 255
                        } else {
                            usize::from(f.2)
                        }
                    })
                    .sum();
                if p.len() + 4 + max_rec > self.mtu {
                    break;
                }
                let s = p.len();
                p.extend_from_slice(&tid.to_be_bytes());
                p.extend_from_slice(&[0, 0]);
                while i < records.len() && kind(&records[i]) == tid && p.len() + max_rec <= self.mtu
                {
                    let r = &records[i];
                    for (fid, pen, len) in fields {
                        if *pen == PEN_VMWARE {
                            let vm = r.vmware.as_ref();
                            match fid {
                                880 => put_uint(
                                    &mut p,
                                    vm.map_or(0, |v| u64::from(v.tenant_protocol)),
                                    *len,
                                ),
                                881 => put_addr(&mut p, vm.map_or(r.src, |v| v.tenant_src), *len),
                                882 => put_addr(&mut p, vm.map_or(r.dst, |v| v.tenant_dst), *len),
                                886 => put_uint(
                                    &mut p,
                                    vm.map_or(0, |v| u64::from(v.tenant_src_port)),
                                    *len,
                                ),
                                887 => put_uint(
                                    &mut p,
                                    vm.map_or(0, |v| u64::from(v.tenant_dst_port)),
                                    *len,
                                ),
                                890 => put_uint(
                                    &mut p,
                                    vm.map_or(0, |v| u64::from(v.ingress_attr)),
                                    *len,
                                ),
                                888 => put_uint(
                                    &mut p,
                                    vm.map_or(0, |v| u64::from(v.egress_attr)),
                                    *len,
                                ),
                                950 => {
                                    put_uint(&mut p, vm.map_or(0, |v| u64::from(v.rule_id)), *len)
                                }
                                898 => {
                                    let name = vm.map_or("", |v| v.virtual_obs_id.as_str());
                                    let b = &name.as_bytes()[..name.len().min(254)];
                                    p.push(b.len() as u8);
                                    p.extend_from_slice(b);
                                }
                                _ => put_uint(&mut p, 0, *len),
                            }
                            continue;
                        }
                        match fid {
                            8 | 27 => put_addr(&mut p, r.src, *len),
                            12 | 28 => put_addr(&mut p, r.dst, *len),
                            7 => put_uint(&mut p, u64::from(r.src_port), *len),
                            11 => put_uint(&mut p, u64::from(r.dst_port), *len),
                            4 => put_uint(&mut p, u64::from(r.protocol), *len),
                            6 => put_uint(&mut p, u64::from(r.tcp_flags), *len),
                            1 => put_uint(&mut p, r.bytes, *len),
                            2 => put_uint(&mut p, r.packets, *len),
                            152 => put_uint(&mut p, r.start_ms.max(0) as u64, *len),
                            153 => put_uint(&mut p, r.end_ms.max(0) as u64, *len),
                            10 => put_uint(&mut p, u64::from(r.in_if), *len),
                            14 => put_uint(&mut p, u64::from(r.out_if), *len),
                            58 => put_uint(&mut p, u64::from(r.vlan), *len),
                            61 => put_uint(&mut p, u64::from(r.direction), *len),
                            _ => put_uint(&mut p, 0, *len),
                        }
                    }
                    n_data += 1;
                    i += 1;
                }
                let l = (p.len() - s) as u16;
                p[s + 2..s + 4].copy_from_slice(&l.to_be_bytes());
            }
            let l = p.len() as u16;
            p[2..4].copy_from_slice(&l.to_be_bytes());
            // IPFIX sequence numbers count data records.
            self.seq = self.seq.wrapping_add(n_data);
            out.push(p);
            if i >= records.len() {
                break;
            }
        }
        out
    }

    /// A datagram carrying only the templates (and options), as sent on a refresh.
    pub fn templates_only(&mut self, now_ms: i64) -> Vec<u8> {
        // counts as the datagram that carried the templates
        self.datagrams = self.datagrams.wrapping_add(1);
        match self.version {
            9 => {
                let mut p = self.v9_header(now_ms);
                let c = self.v9_templates(&mut p);
                p[2..4].copy_from_slice(&c.to_be_bytes());
                p
            }
            _ => {
                let mut p = Vec::with_capacity(MTU_PAYLOAD);
                p.extend_from_slice(&10u16.to_be_bytes());
                p.extend_from_slice(&[0, 0]);
                p.extend_from_slice(&((now_ms / 1000) as u32).to_be_bytes());
                p.extend_from_slice(&self.seq.to_be_bytes());
                p.extend_from_slice(&self.domain.to_be_bytes());
                self.ipfix_templates(&mut p);
                let l = p.len() as u16;
                p[2..4].copy_from_slice(&l.to_be_bytes());
                p
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{DecodeConfig, DecodeMode, Decoder};

    pub(crate) fn sample_records(n: usize, t0: i64) -> Vec<GenRecord> {
        (0..n)
            .map(|i| GenRecord {
                src: if i % 7 == 3 {
                    format!("2001:db8::{}", i + 1).parse().unwrap()
                } else {
                    format!("10.1.{}.{}", i / 200, i % 200 + 1).parse().unwrap()
                },
                dst: if i % 7 == 3 {
                    "2001:db8:ffff::1".parse().unwrap()
                } else {
                    format!("192.0.2.{}", i % 250 + 1).parse().unwrap()
                },
                src_port: 40_000 + i as u16,
                dst_port: [443, 22, 53, 3389][i % 4],
                protocol: if i % 4 == 2 { 17 } else { 6 },
                tcp_flags: 0x1b,
                bytes: 1000 + i as u64 * 7,
                packets: 3 + i as u64 % 5,
                start_ms: t0 - 30_000 + i as i64,
                end_ms: t0 - 1_000,
                in_if: 1 + i as u32 % 3,
                out_if: 7,
                vlan: 1105,
                direction: (i % 2) as u8,
                vmware: (i % 11 == 5).then(|| GenVmware {
                    tenant_src: "172.16.0.5".parse().unwrap(),
                    tenant_dst: "172.16.1.9".parse().unwrap(),
                    tenant_src_port: 51000,
                    tenant_dst_port: 8443,
                    tenant_protocol: 6,
                    ingress_attr: 2,
                    egress_attr: 3,
                    virtual_obs_id: format!("vnic-{i}"),
                    rule_id: 1001,
                }),
            })
            .collect()
    }

    fn decode(dgs: &[Vec<u8>], mode: DecodeMode) -> Vec<crate::model::FlowRecord> {
        let d = Decoder::new(DecodeConfig {
            mode,
            ..Default::default()
        });
        let mut out = Vec::new();
        for p in dgs {
            let st = d.decode("192.0.2.9".parse().unwrap(), 0, p, &mut out);
            assert_eq!(st.error, None);
        }
        out
    }

    #[test]
    fn every_version_round_trips() {
        let t0 = 1_764_000_000_000;
        let recs = sample_records(200, t0);
        for version in [5u8, 9, 10] {
            let mut e = Exporter::new(version, 3, t0 - 3_600_000);
            let input: Vec<GenRecord> = if version == 10 {
                recs.clone()
            } else {
                recs.iter()
                    .filter(|r| r.vmware.is_none() && (version == 9 || r.src.is_ipv4()))
                    .cloned()
                    .collect()
            };
            let dgs = e.encode(&input, t0);
            let limit = if version == 5 {
                24 + 30 * 48
            } else {
                MTU_PAYLOAD
            };
            assert!(dgs.iter().all(|d| d.len() <= limit), "v{version} over MTU");
            let got = decode(&dgs, DecodeMode::Auto);
            assert_eq!(got.len(), input.len(), "v{version}");
            for (g, r) in got.iter().zip(&input) {
                let (s, sp, d, dp, _) = g.effective_endpoints();
                match &r.vmware {
                    Some(v) => {
                        assert_eq!(
                            (s, sp, d, dp),
                            (
                                v.tenant_src,
                                v.tenant_src_port,
                                v.tenant_dst,
                                v.tenant_dst_port
                            )
                        );
                        assert_eq!(g.vmware.virtual_obs_id.as_str(), v.virtual_obs_id);
                        assert_eq!(g.vmware.rule_id, v.rule_id);
                    }
                    None => assert_eq!((s, sp, d, dp), (r.src, r.src_port, r.dst, r.dst_port)),
                }
                assert_eq!(
                    (g.bytes, g.packets, g.protocol),
                    (r.bytes, r.packets, r.protocol)
                );
                // v5/v9 carry times as uptime in ms, IPFIX as absolute ms.
                assert_eq!((g.start_ms, g.end_ms), (r.start_ms, r.end_ms), "v{version}");
                assert_eq!((g.in_if, g.out_if), (r.in_if, r.out_if));
                if version != 5 && r.vmware.is_none() {
                    assert_eq!(g.vlan, r.vlan);
                }
            }
        }
    }
}

#[cfg(test)]
mod differential {
    //! The fast path and netflow_parser must produce identical records for every
    //! generated datagram, whatever the record mix.
    use super::*;
    use crate::decode::{DecodeConfig, DecodeMode, Decoder};
    use proptest::prelude::*;

    fn decode(dgs: &[Vec<u8>], mode: DecodeMode) -> Vec<crate::model::FlowRecord> {
        let d = Decoder::new(DecodeConfig {
            mode,
            ..Default::default()
        });
        let mut out = Vec::new();
        for p in dgs {
            d.decode("192.0.2.9".parse().unwrap(), 0, p, &mut out);
        }
        out
    }

    fn arb_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ]
    }

    fn arb_record() -> impl Strategy<Value = GenRecord> {
        (
            (
                arb_ip(),
                arb_ip(),
                any::<u16>(),
                any::<u16>(),
                any::<u8>(),
                any::<u8>(),
            ),
            (
                any::<u32>(),
                any::<u32>(),
                0i64..4_000_000_000_000,
                0i64..100_000,
            ),
            (any::<u32>(), any::<u32>(), 0u16..4096, 0u8..2),
            proptest::option::of((
                "[a-z0-9-]{0,40}",
                any::<u32>(),
                any::<[u8; 4]>(),
                any::<[u8; 4]>(),
            )),
        )
            .prop_map(
                |(
                    (src, dst, sp, dp, proto, flags),
                    (bytes, packets, start, dur),
                    (i, o, vlan, dir),
                    vm,
                )| GenRecord {
                    src,
                    dst,
                    src_port: sp,
                    dst_port: dp,
                    protocol: proto,
                    tcp_flags: flags,
                    bytes: u64::from(bytes),
                    packets: u64::from(packets),
                    start_ms: start,
                    end_ms: start + dur,
                    in_if: i,
                    out_if: o,
                    vlan,
                    direction: dir,
                    vmware: vm.map(|(name, rule, a, b)| GenVmware {
                        tenant_src: IpAddr::from(a),
                        tenant_dst: IpAddr::from(b),
                        tenant_src_port: sp,
                        tenant_dst_port: dp,
                        tenant_protocol: proto,
                        ingress_attr: 2,
                        egress_attr: 3,
                        virtual_obs_id: name,
                        rule_id: rule,
                    }),
                },
            )
    }

    /// ESXi's IPFIX (VMware's variable-length names) takes the zero-copy walker in
    /// `auto` mode, netflow_parser in `reference` mode, and both give the same records.
    #[test]
    fn variable_length_records_take_the_walker() {
        let recs: Vec<GenRecord> = (0..40u8)
            .map(|i| GenRecord {
                src: IpAddr::from([10, 0, 0, i]),
                dst: IpAddr::from([10, 0, 1, 1]),
                src_port: 40_000 + u16::from(i),
                dst_port: 443,
                protocol: 6,
                tcp_flags: 0x1b,
                bytes: 1_000 + u64::from(i),
                packets: 3,
                start_ms: 4_000_000_000_000,
                end_ms: 4_000_000_001_000,
                in_if: 1,
                out_if: 2,
                vlan: 0,
                direction: 0,
                vmware: Some(GenVmware {
                    tenant_src: IpAddr::from([192, 168, 5, i]),
                    tenant_dst: IpAddr::from([192, 168, 6, 1]),
                    tenant_src_port: 50_000,
                    tenant_dst_port: 8443,
                    tenant_protocol: 6,
                    ingress_attr: 2,
                    egress_attr: 3,
                    virtual_obs_id: format!("vnic-{i}"),
                    rule_id: 7,
                }),
            })
            .collect();
        let dgs = Exporter::new(10, 1, 0).encode(&recs, 4_000_100_000_000);
        let run = |mode| {
            let d = Decoder::new(DecodeConfig {
                mode,
                ..Default::default()
            });
            let mut out = Vec::new();
            for p in &dgs {
                d.decode("192.0.2.9".parse().unwrap(), 0, p, &mut out);
            }
            let m = &d.metrics;
            let paths = (
                m.records_fast.get(),
                m.records_walker.get(),
                m.records_reference.get(),
            );
            (out, paths)
        };
        let (auto, auto_paths) = run(DecodeMode::Auto);
        let (reference, reference_paths) = run(DecodeMode::Reference);
        assert_eq!(auto_paths, (0, 40, 0));
        assert_eq!(reference_paths, (0, 0, 40));
        assert_eq!(auto.len(), 40);
        assert_eq!(auto, reference);
        assert_eq!(auto[7].vmware.virtual_obs_id.as_str(), "vnic-7");
        assert_eq!(
            auto[7].vmware.tenant_src,
            Some(IpAddr::from([192, 168, 5, 7]))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn fast_path_equals_reference(recs in proptest::collection::vec(arb_record(), 1..80), version in prop_oneof![Just(9u8), Just(10u8)]) {
            let recs: Vec<GenRecord> = if version == 9 {
                recs.into_iter().map(|mut r| { r.vmware = None; r.end_ms = r.start_ms; r }).collect()
            } else {
                recs
            };
            let mut e = Exporter::new(version, 1, 0);
            let dgs = e.encode(&recs, 4_000_100_000_000);
            let fast = decode(&dgs, DecodeMode::Auto);
            let reference = decode(&dgs, DecodeMode::Reference);
            prop_assert_eq!(fast.len(), recs.len());
            prop_assert_eq!(fast, reference);
        }
    }
}
