//! Templates: parsing template and options-template sets (v9 and IPFIX), compiling
//! fixed-length data templates to field offsets for the fast path, and the bounded
//! template store keyed by (exporter IP, version, observation domain, template id).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::DecodeError;
use super::fields::{Slot, slot_for};

/// A compiled field operation: the element and its width fixed at template time, so
/// that decoding a field is one jump and one fixed-size read. Elements without a
/// specialized operation go through the generic [`apply`](super::fields::apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    SrcV4,
    DstV4,
    SrcV6,
    DstV6,
    SrcPort,
    DstPort,
    Proto,
    Flags8,
    Flags16,
    Tos,
    Bytes32,
    Bytes64,
    Packets32,
    Packets64,
    StartMs64,
    EndMs64,
    StartUp32,
    EndUp32,
    InIf16,
    InIf32,
    OutIf16,
    OutIf32,
    Vlan16,
    Direction8,
    Generic,
    /// A walk's variable-length field (see [`compile_walk`]).
    Varlen,
    /// The end of a walk's last fixed-length segment.
    Tail,
}

impl Op {
    pub fn compile(slot: Slot, len: u16) -> Op {
        match (slot, len) {
            (Slot::SrcAddr, 4) => Op::SrcV4,
            (Slot::DstAddr, 4) => Op::DstV4,
            (Slot::SrcAddr, 16) => Op::SrcV6,
            (Slot::DstAddr, 16) => Op::DstV6,
            (Slot::SrcPort, 2) => Op::SrcPort,
            (Slot::DstPort, 2) => Op::DstPort,
            (Slot::Protocol, 1) => Op::Proto,
            (Slot::TcpFlags, 1) => Op::Flags8,
            (Slot::TcpFlags, 2) => Op::Flags16,
            (Slot::Tos, 1) => Op::Tos,
            (Slot::Bytes, 4) => Op::Bytes32,
            (Slot::Bytes, 8) => Op::Bytes64,
            (Slot::Packets, 4) => Op::Packets32,
            (Slot::Packets, 8) => Op::Packets64,
            (Slot::StartMs, 8) => Op::StartMs64,
            (Slot::EndMs, 8) => Op::EndMs64,
            (Slot::StartUptime, 4) => Op::StartUp32,
            (Slot::EndUptime, 4) => Op::EndUp32,
            (Slot::InIf, 2) => Op::InIf16,
            (Slot::InIf, 4) => Op::InIf32,
            (Slot::OutIf, 2) => Op::OutIf16,
            (Slot::OutIf, 4) => Op::OutIf32,
            (Slot::Vlan, 2) => Op::Vlan16,
            (Slot::Direction, 1) => Op::Direction8,
            _ => Op::Generic,
        }
    }
}

/// Variable-length marker in a template field length (RFC 7011 section 7).
pub const VARLEN: u16 = 0xffff;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TemplateKey {
    pub exporter: IpAddr,
    pub version: u8,
    pub domain: u32,
    pub template_id: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FieldSpec {
    pub id: u16,
    /// Private enterprise number; 0 for IANA / NetFlow v9 types.
    pub pen: u32,
    pub len: u16,
    /// v9 options templates: a scope field (its `id` is a v9 scope type, not an IE).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scope: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TemplateKind {
    Data,
    Options { scope_count: u16 },
}

/// One field of a compiled fixed-length layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompiledField {
    pub off: u16,
    pub len: u16,
    pub slot: Slot,
    /// The value is handed over as bytes (addresses, strings), not as an integer.
    pub raw: bool,
    /// Width-specialized operation for the hottest elements.
    pub op: Op,
}

/// A fixed-length data template compiled to offsets: the fast path reads each record
/// as `data[i*record_len ..][off .. off+len]` with no parsing and no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub record_len: usize,
    /// Only the fields nagare uses (skipped ones are not listed).
    pub fields: Box<[CompiledField]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub key: TemplateKey,
    pub kind: TemplateKind,
    pub fields: Box<[FieldSpec]>,
    /// Set for fixed-length data templates.
    pub layout: Option<Layout>,
    /// Data templates: the record as segments of fixed-length fields between
    /// variable-length ones (see [`compile_walk`]): how records with variable-length
    /// fields are decoded, and the rest of a set the reference decoder could not
    /// finish. Empty for options templates.
    pub walk: Box<[CompiledField]>,
    /// Smallest possible record (variable-length fields count one length byte).
    pub min_record_len: usize,
    pub has_varlen: bool,
    /// Unknown enterprise elements per record (skipped by length, counted).
    pub unknown_enterprise: u16,
}

