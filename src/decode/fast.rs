//! The zero-copy fast path for fixed-length data records, and the record walker used
//! for options data and as a fallback for variable-length records.

use super::DecodeError;
use super::fields::{RecordCtx, Scratch, Slot, Val, apply, finish};
use super::template::{FieldSpec, Layout, VARLEN};
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
    if slot.is_addr() || slot.is_bytes() {
        Val::B(b)
    } else {
        Val::U(read_uint(b))
    }
}

/// Decodes every fixed-length record of a data set body with a compiled layout.
/// Appends to `out`; returns the number of records. A trailing remainder shorter than a
/// record is padding.
#[inline]
pub fn decode_fixed(
    layout: &Layout,
    body: &[u8],
    base: &FlowRecord,
    ctx: &RecordCtx,
    sampler_rate: &dyn Fn(u32) -> Option<u32>,
    out: &mut Vec<FlowRecord>,
) -> usize {
    let rl = layout.record_len;
    if rl == 0 {
        return 0;
    }
    let n = body.len() / rl;
    out.reserve(n);
    for rec_bytes in body.chunks_exact(rl) {
        let mut r = *base;
        let mut s = Scratch::default();
        for f in layout.fields.iter() {
            let start = usize::from(f.off);
            let Some(b) = rec_bytes.get(start..start + usize::from(f.len)) else {
                continue;
            };
            apply(&mut r, &mut s, f.slot, raw_val(f.slot, b));
        }
        finish(&mut r, &s, ctx, sampler_rate);
        out.push(r);
    }
    n
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

/// Decodes the data records of any template with the walker (used for the rest of a set
/// that the reference decoder could not finish).
pub fn decode_walk(
    specs: &[FieldSpec],
    min_record_len: usize,
    body: &[u8],
    skip_records: usize,
    base: &FlowRecord,
    ctx: &RecordCtx,
    sampler_rate: &dyn Fn(u32) -> Option<u32>,
    out: &mut Vec<FlowRecord>,
) -> Result<usize, DecodeError> {
    let slots: Vec<Slot> = specs
        .iter()
        .map(|s| super::fields::slot_for(s.pen, s.id))
        .collect();
    let mut slices = Vec::with_capacity(specs.len());
    let mut idx = 0usize;
    let mut produced = 0usize;
    let res = walk_records(specs, body, min_record_len, &mut slices, |vals| {
        idx += 1;
        if idx <= skip_records {
            return;
        }
        let mut r = *base;
        let mut s = Scratch::default();
        for (slot, b) in slots.iter().zip(vals) {
            if !b.is_empty() {
                apply(&mut r, &mut s, *slot, raw_val(*slot, b));
            }
        }
        finish(&mut r, &s, ctx, sampler_rate);
        out.push(r);
        produced += 1;
    });
    res.map(|_| produced)
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
}
