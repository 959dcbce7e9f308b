//! Plain data types shared by every stage: the exporter identity and the one normalized
//! flow record that decoders produce and enrichment consumes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Who sent a record: the datagram's source address and the observation domain
/// (IPFIX) / source id (NetFlow v9) / engine type+id (NetFlow v5). The sending UDP
/// port is deliberately not part of the identity: exporters change it on restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExporterId {
    pub ip: IpAddr,
    pub domain: u32,
}

impl ExporterId {
    pub fn new(ip: IpAddr, domain: u32) -> Self {
        Self { ip, domain }
    }
}

impl Default for ExporterId {
    fn default() -> Self {
        Self::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
    }
}

impl fmt::Display for ExporterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.domain)
    }
}

/// A short string stored inline (no allocation per record); longer values are truncated
/// at a character boundary. Used for VMware's variable-length names (virtualObsID, vifId).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct InlineStr {
    len: u8,
    buf: [u8; 31],
}

impl InlineStr {
    pub fn from_bytes(b: &[u8]) -> Self {
        // Trim trailing NULs that exporters use as padding of fixed-length strings.
        let end = b.iter().rposition(|&c| c != 0).map_or(0, |p| p + 1);
        let b = b.get(..end).unwrap_or_default();
        // only the first 31 bytes (and up to 3 more, to finish a character) are kept:
        // validating or replacing beyond them is wasted work
        let head = b.get(..b.len().min(34)).unwrap_or_default();
        let mut buf = [0u8; 31];
        // names are nearly always ASCII: every byte a character
        if head.is_ascii() {
            let n = head.len().min(31);
            if let (Some(d), Some(src)) = (buf.get_mut(..n), head.get(..n)) {
                d.copy_from_slice(src);
            }
            return Self { len: n as u8, buf };
        }
        let s = String::from_utf8_lossy(head);
        let mut n = s.len().min(31);
        while n > 0 && !s.is_char_boundary(n) {
            n -= 1;
        }
        if let (Some(d), Some(src)) = (buf.get_mut(..n), s.as_bytes().get(..n)) {
            d.copy_from_slice(src);
        }
        Self { len: n as u8, buf }
    }
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for InlineStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// VMware (PEN 6876) elements, see ../shared/spec/vmware-ipfix.md. Zero / empty means absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VmwareFields {
    /// 880 tenantProtocol (0 when absent).
    pub tenant_protocol: u8,
    /// 881/883 tenantSourceIPv4/IPv6.
    pub tenant_src: Option<IpAddr>,
    /// 882/884 tenantDestIPv4/IPv6.
    pub tenant_dst: Option<IpAddr>,
    /// 886 tenantSourcePort.
    pub tenant_src_port: u16,
    /// 887 tenantDestPort.
    pub tenant_dst_port: u16,
    /// 888 egressInterfaceAttr (0x02 VM access port, 0x03 VXLAN tunnel port).
    pub egress_attr: u16,
    /// 890 ingressInterfaceAttr.
    pub ingress_attr: u16,
    /// 889 vxlanExportRole.
    pub vxlan_export_role: u8,
    /// 898 virtualObsID.
    pub virtual_obs_id: InlineStr,
    /// 950 NSX DFW ruleId.
    pub rule_id: u32,
    /// 951 vmUuid.
    pub vm_uuid: [u8; 16],
    /// 952 vnicIndex.
    pub vnic_index: u32,
    /// 953 sessionFlags.
    pub session_flags: u8,
    /// 954 flowDirection (NSX: 0 ingress to VM, 1 egress from VM); 255 when absent.
    pub flow_direction: u8,
    /// 955 algControlFlowId.
    pub alg_control_flow_id: u64,
    /// 956 algType.
    pub alg_type: u8,
    /// 957 algFlowType.
    pub alg_flow_type: u8,
    /// 958 averageLatency (microseconds).
    pub average_latency_us: u32,
    /// 959 retransmissionCount.
    pub retransmissions: u32,
    /// 960 vifUuid.
    pub vif_uuid: [u8; 16],
    /// 961 vifId.
    pub vif_id: InlineStr,
    /// True when any VMware element was present in the record.
    pub present: bool,
}

/// The normalized flow record: one exported record, whatever the version or vendor,
/// with the exporter's sampling rate already applied to `bytes` and `packets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRecord {
    pub exporter: ExporterId,
    /// 5, 9 or 10.
    pub version: u8,
    /// Flow start / end, Unix milliseconds.
    pub start_ms: i64,
    pub end_ms: i64,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    pub tcp_flags: u16,
    pub tos: u8,
    /// Bytes and packets in the record's direction, sampling applied.
    pub bytes: u64,
    pub packets: u64,
    /// Bytes and packets of the reverse direction when the exporter sends biflows
    /// (RFC 5103 reverse elements, Cisco ASA responder counters), sampling applied.
    pub reverse_bytes: u64,
    pub reverse_packets: u64,
    /// Sampling rate that was applied (1 = unsampled).
    pub sampling_rate: u32,
    pub in_if: u32,
    pub out_if: u32,
    /// 802.1Q VLAN id seen on input (vlanId / dot1qVlanId) and output (postVlanId); 0 = none.
    pub vlan: u16,
    pub post_vlan: u16,
    /// flowDirection (IE 61): 0 ingress, 1 egress, 255 unknown.
    pub direction: u8,
    /// biflowDirection (IE 239): 0 arbitrary, 1 initiator, 2 reverseInitiator, 3 perimeter; 255 unknown.
    pub biflow_direction: u8,
    pub flow_end_reason: u8,
    pub src_as: u32,
    pub dst_as: u32,
    pub next_hop: Option<IpAddr>,
    /// layer2SegmentId (IE 351), e.g. the VXLAN VNI in the low 24 bits.
    pub layer2_segment_id: u64,
    pub vmware: VmwareFields,
}

