//! Information elements nagare understands, and what each one does to a [`FlowRecord`].
//!
//! Both decoders (the zero-copy fast path and the `netflow_parser` reference path) find
//! the [`Slot`] of a template field with [`slot_for`] and hand the value to [`apply`];
//! they differ in how they frame records and extract values, which is what the
//! differential tests compare.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::model::{FlowRecord, InlineStr};

pub use super::finish::{RecordCtx, RecordEnv, finish};

/// VMware's private enterprise number.
pub const PEN_VMWARE: u32 = 6876;
/// RFC 5103 reverse information elements.
pub const PEN_REVERSE: u32 = 29305;

/// Where a field's value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Skip,
    /// An enterprise element nagare does not know: skipped by its length and counted.
    UnknownEnterprise,
    Bytes,
    Packets,
    BytesTotal,
    PacketsTotal,
    RevBytes,
    RevPackets,
    InitiatorBytes,
    ResponderBytes,
    InitiatorPackets,
    ResponderPackets,
    Protocol,
    Tos,
    TcpFlags,
    SrcPort,
    DstPort,
    SrcAddr,
    DstAddr,
    NextHop,
    InIf,
    OutIf,
    /// ingressPhysicalInterface / egressPhysicalInterface (used when 10/14 are absent).
    PhysInIf,
    PhysOutIf,
    PostDot1qVlan,
    SrcAs,
    DstAs,
    Vlan,
    PostVlan,
    Dot1qVlan,
    Direction,
    BiflowDirection,
    EndReason,
    IcmpTypeCode,
    StartUptime,
    EndUptime,
    StartSec,
    EndSec,
    StartMs,
    EndMs,
    StartNtpUs,
    EndNtpUs,
    StartNtpNs,
    EndNtpNs,
    StartDeltaUs,
    EndDeltaUs,
    SysInitMs,
    SamplingInterval,
    SamplerId,
    SamplingPktInterval,
    SamplingPktSpace,
    L2SegmentId,
    // VMware PEN 6876
    VmTenantProto,
    VmTenantSrc,
    VmTenantDst,
    VmTenantSrcPort,
    VmTenantDstPort,
    VmEgressAttr,
    VmVxlanRole,
    VmIngressAttr,
    VmVirtualObsId,
    VmRuleId,
    VmUuid,
    VmVnicIndex,
    VmSessionFlags,
    VmFlowDirection,
    VmAlgControlFlowId,
    VmAlgType,
    VmAlgFlowType,
    VmLatency,
    VmRetrans,
    VmVifUuid,
    VmVifId,
}

impl Slot {
    /// Slots whose value is an address.
    pub fn is_addr(self) -> bool {
        matches!(
            self,
            Slot::SrcAddr | Slot::DstAddr | Slot::NextHop | Slot::VmTenantSrc | Slot::VmTenantDst
        )
    }
    /// Slots whose value is raw bytes (strings, UUIDs).
    pub fn is_bytes(self) -> bool {
        matches!(
            self,
            Slot::VmVirtualObsId | Slot::VmUuid | Slot::VmVifUuid | Slot::VmVifId
        )
    }
}

