//! The query gate and the result budget.
//!
//! At most `query.max_concurrent` queries run at once and at most `query.max_queued`
//! wait for their turn; a query that finds the queue full is refused at once ("busy")
//! instead of waiting without bound. A running query holds a [`Slot`], which gives
//! its place back when dropped, also when the query panics.
//!
//! A query's result is serialized inside its slot, into a [`BudgetWriter`] that
//! refuses to grow past `query.max_result_bytes`: memory is bounded by
//! `max_concurrent` results, however many clients ask at once.

use std::sync::{Condvar, Mutex, MutexGuard};

/// Running and waiting queries.
#[derive(Debug, Default)]
struct Counts {
    running: usize,
    waiting: usize,
}

pub struct Gate {
    max_running: usize,
    max_waiting: usize,
    counts: Mutex<Counts>,
    cv: Condvar,
}

/// The right to run one query; dropping it (also while unwinding) lets the next in.
#[must_use]
pub struct Slot<'a> {
    gate: &'a Gate,
}

/// The queue was full: the query was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl Gate {
    /// `max_running` is at least 1; `max_waiting` may be 0 (no queue).
    pub fn new(max_running: usize, max_waiting: usize) -> Self {
        Self {
            max_running: max_running.max(1),
            max_waiting,
            counts: Mutex::new(Counts::default()),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        match self.counts.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// A slot now, or after waiting in the queue; `Busy` when the queue is full.
    /// Queries that arrive while others wait queue behind them.
    pub fn acquire(&self) -> Result<Slot<'_>, Busy> {
        let mut c = self.lock();
        if c.running < self.max_running && c.waiting == 0 {
            c.running += 1;
            return Ok(Slot { gate: self });
        }
        if c.waiting >= self.max_waiting {
            return Err(Busy);
        }
        c.waiting += 1;
        while c.running >= self.max_running {
            c = match self.cv.wait(c) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        }
        c.waiting -= 1;
        c.running += 1;
        Ok(Slot { gate: self })
    }

    /// Queries running now.
    pub fn running(&self) -> usize {
        self.lock().running
    }

    /// Queries waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.lock().waiting
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut c = self.gate.lock();
        c.running = c.running.saturating_sub(1);
        drop(c);
        self.gate.cv.notify_one();
    }
}

/// A byte buffer that refuses writes past its budget (nothing past it is allocated).
pub struct BudgetWriter {
    buf: Vec<u8>,
    budget: usize,
    over: bool,
}

impl BudgetWriter {
    pub fn new(budget: usize) -> Self {
        Self {
            buf: Vec::new(),
            budget,
            over: false,
        }
    }