impl FlowRecord {
    /// An empty record for `exporter`; decoders fill it field by field.
    #[inline(always)]
    pub fn empty(exporter: ExporterId, version: u8) -> Self {
        Self {
            exporter,
            version,
            start_ms: 0,
            end_ms: 0,
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            src_port: 0,
            dst_port: 0,
            protocol: 0,
            tcp_flags: 0,
            tos: 0,
            bytes: 0,
            packets: 0,
            reverse_bytes: 0,
            reverse_packets: 0,
            sampling_rate: 1,
            in_if: 0,
            out_if: 0,
            vlan: 0,
            post_vlan: 0,
            direction: 255,
            biflow_direction: 255,
            flow_end_reason: 0,
            src_as: 0,
            dst_as: 0,
            next_hop: None,
            layer2_segment_id: 0,
            vmware: VmwareFields {
                flow_direction: 255,
                ..VmwareFields::default()
            },
        }
    }

    /// The pair operators reason about: the tenant (inner) addresses when VMware
    /// overlay elements are present, else the outer ones.
    pub fn effective_endpoints(&self) -> (IpAddr, u16, IpAddr, u16, u8) {
        match (self.vmware.tenant_src, self.vmware.tenant_dst) {
            (Some(s), Some(d)) => {
                let proto = if self.vmware.tenant_protocol != 0 {
                    self.vmware.tenant_protocol
                } else {
                    self.protocol
                };
                (
                    s,
                    self.vmware.tenant_src_port,
                    d,
                    self.vmware.tenant_dst_port,
                    proto,
                )
            }
            _ => (
                self.src,
                self.src_port,
                self.dst,
                self.dst_port,
                self.protocol,
            ),
        }
    }
}

/// IPv6 addresses that carry an IPv4 address (::ffff:a.b.c.d) are treated as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Starts loading the cache line holding `p` (a hint: no effect on other targets).
#[inline]
pub fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint and never faults
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>((p as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A 64-bit hash of a key whose every bit depends on every input bit: FxHash, whose
/// last step leaves low-entropy high bits for structured input, finished with the
/// splitmix64 avalanche. Tables can use any bits of it, and 64-bit collisions are as
/// rare as random ones.
pub fn hash64<T: std::hash::Hash + ?Sized>(v: &T) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    v.hash(&mut h);
    let mut z = h.finish();
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A compact, totally ordered, hashable form of an address for keys: IPv4 is mapped
/// into ::ffff:0:0/96 so one `u128` holds both families.
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

pub fn u128_to_ip(v: u128) -> IpAddr {
    canonical_ip(IpAddr::V6(Ipv6Addr::from(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_str_trims_and_truncates() {
        assert_eq!(InlineStr::from_bytes(b"vnic-1\0\0").as_str(), "vnic-1");
        let long = "x".repeat(40);
        assert_eq!(InlineStr::from_bytes(long.as_bytes()).as_str().len(), 31);
        // a multi-byte char straddling the limit is dropped, not split
        let s = format!("{}é", "a".repeat(30));
        assert_eq!(InlineStr::from_bytes(s.as_bytes()).as_str(), "a".repeat(30));
    }

    proptest::proptest! {
        /// Converting only the head of a long value keeps exactly what converting all
        /// of it and cutting at 31 bytes keeps (invalid UTF-8 included).
        #[test]
        fn inline_str_of_the_head_equals_the_whole(
            b in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::any::<u8>(),
                    0x80u8..0xc0,
                    0xe0u8..0xf5,
                    proptest::prelude::Just(b'a'),
                ],
                0..60,
            )
        ) {
            let end = b.iter().rposition(|&c| c != 0).map_or(0, |p| p + 1);
            let whole = String::from_utf8_lossy(&b[..end]);
            let mut n = whole.len().min(31);
            while !whole.is_char_boundary(n) {
                n -= 1;
            }
            let got = InlineStr::from_bytes(&b);
            proptest::prop_assert_eq!(got.as_str(), &whole[..n]);
        }

        /// ASCII names (nearly all of them) take the copy without conversion, and keep
        /// their first 31 characters, trailing NULs trimmed.
        #[test]
        fn inline_str_of_ascii_keeps_31_characters(s in "[ -~]{0,60}", nuls in 0usize..4) {
            let mut b = s.clone().into_bytes();
            b.extend(std::iter::repeat_n(0u8, nuls));
            let got = InlineStr::from_bytes(&b);
            proptest::prop_assert_eq!(got.as_str(), &s[..s.len().min(31)]);
        }
    }

    #[test]
    fn ip_u128_round_trip() {
        for s in ["10.1.2.3", "2001:db8::1", "0.0.0.0", "::"] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(u128_to_ip(ip_to_u128(ip)), ip);
        }
    }
}