/// The slot of element `id` of enterprise `pen` (0 = IANA) in a data record.
/// NetFlow v9 field types share the IANA numbering for everything nagare reads.
pub fn slot_for(pen: u32, id: u16) -> Slot {
    match pen {
        0 => match id {
            1 => Slot::Bytes,
            2 => Slot::Packets,
            4 => Slot::Protocol,
            5 => Slot::Tos,
            6 => Slot::TcpFlags,
            7 => Slot::SrcPort,
            8 | 27 => Slot::SrcAddr,
            10 => Slot::InIf,
            11 => Slot::DstPort,
            12 | 28 => Slot::DstAddr,
            14 => Slot::OutIf,
            15 | 62 => Slot::NextHop,
            16 => Slot::SrcAs,
            17 => Slot::DstAs,
            21 => Slot::EndUptime,
            22 => Slot::StartUptime,
            32 | 139 => Slot::IcmpTypeCode,
            34 | 50 => Slot::SamplingInterval,
            48 | 302 => Slot::SamplerId,
            58 => Slot::Vlan,
            59 => Slot::PostVlan,
            61 => Slot::Direction,
            85 => Slot::BytesTotal,
            86 => Slot::PacketsTotal,
            136 => Slot::EndReason,
            150 => Slot::StartSec,
            151 => Slot::EndSec,
            152 => Slot::StartMs,
            153 => Slot::EndMs,
            154 => Slot::StartNtpUs,
            155 => Slot::EndNtpUs,
            156 => Slot::StartNtpNs,
            157 => Slot::EndNtpNs,
            158 => Slot::StartDeltaUs,
            159 => Slot::EndDeltaUs,
            160 => Slot::SysInitMs,
            231 => Slot::InitiatorBytes,
            232 => Slot::ResponderBytes,
            239 => Slot::BiflowDirection,
            243 => Slot::Dot1qVlan,
            252 => Slot::PhysInIf,
            253 => Slot::PhysOutIf,
            254 => Slot::PostDot1qVlan,
            298 => Slot::InitiatorPackets,
            299 => Slot::ResponderPackets,
            305 => Slot::SamplingPktInterval,
            306 => Slot::SamplingPktSpace,
            351 => Slot::L2SegmentId,
            _ => Slot::Skip,
        },
        PEN_REVERSE => match id {
            1 => Slot::RevBytes,
            2 => Slot::RevPackets,
            85 => Slot::RevBytes,
            86 => Slot::RevPackets,
            _ => Slot::Skip,
        },
        PEN_VMWARE => match id {
            880 => Slot::VmTenantProto,
            881 | 883 => Slot::VmTenantSrc,
            882 | 884 => Slot::VmTenantDst,
            886 => Slot::VmTenantSrcPort,
            887 => Slot::VmTenantDstPort,
            888 => Slot::VmEgressAttr,
            889 => Slot::VmVxlanRole,
            890 => Slot::VmIngressAttr,
            898 => Slot::VmVirtualObsId,
            950 => Slot::VmRuleId,
            951 => Slot::VmUuid,
            952 => Slot::VmVnicIndex,
            953 => Slot::VmSessionFlags,
            954 => Slot::VmFlowDirection,
            955 => Slot::VmAlgControlFlowId,
            956 => Slot::VmAlgType,
            957 => Slot::VmAlgFlowType,
            958 => Slot::VmLatency,
            959 => Slot::VmRetrans,
            960 => Slot::VmVifUuid,
            961 => Slot::VmVifId,
            _ => Slot::UnknownEnterprise,
        },
        _ => Slot::UnknownEnterprise,
    }
}

/// A field value as handed to [`apply`].
#[derive(Debug, Clone, Copy)]
pub enum Val<'a> {
    U(u64),
    A(IpAddr),
    B(&'a [u8]),
}

impl Val<'_> {
    #[inline]
    pub fn as_u64(&self) -> u64 {
        match *self {
            Val::U(v) => v,
            Val::A(IpAddr::V4(a)) => u64::from(u32::from(a)),
            Val::A(IpAddr::V6(_)) => 0,
            Val::B(b) => be_uint(b),
        }
    }
    #[inline]
    pub fn as_addr(&self) -> Option<IpAddr> {
        match *self {
            Val::A(a) => Some(a),
            Val::B(b) => bytes_to_addr(b),
            Val::U(_) => None,
        }
    }
}

/// Big-endian unsigned integer of up to 8 bytes; longer values keep their low 8 bytes.
#[inline]
pub fn be_uint(b: &[u8]) -> u64 {
    let b = if b.len() > 8 { &b[b.len() - 8..] } else { b };
    let mut v = 0u64;
    for &x in b {
        v = (v << 8) | u64::from(x);
    }
    v
}

#[inline]
pub fn bytes_to_addr(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

/// Per-record values that only make sense once the whole record is read
/// (timestamps, sampling, alternative counters). Presence is a bit mask so that a
/// fresh scratch is cheap to make for every record.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scratch {
    pub(crate) present: u32,
    pub(crate) bytes: u64,
    pub(crate) packets: u64,
    pub(crate) bytes_total: u64,
    pub(crate) packets_total: u64,
    pub(crate) init_bytes: u64,
    pub(crate) resp_bytes: u64,
    pub(crate) init_packets: u64,
    pub(crate) resp_packets: u64,
    pub(crate) rev_bytes: u64,
    pub(crate) rev_packets: u64,
    pub(crate) start_ms: i64,
    pub(crate) end_ms: i64,
    pub(crate) sys_init_ms: i64,
    pub(crate) start_uptime: u32,
    pub(crate) end_uptime: u32,
    pub(crate) start_delta_us: u32,
    pub(crate) end_delta_us: u32,
    pub(crate) sampling_interval: u32,
    pub(crate) sampler_id: u32,
    pub(crate) pkt_interval: u32,
    pub(crate) pkt_space: u32,
    pub(crate) phys_in_if: u32,
    pub(crate) phys_out_if: u32,
    pub(crate) icmp_type_code: u16,
    pub(crate) dot1q_vlan: u16,
    pub(crate) post_dot1q_vlan: u16,
}

