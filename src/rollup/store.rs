//! The window store: every chunk of every resolution, closed or still open, readable by
//! queries without locks (an atomically swapped [`StoreView`]), persisted by a writer
//! thread, bounded by retention and a memory budget.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::chunk::Chunk;
use super::merge::merge_chunks;
use super::segment;
use super::writer::{WriteConfig, WriteStatus};
use super::{ResolutionConfig, RollupError};
use crate::telemetry::{Counter, Gauge};

/// The chunks of one resolution by bucket start.
#[derive(Debug, Clone, Default)]
pub struct ResIndex {
    pub res: u32,
    pub buckets: BTreeMap<i64, Vec<Arc<Chunk>>>,
}

/// What queries read: closed chunks per resolution and each shard's snapshot of its
/// open buckets. Immutable; replaced as a whole.
///
/// Coarse buckets are fed by the finest level: a finest bucket merges into them when it
/// closes (in the same swap that publishes it as closed). Until then its records are
/// only in the finest level's open chunks, which [`StoreView::chunks`] therefore returns
/// for coarse resolutions too.
#[derive(Debug, Clone, Default)]
pub struct StoreView {
    pub closed: Vec<Arc<ResIndex>>,
    pub open: Vec<Arc<Vec<Arc<Chunk>>>>,
    /// Bucket size of the finest resolution.
    pub finest: u32,
}

/// The start of the bucket of resolution `res` holding a chunk.
fn bucket_of(c: &Chunk, res: u32) -> i64 {
    let r = i64::from(res.max(1));
    c.start.div_euclid(r) * r
}

impl StoreView {
    /// Every chunk holding records of a bucket of resolution `res` that starts in
    /// `[from, to)`: that resolution's closed and open chunks, and for a coarse
    /// resolution the finest level's open chunks (not merged into it yet). Rows of a
    /// finest chunk keep their own start; their times fall inside the coarse bucket.
    pub fn chunks(&self, res: u32, from: i64, to: i64) -> Vec<&Arc<Chunk>> {
        let mut v = Vec::new();
        if let Some(idx) = self.closed.iter().find(|i| i.res == res) {
            for (_, cs) in idx.buckets.range(from..to) {
                v.extend(cs.iter());
            }
        }
        let pending = res != self.finest;
        for shard in &self.open {
            v.extend(shard.iter().filter(|c| {
                (c.res == res || (pending && c.res == self.finest)) && {
                    let b = bucket_of(c, res);
                    b >= from && b < to
                }
            }));
        }
        v
    }

    /// Earliest bucket start and latest bucket end held at a resolution.
    pub fn coverage(&self, res: u32) -> Option<(i64, i64)> {
        let mut lo = i64::MAX;
        let mut hi = i64::MIN;
        if let Some(idx) = self.closed.iter().find(|i| i.res == res) {
            if let Some((s, _)) = idx.buckets.first_key_value() {
                lo = lo.min(*s);
            }
            if let Some((s, _)) = idx.buckets.last_key_value() {
                hi = hi.max(*s + i64::from(res));
            }
        }
        for shard in &self.open {
            for c in shard
                .iter()
                .filter(|c| c.res == res || c.res == self.finest)
            {
                let b = bucket_of(c, res);
                lo = lo.min(b);
                hi = hi.max(b + i64::from(res));
            }
        }
        (lo <= hi).then_some((lo, hi))
    }

    pub fn rows(&self) -> usize {
        self.closed
            .iter()
            .flat_map(|i| i.buckets.values())
            .flatten()
            .map(|c| c.rows.len())
            .sum::<usize>()
            + self
                .open
                .iter()
                .flat_map(|s| s.iter())
                .map(|c| c.rows.len())
                .sum::<usize>()
    }
}

#[derive(Default)]
pub struct StoreMetrics {
    pub chunks_written: Counter,
    pub bytes_written: Counter,
    pub write_errors: Counter,
    pub corrupt_frames: Counter,
    pub shed_buckets: Counter,
    pub shed_rows: Counter,
    pub expired_buckets: Counter,
    pub recovered_chunks: Counter,
    pub memory_bytes: Gauge,
    pub write_pending_buckets: Gauge,
    pub write_pending_bytes: Gauge,
    pub write_dropped_buckets: Counter,
}

