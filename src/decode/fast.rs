//! The zero-copy fast path for fixed-length data records, and the record walker used
//! for options data and as a fallback for variable-length records.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::DecodeError;
use super::fields::{RecordEnv, Scratch, Slot, Val, apply, finish, set};
use super::template::{CompiledField, FieldSpec, Layout, Op, VARLEN};
use crate::model::FlowRecord;

#[inline(always)]
fn read_uint(b: &[u8]) -> u64 {
    match b.len() {
        1 => u64::from(b[0]),
        2 => u64::from(u16::from_be_bytes([b[0], b[1]])),
        4 => u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        8 => u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        _ => super::fields::be_uint(b),
    }
}

/// Value of one field for `slot`, as the fast path extracts it from raw bytes.
#[inline(always)]
pub(crate) fn raw_val(slot: Slot, b: &[u8]) -> Val<'_> {
    // wider than 8 bytes: handed over as bytes, so that [`apply`] can tell a value that
    // does not fit 64 bits from one with leading zeros
    if slot.is_addr() || slot.is_bytes() || b.len() > 8 {
        Val::B(b)
    } else {
        Val::U(read_uint(b))
    }
}

#[inline(always)]
fn a2(b: &[u8], o: usize) -> [u8; 2] {
    let mut x = [0u8; 2];
    if let Some(s) = b.get(o..o + 2) {
        x.copy_from_slice(s);
    }
    x
}
#[inline(always)]
fn a4(b: &[u8], o: usize) -> [u8; 4] {
    let mut x = [0u8; 4];
    if let Some(s) = b.get(o..o + 4) {
        x.copy_from_slice(s);
    }
    x
}
#[inline(always)]
fn a8(b: &[u8], o: usize) -> [u8; 8] {
    let mut x = [0u8; 8];
    if let Some(s) = b.get(o..o + 8) {
        x.copy_from_slice(s);
    }
    x
}
#[inline(always)]
fn a16(b: &[u8], o: usize) -> [u8; 16] {
    let mut x = [0u8; 16];
    if let Some(s) = b.get(o..o + 16) {
        x.copy_from_slice(s);
    }
    x
}

/// Decodes every fixed-length record of a data set body with a compiled layout.
/// Appends to `out`; returns the number of records. A trailing remainder shorter than a
/// record is padding.
#[inline]
pub fn decode_fixed(
    layout: &Layout,
    body: &[u8],
    env: &RecordEnv<'_>,
    out: &mut Vec<FlowRecord>,
) -> usize {
    let (ctx, sampler_rate) = (env.ctx, env.sampler_rate);
    let rl = layout.record_len;
    if rl == 0 {
        return 0;
    }
    let n = body.len() / rl;
    out.reserve(n);
    let mut dropped = 0;
    for rec_bytes in body.chunks_exact(rl) {
        // Built in place from constants (an inlined `empty`): cheaper than copying a
        // prepared record, which takes a call to memcpy.
        out.push(FlowRecord::empty(env.exporter, env.version));
        let Some(r) = out.last_mut() else { break };
        let mut s = Scratch::default();
        for f in layout.fields.iter() {
            apply_op(r, &mut s, f, rec_bytes, usize::from(f.off));
        }
        if !finish(r, &s, ctx, sampler_rate) {
            out.pop();
            env.reject();
            dropped += 1;
        }
    }
    n - dropped
}

