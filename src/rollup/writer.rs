//! The segment writer thread: closed buckets are appended to their segment files in the
//! order they closed. A failed write (no descriptors, a full disk, permissions) is
//! retried with exponential backoff while the buckets wait in memory (bounded by
//! [`WriteConfig`]); meanwhile [`WriteStatus::health`] reports the fault (so `/healthz`
//! answers 503). When the store closes (SIGTERM), waiting buckets get one more try and
//! whatever still cannot be written is named in the log.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::chunk::Chunk;
use super::segment;
use super::store::StoreMetrics;
use crate::telemetry::Exposition;

/// `[rollup.write]` section: retrying failed segment writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriteConfig {
    /// First retry of a failed segment write after this many milliseconds; the delay
    /// doubles after each failure up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    /// Longest delay between two retries.
    pub retry_max_ms: u64,
    /// Closed buckets kept in memory while they cannot be written; past it the oldest
    /// waiting bucket is given up (logged, counted in
    /// `nagare_rollup_write_dropped_buckets_total`).
    pub max_pending_buckets: usize,
    /// Bytes of closed buckets kept in memory while they cannot be written (same rule).
    pub max_pending_bytes: usize,
}

impl Default for WriteConfig {
    fn default() -> Self {
        Self {
            retry_initial_ms: 1000,
            retry_max_ms: 30_000,
            max_pending_buckets: 100_000,
            max_pending_bytes: 1 << 30,
        }
    }
}