macro_rules! scratch_fields {
    ($($name:ident: $t:ty = $bit:expr),* $(,)?) => {
        impl Scratch {
            $(
                #[inline(always)]
                pub fn $name(&self) -> Option<$t> {
                    (self.present & (1 << $bit) != 0).then_some(self.$name)
                }
            )*
        }
        /// Setters by field name (`set!(s, bytes, 5)`).
        macro_rules! set {
            $(($s:expr, $name, $v:expr) => {{ $s.$name = $v; $s.present |= 1 << $bit; }};)*
        }
    };
}

scratch_fields! {
    bytes: u64 = 0,
    packets: u64 = 1,
    bytes_total: u64 = 2,
    packets_total: u64 = 3,
    init_bytes: u64 = 4,
    resp_bytes: u64 = 5,
    init_packets: u64 = 6,
    resp_packets: u64 = 7,
    rev_bytes: u64 = 8,
    rev_packets: u64 = 9,
    start_ms: i64 = 10,
    end_ms: i64 = 11,
    sys_init_ms: i64 = 12,
    start_uptime: u32 = 13,
    end_uptime: u32 = 14,
    start_delta_us: u32 = 15,
    end_delta_us: u32 = 16,
    sampling_interval: u32 = 17,
    sampler_id: u32 = 18,
    pkt_interval: u32 = 19,
    pkt_space: u32 = 20,
    phys_in_if: u32 = 21,
    phys_out_if: u32 = 22,
    icmp_type_code: u16 = 23,
    dot1q_vlan: u16 = 24,
    post_dot1q_vlan: u16 = 25,
}

pub(crate) use set;

/// The latest time an exporter may give, in Unix milliseconds (9999-12-31T23:59:59.999Z);
/// the earliest is its negation. A time beyond it is out of range: the record is
/// dropped and counted (`value_out_of_range`), and times within it leave room for every
/// sum and difference the rest of the pipeline takes.
pub const MAX_UNIX_MS: i64 = 253_402_300_799_999;

/// Bit of [`Scratch::present`] set when a field value did not fit where it goes.
const OUT_OF_RANGE: u32 = 1 << 31;

impl Scratch {
    /// Marks the record as carrying a value that does not fit (dropped by [`finish`]).
    #[inline(always)]
    pub fn out_of_range(&mut self) {
        self.present |= OUT_OF_RANGE;
    }
    /// Whether a field value did not fit.
    #[inline(always)]
    pub fn is_out_of_range(&self) -> bool {
        self.present & OUT_OF_RANGE != 0
    }
    /// The number in `v`; bytes with more than 64 significant bits mark the record out
    /// of range (never truncated to their low 8 bytes).
    #[inline(always)]
    fn num(&mut self, v: Val<'_>) -> u64 {
        if let Val::B(b) = v
            && b.len() > 8
            && b[..b.len() - 8].iter().any(|&x| x != 0)
        {
            self.out_of_range();
            return 0;
        }
        v.as_u64()
    }
    /// `v` narrowed to `T`; a value that does not fit marks the record out of range.
    #[inline(always)]
    fn fit<T: TryFrom<u64> + Default>(&mut self, v: Val<'_>) -> T {
        let v = self.num(v);
        match T::try_from(v) {
            Ok(x) => x,
            Err(_) => {
                self.out_of_range();
                T::default()
            }
        }
    }
    /// A time in Unix milliseconds from `v` units of `unit_ms` milliseconds (1 for
    /// milliseconds, 1000 for seconds); beyond [`MAX_UNIX_MS`] marks the record.
    #[inline(always)]
    pub fn time_ms(&mut self, v: Val<'_>, unit_ms: i64) -> i64 {
        let v = self.num(v);
        match i64::try_from(v).ok().and_then(|x| x.checked_mul(unit_ms)) {
            Some(ms) if ms <= MAX_UNIX_MS => ms,
            _ => {
                self.out_of_range();
                0
            }
        }
    }
}

/// NTP timestamp (RFC 5905, 1900 epoch) to Unix milliseconds. Every 64-bit value fits:
/// the seconds are at most 2^32 and the fraction is below one second.
fn ntp_to_unix_ms(v: u64) -> i64 {
    let secs = (v >> 32) as i64 - 2_208_988_800;
    let frac = (v & 0xffff_ffff) as i64;
    secs * 1000 + ((frac * 1000) >> 32)
}

