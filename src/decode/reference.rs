//! The reference decoder: `netflow_parser` frames and types the records of a data set
//! given our template, and decodes NetFlow v5. Used for variable-length records (the cold
//! path), for v5, and as the oracle of the differential tests against the fast path.

use std::net::IpAddr;

use netflow_parser::DecodedOutputLimits;
use netflow_parser::variable_versions::field_value::{DataNumber, FieldValue};
use netflow_parser::variable_versions::ipfix;
use netflow_parser::variable_versions::ipfix::lookup::IPFixField;
use netflow_parser::variable_versions::v9;
use netflow_parser::variable_versions::v9::lookup::V9Field;

use super::DecodeError;
use super::fields::{RecordCtx, RecordEnv, Scratch, Slot, Val, apply, finish, set, slot_for};
use super::template::{FieldSpec, Template};
use crate::model::{ExporterId, FlowRecord};

fn limits() -> DecodedOutputLimits {
    // One UDP datagram cannot hold more than 64 KiB of values; these bounds only guard
    // against pathological templates (e.g. thousands of 1-byte records).
    DecodedOutputLimits::new(65_536, 1 << 20, 1 << 20).unwrap_or_default()
}

/// Converts a typed `netflow_parser` value into what [`apply`] takes.
fn to_val<'a>(slot: Slot, fv: &'a FieldValue, buf: &'a mut Vec<u8>) -> Val<'a> {
    match fv {
        FieldValue::Ip4Addr(a) => Val::A(IpAddr::V4(*a)),
        FieldValue::Ip6Addr(a) => Val::A(IpAddr::V6(*a)),
        FieldValue::Vec(b) => Val::B(b),
        FieldValue::DataNumber(DataNumber::Vec(b)) => Val::B(b),
        FieldValue::String(s) => Val::B(&s.raw),
        FieldValue::MacAddr(m) => Val::B(m),
        other => {
            buf.clear();
            if other.write_be_bytes(buf).is_err() {
                buf.clear();
            }
            if slot.is_addr() || slot.is_bytes() || buf.len() > 8 {
                Val::B(buf)
            } else {
                Val::U(super::fields::be_uint(buf))
            }
        }
    }
}

/// Fields passed to netflow_parser: zero-length fields occupy no bytes and are invalid
/// there, so they are left out (the values line up with the remaining specs).
fn present(t: &Template) -> impl Iterator<Item = &FieldSpec> {
    t.fields.iter().filter(|f| f.len != 0)
}

/// Decodes a data set with netflow_parser. Returns the records produced and the bytes of
/// `body` they took; the caller finishes a set that netflow_parser left early with the
/// walker.
pub fn decode_data_set(
    t: &Template,
    body: &[u8],
    env: &RecordEnv<'_>,
    out: &mut Vec<FlowRecord>,
) -> Result<(usize, usize), DecodeError> {
    let (ctx, sampler_rate) = (env.ctx, env.sampler_rate);
    let specs: Vec<&FieldSpec> = present(t).collect();
    if specs.is_empty() {
        return Ok((0, body.len()));
    }
    let slots: Vec<Slot> = specs.iter().map(|s| slot_for(s.pen, s.id)).collect();
    let mut buf = Vec::with_capacity(16);
    let mut emit = |vals: &mut dyn Iterator<Item = &FieldValue>| {
        let mut r = FlowRecord::empty(env.exporter, env.version);
        let mut s = Scratch::default();
        for (slot, fv) in slots.iter().zip(vals) {
            let v = to_val(*slot, fv, &mut buf);
            apply(&mut r, &mut s, *slot, v);
        }
        if finish(&mut r, &s, ctx, sampler_rate) {
            out.push(r);
        } else {
            env.reject();
        }
    };
    if t.key.version == 9 {
        let fields: Vec<v9::TemplateField> = specs
            .iter()
            .map(|f| v9::TemplateField {
                field_type_number: f.id,
                field_type: V9Field::from(f.id),
                field_length: f.len,
            })
            .collect();
        let tpl = v9::Template {
            template_id: t.key.template_id,
            field_count: fields.len() as u16,
            fields,
        };
        let (rest, data) = v9::Data::parse_with_limits(body, &tpl, limits())
            .map_err(|_| DecodeError::Reference)?;
        let before = env.out_of_range.get();
        for rec in &data.fields {
            emit(&mut rec.iter().map(|(_, v)| v));
        }
        let n = data.fields.len() - (env.out_of_range.get() - before);
        Ok((n, body.len() - rest.len()))
    } else {
        let fields: Vec<ipfix::TemplateField> = specs
            .iter()
            .map(|f| {
                let pen = (f.pen != 0).then_some(f.pen);
                ipfix::TemplateField {
                    field_type_number: f.id,
                    field_length: f.len,
                    enterprise_number: pen,
                    field_type: IPFixField::new(f.id, pen),
                }
            })
            .collect();
        let tpl = ipfix::Template {
            template_id: t.key.template_id,
            field_count: fields.len() as u16,
            fields,
        };
        let (rest, data) = ipfix::Data::parse_with_limits(body, &tpl, limits())
            .map_err(|_| DecodeError::Reference)?;
        let before = env.out_of_range.get();
        for rec in &data.fields {
            emit(&mut rec.iter().map(|(_, v)| v));
        }
        let n = data.fields.len() - (env.out_of_range.get() - before);
        Ok((n, body.len() - rest.len()))
    }
}