/// What the writer reports to health checks.
#[derive(Default)]
pub struct WriteStatus {
    /// The last write's error while buckets wait (None: writing works).
    error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl WriteStatus {
    /// Err(reason) while closed buckets cannot be written.
    pub fn health(&self) -> Result<(), String> {
        match lock(&self.error).as_ref() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

fn describe(c: &Chunk) -> String {
    let t = jiff::Timestamp::from_second(c.start)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| c.start.to_string());
    let bytes: u64 = c
        .rows
        .iter()
        .map(|r| r.src_bytes + r.dst_bytes)
        .sum::<u64>()
        + c.overflow.src_bytes
        + c.overflow.dst_bytes;
    format!(
        "{}s bucket {t} (shard {}, {} rows, {bytes} bytes of traffic)",
        c.res,
        c.shard,
        c.rows.len()
    )
}

struct Queue {
    q: VecDeque<Arc<Chunk>>,
    bytes: usize,
}

impl Queue {
    fn push(&mut self, c: Arc<Chunk>) {
        self.bytes += c.heap_bytes();
        self.q.push_back(c);
    }
    fn pop(&mut self) -> Option<Arc<Chunk>> {
        let c = self.q.pop_front()?;
        self.bytes = self.bytes.saturating_sub(c.heap_bytes());
        Some(c)
    }
    /// Appends waiting chunks in order until one fails.
    fn flush(&mut self, root: &std::path::Path, m: &StoreMetrics) -> Result<(), String> {
        while let Some(c) = self.q.front() {
            match segment::append(root, c) {
                Ok(n) => {
                    m.chunks_written.inc();
                    m.bytes_written.add(n);
                    self.pop();
                }
                Err(e) => {
                    m.write_errors.inc();
                    return Err(e.to_string());
                }
            }
        }
        Ok(())
    }
}

/// The writer thread's loop: runs until `rx` is closed and the queue is handled.
pub fn run(
    root: PathBuf,
    rx: crossbeam_channel::Receiver<Arc<Chunk>>,
    cfg: WriteConfig,
    m: Arc<StoreMetrics>,
    status: Arc<WriteStatus>,
) {
    use crossbeam_channel::{RecvTimeoutError, TryRecvError};
    let initial = Duration::from_millis(cfg.retry_initial_ms.max(1));
    let max = Duration::from_millis(cfg.retry_max_ms.max(cfg.retry_initial_ms).max(1));
    let mut delay = initial;
    let mut retry_at: Option<Instant> = None;
    let mut q = Queue {
        q: VecDeque::new(),
        bytes: 0,
    };
    let mut open = true;
    let mut failing_since: Option<Instant> = None;
    loop {
        // wait for work (or for the retry time)
        let first = if q.q.is_empty() {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else if let Some(t) = retry_at {
            rx.recv_deadline(t)
        } else {
            rx.try_recv().map_err(|e| match e {
                TryRecvError::Empty => RecvTimeoutError::Timeout,
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            })
        };
        match first {
            Ok(c) => q.push(c),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
        while open {
            match rx.try_recv() {
                Ok(c) => q.push(c),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        // bounded: give up the oldest waiting buckets past the limits
        while q.q.len() > cfg.max_pending_buckets.max(1)
            || (q.bytes > cfg.max_pending_bytes && q.q.len() > 1)
        {
            if let Some(c) = q.pop() {
                m.write_dropped_buckets.inc();
                tracing::error!(
                    lost = %describe(&c),
                    pending_buckets = q.q.len(),
                    pending_bytes = q.bytes,
                    "segment writes keep failing and rollup.write.max_pending_* is reached: a closed bucket is given up (not on disk; still queryable until the memory budget or retention drops it)"
                );
            }
        }
        if !open {
            // closing: one more try, then say what is lost
            if !q.q.is_empty() {
                match q.flush(&root, &m) {
                    Ok(()) => {
                        tracing::info!("the buckets waiting for disk were written on the way out")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, buckets = q.q.len(), "stopping with closed buckets that cannot be written: they are lost");
                        while let Some(c) = q.pop() {
                            m.write_dropped_buckets.inc();
                            tracing::error!(lost = %describe(&c), "bucket lost: not written to disk");
                        }
                    }
                }
            }
            m.write_pending_buckets.set(0);
            m.write_pending_bytes.set(0);
            return;
        }
        let due = retry_at.is_none_or(|t| Instant::now() >= t);
        if due && !q.q.is_empty() {
            match q.flush(&root, &m) {
                Ok(()) => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            after_s = since.elapsed().as_secs(),
                            "segment writes work again; every waiting bucket is on disk"
                        );
                    }
                    *lock(&status.error) = None;
                    delay = initial;
                    retry_at = None;
                }
                Err(e) => {
                    failing_since.get_or_insert_with(Instant::now);
                    let why = format!(
                        "cannot write rollup segments: {e}; {} closed buckets wait in memory, retrying in {:.1}s",
                        q.q.len(),
                        delay.as_secs_f64()
                    );
                    *lock(&status.error) = Some(why.clone());
                    tracing::error!("{why}");
                    retry_at = Some(Instant::now() + delay);
                    delay = (delay * 2).min(max);
                }
            }
        }
        m.write_pending_buckets.set(q.q.len() as u64);
        m.write_pending_bytes.set(q.bytes as u64);
    }
}

/// The store's write and storage metrics (`nagare_rollup_*`).
pub fn render_metrics(sm: &StoreMetrics, memory_bytes: usize, out: &mut Exposition) {
    out.counter(
        "nagare_rollup_chunks_written_total",
        "Closed buckets written to disk.",
        sm.chunks_written.get(),
    );
    out.counter(
        "nagare_rollup_written_bytes_total",
        "Bytes written to rollup segments.",
        sm.bytes_written.get(),
    );
    out.counter(
        "nagare_rollup_write_errors_total",
        "Failed segment writes (the buckets wait in memory and are retried).",
        sm.write_errors.get(),
    );
    out.gauge(
        "nagare_rollup_write_pending_buckets",
        "Closed buckets waiting to be written (more than a few: writes are failing).",
        sm.write_pending_buckets.get() as f64,
    );
    out.gauge(
        "nagare_rollup_write_pending_bytes",
        "Memory held by closed buckets waiting to be written.",
        sm.write_pending_bytes.get() as f64,
    );
    out.counter(
        "nagare_rollup_write_dropped_buckets_total",
        "Closed buckets never written: over rollup.write.max_pending_* or still failing at stop.",
        sm.write_dropped_buckets.get(),
    );
    out.counter(
        "nagare_rollup_corrupt_frames_total",
        "Damaged frames skipped when loading history.",
        sm.corrupt_frames.get(),
    );
    out.counter(
        "nagare_rollup_recovered_chunks_total",
        "Coarse buckets rebuilt after an unclean stop.",
        sm.recovered_chunks.get(),
    );
    out.counter(
        "nagare_rollup_shed_buckets_total",
        "Buckets dropped from memory to respect the memory budget.",
        sm.shed_buckets.get(),
    );
    out.counter(
        "nagare_rollup_shed_rows_total",
        "Rows dropped from memory to respect the memory budget.",
        sm.shed_rows.get(),
    );
    out.counter(
        "nagare_rollup_expired_buckets_total",
        "Buckets removed past their retention.",
        sm.expired_buckets.get(),
    );
    out.gauge(
        "nagare_rollup_memory_bytes",
        "Memory held by stored rows.",
        memory_bytes as f64,
    );
}
