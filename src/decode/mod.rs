//! Decoding NetFlow v5, v9 and IPFIX datagrams into [`FlowRecord`]s.
//!
//! `Decoder::decode` is a pure function of the datagram and the decoder's state
//! (templates, exporter options, held sets): it does no I/O. Template and options state
//! is shared by every listener thread, so an exporter that changes its source port (and
//! lands on another SO_REUSEPORT socket) keeps decoding.
//!
//! Paths:
//! - fixed-length data records: the zero-copy fast path (`fast`), templates compiled to
//!   offsets;
//! - variable-length data records: `netflow_parser` (`reference`), finished by the
//!   walker if it stops early (zero-length variable fields, which it rejects);
//! - NetFlow v5: `netflow_parser`;
//! - options data: the walker, into per-exporter [`options::ExporterOptions`].
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod exporters;
pub mod fast;
pub mod fields;
pub mod finish;
mod held;
mod metrics;
pub mod options;
pub mod persist;
pub mod reference;
pub mod template;
pub mod template_store;

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::model::{ExporterId, FlowRecord};
pub use exporters::{ExporterCounters, ExporterEviction};
use exporters::{ExporterLimits, ExporterState, ExporterTable};
use fields::RecordCtx;
use held::Pending;
pub use metrics::DecodeMetrics;
use options::ExporterOptions;
use template::{
    Learned, Template, TemplateKey, TemplateKind, TemplateLimits, TemplateRecord, TemplateStore,
};

/// Why (part of) a datagram could not be decoded. Cheap to create; `kind()` is the
/// metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram shorter than its header")]
    Truncated,
    #[error("unsupported NetFlow/IPFIX version")]
    UnsupportedVersion,
    #[error("message length in the header does not match the datagram")]
    BadLength,
    #[error("set header with an impossible length")]
    BadSet,
    #[error("malformed template record")]
    BadTemplate,
    #[error("data record cut short by the end of its set")]
    RecordTruncated,
    #[error("reference decoder could not parse the data set")]
    Reference,
    #[error("malformed NetFlow v5 datagram")]
    V5Malformed,
    #[error(
        "a field value does not fit (time beyond year 9999, number wider than its field, counter overflow once sampled): record dropped"
    )]
    ValueOutOfRange,
}

impl DecodeError {
    pub const ALL: [DecodeError; 9] = [
        DecodeError::Truncated,
        DecodeError::UnsupportedVersion,
        DecodeError::BadLength,
        DecodeError::BadSet,
        DecodeError::BadTemplate,
        DecodeError::RecordTruncated,
        DecodeError::Reference,
        DecodeError::V5Malformed,
        DecodeError::ValueOutOfRange,
    ];
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Truncated => "truncated",
            DecodeError::UnsupportedVersion => "unsupported_version",
            DecodeError::BadLength => "bad_length",
            DecodeError::BadSet => "bad_set",
            DecodeError::BadTemplate => "bad_template",
            DecodeError::RecordTruncated => "record_truncated",
            DecodeError::Reference => "reference",
            DecodeError::V5Malformed => "v5_malformed",
            DecodeError::ValueOutOfRange => "value_out_of_range",
        }
    }
    fn index(&self) -> usize {
        Self::ALL.iter().position(|e| e == self).unwrap_or(0)
    }
}

/// What one data set gave: the records appended, and those dropped for a value out
/// of range (already counted).
#[derive(Debug, Clone, Copy)]
struct SetOut {
    records: usize,
    dropped: usize,
}

/// Which decoder handles data records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecodeMode {
    /// Zero-copy paths: offsets compiled from the template for fixed-length records,
    /// a field walker for templates with variable-length fields (default).
    #[default]
    Auto,
    /// netflow_parser for every data record (for comparisons and troubleshooting).
    Reference,
}