/// Header facts of a v5 datagram that the decoder needs besides the records.
pub struct V5Info {
    pub exporter: ExporterId,
    pub sequence: u32,
    pub count: u16,
    pub sampling: u32,
}

/// Decodes a NetFlow v5 datagram with netflow_parser.
pub fn decode_v5(
    src: IpAddr,
    payload: &[u8],
    out: &mut Vec<FlowRecord>,
) -> Result<V5Info, DecodeError> {
    let body = payload.get(2..).ok_or(DecodeError::Truncated)?;
    let (_, v5) = netflow_parser::static_versions::v5::V5::parse_direct(body)
        .map_err(|_| DecodeError::V5Malformed)?;
    let h = v5.header;
    // Engine type and id identify the exporting engine, like a v9 source id.
    let exporter = ExporterId::new(
        src,
        (u32::from(h.engine_type) << 8) | u32::from(h.engine_id),
    );
    // Top two bits: sampling mode; low 14 bits: interval.
    let interval = u32::from(h.sampling_interval & 0x3fff);
    // Some exporters set the interval without the mode bits; an interval above 1 is
    // honoured either way.
    let sampling = interval.max(1);
    let ctx = RecordCtx {
        export_ms: i64::from(h.unix_secs) * 1000 + i64::from(h.unix_nsecs / 1_000_000),
        sys_uptime_ms: Some(h.sys_up_time),
        sys_init_ms: None,
        default_sampling: sampling,
    };
    out.reserve(v5.flowsets.len());
    for f in &v5.flowsets {
        let mut r = FlowRecord::empty(exporter, 5);
        r.src = IpAddr::V4(f.src_addr);
        r.dst = IpAddr::V4(f.dst_addr);
        r.next_hop = Some(IpAddr::V4(f.next_hop)).filter(|a| !a.is_unspecified());
        r.in_if = u32::from(f.input);
        r.out_if = u32::from(f.output);
        r.src_port = f.src_port;
        r.dst_port = f.dst_port;
        r.tcp_flags = u16::from(f.tcp_flags);
        r.protocol = f.protocol_number;
        r.tos = f.tos;
        r.src_as = u32::from(f.src_as);
        r.dst_as = u32::from(f.dst_as);
        let mut s = Scratch::default();
        set!(s, bytes, u64::from(f.d_octets));
        set!(s, packets, u64::from(f.d_pkts));
        set!(s, start_uptime, f.first);
        set!(s, end_uptime, f.last);
        // v5's counters are 32 bits and its sampling interval 14: their product and
        // every time fit, so finish never refuses a v5 record.
        if finish(&mut r, &s, &ctx, |_| None) {
            out.push(r);
        }
    }
    Ok(V5Info {
        exporter,
        sequence: h.flow_sequence,
        count: h.count,
        sampling,
    })
}