/// Applies one compiled field whose value starts at `rb[o..]` (fixed length).
#[inline(always)]
fn apply_op(r: &mut FlowRecord, s: &mut Scratch, f: &CompiledField, rb: &[u8], o: usize) {
    match f.op {
        Op::SrcV4 => {
            let a = Ipv4Addr::from(a4(rb, o));
            if !a.is_unspecified() || r.src.is_unspecified() {
                r.src = IpAddr::V4(a);
            }
        }
        Op::DstV4 => {
            let a = Ipv4Addr::from(a4(rb, o));
            if !a.is_unspecified() || r.dst.is_unspecified() {
                r.dst = IpAddr::V4(a);
            }
        }
        Op::SrcV6 => {
            let a = Ipv6Addr::from(a16(rb, o));
            if !a.is_unspecified() || r.src.is_unspecified() {
                r.src = IpAddr::V6(a);
            }
        }
        Op::DstV6 => {
            let a = Ipv6Addr::from(a16(rb, o));
            if !a.is_unspecified() || r.dst.is_unspecified() {
                r.dst = IpAddr::V6(a);
            }
        }
        Op::SrcPort => r.src_port = u16::from_be_bytes(a2(rb, o)),
        Op::DstPort => r.dst_port = u16::from_be_bytes(a2(rb, o)),
        Op::Proto => r.protocol = rb.get(o).copied().unwrap_or(0),
        Op::Flags8 => r.tcp_flags = u16::from(rb.get(o).copied().unwrap_or(0)),
        Op::Flags16 => r.tcp_flags = u16::from_be_bytes(a2(rb, o)),
        Op::Tos => r.tos = rb.get(o).copied().unwrap_or(0),
        Op::Bytes32 => set!(s, bytes, u64::from(u32::from_be_bytes(a4(rb, o)))),
        Op::Bytes64 => set!(s, bytes, u64::from_be_bytes(a8(rb, o))),
        Op::Packets32 => set!(s, packets, u64::from(u32::from_be_bytes(a4(rb, o)))),
        Op::Packets64 => set!(s, packets, u64::from_be_bytes(a8(rb, o))),
        Op::StartMs64 => {
            let t = s.time_ms(Val::U(u64::from_be_bytes(a8(rb, o))), 1);
            set!(s, start_ms, t)
        }
        Op::EndMs64 => {
            let t = s.time_ms(Val::U(u64::from_be_bytes(a8(rb, o))), 1);
            set!(s, end_ms, t)
        }
        Op::StartUp32 => set!(s, start_uptime, u32::from_be_bytes(a4(rb, o))),
        Op::EndUp32 => set!(s, end_uptime, u32::from_be_bytes(a4(rb, o))),
        Op::InIf16 => r.in_if = u32::from(u16::from_be_bytes(a2(rb, o))),
        Op::InIf32 => r.in_if = u32::from_be_bytes(a4(rb, o)),
        Op::OutIf16 => r.out_if = u32::from(u16::from_be_bytes(a2(rb, o))),
        Op::OutIf32 => r.out_if = u32::from_be_bytes(a4(rb, o)),
        Op::Vlan16 => r.vlan = u16::from_be_bytes(a2(rb, o)) & 0xfff,
        Op::Direction8 => r.direction = rb.get(o).copied().unwrap_or(0),
        Op::Generic => {
            let Some(b) = rb.get(o..o + usize::from(f.len)) else {
                return;
            };
            let v = if f.raw || b.len() > 8 {
                Val::B(b)
            } else {
                Val::U(read_uint(b))
            };
            apply(r, s, f.slot, v);
        }
        // segment boundaries: [`decode_varlen`] handles them
        Op::Varlen | Op::Tail => {}
    }
}