/// `[decode]` section of the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// Templates kept per exporter IP (all domains); the stalest is evicted past it.
    pub max_templates_per_exporter: usize,
    /// Templates kept overall; past it the least useful one is evicted (counted).
    pub max_templates: usize,
    /// A template not refreshed for this many seconds is forgotten.
    pub template_ttl_secs: i64,
    /// Exporters (IP and observation domain) whose options (sampling, interface
    /// names) are remembered. A source counts only once it sent something valid; past
    /// the bound, exporters that sent no data go first, then the longest silent.
    pub max_exporters: usize,
    /// Observation domains remembered per source IP: one source cannot take the
    /// slots of the others; its longest-silent domain makes room.
    pub max_exporters_per_source: usize,
    /// An exporter silent for this many seconds is forgotten with its options
    /// (exporters re-announce options every few minutes).
    pub exporter_idle_secs: i64,
    /// Exporters that get their own label in per-exporter metrics; the rest are `other`.
    pub max_exporter_labels: usize,
    /// Data sets held while their template is unknown.
    pub hold_max_sets: usize,
    /// Bytes of data sets held while their template is unknown.
    pub hold_max_bytes: usize,
    /// Held data sets older than this are dropped (and counted).
    pub hold_ttl_secs: i64,
    /// `auto` (fast path) or `reference` (netflow_parser only).
    pub mode: DecodeMode,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            max_templates_per_exporter: 1024,
            max_templates: 65_536,
            template_ttl_secs: 7 * 86_400,
            max_exporters: 4096,
            max_exporters_per_source: 64,
            exporter_idle_secs: 86_400,
            max_exporter_labels: 256,
            hold_max_sets: 4096,
            hold_max_bytes: 16 << 20,
            hold_ttl_secs: 300,
            mode: DecodeMode::Auto,
        }
    }
}

/// Persisted per-exporter options.
#[derive(Debug, Serialize, Deserialize)]
pub struct PersistedExporter {
    pub ip: IpAddr,
    pub domain: u32,
    pub options: ExporterOptions,
}

/// Everything the decoder persists across restarts.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PersistedDecodeState {
    pub version: u32,
    pub templates: Vec<template::PersistedTemplate>,
    pub exporters: Vec<PersistedExporter>,
}

/// Outcome of decoding one datagram: records were appended to the output even when
/// `error` is set (everything before the fault, and every later set that could be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeStatus {
    pub records: usize,
    pub error: Option<DecodeError>,
}

pub struct Decoder {
    cfg: DecodeConfig,
    pub templates: TemplateStore,
    exporters: ExporterTable,
    options_dirty: AtomicBool,
    pending: Mutex<Pending>,
    pending_len: AtomicUsize,
    pub metrics: DecodeMetrics,
    /// Evictions of exporters and templates are logged at most once per 10 s.
    evict_log: crate::util::EveryFew,
}

/// Facts of a v9/IPFIX message header that records need.
#[derive(Clone, Copy)]
struct Hdr {
    version: u8,
    export_ms: i64,
    sys_uptime_ms: Option<u32>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}
fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Decoder {
    pub fn new(cfg: DecodeConfig) -> Self {
        let limits = TemplateLimits {
            max_per_exporter: cfg.max_templates_per_exporter.max(1),
            max_total: cfg.max_templates.max(1),
            ttl_secs: cfg.template_ttl_secs.max(1),
        };
        let metrics = DecodeMetrics::new(cfg.max_exporter_labels);
        let exporters = ExporterTable::new(ExporterLimits {
            max_exporters: cfg.max_exporters,
            max_per_source: cfg.max_exporters_per_source,
            idle_secs: cfg.exporter_idle_secs.max(1),
        });
        Self {
            cfg,
            templates: TemplateStore::new(limits),
            exporters,
            options_dirty: AtomicBool::new(false),
            pending: Mutex::new(Pending::default()),
            pending_len: AtomicUsize::new(0),
            metrics,
            evict_log: crate::util::EveryFew::new(10_000),
        }
    }

    pub fn config(&self) -> &DecodeConfig {
        &self.cfg
    }

    fn count_error(&self, e: DecodeError, c: Option<&ExporterCounters>) {
        self.count_errors(e, 1, c);
    }

    fn count_errors(&self, e: DecodeError, n: u64, c: Option<&ExporterCounters>) {
        self.metrics.errors[e.index()].add(n);
        if let Some(c) = c {
            c.errors.add(n);
        }
    }

    /// Decodes one datagram from `src`. `now_ms` (Unix ms) times held sets and template
    /// freshness. Appends records to `out`.
    pub fn decode(
        &self,
        src: IpAddr,
        now_ms: i64,
        payload: &[u8],
        out: &mut Vec<FlowRecord>,
    ) -> DecodeStatus {
        let src = crate::model::canonical_ip(src);
        self.metrics.bytes.add(payload.len() as u64);
        let Some(version) = be16(payload, 0) else {
            self.metrics.datagrams[3].inc();
            self.count_error(DecodeError::Truncated, None);
            return DecodeStatus {
                records: 0,
                error: Some(DecodeError::Truncated),
            };
        };

        match version {
            5 => {
                self.metrics.datagrams[0].inc();
                self.decode_v5(src, now_ms, payload, out)
            }
            9 => {
                self.metrics.datagrams[1].inc();
                self.decode_v9_ipfix(src, 9, now_ms, payload, out)
            }
            10 => {
                self.metrics.datagrams[2].inc();
                self.decode_v9_ipfix(src, 10, now_ms, payload, out)
            }
            _ => {
                self.metrics.datagrams[3].inc();
                self.count_error(DecodeError::UnsupportedVersion, None);
                DecodeStatus {
                    records: 0,
                    error: Some(DecodeError::UnsupportedVersion),
                }
            }
        }
    }

    fn decode_v5(
        &self,
        src: IpAddr,
        now_ms: i64,
        payload: &[u8],
        out: &mut Vec<FlowRecord>,
    ) -> DecodeStatus {
        let before = out.len();
        match reference::decode_v5(src, payload, out) {
            Ok(info) => {
                let n = out.len() - before;
                // a datagram netflow_parser reads is valid: its exporter is remembered
                let st = self.admit(&self.exporter(info.exporter, now_ms), now_ms);
                self.exporters.sent_data(&st);
                st.counters.datagrams.inc();
                st.counters.records.add(n as u64);
                let lost = lock(&st.seq).observe(info.sequence, u32::from(info.count), true);
                st.counters.lost_records.add(lost);
                self.metrics.records[0].add(n as u64);
                DecodeStatus {
                    records: n,
                    error: None,
                }
            }
            Err(e) => {
                self.count_error(e, None);
                DecodeStatus {
                    records: 0,
                    error: Some(e),
                }
            }
        }
    }

    fn decode_v9_ipfix(
        &self,
        src: IpAddr,
        version: u8,
        now_ms: i64,
        payload: &[u8],
        out: &mut Vec<FlowRecord>,
    ) -> DecodeStatus {
        let mut status = DecodeStatus::default();
        // Header: v9 is 20 bytes, IPFIX 16.
        let parsed = if version == 9 {
            (|| {
                let up = be32(payload, 4)?;
                let secs = be32(payload, 8)?;
                let seq = be32(payload, 12)?;
                let domain = be32(payload, 16)?;
                Some((
                    Hdr {
                        version,
                        export_ms: i64::from(secs) * 1000,
                        sys_uptime_ms: Some(up),
                    },
                    seq,
                    domain,
                    20usize,
                    payload.len(),
                ))
            })()
        } else {
            (|| {
                let len = usize::from(be16(payload, 2)?);
                let secs = be32(payload, 4)?;
                let seq = be32(payload, 8)?;
                let domain = be32(payload, 12)?;
                Some((
                    Hdr {
                        version,
                        export_ms: i64::from(secs) * 1000,
                        sys_uptime_ms: None,
                    },
                    seq,
                    domain,
                    16usize,
                    len,
                ))
            })()
        };
        let Some((hdr, seq, domain, hlen, msg_len)) = parsed else {
            self.count_error(DecodeError::Truncated, None);
            status.error = Some(DecodeError::Truncated);
            return status;
        };
        let exporter = ExporterId::new(src, domain);
        let mut st = self.exporter(exporter, now_ms);
        let mut counters = st.counters.clone();
        let mut end = payload.len();
        if version == 10 && msg_len != payload.len() {
            if msg_len < hlen || msg_len > payload.len() {
                self.count_error(DecodeError::BadLength, Some(&counters));
                status.error = Some(DecodeError::BadLength);
            }
            if msg_len >= hlen {
                end = msg_len.min(payload.len());
            }
        }
        let mut pos = hlen;
        let mut data_records: u32 = 0;
        let mut all_known = true;
        let mut trecs = Vec::new();
        while pos + 4 <= end {
            let (Some(set_id), Some(set_len)) = (be16(payload, pos), be16(payload, pos + 2)) else {
                break;
            };
            let set_len = usize::from(set_len);
            if set_len < 4 || pos + set_len > end {
                // A zero-filled tail (set id 0, length 0) is padding, not an error.
                if set_id == 0 && set_len == 0 && payload[pos..end].iter().all(|&b| b == 0) {
                    break;
                }
                self.count_error(DecodeError::BadSet, Some(&counters));
                status.error.get_or_insert(DecodeError::BadSet);
                all_known = false;
                break;
            }
            let body = &payload[pos + 4..pos + set_len];
            pos += set_len;
            let is_template_set = match (version, set_id) {
                (9, 0 | 1) | (10, 2 | 3) => Some(version),
                // v9-style template sets inside IPFIX messages
                (10, 0 | 1) => Some(9),
                _ => None,
            };
            if let Some(fmt) = is_template_set {
                trecs.clear();
                let res = template::parse_template_set(body, set_id, fmt, src, domain, &mut trecs);
                for tr in trecs.drain(..) {
                    match tr {
                        TemplateRecord::Define(mut t) => {
                            if fmt != version {
                                t = Template::new(
                                    TemplateKey { version, ..t.key },
                                    t.kind,
                                    t.fields.to_vec(),
                                );
                            }
                            let key = t.key;
                            let (learned, evicted) = self.templates.learn(t, now_ms / 1000);
                            match learned {
                                Learned::New => self.metrics.templates_new.inc(),
                                Learned::Refreshed => self.metrics.templates_refreshed.inc(),
                                Learned::Replaced => self.metrics.templates_replaced.inc(),
                            }
                            if let Some(why) = evicted {
                                self.log_template_eviction(key, why, now_ms);
                            }
                            // a valid template: its source is remembered from now on
                            if !st.admitted {
                                st = self.admit(&st, now_ms);
                                counters = st.counters.clone();
                            }
                            if self.pending_len.load(Ordering::Relaxed) > 0 {
                                let n = self.release_held(&key, &st, out);
                                status.records += n;
                            }
                        }
                        TemplateRecord::Withdraw(id) => {
                            let n = if id == 2 || id == 3 {
                                self.templates.withdraw_all(src, version, domain, id == 3)
                            } else {
                                usize::from(self.templates.remove(&TemplateKey {
                                    exporter: src,
                                    version,
                                    domain,
                                    template_id: id,
                                }))
                            };
                            self.metrics.templates_withdrawn.add(n as u64);
                        }
                    }
                }
                if let Err(e) = res {
                    self.count_error(e, Some(&counters));
                    status.error.get_or_insert(e);
                }
                continue;
            }
            if set_id < 256 {
                continue; // reserved set ids: skipped per RFC 3954 / 7011
            }
            let key = TemplateKey {
                exporter: src,
                version,
                domain,
                template_id: set_id,
            };
            match self.templates.get_for_data(&key) {
                Some(t) => match self.decode_set(&t, &st, hdr, body, out) {
                    Ok(set) => {
                        // decodable data: its source is remembered (with the options
                        // this set may have announced)
                        if !st.admitted {
                            st = self.admit(&st, now_ms);
                            counters = st.counters.clone();
                        }
                        if t.kind == TemplateKind::Data && set.records > 0 {
                            self.exporters.sent_data(&st);
                        }
                        status.records += set.records;
                        if t.kind == TemplateKind::Data {
                            // the exporter counted the dropped records too
                            let n = set.records + set.dropped;
                            data_records = data_records.wrapping_add(n as u32);
                        }
                        if set.dropped > 0 {
                            status.error.get_or_insert(DecodeError::ValueOutOfRange);
                        }
                    }
                    Err((set, e)) => {
                        status.records += set.records;
                        all_known = false;
                        self.count_error(e, Some(&counters));
                        status.error.get_or_insert(e);
                    }
                },
                None => {
                    all_known = false;
                    self.metrics.template_misses.inc();
                    counters.template_misses.inc();
                    self.hold(key, hdr, body, now_ms);
                }
            }
        }
        if pos < end && pos + 4 > end && payload[pos..end].iter().any(|&b| b != 0) {
            // A few stray bytes after the last set.
            self.count_error(DecodeError::BadSet, Some(&counters));
            status.error.get_or_insert(DecodeError::BadSet);
        }
        // Sequence numbers: v9 counts datagrams, IPFIX counts data records.
        {
            let mut sq = lock(&st.seq);
            if version == 9 {
                counters.lost_datagrams.add(sq.observe(seq, 1, true));
            } else {
                counters
                    .lost_records
                    .add(sq.observe(seq, data_records, all_known));
            }
        }
        counters.datagrams.inc();
        counters.records.add(status.records as u64);
        self.metrics.records[if version == 9 { 1 } else { 2 }].add(status.records as u64);
        status
    }

    /// Decodes one data set whose template is known. Err carries the records produced
    /// before the fault. Records dropped for a value out of range are counted here.
    fn decode_set(
        &self,
        t: &Template,
        st: &ExporterState,
        hdr: Hdr,
        body: &[u8],
        out: &mut Vec<FlowRecord>,
    ) -> Result<SetOut, (SetOut, DecodeError)> {
        if let TemplateKind::Options { .. } = t.kind {
            let set = |records| SetOut {
                records,
                dropped: 0,
            };
            return self
                .decode_options(t, st, body)
                .map(set)
                .map_err(|(n, e)| (set(n), e));
        }
        let opts = match st.options.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let ctx = RecordCtx {
            export_ms: hdr.export_ms,
            sys_uptime_ms: hdr.sys_uptime_ms,
            sys_init_ms: opts.sys_init_ms,
            default_sampling: opts.default_sampling.unwrap_or(1),
        };
        let samplers = &opts.samplers;
        let sampler_rate = |id: u32| samplers.get(&id).copied();
        let env = fields::RecordEnv {
            exporter: st.id,
            version: hdr.version,
            ctx: &ctx,
            sampler_rate: &sampler_rate,
            out_of_range: Default::default(),
        };
        let res = match (&t.layout, self.cfg.mode) {
            (Some(layout), DecodeMode::Auto) => {
                let n = fast::decode_fixed(layout, body, &env, out);
                self.metrics.records_fast.add(n as u64);
                Ok(n)
            }
            // variable-length fields (ESXi's IPFIX): walked, zero-copy as well
            (None, DecodeMode::Auto) => {
                let res = fast::decode_varlen(&t.walk, t.min_record_len, body, &env, out);
                let (Ok(n) | Err((n, _))) = res;
                self.metrics.records_walker.add(n as u64);
                res
            }
            (_, DecodeMode::Reference) => self.decode_reference(t, body, &env, out),
        };
        let dropped = env.out_of_range.get();
        if dropped > 0 {
            self.count_errors(
                DecodeError::ValueOutOfRange,
                dropped as u64,
                Some(&st.counters),
            );
        }
        if t.unknown_enterprise > 0 {
            let n = match res {
                Ok(n) | Err((n, _)) => n,
            };
            self.metrics
                .unknown_enterprise_values
                .add((n as u64).saturating_mul(u64::from(t.unknown_enterprise)));
        }
        let set = |records| SetOut { records, dropped };
        res.map(set).map_err(|(n, e)| (set(n), e))
    }

    /// netflow_parser first; whatever it leaves (or cannot parse) goes to the walker.
    fn decode_reference(
        &self,
        t: &Template,
        body: &[u8],
        env: &fields::RecordEnv<'_>,
        out: &mut Vec<FlowRecord>,
    ) -> Result<usize, (usize, DecodeError)> {
        let (n_ref, consumed) = reference::decode_data_set(t, body, env, out).unwrap_or((0, 0));
        self.metrics.records_reference.add(n_ref as u64);
        let rest = body.get(consumed..).unwrap_or(&[]);
        if rest.len() < t.min_record_len.max(1) || rest.iter().all(|&b| b == 0) {
            return Ok(n_ref);
        }
        let res = fast::decode_varlen(&t.walk, t.min_record_len, rest, env, out);
        let (Ok(n) | Err((n, _))) = res;
        self.metrics.records_walker.add(n as u64);
        res.map(|_| n_ref + n).map_err(|(_, e)| (n_ref + n, e))
    }

    fn decode_options(
        &self,
        t: &Template,
        st: &ExporterState,
        body: &[u8],
    ) -> Result<usize, (usize, DecodeError)> {
        let mut slices = Vec::with_capacity(t.fields.len());
        let mut opts = match st.options.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (mut changed, mut out_of_range) = (false, 0u64);
        let res = fast::walk_records(&t.fields, body, t.min_record_len, &mut slices, |vals| {
            let effect = options::apply_options_record(&mut opts, t, vals);
            changed |= effect.changed;
            out_of_range += u64::from(effect.out_of_range);
        });
        drop(opts);
        if changed {
            self.options_dirty.store(true, Ordering::Relaxed);
        }
        if out_of_range > 0 {
            self.count_errors(
                DecodeError::ValueOutOfRange,
                out_of_range,
                Some(&st.counters),
            );
        }
        match res {
            Ok(n) => {
                self.metrics.options_records.add(n as u64);
                Ok(0)
            }
            Err(e) => Err((0, e)),
        }
    }

    /// Whether templates or exporter options changed since the last call.
    pub fn take_dirty(&self) -> bool {
        let a = self.templates.take_dirty();
        let b = self.options_dirty.swap(false, Ordering::Relaxed);
        a || b
    }

    pub fn snapshot(&self) -> PersistedDecodeState {
        let mut exporters: Vec<PersistedExporter> = self
            .exporters
            .states()
            .iter()
            .filter_map(|e| {
                let o = e.options.read().ok()?;
                (*o != ExporterOptions::default()).then(|| PersistedExporter {
                    ip: e.id.ip,
                    domain: e.id.domain,
                    options: o.clone(),
                })
            })
            .collect();
        exporters.sort_by_key(|e| (e.ip, e.domain));
        PersistedDecodeState {
            version: 1,
            templates: self.templates.snapshot(),
            exporters,
        }
    }

    /// Restores persisted state; returns (templates, exporters) restored.
    pub fn restore(&self, s: PersistedDecodeState, now_ms: i64) -> (usize, usize) {
        let nt = self.templates.restore(s.templates, now_ms / 1000);
        let mut ne = 0;
        for e in s.exporters {
            let id = ExporterId::new(e.ip, e.domain);
            let counters = self.metrics.per_exporter.get(&id);
            self.exporters
                .restore(id, e.options, now_ms.div_euclid(1000), counters);
            ne += 1;
        }
        (nt, ne.min(self.exporters.len()))
    }
}
