//! The `--name N` options of the benchmarks that take them.

/// The `--name N` pairs among the arguments, in order. Anything else (cargo bench's
/// own flags such as `--bench`) is skipped.
pub fn numeric_flags() -> Vec<(String, u64)> {
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(name) = v.get(i) {
        match v.get(i + 1).and_then(|s| s.parse::<u64>().ok()) {
            Some(n) if name.starts_with("--") => {
                out.push((name.clone(), n));
                i += 2;
            }
            _ => i += 1,
        }
    }
    out
}
