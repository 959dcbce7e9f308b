//! Options data: what exporters announce about themselves (sampling rates, sampler
//! tables, interface names, system init time), kept per exporter.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::fields::{MAX_UNIX_MS, be_uint};
use super::template::Template;

/// Bounds on what one exporter can make us remember.
pub const MAX_SAMPLERS: usize = 1024;
pub const MAX_INTERFACES: usize = 65_536;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExporterOptions {
    /// Sampling rate announced without a sampler id (applies to every record).
    pub default_sampling: Option<u32>,
    /// Sampler / selector id -> rate.
    pub samplers: HashMap<u32, u32>,
    /// ifIndex -> interface name (interfaceName, else interfaceDescription).
    pub if_names: HashMap<u32, String>,
    /// systemInitTimeMilliseconds.
    pub sys_init_ms: Option<i64>,
}

/// What one options record changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OptionsEffect {
    pub sampling: bool,
    pub interface: bool,
    pub sys_init: bool,
    /// A value did not fit (a rate or an index wider than 32 bits, an init time beyond
    /// year 9999): ignored, and counted by the caller as `value_out_of_range`.
    pub out_of_range: bool,
    /// Whether the exporter's options are now different (to be persisted).
    pub changed: bool,
}

/// Longest interface name kept, in bytes; longer names are cut at a character boundary.
pub const MAX_IF_NAME: usize = 64;

/// A value of at most 32 bits; a wider one is out of range (ignored, never truncated).
fn narrow(b: &[u8], effect: &mut OptionsEffect) -> Option<u32> {
    let v = u32::try_from(be_uint(b)).ok();
    effect.out_of_range |= v.is_none();
    v
}

/// An interface name or description: up to the first NUL, control characters removed,
/// trimmed, at most [`MAX_IF_NAME`] bytes (only the first 4 x that many bytes are read).
fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let b = &b[..end.min(4 * MAX_IF_NAME)];
    let mut out = String::new();
    for c in String::from_utf8_lossy(b).trim().chars() {
        if c.is_control() {
            continue;
        }
        if out.len() + c.len_utf8() > MAX_IF_NAME {
            break;
        }
        out.push(c);
    }
    out.trim().to_string()
}

/// Applies one options data record (`vals` in template field order).
pub fn apply_options_record(
    opts: &mut ExporterOptions,
    t: &Template,
    vals: &[&[u8]],
) -> OptionsEffect {
    let mut sampler_id: Option<u32> = None;
    let mut interval: Option<u32> = None;
    let mut pkt_interval: Option<u32> = None;
    let mut pkt_space: Option<u32> = None;
    let mut population: Option<u64> = None;
    let mut size: Option<u64> = None;
    let mut ifindex: Option<u32> = None;
    let mut if_name: Option<String> = None;
    let mut if_descr: Option<String> = None;
    let mut effect = OptionsEffect::default();
    let v9 = t.key.version == 9;
    for (spec, b) in t.fields.iter().zip(vals) {
        if b.is_empty() {
            continue;
        }
        if v9 && spec.scope {
            // v9 scope types: 1 system, 2 interface, 3 line card, 4 cache, 5 template.
            if spec.id == 2 {
                ifindex = narrow(b, &mut effect);
            }
            continue;
        }
        if spec.pen != 0 {
            continue;
        }
        match spec.id {
            10 | 14 => ifindex = narrow(b, &mut effect),
            34 | 50 => interval = narrow(b, &mut effect),
            48 | 302 => sampler_id = narrow(b, &mut effect),
            305 => pkt_interval = narrow(b, &mut effect),
            306 => pkt_space = narrow(b, &mut effect),
            309 => size = Some(be_uint(b)),
            310 => population = Some(be_uint(b)),
            82 => if_name = Some(text(b)),
            83 => if_descr = Some(text(b)),
            160 => match i64::try_from(be_uint(b)) {
                Ok(ms) if ms <= MAX_UNIX_MS => {
                    effect.changed |= opts.sys_init_ms != Some(ms);
                    opts.sys_init_ms = Some(ms);
                    effect.sys_init = true;
                }
                _ => effect.out_of_range = true,
            },
            _ => {}
        }
    }
    // A rate wider than 32 bits is out of range: ignored and counted, never truncated.
    let fit = |r: u64, effect: &mut OptionsEffect| {
        u32::try_from(r).ok().or_else(|| {
            effect.out_of_range = true;
            None
        })
    };
    let rate = if let Some(i) = interval.filter(|&i| i > 0) {
        Some(i)
    } else if let (Some(iv), Some(sp)) = (pkt_interval, pkt_space) {
        (iv > 0)
            .then(|| fit((u64::from(iv) + u64::from(sp)) / u64::from(iv), &mut effect))
            .flatten()
    } else if let (Some(p), Some(s)) = (population, size) {
        (s > 0).then(|| fit(p / s, &mut effect)).flatten()
    } else {
        None
    };
    if let Some(rate) = rate.filter(|&r| r > 0) {
        match sampler_id {
            Some(id) => {
                if opts.samplers.len() < MAX_SAMPLERS || opts.samplers.contains_key(&id) {
                    effect.changed |= opts.samplers.insert(id, rate) != Some(rate);
                }
            }
            None => {
                effect.changed |= opts.default_sampling != Some(rate);
                opts.default_sampling = Some(rate);
            }
        }
        effect.sampling = true;
    }
    if let (Some(idx), Some(name)) = (
        ifindex,
        if_name
            .filter(|s| !s.is_empty())
            .or(if_descr.filter(|s| !s.is_empty())),
    ) && (opts.if_names.len() < MAX_INTERFACES || opts.if_names.contains_key(&idx))
    {
        // updated in place: no allocation when the name did not change
        match opts.if_names.get_mut(&idx) {
            Some(old) if *old == name => {}
            Some(old) => {
                *old = name;
                effect.changed = true;
            }
            None => {
                opts.if_names.insert(idx, name);
                effect.changed = true;
            }
        }
        effect.interface = true;
    }
    effect
}

