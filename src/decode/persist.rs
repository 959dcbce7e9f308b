//! Persistence of the decoder's state (templates and exporter options) in
//! `<state_dir>/decoder.json`, bounded in size and in write rate:
//!
//! - written only when something changed (a template learned, replaced, withdrawn or
//!   expired; exporter options changed), and at most once every
//!   [`DecoderStateConfig::min_interval_secs`] (the first change after start is written
//!   at once); identical contents are never written twice; SIGTERM writes what is left;
//! - never larger than [`DecoderStateConfig::max_bytes`]: past it the templates seen
//!   longest ago (then the exporters' options that do not fit) are left out, counted;
//! - written atomically (temporary file, fsync, rename): a failed write (a full disk)
//!   removes its temporary file and leaves the last good file in place, and is retried;
//! - a file that cannot be parsed is set aside as `decoder.json.corrupt` (logged,
//!   counted) and the decoder starts with no templates.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{Decoder, PersistedDecodeState};
use crate::telemetry::{Counter, Exposition, Gauge};
use crate::util::{tmp_path, write_atomic};

/// Name of the decoder state file in the state directory.
pub const DECODER_STATE_FILE: &str = "decoder.json";
/// Format version written (and the only one read).
const VERSION: u32 = 1;
/// Even without a change, the file is rewritten this often (if its contents differ),
/// so that the templates' last-seen times on disk stay within their TTL.
const REFRESH_SECS: i64 = 86_400;

/// `[decoder_state]` section: how `decoder.json` is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecoderStateConfig {
    /// At most one write of decoder.json per this many seconds (and only after a
    /// change; the first change after start is written at once, SIGTERM writes the
    /// rest).
    pub min_interval_secs: u64,
    /// Largest decoder.json written, in bytes. Past it the templates seen longest ago,
    /// then the exporter options that do not fit, are left out (counted in
    /// `nagare_decode_state_omitted_items`).
    pub max_bytes: usize,
}