/// Puts one field value where it belongs. Never panics, whatever the value.
#[inline(always)]
pub fn apply(rec: &mut FlowRecord, s: &mut Scratch, slot: Slot, v: Val<'_>) {
    match slot {
        Slot::Skip | Slot::UnknownEnterprise => {}
        Slot::Bytes => set!(s, bytes, s.num(v)),
        Slot::Packets => set!(s, packets, s.num(v)),
        Slot::BytesTotal => set!(s, bytes_total, s.num(v)),
        Slot::PacketsTotal => set!(s, packets_total, s.num(v)),
        Slot::RevBytes => set!(s, rev_bytes, s.num(v)),
        Slot::RevPackets => set!(s, rev_packets, s.num(v)),
        Slot::InitiatorBytes => set!(s, init_bytes, s.num(v)),
        Slot::ResponderBytes => set!(s, resp_bytes, s.num(v)),
        Slot::InitiatorPackets => set!(s, init_packets, s.num(v)),
        Slot::ResponderPackets => set!(s, resp_packets, s.num(v)),
        Slot::Protocol => rec.protocol = s.fit::<u8>(v),
        Slot::Tos => rec.tos = s.fit::<u8>(v),
        Slot::TcpFlags => rec.tcp_flags = s.fit::<u16>(v),
        Slot::SrcPort => rec.src_port = s.fit::<u16>(v),
        Slot::DstPort => rec.dst_port = s.fit::<u16>(v),
        // Templates may carry both IPv4 and IPv6 address fields, the unused family
        // zero: an unspecified address never replaces a real one.
        Slot::SrcAddr => {
            if let Some(a) = v.as_addr()
                && (!a.is_unspecified() || rec.src.is_unspecified())
            {
                rec.src = a;
            }
        }
        Slot::DstAddr => {
            if let Some(a) = v.as_addr()
                && (!a.is_unspecified() || rec.dst.is_unspecified())
            {
                rec.dst = a;
            }
        }
        Slot::NextHop => rec.next_hop = v.as_addr(),
        Slot::InIf => rec.in_if = s.fit::<u32>(v),
        Slot::OutIf => rec.out_if = s.fit::<u32>(v),
        Slot::PhysInIf => set!(s, phys_in_if, s.fit::<u32>(v)),
        Slot::PhysOutIf => set!(s, phys_out_if, s.fit::<u32>(v)),
        Slot::PostDot1qVlan => set!(s, post_dot1q_vlan, (s.num(v) & 0xfff) as u16),
        Slot::SrcAs => rec.src_as = s.fit::<u32>(v),
        Slot::DstAs => rec.dst_as = s.fit::<u32>(v),
        Slot::Vlan => rec.vlan = (s.num(v) & 0xfff) as u16,
        Slot::PostVlan => rec.post_vlan = (s.num(v) & 0xfff) as u16,
        Slot::Dot1qVlan => set!(s, dot1q_vlan, (s.num(v) & 0xfff) as u16),
        Slot::Direction => rec.direction = s.fit::<u8>(v),
        Slot::BiflowDirection => rec.biflow_direction = s.fit::<u8>(v),
        Slot::EndReason => rec.flow_end_reason = s.fit::<u8>(v),
        Slot::IcmpTypeCode => set!(s, icmp_type_code, s.fit::<u16>(v)),
        Slot::StartUptime => set!(s, start_uptime, s.fit::<u32>(v)),
        Slot::EndUptime => set!(s, end_uptime, s.fit::<u32>(v)),
        Slot::StartSec => {
            let t = s.time_ms(v, 1000);
            set!(s, start_ms, t)
        }
        Slot::EndSec => {
            let t = s.time_ms(v, 1000);
            set!(s, end_ms, t)
        }
        Slot::StartMs => {
            let t = s.time_ms(v, 1);
            set!(s, start_ms, t)
        }
        Slot::EndMs => {
            let t = s.time_ms(v, 1);
            set!(s, end_ms, t)
        }
        Slot::StartNtpUs | Slot::StartNtpNs => set!(s, start_ms, ntp_to_unix_ms(s.num(v))),
        Slot::EndNtpUs | Slot::EndNtpNs => set!(s, end_ms, ntp_to_unix_ms(s.num(v))),
        Slot::StartDeltaUs => set!(s, start_delta_us, s.fit::<u32>(v)),
        Slot::EndDeltaUs => set!(s, end_delta_us, s.fit::<u32>(v)),
        Slot::SysInitMs => {
            let t = s.time_ms(v, 1);
            set!(s, sys_init_ms, t)
        }
        Slot::SamplingInterval => set!(s, sampling_interval, s.fit::<u32>(v)),
        Slot::SamplerId => set!(s, sampler_id, s.fit::<u32>(v)),
        Slot::SamplingPktInterval => set!(s, pkt_interval, s.fit::<u32>(v)),
        Slot::SamplingPktSpace => set!(s, pkt_space, s.fit::<u32>(v)),
        Slot::L2SegmentId => rec.layer2_segment_id = s.num(v),
        _ => apply_vmware(rec, s, slot, v),
    }
}