/// Compiles a data template for [`super::fast::decode_varlen`]: a record is fixed-length
/// segments separated by variable-length fields. Within a segment, only the fields
/// nagare uses are listed, at their offset from the segment's start (unused ones cost
/// nothing per record); each variable-length field ends a segment (`op`
/// [`Op::Varlen`], `off` = where its length prefix is), and a last entry
/// ([`Op::Tail`], `off` = the length of the last segment) ends the record.
pub fn compile_walk(fields: &[FieldSpec]) -> Box<[CompiledField]> {
    // a record this long never fits a datagram (and min_record_len keeps the
    // walker from starting on one): saturating keeps it from fitting by wrapping
    let at = |off: usize| u16::try_from(off).unwrap_or(u16::MAX);
    let mut walk = Vec::new();
    let mut off = 0usize;
    for f in fields {
        let slot = slot_for(f.pen, f.id);
        let raw = slot.is_addr() || slot.is_bytes();
        if f.len == VARLEN {
            walk.push(CompiledField {
                off: at(off),
                len: VARLEN,
                slot,
                raw,
                op: Op::Varlen,
            });
            off = 0;
            continue;
        }
        if f.len > 0 && !matches!(slot, Slot::Skip | Slot::UnknownEnterprise) {
            walk.push(CompiledField {
                off: at(off),
                len: f.len,
                slot,
                raw,
                op: Op::compile(slot, f.len),
            });
        }
        off += usize::from(f.len);
    }
    walk.push(CompiledField {
        off: at(off),
        len: 0,
        slot: Slot::Skip,
        raw: false,
        op: Op::Tail,
    });
    walk.into_boxed_slice()
}

impl Template {
    pub fn new(key: TemplateKey, kind: TemplateKind, fields: Vec<FieldSpec>) -> Self {
        let has_varlen = fields.iter().any(|f| f.len == VARLEN);
        let min_record_len = fields
            .iter()
            .map(|f| {
                if f.len == VARLEN {
                    1
                } else {
                    usize::from(f.len)
                }
            })
            .sum();
        let unknown_enterprise = fields
            .iter()
            .filter(|f| f.pen != 0 && slot_for(f.pen, f.id) == Slot::UnknownEnterprise)
            .count() as u16;
        let walk = if kind == TemplateKind::Data {
            compile_walk(&fields)
        } else {
            Box::default()
        };
        // without variable-length fields the walk is one segment: the fields nagare
        // uses at their offsets in the record, then the tail
        let layout = (!has_varlen && kind == TemplateKind::Data).then(|| Layout {
            record_len: min_record_len,
            fields: walk.iter().filter(|f| f.op != Op::Tail).copied().collect(),
        });
        Self {
            key,
            kind,
            fields: fields.into_boxed_slice(),
            layout,
            walk,
            min_record_len,
            has_varlen,
            unknown_enterprise,
        }
    }

    pub fn same_layout(&self, other: &Template) -> bool {
        self.kind == other.kind && self.fields == other.fields
    }
}

/// A template record as read from the wire, or a withdrawal.
#[derive(Debug)]
pub enum TemplateRecord {
    Define(Template),
    /// IPFIX template withdrawal (field count 0); id 2/3 withdraws all of that kind.
    Withdraw(u16),
}

struct Rd<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Rd<'a> {
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let s = self
            .b
            .get(self.pos..self.pos + 2)
            .ok_or(DecodeError::BadTemplate)?;
        self.pos += 2;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let s = self
            .b
            .get(self.pos..self.pos + 4)
            .ok_or(DecodeError::BadTemplate)?;
        self.pos += 4;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn remaining(&self) -> usize {
        self.b.len().saturating_sub(self.pos)
    }
}

/// Upper bound on fields in one template (protects memory; real templates have < 100).
pub const MAX_TEMPLATE_FIELDS: usize = 512;