/// Decodes the records of a data template by walking each record field by field with
/// the operations compiled from the template (`walk`, see
/// [`super::template::Template::walk`]): records with variable-length fields (ESXi's
/// IPFIX, with VMware's names), and the rest of a set the reference decoder could not
/// finish. No per-record allocation, no copy. Appends to `out`; a record cut short by the end of
/// the set is an error unless what remains is zero padding. On error, also says how
/// many records it appended.
pub fn decode_varlen(
    walk: &[CompiledField],
    min_record_len: usize,
    body: &[u8],
    env: &RecordEnv<'_>,
    out: &mut Vec<FlowRecord>,
) -> Result<usize, (usize, DecodeError)> {
    let (ctx, sampler_rate) = (env.ctx, env.sampler_rate);
    let min = min_record_len.max(1);
    let (mut pos, mut n) = (0usize, 0usize);
    while body.len() - pos >= min {
        let start = pos;
        out.push(FlowRecord::empty(env.exporter, env.version));
        let Some(r) = out.last_mut() else { break };
        let mut s = Scratch::default();
        let mut complete = false;
        // start of the current fixed-length segment
        let mut base = pos;
        for f in walk {
            match f.op {
                Op::Varlen => {
                    let mut at = base + usize::from(f.off);
                    let Some(len) = field_len(f.len, body, &mut at) else {
                        break;
                    };
                    let Some(b) = body.get(at..at + len) else {
                        break;
                    };
                    if len > 0 && !matches!(f.slot, Slot::Skip | Slot::UnknownEnterprise) {
                        apply(r, &mut s, f.slot, raw_val(f.slot, b));
                    }
                    base = at + len;
                }
                Op::Tail => {
                    let end = base + usize::from(f.off);
                    if end <= body.len() {
                        pos = end;
                        complete = true;
                    }
                    break;
                }
                // a field of a segment cut short reads zeros; the record is dropped
                _ => apply_op(r, &mut s, f, body, base + usize::from(f.off)),
            }
        }
        if !complete || pos == start {
            out.pop();
            if !complete && !body[start..].iter().all(|&b| b == 0) {
                return Err((n, DecodeError::RecordTruncated));
            }
            // zero padding, or a template of zero-length fields only
            break;
        }
        if finish(r, &s, ctx, sampler_rate) {
            n += 1;
        } else {
            out.pop();
            env.reject();
        }
    }
    Ok(n)
}