#[cold]
fn apply_vmware(rec: &mut FlowRecord, s: &mut Scratch, slot: Slot, v: Val<'_>) {
    let vm = &mut rec.vmware;
    vm.present = true;
    match slot {
        Slot::VmTenantProto => vm.tenant_protocol = s.fit::<u8>(v),
        Slot::VmTenantSrc => vm.tenant_src = v.as_addr().filter(|a| !a.is_unspecified()),
        Slot::VmTenantDst => vm.tenant_dst = v.as_addr().filter(|a| !a.is_unspecified()),
        Slot::VmTenantSrcPort => vm.tenant_src_port = s.fit::<u16>(v),
        Slot::VmTenantDstPort => vm.tenant_dst_port = s.fit::<u16>(v),
        Slot::VmEgressAttr => vm.egress_attr = s.fit::<u16>(v),
        Slot::VmVxlanRole => vm.vxlan_export_role = s.fit::<u8>(v),
        Slot::VmIngressAttr => vm.ingress_attr = s.fit::<u16>(v),
        Slot::VmVirtualObsId => {
            if let Val::B(b) = v {
                vm.virtual_obs_id = InlineStr::from_bytes(b);
            }
        }
        Slot::VmRuleId => vm.rule_id = s.fit::<u32>(v),
        Slot::VmUuid => {
            if let Val::B(b) = v {
                copy16(&mut vm.vm_uuid, b);
            }
        }
        Slot::VmVnicIndex => vm.vnic_index = s.fit::<u32>(v),
        Slot::VmSessionFlags => vm.session_flags = s.fit::<u8>(v),
        Slot::VmFlowDirection => vm.flow_direction = s.fit::<u8>(v),
        Slot::VmAlgControlFlowId => vm.alg_control_flow_id = s.num(v),
        Slot::VmAlgType => vm.alg_type = s.fit::<u8>(v),
        Slot::VmAlgFlowType => vm.alg_flow_type = s.fit::<u8>(v),
        Slot::VmLatency => vm.average_latency_us = s.fit::<u32>(v),
        Slot::VmRetrans => vm.retransmissions = s.fit::<u32>(v),
        Slot::VmVifUuid => {
            if let Val::B(b) = v {
                copy16(&mut vm.vif_uuid, b);
            }
        }
        Slot::VmVifId => {
            if let Val::B(b) = v {
                vm.vif_id = InlineStr::from_bytes(b);
            }
        }
        _ => {}
    }
}

fn copy16(dst: &mut [u8; 16], b: &[u8]) {
    let n = b.len().min(16);
    dst[..n].copy_from_slice(&b[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ExporterId;

    fn rec() -> FlowRecord {
        FlowRecord::empty(ExporterId::new("192.0.2.1".parse().unwrap(), 0), 10)
    }

    #[test]
    fn ntp_conversion() {
        // 2016-12-22T12:17:37Z = 1482409057 unix; NTP = +2208988800
        let ntp = ((1_482_409_057u64 + 2_208_988_800) << 32) | (1u64 << 31);
        assert_eq!(ntp_to_unix_ms(ntp), 1_482_409_057_500);
    }

    #[test]
    fn vmware_slots() {
        assert_eq!(slot_for(PEN_VMWARE, 881), Slot::VmTenantSrc);
        assert_eq!(slot_for(PEN_VMWARE, 999), Slot::UnknownEnterprise);
        assert_eq!(slot_for(9, 1), Slot::UnknownEnterprise);
        let mut r = rec();
        let mut s = Scratch::default();
        apply(&mut r, &mut s, Slot::VmTenantSrc, Val::B(&[10, 0, 0, 1]));
        apply(&mut r, &mut s, Slot::VmVirtualObsId, Val::B(b"vmnic0"));
        assert_eq!(r.vmware.tenant_src, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(r.vmware.virtual_obs_id.as_str(), "vmnic0");
        assert!(r.vmware.present);
    }
}
