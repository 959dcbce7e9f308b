//! Options data: what exporters announce about themselves (sampling rates, sampler
//! tables, interface names, system init time), kept per exporter.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::fields::be_uint;
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
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end])
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_string()
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
                ifindex = Some(be_uint(b) as u32);
            }
            continue;
        }
        if spec.pen != 0 {
            continue;
        }
        match spec.id {
            10 | 14 => ifindex = Some(be_uint(b) as u32),
            34 | 50 => interval = Some(be_uint(b) as u32),
            48 | 302 => sampler_id = Some(be_uint(b) as u32),
            305 => pkt_interval = Some(be_uint(b) as u32),
            306 => pkt_space = Some(be_uint(b) as u32),
            309 => size = Some(be_uint(b)),
            310 => population = Some(be_uint(b)),
            82 => if_name = Some(text(b)),
            83 => if_descr = Some(text(b)),
            160 => {
                opts.sys_init_ms = Some(be_uint(b) as i64);
                effect.sys_init = true;
            }
            _ => {}
        }
    }
    let rate = if let Some(i) = interval.filter(|&i| i > 0) {
        Some(i)
    } else if let (Some(iv), Some(sp)) = (pkt_interval, pkt_space) {
        (iv > 0).then(|| ((u64::from(iv) + u64::from(sp)) / u64::from(iv)) as u32)
    } else if let (Some(p), Some(s)) = (population, size) {
        (s > 0).then(|| (p / s) as u32)
    } else {
        None
    };
    if let Some(rate) = rate.filter(|&r| r > 0) {
        match sampler_id {
            Some(id) => {
                if opts.samplers.len() < MAX_SAMPLERS || opts.samplers.contains_key(&id) {
                    opts.samplers.insert(id, rate);
                }
            }
            None => opts.default_sampling = Some(rate),
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
        opts.if_names.insert(idx, name);
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
}