/// Reads the length of the next field value: fixed, or RFC 7011 variable-length encoding.
#[inline]
fn field_len(spec_len: u16, body: &[u8], pos: &mut usize) -> Option<usize> {
    if spec_len != VARLEN {
        return Some(usize::from(spec_len));
    }
    let first = *body.get(*pos)?;
    *pos += 1;
    if first < 255 {
        Some(usize::from(first))
    } else {
        let b = body.get(*pos..*pos + 2)?;
        *pos += 2;
        Some(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
}

/// Splits a data set body into records and fields for any template (fixed or variable
/// length) and calls `f` with the field values of each record, in template order.
/// Returns the number of records; a record cut short by the end of the set is an error
/// unless what remains is zero padding.
pub fn walk_records<'a>(
    fields: &[FieldSpec],
    body: &'a [u8],
    min_record_len: usize,
    slices: &mut Vec<&'a [u8]>,
    mut f: impl FnMut(&[&'a [u8]]),
) -> Result<usize, DecodeError> {
    let mut pos = 0usize;
    let mut count = 0usize;
    let min = min_record_len.max(1);
    while body.len() - pos >= min {
        let start = pos;
        slices.clear();
        let mut ok = true;
        for spec in fields {
            let Some(len) = field_len(spec.len, body, &mut pos) else {
                ok = false;
                break;
            };
            match body.get(pos..pos + len) {
                Some(v) => {
                    slices.push(v);
                    pos += len;
                }
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            if body[start..].iter().all(|&b| b == 0) {
                return Ok(count);
            }
            return Err(DecodeError::RecordTruncated);
        }
        if pos == start {
            break; // a template of zero-length fields only: nothing to read
        }
        f(slices);
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: u16, len: u16) -> FieldSpec {
        FieldSpec {
            id,
            pen: 0,
            len,
            scope: false,
        }
    }

    #[test]
    fn walker_handles_short_and_long_varlen_and_zero_length() {
        let fields = [spec(82, VARLEN), spec(10, 2), spec(83, VARLEN)];
        let mut body = vec![3, b'a', b'b', b'c', 0, 7, 0]; // "abc", 7, ""
        body.extend_from_slice(&[255, 1, 44, b'q']); // 255-escaped length 300, then only 1 byte
        let mut slices = vec![];
        let mut seen = vec![];
        let r = walk_records(&fields, &body, 4, &mut slices, |v| {
            seen.push((v[0].to_vec(), v[1].to_vec(), v[2].len()))
        });
        assert_eq!(r, Err(DecodeError::RecordTruncated));
        assert_eq!(seen, vec![(b"abc".to_vec(), vec![0, 7], 0)]);

        let mut body = vec![255, 0, 4, b'w', b'x', b'y', b'z', 0, 1, 0];
        body.extend_from_slice(&[0, 0, 0]); // zero padding
        let mut seen = vec![];
        let r = walk_records(&fields, &body, 4, &mut slices, |v| seen.push(v[0].to_vec()));
        assert_eq!(r, Ok(1));
        assert_eq!(seen, vec![b"wxyz".to_vec()]);
    }

    /// A template as segments: unused fixed fields cost nothing, each variable-length
    /// field ends a segment, the tail ends the record; a record cut short anywhere is
    /// an error after the complete ones, and trailing zeros are padding.
    #[test]
    fn varlen_walk_reads_segments_at_their_offsets() {
        use super::super::fields::{PEN_VMWARE, RecordCtx};
        use super::super::template::compile_walk;
        let vm = |id, len| FieldSpec {
            id,
            pen: PEN_VMWARE,
            len,
            scope: false,
        };
        // srcIPv4 | unused (id 3, 4 bytes) | virtualObsID | unused varlen (id 82) |
        // unused (2) | dstPort
        let fields = [
            spec(8, 4),
            spec(3, 4),
            vm(898, VARLEN),
            spec(82, VARLEN),
            spec(33, 2),
            spec(11, 2),
        ];
        let walk = compile_walk(&fields);
        let shape: Vec<(Op, u16)> = walk.iter().map(|f| (f.op, f.off)).collect();
        assert_eq!(
            shape,
            vec![
                (Op::SrcV4, 0),
                (Op::Varlen, 8),
                (Op::Varlen, 0),
                (Op::DstPort, 2),
                (Op::Tail, 4)
            ]
        );
        let record = |last: u8, name: &[u8]| {
            let mut b = vec![10, 0, 0, last, 9, 9, 9, 9, name.len() as u8];
            b.extend_from_slice(name);
            b.extend_from_slice(&[2, b'x', b'y', 0xaa, 0xbb, 0x01, 0xbb]);
            b
        };
        let ctx = RecordCtx {
            export_ms: 4_000_000_000_000,
            sys_uptime_ms: None,
            sys_init_ms: None,
            default_sampling: 1,
        };
        let none = |_: u32| None;
        let env = RecordEnv {
            exporter: crate::model::ExporterId::new(
                "192.0.2.1"
                    .parse()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                1,
            ),
            version: 10,
            ctx: &ctx,
            sampler_rate: &none,
            out_of_range: Default::default(),
        };
        let mut body = record(1, b"vnic-a");
        body.extend(record(2, b"web-01.eth0"));
        body.extend_from_slice(&[0, 0, 0]);
        let mut out = Vec::new();
        assert_eq!(decode_varlen(&walk, 14, &body, &env, &mut out), Ok(2));
        let got: Vec<(IpAddr, &str, u16)> = out
            .iter()
            .map(|r| (r.src, r.vmware.virtual_obs_id.as_str(), r.dst_port))
            .collect();
        assert_eq!(
            got,
            vec![
                (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), "vnic-a", 443),
                (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), "web-01.eth0", 443)
            ]
        );
        // cut in the last segment, in the second varlen field, at its length byte
        for cut in [2, 6, 7] {
            let mut body = record(1, b"vnic-a");
            let second = record(2, b"vnic-b");
            body.extend_from_slice(&second[..second.len() - cut]);
            let mut out = Vec::new();
            assert_eq!(
                decode_varlen(&walk, 14, &body, &env, &mut out),
                Err((1, DecodeError::RecordTruncated)),
                "cut {cut}"
            );
            assert_eq!(out.len(), 1);
        }
    }
}
