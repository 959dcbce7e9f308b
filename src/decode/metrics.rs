//! The decoder's counters (`nagare_decode_*`) and their Prometheus exposition.

use std::sync::Arc;

use super::exporters::{ExporterCounters, ExporterEviction};
use super::{DecodeError, Decoder};
use crate::model::ExporterId;
use crate::telemetry::{BoundedLabels, Counter, Exposition, Gauge};

/// Decoder metrics (`nagare_decode_*`).
pub struct DecodeMetrics {
    pub datagrams: [Counter; 4], // v5, v9, ipfix, other
    pub bytes: Counter,
    pub records: [Counter; 3], // v5, v9, ipfix
    pub records_fast: Counter,
    pub records_reference: Counter,
    pub records_walker: Counter,
    pub errors: [Counter; DecodeError::ALL.len()],
    pub template_misses: Counter,
    pub held_sets: Counter,
    pub held_decoded_records: Counter,
    pub held_expired: Counter,
    pub held_overflow: Counter,
    pub held_now: Gauge,
    pub templates_new: Counter,
    pub templates_refreshed: Counter,
    pub templates_replaced: Counter,
    pub templates_withdrawn: Counter,
    pub options_records: Counter,
    pub unknown_enterprise_values: Counter,
    pub per_exporter: BoundedLabels<ExporterId, ExporterCounters>,
}

impl DecodeMetrics {
    pub(super) fn new(max_labels: usize) -> Self {
        Self {
            datagrams: Default::default(),
            bytes: Default::default(),
            records: Default::default(),
            records_fast: Default::default(),
            records_reference: Default::default(),
            records_walker: Default::default(),
            errors: Default::default(),
            template_misses: Default::default(),
            held_sets: Default::default(),
            held_decoded_records: Default::default(),
            held_expired: Default::default(),
            held_overflow: Default::default(),
            held_now: Default::default(),
            templates_new: Default::default(),
            templates_refreshed: Default::default(),
            templates_replaced: Default::default(),
            templates_withdrawn: Default::default(),
            options_records: Default::default(),
            unknown_enterprise_values: Default::default(),
            per_exporter: BoundedLabels::new(max_labels),
        }
    }

    pub fn error_count(&self, e: DecodeError) -> u64 {
        self.errors[e.index()].get()
    }

    pub fn total_errors(&self) -> u64 {
        self.errors.iter().map(Counter::get).sum()
    }

    pub fn total_records(&self) -> u64 {
        self.records.iter().map(Counter::get).sum()
    }
}