/// Parses the body of a template set (v9 flowset 0 / IPFIX set 2) or options template
/// set (v9 flowset 1 / IPFIX set 3). Returns the records read before any error, and the
/// error if the set ended inside a record.
pub fn parse_template_set(
    body: &[u8],
    set_id: u16,
    version: u8,
    exporter: IpAddr,
    domain: u32,
    out: &mut Vec<TemplateRecord>,
) -> Result<(), DecodeError> {
    let options = matches!((version, set_id), (9, 1) | (10, 3));
    let mut r = Rd { b: body, pos: 0 };
    // Trailing padding is shorter than any record header.
    while r.remaining() >= 4 {
        let template_id = r.u16()?;
        if version == 9 && template_id == 0 && r.b[r.pos..].iter().all(|&x| x == 0) {
            break; // zero padding
        }
        let key = |id| TemplateKey {
            exporter,
            version,
            domain,
            template_id: id,
        };
        if version == 10 {
            let field_count = r.u16()?;
            if field_count == 0 {
                out.push(TemplateRecord::Withdraw(template_id));
                continue;
            }
            let scope_count = if options { r.u16()? } else { 0 };
            if usize::from(field_count) > MAX_TEMPLATE_FIELDS
                || template_id < 256
                || (options && (scope_count == 0 || scope_count > field_count))
            {
                return Err(DecodeError::BadTemplate);
            }
            let mut fields = Vec::with_capacity(usize::from(field_count));
            for _ in 0..field_count {
                let raw = r.u16()?;
                let len = r.u16()?;
                let (id, pen) = if raw & 0x8000 != 0 {
                    (raw & 0x7fff, r.u32()?)
                } else {
                    (raw, 0)
                };
                fields.push(FieldSpec {
                    id,
                    pen,
                    len,
                    scope: false,
                });
            }
            let kind = if options {
                TemplateKind::Options { scope_count }
            } else {
                TemplateKind::Data
            };
            out.push(TemplateRecord::Define(Template::new(
                key(template_id),
                kind,
                fields,
            )));
        } else {
            if options {
                let scope_len = r.u16()?;
                let opt_len = r.u16()?;
                if scope_len % 4 != 0 || opt_len % 4 != 0 || template_id < 256 {
                    return Err(DecodeError::BadTemplate);
                }
                let n_scope = usize::from(scope_len / 4);
                let n_opt = usize::from(opt_len / 4);
                if n_scope + n_opt > MAX_TEMPLATE_FIELDS || n_scope + n_opt == 0 {
                    return Err(DecodeError::BadTemplate);
                }
                let mut fields = Vec::with_capacity(n_scope + n_opt);
                for i in 0..n_scope + n_opt {
                    let id = r.u16()?;
                    let len = r.u16()?;
                    fields.push(FieldSpec {
                        id,
                        pen: 0,
                        len,
                        scope: i < n_scope,
                    });
                }
                out.push(TemplateRecord::Define(Template::new(
                    key(template_id),
                    TemplateKind::Options {
                        scope_count: n_scope as u16,
                    },
                    fields,
                )));
            } else {
                let field_count = r.u16()?;
                if usize::from(field_count) > MAX_TEMPLATE_FIELDS
                    || field_count == 0
                    || template_id < 256
                {
                    return Err(DecodeError::BadTemplate);
                }
                let mut fields = Vec::with_capacity(usize::from(field_count));
                for _ in 0..field_count {
                    let id = r.u16()?;
                    let len = r.u16()?;
                    // v9 has no variable-length encoding; 0xffff would be a 64 KiB field.
                    fields.push(FieldSpec {
                        id,
                        pen: 0,
                        len,
                        scope: false,
                    });
                }
                out.push(TemplateRecord::Define(Template::new(
                    key(template_id),
                    TemplateKind::Data,
                    fields,
                )));
            }
        }
    }
    Ok(())
}

pub use super::template_store::{Learned, PersistedTemplate, TemplateLimits, TemplateStore};

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn ip() -> IpAddr {
        "192.0.2.1".parse().unwrap()
    }

    fn tpl(id: u16, lens: &[u16]) -> Template {
        tpl_at(ip(), id, lens)
    }

    /// A data template of `exporter` whose fields are elements 1, 2, ... of `lens`.
    pub(in crate::decode) fn tpl_at(exporter: IpAddr, id: u16, lens: &[u16]) -> Template {
        Template::new(
            TemplateKey {
                exporter,
                version: 10,
                domain: 0,
                template_id: id,
            },
            TemplateKind::Data,
            lens.iter()
                .enumerate()
                .map(|(i, &len)| FieldSpec {
                    id: i as u16 + 1,
                    pen: 0,
                    len,
                    scope: false,
                })
                .collect(),
        )
    }

    #[test]
    fn compiles_offsets_skipping_unused_and_zero_length() {
        // ids 1 (bytes, 8), 2 (packets, 0 length), 3 (unused, 4), 4 (protocol, 1)
        let t = tpl(256, &[8, 0, 4, 1]);
        let l = t.layout.as_ref().unwrap();
        assert_eq!(l.record_len, 13);
        assert_eq!(
            l.fields.iter().map(|f| (f.off, f.slot)).collect::<Vec<_>>(),
            vec![(0, Slot::Bytes), (12, Slot::Protocol)]
        );
        assert!(tpl(257, &[8, VARLEN]).layout.is_none());
    }

    #[test]
    fn parses_ipfix_template_with_enterprise_field_and_withdrawal() {
        let mut b = vec![];
        b.extend_from_slice(&256u16.to_be_bytes());
        b.extend_from_slice(&2u16.to_be_bytes());
        b.extend_from_slice(&8u16.to_be_bytes());
        b.extend_from_slice(&4u16.to_be_bytes());
        b.extend_from_slice(&(0x8000u16 | 898).to_be_bytes());
        b.extend_from_slice(&VARLEN.to_be_bytes());
        b.extend_from_slice(&6876u32.to_be_bytes());
        b.extend_from_slice(&300u16.to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes());
        let mut out = vec![];
        parse_template_set(&b, 2, 10, ip(), 7, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        match &out[0] {
            TemplateRecord::Define(t) => {
                assert_eq!(t.key.domain, 7);
                assert_eq!(t.fields[1].pen, 6876);
                assert_eq!(t.fields[1].id, 898);
                assert!(t.has_varlen);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(out[1], TemplateRecord::Withdraw(300)));
        // truncated inside a field
        let mut out = vec![];
        assert!(parse_template_set(&b[..10], 2, 10, ip(), 7, &mut out).is_err());
    }
}
