//! Metrics and tracing plumbing.
//!
//! Every module keeps its own counters as plain atomics (no registry, no locks on the
//! hot path) and renders them into an [`Exposition`] when `/metrics` is scraped.
//! Names follow `nagare_<module>_<noun>_<unit>[_total]`; label values come from bounded
//! sets (enums, or exporters capped by [`BoundedLabels`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    #[inline]
    pub fn add(&self, n: u64) {
        if n != 0 {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// For counters mirrored from an external monotonically increasing source (the
    /// kernel's drop counter): keep the highest value seen.
    pub fn set_max(&self, v: u64) {
        self.0.fetch_max(v, Ordering::Relaxed);
    }
}

/// A gauge holding an integer value.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    pub fn add(&self, v: u64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    pub fn sub(&self, v: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| {
                Some(x.saturating_sub(v))
            });
    }
}

/// A histogram with fixed upper bounds (seconds), Prometheus style.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in nanoseconds to keep it integral.
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }
    pub fn observe(&self, secs: f64) {
        for (b, c) in self.bounds.iter().zip(&self.buckets) {
            if secs <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add((secs.max(0.0) * 1e9) as u64, Ordering::Relaxed);
    }
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
    pub fn render(&self, out: &mut Exposition, name: &str, help: &str, labels: &[(&str, &str)]) {
        out.header(name, help, "histogram");
        let bucket = format!("{name}_bucket");
        for (b, c) in self.bounds.iter().zip(&self.buckets) {
            let le = format!("{b}");
            let mut l: Vec<(&str, &str)> = labels.to_vec();
            l.push(("le", &le));
            out.sample(&bucket, &l, c.load(Ordering::Relaxed) as f64);
        }
        let mut l: Vec<(&str, &str)> = labels.to_vec();
        l.push(("le", "+Inf"));
        out.sample(&bucket, &l, self.count() as f64);
        out.sample(
            &format!("{name}_sum"),
            labels,
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        );
        out.sample(&format!("{name}_count"), labels, self.count() as f64);
    }
}

/// Latency buckets for queries and other request/response work.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Prometheus text exposition (format 0.0.4) writer.
#[derive(Default)]
pub struct Exposition {
    buf: String,
    seen: std::collections::HashSet<String>,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }
    /// Writes `# HELP` and `# TYPE` once per metric family.
    pub fn header(&mut self, name: &str, help: &str, kind: &str) {
        if self.seen.insert(name.to_string()) {
            let _ = writeln!(self.buf, "# HELP {name} {help}");
            let _ = writeln!(self.buf, "# TYPE {name} {kind}");
        }
    }
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.buf.push_str(name);
        if !labels.is_empty() {
            self.buf.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.buf.push(',');
                }
                self.buf.push_str(k);
                self.buf.push_str("=\"");
                for ch in v.chars() {
                    match ch {
                        '\\' => self.buf.push_str("\\\\"),
                        '"' => self.buf.push_str("\\\""),
                        '\n' => self.buf.push_str("\\n"),
                        c => self.buf.push(c),
                    }
                }
                self.buf.push('"');
            }
            self.buf.push('}');
        }
        if value.fract() == 0.0 && value.abs() < 9.0e15 {
            let _ = writeln!(self.buf, " {}", value as i64);
        } else {
            let _ = writeln!(self.buf, " {value}");
        }
    }
    /// Shorthand for a single unlabeled counter.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, help, "counter");
        self.sample(name, &[], value as f64);
    }
    /// Shorthand for a single unlabeled gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, help, "gauge");
        self.sample(name, &[], value);
    }
    pub fn finish(self) -> String {
        self.buf
    }
}

/// Per-key values (typically per exporter) with a hard cap on the number of distinct
/// keys: past the cap, new keys are folded into a single `other` slot so that the label
/// set stays bounded whatever the input.
pub struct BoundedLabels<K: Eq + Hash + Clone, V: Default> {
    cap: usize,
    /// (labelled slots, the shared `other` slot)
    inner: Mutex<LabelSlots<K, V>>,
}

type LabelSlots<K, V> = (HashMap<K, std::sync::Arc<V>>, std::sync::Arc<V>);

impl<K: Eq + Hash + Clone, V: Default> BoundedLabels<K, V> {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            inner: Mutex::new((HashMap::new(), std::sync::Arc::new(V::default()))),
        }
    }
    /// The slot for `k` (or the shared `other` slot once the cap is reached).
    /// Callers cache the returned `Arc` so the lock is not taken per record.
    pub fn get(&self, k: &K) -> std::sync::Arc<V> {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(v) = g.0.get(k) {
            return v.clone();
        }
        if g.0.len() >= self.cap {
            return g.1.clone();
        }
        let v = std::sync::Arc::new(V::default());
        g.0.insert(k.clone(), v.clone());
        v
    }
    /// The slot of `k` if it has one, else the shared `other` slot (never claims one).
    pub fn get_or_other(&self, k: &K) -> std::sync::Arc<V> {
        let g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.0.get(k).unwrap_or(&g.1).clone()
    }
    /// Snapshot of (key, value) pairs plus the `other` slot.
    pub fn snapshot(&self) -> (Vec<(K, std::sync::Arc<V>)>, std::sync::Arc<V>) {
        let g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        (
            g.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            g.1.clone(),
        )
    }
}

/// Installs the global tracing subscriber (RUST_LOG style filter, default `info`).
pub fn init_tracing(default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        // a log write that fails (stderr on a full disk) must not report itself with
        // eprintln!, which panics the thread that logged
        .log_internal_errors(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_escapes_and_dedups_headers() {
        let mut e = Exposition::new();
        e.header("nagare_x_total", "help", "counter");
        e.sample("nagare_x_total", &[("k", "a\"b")], 3.0);
        e.header("nagare_x_total", "help", "counter");
        e.sample("nagare_x_total", &[("k", "c")], 1.5);
        let s = e.finish();
        assert_eq!(s.matches("# TYPE").count(), 1);
        assert!(s.contains("nagare_x_total{k=\"a\\\"b\"} 3\n"));
        assert!(s.contains("nagare_x_total{k=\"c\"} 1.5\n"));
    }

    #[test]
    fn bounded_labels_fold_into_other() {
        let b: BoundedLabels<u32, Counter> = BoundedLabels::new(2);
        b.get(&1).inc();
        b.get(&2).inc();
        b.get(&3).inc();
        b.get(&4).add(5);
        let (keys, other) = b.snapshot();
        assert_eq!(keys.len(), 2);
        assert_eq!(other.get(), 6);
    }

    #[test]
    fn histogram_counts_cumulatively() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        let mut e = Exposition::new();
        h.render(&mut e, "nagare_t_seconds", "t", &[]);
        let s = e.finish();
        assert!(s.contains("nagare_t_seconds_bucket{le=\"0.1\"} 1\n"));
        assert!(s.contains("nagare_t_seconds_bucket{le=\"1\"} 2\n"));
        assert!(s.contains("nagare_t_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(s.contains("nagare_t_seconds_count 3\n"));
    }
}
