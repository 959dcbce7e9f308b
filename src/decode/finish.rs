//! A record's last step: once every field is applied, times are made absolute,
//! counters picked and scaled by the sampling rate, and a record carrying a value that
//! does not fit is refused.

use super::fields::Scratch;
use crate::model::FlowRecord;

/// What a record needs from its message header and exporter to be finished.
#[derive(Debug, Clone, Copy)]
pub struct RecordCtx {
    /// Export time of the message, Unix milliseconds.
    pub export_ms: i64,
    /// sysUpTime at export (v5/v9 headers), milliseconds.
    pub sys_uptime_ms: Option<u32>,
    /// Exporter's system init time learned from options data (IPFIX), Unix ms.
    pub sys_init_ms: Option<i64>,
    /// Sampling rate to use when the record names none (exporter default / v5 header).
    pub default_sampling: u32,
}

/// Everything a data set's records share: the exporter and version (each record
/// starts as [`FlowRecord::empty`] of them), the header context and the exporter's
/// sampler table.
pub struct RecordEnv<'a> {
    pub exporter: crate::model::ExporterId,
    pub version: u8,
    pub ctx: &'a RecordCtx,
    pub sampler_rate: &'a dyn Fn(u32) -> Option<u32>,
    /// Records dropped because a value did not fit (see [`finish`]), added up by the
    /// paths that decode with this environment.
    pub out_of_range: std::cell::Cell<usize>,
}

impl RecordEnv<'_> {
    /// Counts one record dropped for a value that did not fit.
    #[inline]
    pub fn reject(&self) {
        self.out_of_range.set(self.out_of_range.get() + 1);
    }
}

/// Signed difference `a - b` of two 32-bit uptime counters that may have wrapped.
#[inline]
fn uptime_diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}

/// Resolves timestamps, counters and sampling once all fields of a record are applied.
/// `sampler_rate` maps a sampler id to its announced rate. Returns false when the
/// record carries a value that does not fit (a time beyond [`MAX_UNIX_MS`](super::fields::MAX_UNIX_MS), a number
/// wider than its field, counters that overflow 64 bits once scaled by the sampling
/// rate): the caller drops it and counts it as `value_out_of_range`.
#[inline(always)]
#[must_use]
pub fn finish(
    rec: &mut FlowRecord,
    s: &Scratch,
    ctx: &RecordCtx,
    sampler_rate: impl Fn(u32) -> Option<u32>,
) -> bool {
    if s.is_out_of_range() {
        return false;
    }
    // Counters: delta counts first, then totals, then the initiator/responder pair.
    let mut bytes = s
        .bytes()
        .or(s.bytes_total())
        .or(s.init_bytes())
        .unwrap_or(0);
    let mut packets = s
        .packets()
        .or(s.packets_total())
        .or(s.init_packets())
        .unwrap_or(0);
    let mut rbytes = s.rev_bytes().or(s.resp_bytes()).unwrap_or(0);
    let mut rpackets = s.rev_packets().or(s.resp_packets()).unwrap_or(0);

    // Times.
    let sys_init = s.sys_init_ms().or(ctx.sys_init_ms);
    let to_abs = |up: u32| -> i64 {
        match (ctx.sys_uptime_ms, sys_init) {
            (Some(now_up), _) => ctx.export_ms - uptime_diff(now_up, up),
            (None, Some(init)) => init + i64::from(up),
            (None, None) => ctx.export_ms,
        }
    };
    let mut start = s.start_ms();
    let mut end = s.end_ms();
    if end.is_none() {
        end = s.end_uptime().map(to_abs);
    }
    if start.is_none() {
        start = s.start_uptime().map(to_abs);
    }
    if start.is_none() {
        start = s
            .start_delta_us()
            .map(|d| ctx.export_ms - i64::from(d) / 1000);
    }
    if end.is_none() {
        end = s
            .end_delta_us()
            .map(|d| ctx.export_ms - i64::from(d) / 1000);
    }
    // IPFIX sysUpTime without an init time: keep the duration, anchor the end at export.
    if ctx.sys_uptime_ms.is_none()
        && sys_init.is_none()
        && s.start_uptime().is_some()
        && s.end_uptime().is_some()
        && s.start_ms().is_none()
        && s.end_ms().is_none()
    {
        let (a, b) = (s.start_uptime().unwrap_or(0), s.end_uptime().unwrap_or(0));
        end = Some(ctx.export_ms);
        start = Some(ctx.export_ms - uptime_diff(b, a).max(0));
    }
    let end_ms = end.or(start).unwrap_or(ctx.export_ms);
    let start_ms = start.unwrap_or(end_ms);
    rec.start_ms = start_ms.min(end_ms);
    rec.end_ms = end_ms.max(start_ms);

    // VLAN: dot1qVlanId when vlanId is absent.
    if rec.vlan == 0
        && let Some(v) = s.dot1q_vlan()
    {
        rec.vlan = v;
    }
    if rec.post_vlan == 0
        && let Some(v) = s.post_dot1q_vlan()
    {
        rec.post_vlan = v;
    }
    // Physical interfaces when the logical ones are absent.
    if rec.in_if == 0
        && let Some(i) = s.phys_in_if()
    {
        rec.in_if = i;
    }
    if rec.out_if == 0
        && let Some(i) = s.phys_out_if()
    {
        rec.out_if = i;
    }
    // ICMP type/code travel in the destination port, as in NetFlow v5.
    if (rec.protocol == 1 || rec.protocol == 58)
        && rec.dst_port == 0
        && let Some(tc) = s.icmp_type_code()
    {
        rec.dst_port = tc;
    }

    // Sampling: the record's own interval, then its sampler, then the exporter default.
    let rate = if let Some(i) = s.sampling_interval().filter(|&i| i > 0) {
        i
    } else if let (Some(iv), Some(sp)) = (s.pkt_interval(), s.pkt_space()) {
        if iv > 0 {
            ((u64::from(iv) + u64::from(sp)) / u64::from(iv)).min(u64::from(u32::MAX)) as u32
        } else {
            1
        }
    } else if let Some(r) = s.sampler_id().and_then(&sampler_rate) {
        r
    } else {
        ctx.default_sampling
    }
    .max(1);
    if rate > 1 {
        let r = u64::from(rate);
        match (
            bytes.checked_mul(r),
            packets.checked_mul(r),
            rbytes.checked_mul(r),
            rpackets.checked_mul(r),
        ) {
            (Some(b), Some(p), Some(rb), Some(rp)) => {
                (bytes, packets, rbytes, rpackets) = (b, p, rb, rp);
            }
            _ => return false,
        }
    }
    rec.sampling_rate = rate;
    rec.bytes = bytes;
    rec.packets = packets;
    rec.reverse_bytes = rbytes;
    rec.reverse_packets = rpackets;
    true
}