impl Decoder {
    pub fn render_metrics(&self, out: &mut Exposition) {
        let m = &self.metrics;
        out.header(
            "nagare_decode_datagrams_total",
            "Datagrams received by the decoder, by version.",
            "counter",
        );
        for (i, v) in ["5", "9", "10", "other"].iter().enumerate() {
            out.sample(
                "nagare_decode_datagrams_total",
                &[("version", v)],
                m.datagrams[i].get() as f64,
            );
        }
        out.counter(
            "nagare_decode_bytes_total",
            "Datagram payload bytes received by the decoder.",
            m.bytes.get(),
        );
        out.header(
            "nagare_decode_records_total",
            "Flow records decoded, by version.",
            "counter",
        );
        for (i, v) in ["5", "9", "10"].iter().enumerate() {
            out.sample(
                "nagare_decode_records_total",
                &[("version", v)],
                m.records[i].get() as f64,
            );
        }
        out.header(
            "nagare_decode_path_records_total",
            "Data records by decoder path.",
            "counter",
        );
        out.sample(
            "nagare_decode_path_records_total",
            &[("path", "fast")],
            m.records_fast.get() as f64,
        );
        out.sample(
            "nagare_decode_path_records_total",
            &[("path", "reference")],
            m.records_reference.get() as f64,
        );
        out.sample(
            "nagare_decode_path_records_total",
            &[("path", "walker")],
            m.records_walker.get() as f64,
        );
        out.header(
            "nagare_decode_errors_total",
            "Decode errors by kind (the rest of the datagram is still decoded where possible).",
            "counter",
        );
        for e in DecodeError::ALL {
            out.sample(
                "nagare_decode_errors_total",
                &[("kind", e.kind())],
                m.error_count(e) as f64,
            );
        }
        out.counter(
            "nagare_decode_template_misses_total",
            "Data sets that arrived before their template.",
            m.template_misses.get(),
        );
        out.counter(
            "nagare_decode_held_sets_total",
            "Data sets held until their template arrives.",
            m.held_sets.get(),
        );
        out.counter(
            "nagare_decode_held_decoded_records_total",
            "Records decoded from held data sets once the template arrived.",
            m.held_decoded_records.get(),
        );
        out.header(
            "nagare_decode_held_dropped_total",
            "Held data sets dropped, by reason.",
            "counter",
        );
        out.sample(
            "nagare_decode_held_dropped_total",
            &[("reason", "expired")],
            m.held_expired.get() as f64,
        );
        out.sample(
            "nagare_decode_held_dropped_total",
            &[("reason", "overflow")],
            m.held_overflow.get() as f64,
        );
        out.gauge(
            "nagare_decode_held_sets",
            "Data sets currently held for a template.",
            m.held_now.get() as f64,
        );
        out.gauge(
            "nagare_decode_templates",
            "Templates currently known.",
            self.templates.len() as f64,
        );
        out.header(
            "nagare_decode_templates_total",
            "Template records received, by outcome.",
            "counter",
        );
        for (k, v) in [
            ("new", m.templates_new.get()),
            ("refreshed", m.templates_refreshed.get()),
            ("replaced", m.templates_replaced.get()),
            ("withdrawn", m.templates_withdrawn.get()),
            ("evicted", self.templates.evicted.get()),
            ("evicted_full", self.templates.evicted_full.get()),
            ("expired", self.templates.expired.get()),
        ] {
            out.sample("nagare_decode_templates_total", &[("outcome", k)], v as f64);
        }
        out.header(
            "nagare_decode_exporter_evictions_total",
            "Exporters forgotten, by reason: idle (silent for exporter_idle_secs), full (max_exporters reached), per_source (its source IP reached max_exporters_per_source).",
            "counter",
        );
        for (i, why) in [
            ExporterEviction::Idle,
            ExporterEviction::Full,
            ExporterEviction::PerSource,
        ]
        .iter()
        .enumerate()
        {
            out.sample(
                "nagare_decode_exporter_evictions_total",
                &[("reason", why.reason())],
                self.exporters.evicted[i].get() as f64,
            );
        }
        out.counter(
            "nagare_decode_options_records_total",
            "Options data records applied (sampling, interface names).",
            m.options_records.get(),
        );
        out.counter(
            "nagare_decode_unknown_enterprise_values_total",
            "Values of unknown enterprise elements skipped by length.",
            m.unknown_enterprise_values.get(),
        );
        out.gauge(
            "nagare_decode_exporters",
            "Exporters (IP + observation domain) known.",
            self.exporters.len() as f64,
        );
        let (per, other) = m.per_exporter.snapshot();
        let mut per: Vec<(String, Arc<ExporterCounters>)> =
            per.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        per.sort_by(|a, b| a.0.cmp(&b.0));
        per.push(("other".to_string(), other));
        type Get = fn(&ExporterCounters) -> u64;
        let families: [(&str, &str, Get); 6] = [
            (
                "nagare_decode_exporter_datagrams_total",
                "Datagrams per exporter.",
                |c| c.datagrams.get(),
            ),
            (
                "nagare_decode_exporter_records_total",
                "Records per exporter.",
                |c| c.records.get(),
            ),
            (
                "nagare_decode_exporter_errors_total",
                "Decode errors per exporter.",
                |c| c.errors.get(),
            ),
            (
                "nagare_decode_exporter_template_misses_total",
                "Template misses per exporter.",
                |c| c.template_misses.get(),
            ),
            (
                "nagare_decode_exporter_lost_records_total",
                "Records the exporter's sequence numbers say never arrived (v5, IPFIX).",
                |c| c.lost_records.get(),
            ),
            (
                "nagare_decode_exporter_lost_datagrams_total",
                "Datagrams the exporter's sequence numbers say never arrived (v9).",
                |c| c.lost_datagrams.get(),
            ),
        ];
        for (name, help, get) in families {
            out.header(name, help, "counter");
            for (k, c) in &per {
                out.sample(name, &[("exporter", k)], get(c) as f64);
            }
        }
    }
}
