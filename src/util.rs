//! Small helpers shared by every stage (imported by any module, importing none).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

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
}