pub struct Store {
    root: Option<PathBuf>,
    resolutions: Vec<ResolutionConfig>,
    view: ArcSwap<StoreView>,
    write: Mutex<()>,
    seq: AtomicU64,
    closed_bytes: AtomicUsize,
    budget: usize,
    persist: Mutex<Option<crossbeam_channel::Sender<Arc<Chunk>>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    write_status: Arc<WriteStatus>,
    pub metrics: Arc<StoreMetrics>,
}

/// What loading the history found.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub chunks: usize,
    pub rows: usize,
    pub bad_frames: Vec<String>,
    pub recovered: usize,
    pub seconds: f64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Store {
    /// A store persisting under `root` (None: memory only, for tests and tools).
    pub fn new(
        root: Option<PathBuf>,
        resolutions: Vec<ResolutionConfig>,
        shards: usize,
        budget: usize,
    ) -> Arc<Self> {
        Self::with_write(root, resolutions, shards, budget, WriteConfig::default())
    }

    /// [`Store::new`] with the segment writer's retry settings.
    pub fn with_write(
        root: Option<PathBuf>,
        resolutions: Vec<ResolutionConfig>,
        shards: usize,
        budget: usize,
        write: WriteConfig,
    ) -> Arc<Self> {
        let view = StoreView {
            closed: resolutions
                .iter()
                .map(|r| {
                    Arc::new(ResIndex {
                        res: r.seconds,
                        buckets: BTreeMap::new(),
                    })
                })
                .collect(),
            open: (0..shards).map(|_| Arc::new(Vec::new())).collect(),
            finest: resolutions.first().map_or(60, |r| r.seconds),
        };
        let metrics = Arc::new(StoreMetrics::default());
        let write_status = Arc::new(WriteStatus::default());
        let store = Arc::new(Self {
            root: root.clone(),
            resolutions,
            view: ArcSwap::from_pointee(view),
            write: Mutex::new(()),
            seq: AtomicU64::new(1),
            closed_bytes: AtomicUsize::new(0),
            budget,
            persist: Mutex::new(None),
            writer: Mutex::new(None),
            write_status: write_status.clone(),
            metrics: metrics.clone(),
        });
        if let Some(root) = root {
            let (tx, rx) = crossbeam_channel::unbounded::<Arc<Chunk>>();
            let h = std::thread::Builder::new()
                .name("nagare-persist".into())
                .spawn(move || {
                    let span = tracing::info_span!("persist");
                    let _g = span.enter();
                    super::writer::run(root, rx, write, metrics, write_status);
                })
                .ok();
            *lock(&store.persist) = Some(tx);
            *lock(&store.writer) = h;
        }
        store
    }

    /// Err(reason) while closed buckets cannot be written to disk.
    pub fn health(&self) -> Result<(), String> {
        self.write_status.health()
    }

    pub fn resolutions(&self) -> &[ResolutionConfig] {
        &self.resolutions
    }

    pub fn view(&self) -> Arc<StoreView> {
        self.view.load_full()
    }

    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds closed chunks and replaces shard `shard`'s open snapshot, atomically for
    /// readers (no row is ever seen twice or missed). Closed chunks are persisted.
    pub fn commit(&self, shard: usize, closed: Vec<Arc<Chunk>>, open: Option<Vec<Arc<Chunk>>>) {
        if closed.is_empty() && open.is_none() {
            return;
        }
        let _g = lock(&self.write);
        let mut v = (*self.view.load_full()).clone();
        let mut added = 0usize;
        for c in &closed {
            if let Some(idx) = v.closed.iter_mut().find(|i| i.res == c.res) {
                Arc::make_mut(idx)
                    .buckets
                    .entry(c.start)
                    .or_default()
                    .push(c.clone());
                added += c.heap_bytes();
            }
        }
        if let Some(o) = open
            && let Some(slot) = v.open.get_mut(shard)
        {
            *slot = Arc::new(o);
        }
        self.view.store(Arc::new(v));
        drop(_g);
        self.closed_bytes.fetch_add(added, Ordering::Relaxed);
        if let Some(tx) = lock(&self.persist).as_ref() {
            for c in closed {
                let _ = tx.send(c);
            }
        }
        self.enforce_budget();
    }

    /// Memory held by closed chunks.
    pub fn memory_bytes(&self) -> usize {
        self.closed_bytes.load(Ordering::Relaxed)
    }

    /// Sheds the finest resolution's oldest buckets (then the next one's) while the
    /// store is over its memory budget. Shed data stays on disk.
    pub fn enforce_budget(&self) {
        if self.budget == 0 {
            return;
        }
        while self.closed_bytes.load(Ordering::Relaxed) > self.budget {
            let _g = lock(&self.write);
            let mut v = (*self.view.load_full()).clone();
            let mut freed = 0usize;
            let mut rows = 0usize;
            let mut what = None;
            // keep at least the newest bucket of each resolution
            for idx in v.closed.iter_mut() {
                if idx.buckets.len() > 1 {
                    let m = Arc::make_mut(idx);
                    if let Some((start, cs)) = m.buckets.pop_first() {
                        freed = cs.iter().map(|c| c.heap_bytes()).sum();
                        rows = cs.iter().map(|c| c.rows.len()).sum();
                        what = Some((m.res, start));
                    }
                    break;
                }
            }
            let Some((res, start)) = what else { break };
            self.view.store(Arc::new(v));
            drop(_g);
            self.closed_bytes.fetch_sub(
                freed.min(self.closed_bytes.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            self.metrics.shed_buckets.inc();
            self.metrics.shed_rows.add(rows as u64);
            let n = self.metrics.shed_buckets.get();
            if n == 1 || n.is_power_of_two() {
                tracing::warn!(
                    resolution_s = res,
                    bucket = start,
                    budget_bytes = self.budget,
                    shed_total = n,
                    "memory budget reached: dropped the oldest bucket of the finest resolution from memory (still on disk)"
                );
            }
        }
        self.metrics
            .memory_bytes
            .set(self.closed_bytes.load(Ordering::Relaxed) as u64);
    }

    /// Drops buckets older than each resolution's retention, from memory and disk.
    pub fn expire(&self, now_s: i64) {
        let _g = lock(&self.write);
        let mut v = (*self.view.load_full()).clone();
        let mut freed = 0usize;
        let mut n = 0u64;
        for (idx, rc) in v.closed.iter_mut().zip(&self.resolutions) {
            let cutoff = now_s - rc.retention_secs;
            if idx
                .buckets
                .first_key_value()
                .is_some_and(|(s, _)| *s < cutoff)
            {
                let m = Arc::make_mut(idx);
                let keep = m.buckets.split_off(&cutoff);
                for cs in m.buckets.values() {
                    freed += cs.iter().map(|c| c.heap_bytes()).sum::<usize>();
                    n += 1;
                }
                m.buckets = keep;
            }
            if let Some(root) = &self.root {
                for (start, path) in segment::list(root, rc.seconds) {
                    if start.saturating_add(segment::file_span(rc.seconds)) <= cutoff
                        && let Err(e) = std::fs::remove_file(&path)
                    {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove an expired segment");
                    }
                }
            }
        }
        self.view.store(Arc::new(v));
        drop(_g);
        self.closed_bytes.fetch_sub(
            freed.min(self.closed_bytes.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        self.metrics.expired_buckets.add(n);
        self.metrics
            .memory_bytes
            .set(self.closed_bytes.load(Ordering::Relaxed) as u64);
    }

    /// Loads the history within retention from disk, rebuilds coarse buckets that a
    /// crash left unfinished (from the finest resolution's chunks), and reports what was
    /// damaged. Call before any shard runs.
    pub fn load(
        &self,
        now_s: i64,
        max_rows_per_bucket: &[usize],
    ) -> Result<LoadReport, RollupError> {
        let t0 = std::time::Instant::now();
        let mut rep = LoadReport::default();
        let Some(root) = self.root.clone() else {
            return Ok(rep);
        };
        let mut max_seq = 0u64;
        let mut per_res: Vec<Vec<Chunk>> = Vec::new();
        for rc in &self.resolutions {
            let cutoff = now_s - rc.retention_secs;
            let mut chunks = Vec::new();
            for (start, path) in segment::list(&root, rc.seconds) {
                if start.saturating_add(segment::file_span(rc.seconds)) <= cutoff {
                    continue;
                }
                let bytes = match std::fs::read(&path) {
                    Ok(b) => b,
                    Err(e) => {
                        rep.bad_frames.push(format!("{}: {e}", path.display()));
                        continue;
                    }
                };
                let r = segment::read_frames(&bytes, |c| {
                    if c.start >= cutoff && c.res == rc.seconds {
                        max_seq = max_seq.max(c.seq);
                        chunks.push(c);
                    }
                });
                for (off, why) in r.bad_frames {
                    rep.bad_frames
                        .push(format!("{} at byte {off}: {why}", path.display()));
                }
                if r.truncated_tail {
                    // an interrupted append (kill -9 while writing): the tail is dropped
                    rep.bad_frames.push(format!(
                        "{}: truncated last frame at byte {} ignored",
                        path.display(),
                        r.truncated_at.unwrap_or(bytes.len())
                    ));
                }
            }
            per_res.push(chunks);
        }
        self.seq.store(max_seq.saturating_add(1), Ordering::Relaxed);
        // Coarse buckets a crash left open: rebuild from the finest chunks they miss.
        let mut recovered: Vec<Chunk> = Vec::new();
        if let Some((finest, coarse)) = per_res.split_first() {
            for (ci, chunks) in coarse.iter().enumerate() {
                let rc = &self.resolutions[ci + 1];
                let covered: BTreeSet<u64> = chunks
                    .iter()
                    .flat_map(|c| c.covers.iter().copied())
                    .collect();
                let cutoff = now_s - rc.retention_secs;
                let mut missing: BTreeMap<i64, Vec<&Chunk>> = BTreeMap::new();
                for f in finest {
                    if covered.contains(&f.seq) {
                        continue;
                    }
                    let b = f.start.div_euclid(i64::from(rc.seconds)) * i64::from(rc.seconds);
                    if b >= cutoff {
                        missing.entry(b).or_default().push(f);
                    }
                }
                for (b, fs) in missing {
                    let cap = max_rows_per_bucket
                        .get(ci + 1)
                        .copied()
                        .unwrap_or(usize::MAX);
                    let mut m = merge_chunks(rc.seconds, b, &fs, cap);
                    m.seq = self.next_seq();
                    m.covers = fs.iter().map(|c| c.seq).collect();
                    recovered.push(m);
                }
            }
        }
        rep.recovered = recovered.len();
        let recovered: Vec<Arc<Chunk>> = recovered.into_iter().map(Arc::new).collect();
        if let Some(tx) = lock(&self.persist).as_ref() {
            // written (and retried if need be) by the writer thread
            for c in &recovered {
                let _ = tx.send(c.clone());
            }
        }
        // Install.
        let _g = lock(&self.write);
        let mut v = (*self.view.load_full()).clone();
        let mut bytes = 0usize;
        for c in per_res.into_iter().flatten().map(Arc::new).chain(recovered) {
            rep.chunks += 1;
            rep.rows += c.rows.len();
            bytes += c.heap_bytes();
            if let Some(idx) = v.closed.iter_mut().find(|i| i.res == c.res) {
                Arc::make_mut(idx)
                    .buckets
                    .entry(c.start)
                    .or_default()
                    .push(c);
            }
        }
        self.view.store(Arc::new(v));
        drop(_g);
        self.closed_bytes.store(bytes, Ordering::Relaxed);
        self.metrics.corrupt_frames.add(rep.bad_frames.len() as u64);
        self.metrics.recovered_chunks.add(rep.recovered as u64);
        self.enforce_budget();
        rep.seconds = t0.elapsed().as_secs_f64();
        Ok(rep)
    }

    /// Waits until every committed chunk is on disk (shutdown).
    pub fn close(&self) {
        let tx = lock(&self.persist).take();
        drop(tx);
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
    }

    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// Rows per resolution (closed and open).
    pub fn rows_per_resolution(&self) -> HashMap<u32, usize> {
        let v = self.view();
        let mut m: HashMap<u32, usize> = HashMap::new();
        for idx in &v.closed {
            *m.entry(idx.res).or_default() += idx
                .buckets
                .values()
                .flatten()
                .map(|c| c.rows.len())
                .sum::<usize>();
        }
        for s in &v.open {
            for c in s.iter() {
                *m.entry(c.res).or_default() += c.rows.len();
            }
        }
        m
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}