    /// Whether a write was refused.
    pub fn over_budget(&self) -> bool {
        self.over
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    /// The buffer's capacity (what it holds in memory).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

impl std::io::Write for BudgetWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let want = self.buf.len().saturating_add(data.len());
        if want > self.budget {
            self.over = true;
            return Err(std::io::Error::other("the result is over its byte budget"));
        }
        if want > self.buf.capacity() {
            // grow geometrically, but never past the budget
            let cap = self.buf.capacity().saturating_mul(2).max(want).max(4096);
            self.buf
                .reserve_exact(cap.min(self.budget) - self.buf.len());
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::mpsc;

    #[test]
    fn full_queue_is_busy_and_a_released_slot_admits_the_next() {
        let g = Arc::new(Gate::new(1, 1));
        let first = g.acquire().expect("a free slot");
        // one waiter fills the queue
        let (tx, rx) = mpsc::channel();
        let g2 = g.clone();
        let waiter = std::thread::spawn(move || {
            let s = g2.acquire();
            let ok = s.is_ok();
            drop(s);
            tx.send(ok).expect("send");
        });
        while g.waiting() == 0 {
            std::thread::yield_now();
        }
        assert_eq!(g.acquire().err(), Some(Busy), "the queue of 1 is full");
        drop(first);
        assert!(
            rx.recv().expect("waiter answers"),
            "the waiter got the slot"
        );
        waiter.join().expect("join");
        assert_eq!((g.running(), g.waiting()), (0, 0));
    }

    #[test]
    fn no_queue_means_busy_at_once() {
        let g = Gate::new(2, 0);
        let a = g.acquire().expect("slot 1");
        let b = g.acquire().expect("slot 2");
        assert_eq!(g.acquire().err(), Some(Busy));
        drop((a, b));
        assert!(g.acquire().is_ok());
    }

    #[test]
    fn a_panicking_holder_gives_its_slot_back() {
        let g = Arc::new(Gate::new(1, 0));
        for _ in 0..3 {
            let g2 = g.clone();
            let r = std::thread::spawn(move || {
                let _slot = g2.acquire().expect("free");
                panic!("query bug");
            })
            .join();
            assert!(r.is_err(), "the thread panicked");
            assert_eq!(g.running(), 0, "the slot came back");
        }
        assert!(g.acquire().is_ok());
    }

    #[test]
    fn budget_writer_refuses_past_its_budget_without_allocating_past_it() {
        let mut w = BudgetWriter::new(10_000);
        let chunk = [b'x'; 300];
        let mut written = 0;
        while let Ok(n) = w.write(&chunk) {
            written += n;
        }
        // 33 chunks of 300 fit in 10 000 bytes, the 34th does not
        assert_eq!(written, 33 * 300);
        assert!(w.over_budget());
        assert!(w.capacity() <= 10_000, "capacity {}", w.capacity());
        assert_eq!(w.into_inner().len(), 9_900);
    }

    #[test]
    fn serializing_a_large_value_stops_at_the_budget() {
        let rows: Vec<Vec<String>> = (0..100_000).map(|i| vec![format!("row {i}")]).collect();
        let mut w = BudgetWriter::new(64 * 1024);
        assert!(serde_json::to_writer(&mut w, &rows).is_err());
        assert!(w.over_budget());
        assert!(w.capacity() <= 64 * 1024);
        // and one under the budget passes whole
        let mut w = BudgetWriter::new(64 * 1024);
        serde_json::to_writer(&mut w, &rows[..10]).expect("fits");
        let expected = serde_json::to_vec(&rows[..10]).expect("json");
        assert_eq!(w.into_inner(), expected);
    }

    // --- the gate as queries use it ---

    use crate::query::{Context, ErrorKind, PANIC_QUERY, QueryConfig, run, run_json};

    /// A context over a store holding one closed minute of `n` flows; returns it and
    /// a `now` (Unix seconds) just after that minute.
    fn ctx_with_flows(cfg: QueryConfig, n: u32) -> (Context, i64) {
        use crate::enrich::fold::FoldLimits;
        use crate::enrich::geoip::GeoTable;
        use crate::enrich::inventory::Inventory;
        use crate::enrich::{Enricher, Tables};
        use crate::model::{ExporterId, FlowRecord};
        use crate::rollup::shard::Shard;
        use crate::rollup::store::Store;
        use crate::rollup::{FlowIn, RollupConfig};
        let t0 = 1_800_000_000_000i64;
        let res = RollupConfig::default().resolutions().expect("resolutions");
        let store = Store::new(None, res, 1, 0);
        let mut sh = Shard::detached(
            0,
            store.clone(),
            FoldLimits {
                max_sessions: 10_000,
                idle_ms: 300_000,
            },
        );
        let exporter = ExporterId::new("192.0.2.1".parse().expect("ip"), 0);
        let flows: Vec<FlowIn> = (0..n)
            .map(|i| {
                let mut r = FlowRecord::empty(exporter, 10);
                r.src = std::net::Ipv4Addr::from(0x0a00_0000 + i).into();
                r.dst = std::net::Ipv4Addr::new(198, 18, 0, 1).into();
                (r.src_port, r.dst_port, r.protocol) = (40_000, 443, 6);
                (r.bytes, r.packets) = (100, 1);
                (r.start_ms, r.end_ms) = (t0 + 1_000, t0 + 2_000);
                FlowIn::from_record(&r)
            })
            .collect();
        sh.ingest(&flows, &Tables::default(), &GeoTable::default(), t0 + 5_000);
        sh.tick_and_commit(t0 + 3_600_000 * 2);
        sh.commit_final();
        let enr = Arc::new(Enricher::from_parts(
            Inventory::default(),
            GeoTable::default(),
        ));
        let ctx = Context::new(store, enr, Arc::new(|_, _| None), cfg);
        (ctx, t0 / 1000 + 3_600)
    }

    const LISTING: &str = "flows in last 2 hours";

    #[test]
    fn a_panicking_query_is_an_internal_error_and_its_slot_comes_back() {
        let cfg = QueryConfig {
            max_concurrent: 1,
            max_queued: 0,
            ..QueryConfig::default()
        };
        let (ctx, now) = ctx_with_flows(cfg, 3);
        for _ in 0..3 {
            let e = run_json(&ctx, PANIC_QUERY, now).expect_err("panics");
            assert_eq!(e.kind, ErrorKind::Internal);
            assert_eq!(ctx.gate().running(), 0);
        }
        // with one slot and no queue, a leaked slot would make this busy
        let r = run(&ctx, LISTING, now).expect("runs after the panics");
        assert_eq!(r.rows.len(), 3);
        assert_eq!(ctx.metrics.internal_errors.get(), 3);
    }

    #[test]
    fn a_full_queue_answers_busy() {
        let cfg = QueryConfig {
            max_concurrent: 1,
            max_queued: 0,
            ..QueryConfig::default()
        };
        let (ctx, now) = ctx_with_flows(cfg, 1);
        let held = ctx.gate().acquire().expect("free");
        let e = run_json(&ctx, LISTING, now).expect_err("busy");
        assert_eq!(e.kind, ErrorKind::Busy);
        assert!(e.message.starts_with("busy"), "{}", e.message);
        drop(held);
        assert!(run_json(&ctx, LISTING, now).is_ok());
    }

    #[test]
    fn the_time_limit_counts_from_when_the_query_starts_running() {
        let cfg = QueryConfig {
            max_concurrent: 1,
            max_queued: 1,
            timeout_ms: 1_000,
            ..QueryConfig::default()
        };
        let (ctx, now) = ctx_with_flows(cfg, 5);
        let ctx = Arc::new(ctx);
        let held = ctx.gate().acquire().expect("free");
        let c2 = ctx.clone();
        let queued = std::thread::spawn(move || run_json(&c2, LISTING, now));
        while ctx.gate().waiting() == 0 {
            std::thread::yield_now();
        }
        // the queued query waits longer than its whole time limit
        std::thread::sleep(std::time::Duration::from_millis(1_500));
        drop(held);
        let r = queued.join().expect("join");
        let bytes = r.unwrap_or_else(|e| panic!("{}", e.message));
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(v["rows"].as_array().map(Vec::len), Some(5));
    }

    #[test]
    fn a_result_over_its_byte_budget_is_a_limit_error() {
        let (ctx, now) = ctx_with_flows(QueryConfig::default(), 50);
        let whole = run_json(&ctx, LISTING, now).expect("fits the default budget");
        // (took_ms varies by a few characters between runs)
        let cfg = QueryConfig {
            max_result_bytes: whole.len() - 32,
            ..QueryConfig::default()
        };
        let (small, now) = ctx_with_flows(cfg, 50);
        let e = run_json(&small, LISTING, now).expect_err("over the budget");
        assert_eq!(e.kind, ErrorKind::Limit);
        let expected = format!("larger than {} bytes", whole.len() - 32);
        assert!(e.message.contains(&expected), "{}", e.message);
        let cfg = QueryConfig {
            max_result_bytes: whole.len() + 32,
            ..QueryConfig::default()
        };
        let (exact, now) = ctx_with_flows(cfg, 50);
        assert!(run_json(&exact, LISTING, now).is_ok());
    }
}
