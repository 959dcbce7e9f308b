//! Small helpers shared by every stage (imported by any module, importing none): the
//! clock, a rate limiter for log lines, atomic file writes, the line and column of a
//! text offset, and durations in the configuration.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// The wall clock in Unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Lets a message through at most once per period and counts what it held back: for
/// logs about events an attacker or a fault can repeat thousands of times a second.
pub struct EveryFew {
    period_ms: i64,
    /// When the last message went through (Unix ms; `i64::MIN` before the first).
    last_ms: AtomicI64,
    held: AtomicU64,
}

impl EveryFew {
    pub const fn new(period_ms: i64) -> Self {
        Self {
            period_ms,
            last_ms: AtomicI64::new(i64::MIN),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a message may go out now, `n` being how many were held back
    /// since the last one; `None` (and one more held back) otherwise.
    pub fn check(&self, now_ms: i64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= self.period_ms
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// The temporary file [`write_atomic`] writes before the rename.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Writes `path` atomically: `fill` writes a temporary file, which is synced and
/// renamed over `path`. On any failure the temporary file is removed and `path` is
/// left as it was.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        fill(&mut f)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    match res {
        Ok(()) => {
            // the rename itself is durable once the directory is synced
            if let Some(dir) = path.parent()
                && let Ok(d) = std::fs::File::open(dir)
            {
                let _ = d.sync_all();
            }
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename; the temporary
/// file is removed if anything fails; see [`write_atomic_with`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Parses "90s", "5m", "2h", "14d", "1w" (or a plain number of seconds).
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 90s, 5m, 2h, 14d"))?;
    let mult = match unit.trim() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(format!("'{s}': unknown unit (use s, m, h, d or w)")),
    };
    n.checked_mul(mult)
        .filter(|&secs| secs <= MAX_DURATION_S)
        .ok_or_else(|| format!("'{s}' is longer than 100 years"))
}

/// The longest duration the configuration accepts (100 years, in seconds): every time
/// computed from one stays far from overflow.
pub const MAX_DURATION_S: i64 = 100 * 366 * 86_400;

/// A duration in the config: "2d" or a number of seconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum DurationSpec {
    Secs(i64),
    Text(String),
}

impl DurationSpec {
    pub fn secs(&self) -> Result<i64, String> {
        match self {
            DurationSpec::Secs(s) if (0..=MAX_DURATION_S).contains(s) => Ok(*s),
            DurationSpec::Secs(s) => Err(format!(
                "{s} seconds is not a duration between 0 and 100 years"
            )),
            DurationSpec::Text(t) => parse_duration(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_one_through_per_period_and_counts_the_rest() {
        let l = EveryFew::new(10_000);
        assert_eq!(l.check(1_000), Some(0));
        for t in 1_001..1_101 {
            assert_eq!(l.check(t), None);
        }
        assert_eq!(l.check(10_999), None);
        assert_eq!(l.check(11_000), Some(101));
        assert_eq!(l.check(11_001), None);
    }

    #[test]
    fn a_failed_write_removes_its_temporary_file_and_keeps_the_last_good_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decoder.json");
        write_atomic(&path, b"good").unwrap();
        let e = write_atomic_with(&path, |f| {
            f.write_all(&[b'x'; 4096])?;
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        })
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert!(!tmp_path(&path).exists(), "temporary file left behind");
        assert_eq!(std::fs::read(&path).unwrap(), b"good");
    }

    #[test]
    fn line_col_is_one_based_in_characters() {
        assert_eq!(line_col("abc", 0), (1, 1));
        assert_eq!(line_col("ab\ncdé\nf", 7), (2, 4));
        assert_eq!(line_col("ab\ncd", 99), (2, 3));
    }
}