impl Default for DecoderStateConfig {
    fn default() -> Self {
        Self {
            min_interval_secs: 30,
            max_bytes: 32 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serialize the decoder state: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// What loading `decoder.json` found.
#[derive(Debug, PartialEq, Eq)]
pub enum LoadOutcome {
    /// No file (first start).
    Missing,
    Restored {
        templates: usize,
        exporters: usize,
    },
    /// Unparsable: renamed to `set_aside` (None: the rename failed too).
    Corrupt {
        set_aside: Option<PathBuf>,
    },
    /// The file exists but could not be read.
    Unreadable,
}

/// `nagare_decode_state_*` metrics.
#[derive(Default)]
pub struct StateMetrics {
    pub writes: Counter,
    pub written_bytes: Counter,
    pub write_errors: Counter,
    pub unchanged: Counter,
    pub corrupt: Counter,
    pub file_bytes: Gauge,
    pub omitted: Gauge,
}

#[derive(Default)]
struct Inner {
    /// A change not written yet.
    pending: bool,
    /// When the last write was attempted (ms).
    last_attempt_ms: Option<i64>,
    /// Hash of the last bytes written.
    last_hash: Option<u64>,
    /// Why the last write failed (cleared by a successful one).
    error: Option<String>,
}

/// Writes and reads `decoder.json` for one decoder.
pub struct DecoderStateFile {
    path: PathBuf,
    cfg: DecoderStateConfig,
    inner: Mutex<Inner>,
    pub metrics: StateMetrics,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Serializes a state in at most `max_bytes`: newest templates first, then exporters,
/// each left out when it does not fit. Returns the bytes and how many items were left
/// out.
pub fn encode_capped(
    state: &PersistedDecodeState,
    max_bytes: usize,
) -> Result<(Vec<u8>, usize), PersistError> {
    let head = format!("{{\"version\":{},\"templates\":[", state.version);
    let mid = "],\"exporters\":[";
    let tail = "]}";
    let mut budget = max_bytes.saturating_sub(head.len() + mid.len() + tail.len());
    let mut omitted = 0usize;
    // newest first; among equals, by key (deterministic output)
    let mut order: Vec<&super::template::PersistedTemplate> = state.templates.iter().collect();
    order.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.key.cmp(&b.key)));
    let mut templates: Vec<Vec<u8>> = Vec::with_capacity(order.len());
    for (i, t) in order.iter().enumerate() {
        let b = serde_json::to_vec(t)?;
        let need = b.len() + usize::from(!templates.is_empty());
        if need > budget {
            // the rest were seen even longer ago
            omitted += order.len() - i;
            break;
        }
        budget -= need;
        templates.push(b);
    }
    let mut exporters: Vec<Vec<u8>> = Vec::with_capacity(state.exporters.len());
    for e in &state.exporters {
        let b = serde_json::to_vec(e)?;
        let need = b.len() + usize::from(!exporters.is_empty());
        if need > budget {
            omitted += 1;
            continue;
        }
        budget -= need;
        exporters.push(b);
    }
    let mut out = Vec::with_capacity(max_bytes.saturating_sub(budget));
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&templates.join(&b","[..]));
    out.extend_from_slice(mid.as_bytes());
    out.extend_from_slice(&exporters.join(&b","[..]));
    out.extend_from_slice(tail.as_bytes());
    Ok((out, omitted))
}

fn hash(b: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

impl DecoderStateFile {
    pub fn new(state_dir: &Path, cfg: DecoderStateConfig) -> Self {
        Self {
            path: state_dir.join(DECODER_STATE_FILE),
            cfg,
            inner: Mutex::new(Inner::default()),
            metrics: StateMetrics::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where a corrupt file is set aside.
    pub fn corrupt_path(&self) -> PathBuf {
        let mut s = self.path.as_os_str().to_owned();
        s.push(".corrupt");
        PathBuf::from(s)
    }

    /// Restores the saved state into `decoder` (call before any datagram). A
    /// temporary file left by an interrupted write is removed; a corrupt file is set
    /// aside.
    pub fn load(&self, decoder: &Decoder, now_ms: i64) -> LoadOutcome {
        let tmp = tmp_path(&self.path);
        if tmp.exists() {
            match std::fs::remove_file(&tmp) {
                Ok(()) => {
                    tracing::warn!(path = %tmp.display(), "removed the temporary file of an interrupted decoder state write")
                }
                Err(e) => {
                    tracing::warn!(path = %tmp.display(), error = %e, "cannot remove a stale temporary file")
                }
            }
        }
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return LoadOutcome::Missing,
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot read saved templates; starting without them");
                return LoadOutcome::Unreadable;
            }
        };
        let parsed = serde_json::from_slice::<PersistedDecodeState>(&text)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                if s.version == VERSION {
                    Ok(s)
                } else {
                    Err(format!("unknown format version {}", s.version))
                }
            });
        match parsed {
            Ok(state) => {
                let (templates, exporters) = decoder.restore(state, now_ms);
                tracing::info!(
                    templates,
                    exporters,
                    "restored templates and exporter options"
                );
                self.metrics.file_bytes.set(text.len() as u64);
                LoadOutcome::Restored {
                    templates,
                    exporters,
                }
            }
            Err(why) => {
                self.metrics.corrupt.inc();
                let aside = self.corrupt_path();
                match std::fs::rename(&self.path, &aside) {
                    Ok(()) => {
                        tracing::error!(path = %self.path.display(), set_aside = %aside.display(), error = %why,
                            "saved templates are corrupt: file set aside, starting without templates");
                        LoadOutcome::Corrupt {
                            set_aside: Some(aside),
                        }
                    }
                    Err(e) => {
                        tracing::error!(path = %self.path.display(), error = %why, rename_error = %e,
                            "saved templates are corrupt and cannot be set aside; starting without templates");
                        LoadOutcome::Corrupt { set_aside: None }
                    }
                }
            }
        }
    }

