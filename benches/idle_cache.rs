//! What a thread's sleep costs the memory accesses after it, on this machine: random
//! reads of one cache line each from tables of several sizes, done in bursts with a
//! sleep between bursts (as a receive thread waits for an exporter's next burst), with
//! and without a software prefetch a few reads ahead, against the same reads without
//! sleeping.
//!
//! It explains the receive path's cost at low rates. nagare reads, for every record,
//! one line of a session table far larger than the caches. It also reads a row index,
//! and the tables of the enrichment and of the open bucket. Where a slept thread comes
//! back to caches that lost those tables, every record pays the machine's memory
//! latency for lines that stay cached when the thread keeps working.
//!
//! Every read adds a few dependent arithmetic steps, standing in for the work done per
//! record. The figure is nanoseconds per read, timed over the bursts only (not the
//! sleeps).
//!
//! Usage: cargo bench --bench idle_cache [-- --sleep US] [--burst N] [--reads N]

#[path = "common/flags.rs"]
mod flags;

use std::hint::black_box;
use std::time::{Duration, Instant};

struct Args {
    sleep_us: u64,
    burst: usize,
    reads: usize,
}

fn args() -> Args {
    let mut a = Args {
        sleep_us: 5_000,
        burst: 1_500,
        reads: 1 << 20,
    };
    for (name, n) in flags::numeric_flags() {
        match name.as_str() {
            "--sleep" => a.sleep_us = n,
            "--burst" => a.burst = (n as usize).max(1),
            "--reads" => a.reads = (n as usize).max(1),
            _ => {}
        }
    }
    a
}

/// One cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u64; 8]);

fn prefetch(p: &Line) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint and never faults
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>((p as *const Line).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Nanoseconds per read of `idx` from `table`, in bursts of `burst` reads with
/// `sleep` before each, prefetching `ahead` reads ahead (0: no prefetch).
fn run(table: &[Line], idx: &[u32], burst: usize, sleep: Duration, ahead: usize) -> f64 {
    let mut busy = Duration::ZERO;
    let mut sum = 0u64;
    for part in idx.chunks(burst) {
        if !sleep.is_zero() {
            std::thread::sleep(sleep);
        }
        let t0 = Instant::now();
        for (i, &at) in part.iter().enumerate() {
            if ahead > 0
                && let Some(&next) = part.get(i + ahead)
                && let Some(l) = table.get(next as usize)
            {
                prefetch(l);
            }
            if let Some(l) = table.get(at as usize) {
                sum = sum.wrapping_add(black_box(l.0[0]));
            }
            // a chain the compiler cannot fold (each step through memory): about as
            // long as the work around one record's lookup
            for k in 0..16u64 {
                sum = black_box(sum).wrapping_mul(31).wrapping_add(k);
            }
        }
        busy += t0.elapsed();
    }
    black_box(sum);
    busy.as_nanos() as f64 / idx.len() as f64
}

fn main() {
    let a = args();
    let sleep = Duration::from_micros(a.sleep_us);
    println!(
        "random one-line reads, bursts of {} with {} µs of sleep before each, against no sleep; ns per read",
        a.burst, a.sleep_us
    );
    println!(
        "{:>10} {:>12} {:>12} {:>14} {:>14}",
        "table", "no sleep", "slept", "no sleep, pf 8", "slept, pf 8"
    );
    for kib in [4usize, 64, 1024, 16 * 1024] {
        let lines = kib * 1024 / 64;
        let table = vec![Line([1; 8]); lines];
        // xorshift: the same indexes for every column
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let idx: Vec<u32> = (0..a.reads)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % lines as u64) as u32
            })
            .collect();
        // a first pass faults the table in
        run(&table, &idx, a.reads, Duration::ZERO, 0);
        let cols = [
            run(&table, &idx, a.burst, Duration::ZERO, 0),
            run(&table, &idx, a.burst, sleep, 0),
            run(&table, &idx, a.burst, Duration::ZERO, 8),
            run(&table, &idx, a.burst, sleep, 8),
        ];
        println!(
            "{:>7} KiB {:>12.1} {:>12.1} {:>14.1} {:>14.1}",
            kib, cols[0], cols[1], cols[2], cols[3]
        );
    }
}
