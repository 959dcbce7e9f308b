//! The contract between stages: decoded records from the listener threads are handed
//! to a [`RecordSink`] (in the daemon: counted here, then through enrichment to the
//! rollup shards), saying with a [`Handover`] where the receive thread stands.

use crate::model::FlowRecord;
use crate::telemetry::{Counter, Exposition};

/// Where a hand-over of records stands in its receive thread's work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handover {
    /// Records of a receive call, more of which follow. `backlog` says the socket had
    /// more datagrams waiting than one receive takes: the sink should hand work to
    /// other threads rather than do it on the receiving one.
    Part { backlog: bool },
    /// The last records of a receive call (possibly none).
    End { backlog: bool },
    /// The socket is quiet, or the thread stops: hand over whatever waits.
    Quiet,
}

impl Handover {
    pub fn backlog(self) -> bool {
        matches!(
            self,
            Self::Part { backlog: true } | Self::End { backlog: true }
        )
    }
}

/// Where decoded records go (enrichment and rollups in the daemon; a collector in tests).
pub trait RecordSink: Send + Sync {
    /// Takes the records of `batch` (leaving it empty, capacity kept).
    fn ingest(&self, batch: &mut Vec<FlowRecord>, how: Handover);
}

/// Counters of what entered the pipeline (after decoding, sampling applied).
#[derive(Default)]
pub struct PipelineMetrics {
    pub records: Counter,
    pub bytes: Counter,
    pub packets: Counter,
}

/// The stage after counting (enrichment and rollups in the daemon).
/// It takes the batch and where it stands in the receive thread's work
/// ([`RecordSink::ingest`]).
pub type NextStage = Box<dyn Fn(&mut Vec<FlowRecord>, Handover) + Send + Sync>;

pub struct Pipeline {
    pub metrics: PipelineMetrics,
    next: Option<NextStage>,
}

impl Pipeline {
    /// A pipeline that only counts (used by tests and `replay` without a daemon).
    pub fn counting() -> Self {
        Self {
            metrics: PipelineMetrics::default(),
            next: None,
        }
    }

    pub fn with_next(next: NextStage) -> Self {
        Self {
            metrics: PipelineMetrics::default(),
            next: Some(next),
        }
    }

    pub fn render_metrics(&self, out: &mut Exposition) {
        out.counter(
            "nagare_pipeline_records_total",
            "Flow records that entered the pipeline after decoding.",
            self.metrics.records.get(),
        );
        out.counter(
            "nagare_pipeline_flow_bytes_total",
            "Bytes carried by those records (sampling applied, both directions of biflows).",
            self.metrics.bytes.get(),
        );
        out.counter(
            "nagare_pipeline_flow_packets_total",
            "Packets carried by those records (sampling applied, both directions of biflows).",
            self.metrics.packets.get(),
        );
    }
}

impl RecordSink for Pipeline {
    fn ingest(&self, batch: &mut Vec<FlowRecord>, how: Handover) {
        let mut bytes = 0u64;
        let mut packets = 0u64;
        for r in batch.iter() {
            bytes = bytes.wrapping_add(r.bytes).wrapping_add(r.reverse_bytes);
            packets = packets
                .wrapping_add(r.packets)
                .wrapping_add(r.reverse_packets);
        }
        self.metrics.records.add(batch.len() as u64);
        self.metrics.bytes.add(bytes);
        self.metrics.packets.add(packets);
        match &self.next {
            Some(f) => f(batch, how),
            None => batch.clear(),
        }
    }
}