    /// Called about once a second: writes the state if it changed and the last write
    /// was at least `min_interval_secs` ago. Returns whether a write happened.
    pub fn tick(&self, decoder: &Decoder, now_ms: i64) -> bool {
        let mut g = lock(&self.inner);
        if decoder.take_dirty() {
            g.pending = true;
        }
        let since = g.last_attempt_ms.map(|t| now_ms.saturating_sub(t));
        let interval_ms = i64::try_from(self.cfg.min_interval_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        let refresh = since.is_some_and(|s| s >= REFRESH_SECS * 1000);
        if !(g.pending || refresh) || since.is_some_and(|s| s < interval_ms) {
            return false;
        }
        self.write_locked(&mut g, decoder, now_ms)
    }

    /// Writes the state now unless these very bytes are on disk already (shutdown).
    pub fn save_now(&self, decoder: &Decoder, now_ms: i64) -> bool {
        let mut g = lock(&self.inner);
        decoder.take_dirty();
        self.write_locked(&mut g, decoder, now_ms)
    }

    fn write_locked(&self, g: &mut Inner, decoder: &Decoder, now_ms: i64) -> bool {
        g.last_attempt_ms = Some(now_ms);
        let (bytes, omitted) = match encode_capped(&decoder.snapshot(), self.cfg.max_bytes) {
            Ok(x) => x,
            Err(e) => {
                self.metrics.write_errors.inc();
                g.error = Some(e.to_string());
                tracing::error!(error = %e, "cannot serialize the decoder state");
                return false;
            }
        };
        let h = hash(&bytes);
        if g.last_hash == Some(h) {
            self.metrics.unchanged.inc();
            g.pending = false;
            return false;
        }
        match write_atomic(&self.path, &bytes) {
            Ok(()) => {
                self.metrics.writes.inc();
                self.metrics.written_bytes.add(bytes.len() as u64);
                self.metrics.file_bytes.set(bytes.len() as u64);
                self.metrics.omitted.set(omitted as u64);
                if omitted > 0 {
                    tracing::warn!(
                        omitted,
                        max_bytes = self.cfg.max_bytes,
                        "decoder state larger than decoder_state.max_bytes: the templates seen longest ago were left out of the file"
                    );
                }
                if g.error.take().is_some() {
                    tracing::info!(path = %self.path.display(), "decoder state written again");
                }
                g.last_hash = Some(h);
                g.pending = false;
                true
            }
            Err(e) => {
                self.metrics.write_errors.inc();
                let why = format!("cannot save decoder state to {}: {e}", self.path.display());
                g.error = Some(why.clone());
                g.pending = true;
                tracing::error!("{why} (the last good file is kept; retrying)");
                false
            }
        }
    }

    /// Err(reason) while the last write failed.
    pub fn health(&self) -> Result<(), String> {
        match &lock(&self.inner).error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    pub fn render_metrics(&self, out: &mut Exposition) {
        let m = &self.metrics;
        out.counter(
            "nagare_decode_state_writes_total",
            "Writes of decoder.json (templates and exporter options).",
            m.writes.get(),
        );
        out.counter(
            "nagare_decode_state_written_bytes_total",
            "Bytes written to decoder.json.",
            m.written_bytes.get(),
        );
        out.counter(
            "nagare_decode_state_write_errors_total",
            "Failed writes of decoder.json (the last good file is kept; retried).",
            m.write_errors.get(),
        );
        out.counter(
            "nagare_decode_state_unchanged_total",
            "Writes of decoder.json skipped because the file already holds the same state.",
            m.unchanged.get(),
        );
        out.counter(
            "nagare_decode_state_corrupt_total",
            "Corrupt decoder.json files set aside as decoder.json.corrupt at start.",
            m.corrupt.get(),
        );
        out.gauge(
            "nagare_decode_state_file_bytes",
            "Size of decoder.json as last written or read.",
            m.file_bytes.get() as f64,
        );
        out.gauge(
            "nagare_decode_state_omitted_items",
            "Templates and exporters left out of the last decoder.json write by decoder_state.max_bytes.",
            m.omitted.get() as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::template::{FieldSpec, PersistedTemplate, TemplateKey, TemplateKind};
    use super::*;
    use crate::decode::DecodeConfig;

    fn tpl(id: u16, fields: u16, last_seen: i64) -> PersistedTemplate {
        PersistedTemplate {
            key: TemplateKey {
                exporter: "192.0.2.7".parse().unwrap(),
                version: 10,
                domain: 1,
                template_id: id,
            },
            kind: TemplateKind::Data,
            fields: (0..fields)
                .map(|i| FieldSpec {
                    id: i + 1,
                    pen: 0,
                    len: 4,
                    scope: false,
                })
                .collect(),
            last_seen,
        }
    }

    fn state(n: u16) -> PersistedDecodeState {
        PersistedDecodeState {
            version: VERSION,
            templates: (0..n)
                .map(|i| tpl(256 + i, 5, 1_764_000_000 + i64::from(i)))
                .collect(),
            exporters: vec![],
        }
    }

    #[test]
    fn capped_encoding_keeps_the_newest_templates_and_parses() {
        let s = state(50);
        let (full, omitted) = encode_capped(&s, usize::MAX).unwrap();
        assert_eq!(omitted, 0);
        let back: PersistedDecodeState = serde_json::from_slice(&full).unwrap();
        assert_eq!(back.templates.len(), 50);
        // each template serialized alone, plus a comma between two
        let one = serde_json::to_vec(&s.templates[0]).unwrap().len();
        let cap = full.len() - 20 * (one + 1);
        let (capped, omitted) = encode_capped(&s, cap).unwrap();
        assert!(capped.len() <= cap, "{} > {cap}", capped.len());
        assert_eq!(omitted, 20);
        let back: PersistedDecodeState = serde_json::from_slice(&capped).unwrap();
        let mut ids: Vec<u16> = back.templates.iter().map(|t| t.key.template_id).collect();
        ids.sort_unstable();
        // the 30 seen last: ids 276..=305
        assert_eq!(ids, (276..306).collect::<Vec<u16>>());
    }

    #[test]
    fn writes_only_changes_and_at_most_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let f = DecoderStateFile::new(
            dir.path(),
            DecoderStateConfig {
                min_interval_secs: 10,
                max_bytes: 1 << 20,
            },
        );
        let d = Decoder::new(DecodeConfig::default());
        let now = 1_764_000_000_000i64;
        assert!(!f.tick(&d, now), "nothing changed: nothing written");
        d.restore(state(3), now);
        d.templates.remove(&tpl(256, 5, 0).key); // a change
        assert!(f.tick(&d, now), "the first change is written at once");
        d.templates.remove(&tpl(257, 5, 0).key);
        for s in 1..10 {
            assert!(
                !f.tick(&d, now + s * 1000),
                "second {s}: within the interval"
            );
        }
        assert!(
            f.tick(&d, now + 10_000),
            "the change is written after the interval"
        );
        for s in 11..40 {
            assert!(!f.tick(&d, now + s * 1000), "second {s}: no change");
        }
        assert_eq!(f.metrics.writes.get(), 2);
        // shutdown with the same contents on disk: no write
        assert!(!f.save_now(&d, now + 41_000));
        assert_eq!(f.metrics.writes.get(), 2);
        // what is on disk restores
        let d2 = Decoder::new(DecodeConfig::default());
        assert_eq!(
            f.load(&d2, now + 42_000),
            LoadOutcome::Restored {
                templates: 1,
                exporters: 0
            }
        );
    }
}
