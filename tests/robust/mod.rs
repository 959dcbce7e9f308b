//! Truncation and mutation of datagrams, shared by the robustness tests.
#![allow(dead_code)]

use nagare::decode::{DecodeConfig, DecodeMode, Decoder};

#[derive(Debug, Default)]
pub struct Stats {
    pub variants: usize,
    pub errors_returned: usize,
    pub records: usize,
}

/// A small deterministic PRNG (xorshift) so failures reproduce.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Every prefix length, then bit flips, byte overwrites with 0x00/0xff and length-field
/// corruptions at random positions. Each variant goes through a decoder that has seen
/// the intact corpus (so templates are known and data paths are reached) and through a
/// fresh one, in both modes. Asserts: no panic, and an error status is always counted.
pub fn hammer(corpus: &[Vec<u8>], seed: u64) -> Stats {
    let mut rng = Rng::new(seed);
    let mut stats = Stats::default();
    let src = "192.0.2.9".parse().expect("ip");
    let decoders: Vec<Decoder> = [DecodeMode::Auto, DecodeMode::Reference]
        .into_iter()
        .map(|mode| {
            let d = Decoder::new(DecodeConfig {
                mode,
                ..Default::default()
            });
            let mut out = Vec::new();
            for p in corpus {
                d.decode(src, 0, p, &mut out);
            }
            d
        })
        .collect();
    let mut out = Vec::new();
    let mut run = |bytes: &[u8], stats: &mut Stats| {
        for d in &decoders {
            let before = d.metrics.total_errors();
            out.clear();
            let st = d.decode(src, 0, bytes, &mut out);
            stats.variants += 1;
            stats.records += out.len();
            if st.error.is_some() {
                stats.errors_returned += 1;
                assert!(
                    d.metrics.total_errors() > before,
                    "error {:?} returned but not counted for {:02x?}",
                    st.error,
                    &bytes[..bytes.len().min(64)]
                );
            }
        }
    };
    for p in corpus {
        let step = (p.len() / 97).max(1);
        let mut cut = 0;
        while cut < p.len() {
            run(&p[..cut], &mut stats);
            cut += step;
        }
        for _ in 0..300 {
            let mut m = p.clone();
            if m.is_empty() {
                continue;
            }
            match rng.below(4) {
                0 => {
                    let i = rng.below(m.len());
                    m[i] ^= 1 << rng.below(8);
                }
                1 => {
                    let i = rng.below(m.len());
                    m[i] = if rng.below(2) == 0 { 0 } else { 0xff };
                }
                2 => {
                    // a 16-bit field (set lengths, counts, template ids) set to an extreme
                    let i = rng.below(m.len().saturating_sub(1)) & !1;
                    let v: u16 = [0, 1, 3, 4, 0xffff, 0x8000, m.len() as u16][rng.below(7)];
                    if i + 2 <= m.len() {
                        m[i..i + 2].copy_from_slice(&v.to_be_bytes());
                    }
                }
                _ => {
                    for _ in 0..8 {
                        let i = rng.below(m.len());
                        m[i] = rng.next() as u8;
                    }
                }
            }
            run(&m, &mut stats);
        }
    }
    stats
}