#[cfg(test)]
mod tests {
    use super::super::fields::set;
    use super::*;
    use crate::model::ExporterId;

    fn rec() -> FlowRecord {
        FlowRecord::empty(ExporterId::new("192.0.2.1".parse().unwrap(), 0), 10)
    }

    #[test]
    fn uptime_relative_times_with_wrap() {
        let mut r = rec();
        let mut s = Scratch::default();
        set!(s, start_uptime, u32::MAX - 999);
        set!(
            s, // 1000 ms before the counter wrapped
            end_uptime, 500
        );
        let ctx = RecordCtx {
            export_ms: 1_000_000,
            sys_uptime_ms: Some(1500),
            sys_init_ms: None,
            default_sampling: 1,
        };
        assert!(finish(&mut r, &s, &ctx, |_| None));
        assert_eq!(r.end_ms, 1_000_000 - 1000);
        assert_eq!(r.start_ms, 1_000_000 - 2500);
    }

    #[test]
    fn sampling_priority_and_scaling() {
        let ctx = RecordCtx {
            export_ms: 0,
            sys_uptime_ms: None,
            sys_init_ms: None,
            default_sampling: 100,
        };
        // record interval wins
        let mut r = rec();
        let mut s = Scratch::default();
        set!(s, bytes, 10);
        set!(s, packets, 2);
        set!(s, sampling_interval, 5);
        set!(s, sampler_id, 1);
        assert!(finish(&mut r, &s, &ctx, |_| Some(7)));
        assert_eq!((r.bytes, r.packets, r.sampling_rate), (50, 10, 5));
        // sampler map next
        let mut r = rec();
        let mut s = Scratch::default();
        set!(s, bytes, 10);
        set!(s, sampler_id, 1);
        assert!(finish(&mut r, &s, &ctx, |id| (id == 1).then_some(7)));
        assert_eq!((r.bytes, r.sampling_rate), (70, 7));
        // exporter default last
        let mut r = rec();
        let mut s = Scratch::default();
        set!(s, bytes, 10);
        assert!(finish(&mut r, &s, &ctx, |_| None));
        assert_eq!((r.bytes, r.sampling_rate), (1000, 100));
        // packet interval/space: 1 in (1+9)
        let mut r = rec();
        let mut s = Scratch::default();
        set!(s, bytes, 3);
        set!(s, pkt_interval, 1);
        set!(s, pkt_space, 9);
        assert!(finish(&mut r, &s, &ctx, |_| None));
        assert_eq!((r.bytes, r.sampling_rate), (30, 10));
    }

    #[test]
    fn counters_fall_back_in_order() {
        let ctx = RecordCtx {
            export_ms: 5000,
            sys_uptime_ms: None,
            sys_init_ms: None,
            default_sampling: 1,
        };
        let mut r = rec();
        let mut s = Scratch::default();
        set!(s, bytes_total, 9);
        set!(s, init_bytes, 7);
        set!(s, resp_bytes, 3);
        assert!(finish(&mut r, &s, &ctx, |_| None));
        assert_eq!((r.bytes, r.reverse_bytes), (9, 3));
        assert_eq!((r.start_ms, r.end_ms), (5000, 5000));
    }
}