#[cfg(test)]
mod tests {
    use super::super::template::{FieldSpec, TemplateKey, TemplateKind, VARLEN};
    use super::*;

    fn f(id: u16, len: u16, scope: bool) -> FieldSpec {
        FieldSpec {
            id,
            pen: 0,
            len,
            scope,
        }
    }

    fn t(version: u8, fields: Vec<FieldSpec>) -> Template {
        Template::new(
            TemplateKey {
                exporter: "192.0.2.1".parse().unwrap(),
                version,
                domain: 0,
                template_id: 300,
            },
            TemplateKind::Options { scope_count: 1 },
            fields,
        )
    }

    #[test]
    fn sampler_table_and_default_rate() {
        let tpl = t(
            10,
            vec![f(48, 1, false), f(305, 4, false), f(306, 4, false)],
        );
        let mut o = ExporterOptions::default();
        let e = apply_options_record(&mut o, &tpl, &[&[3], &[0, 0, 0, 1], &[0, 0, 0, 99]]);
        assert!(e.sampling);
        assert_eq!(o.samplers.get(&3), Some(&100));
        let tpl = t(10, vec![f(149, 4, false), f(34, 4, false)]);
        apply_options_record(&mut o, &tpl, &[&[0, 0, 0, 0], &[0, 0, 4, 0]]);
        assert_eq!(o.default_sampling, Some(1024));
    }

    #[test]
    fn interface_names_v9_scope_and_ipfix() {
        let mut o = ExporterOptions::default();
        let tpl = t(9, vec![f(2, 4, true), f(82, 8, false)]);
        apply_options_record(&mut o, &tpl, &[&[0, 0, 0, 5], b"Gi0/1\0\0\0"]);
        let tpl = t(
            10,
            vec![f(10, 4, false), f(82, VARLEN, false), f(83, VARLEN, false)],
        );
        apply_options_record(&mut o, &tpl, &[&[0, 0, 0, 6], b"", b"uplink to core"]);
        assert_eq!(o.if_names.get(&5).map(String::as_str), Some("Gi0/1"));
        assert_eq!(
            o.if_names.get(&6).map(String::as_str),
            Some("uplink to core")
        );
    }

    #[test]
    fn values_wider_than_32_bits_are_ignored_and_reported() {
        let mut o = ExporterOptions::default();
        // samplingInterval in 8 bytes: 2^32 + 100 would truncate to 100
        let tpl = t(10, vec![f(149, 4, false), f(34, 8, false)]);
        let e = apply_options_record(&mut o, &tpl, &[&[0, 0, 0, 0], &[0, 0, 0, 1, 0, 0, 0, 100]]);
        assert!(e.out_of_range && !e.sampling && !e.changed);
        assert_eq!(o.default_sampling, None);
        // packet interval 1, space 2^32 - 1: the rate 2^32 does not fit 32 bits
        let tpl = t(10, vec![f(305, 4, false), f(306, 4, false)]);
        let e = apply_options_record(&mut o, &tpl, &[&[0, 0, 0, 1], &[0xff; 4]]);
        assert!(e.out_of_range);
        assert_eq!(o.default_sampling, None);
        // population / size = 2^40
        let tpl = t(10, vec![f(310, 8, false), f(309, 8, false)]);
        let e = apply_options_record(
            &mut o,
            &tpl,
            &[&[0, 0, 1, 0, 0, 0, 0, 0], &[0, 0, 0, 0, 0, 0, 0, 1]],
        );
        assert!(e.out_of_range);
        // systemInitTimeMilliseconds past year 9999
        let tpl = t(10, vec![f(160, 8, false)]);
        let e = apply_options_record(&mut o, &tpl, &[&[0x7f, 0, 0, 0, 0, 0, 0, 0]]);
        assert!(e.out_of_range && !e.sys_init);
        assert_eq!(o, ExporterOptions::default());
    }

    #[test]
    fn long_interface_names_are_cut_and_unchanged_names_are_no_change() {
        let mut o = ExporterOptions::default();
        let tpl = t(10, vec![f(10, 4, false), f(82, VARLEN, false)]);
        let long = "é".repeat(40_000); // 80 000 bytes, two per character
        let e = apply_options_record(&mut o, &tpl, &[&[0, 0, 0, 7], long.as_bytes()]);
        assert!(e.interface && e.changed);
        // 64 bytes hold 32 two-byte characters
        assert_eq!(
            o.if_names.get(&7).map(String::as_str),
            Some("é".repeat(32).as_str())
        );
        let e = apply_options_record(&mut o, &tpl, &[&[0, 0, 0, 7], long.as_bytes()]);
        assert!(e.interface && !e.changed);
        let e = apply_options_record(&mut o, &tpl, &[&[0, 0, 0, 7], b"eth0"]);
        assert!(e.changed);
        assert_eq!(o.if_names.get(&7).map(String::as_str), Some("eth0"));
        // a rate announced again is no change either
        let tpl = t(10, vec![f(149, 4, false), f(34, 4, false)]);
        assert!(apply_options_record(&mut o, &tpl, &[&[0; 4], &[0, 0, 0, 10]]).changed);
        assert!(!apply_options_record(&mut o, &tpl, &[&[0; 4], &[0, 0, 0, 10]]).changed);
    }
}
