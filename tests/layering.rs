//! One-way layering: every module of `src/` imports only the modules the table below
//! allows, so that imports go one way along the pipeline
//!
//! ```text
//! UDP listeners -> decode -> rollup shards (fold, enrich, accumulate) -> store -> query -> api/cli/web
//! ```
//!
//! The test reads every `src/**/*.rs`, finds each reference to another top-level module
//! (`use crate::x::...`, `crate::x::f()` anywhere in a body, `use crate::{x, y}`, and a
//! `super::super::x` that climbs to the crate root) and fails, naming the file, the
//! line and the import, when the table does not allow it. Comment lines are skipped.
//! Code that only tests compile (`#[cfg(test)] mod tests { ... }`, or a file declared
//! `#[cfg(test)] mod x;`) may also use what [`TEST_ONLY`] adds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a module may import. `ANY`: the top (it wires everything together).
const ANY: &[&str] = &["*"];

const ALLOWED: &[(&str, &[&str])] = &[
    // small shared helpers (clock, atomic writes, line/column, durations): nothing
    ("util", &[]),
    // the data types every stage shares
    ("model", &["util"]),
    // interned names, shared by enrichment, rollups and queries
    ("sym", &["util"]),
    ("telemetry", &["util"]),
    // the contract between stages (`RecordSink`, `Handover`) and the counting sink
    ("pipeline", &["model", "telemetry", "util"]),
    (
        "listener",
        &["decode", "model", "pipeline", "telemetry", "util"],
    ),
    ("decode", &["model", "telemetry", "util"]),
    ("enrich", &["model", "sym", "telemetry", "util"]),
    (
        "rollup",
        &["enrich", "model", "pipeline", "sym", "telemetry", "util"],
    ),
    // the query language over the store (`rollup::store`), and `query::wire`
    (
        "query",
        &["enrich", "model", "rollup", "sym", "telemetry", "util"],
    ),
    // transports only (HTTP, the Unix socket, the web page)
    ("api", &["model", "query", "telemetry", "util"]),
    // composes every stage's `XxxConfig`
    (
        "config",
        &[
            "api", "decode", "enrich", "listener", "query", "rollup", "util",
        ],
    ),
    // tools beside the pipeline: synthetic traffic (encoded as decode expects it, with
    // an enrichment inventory), pcap reading, the state directory
    ("generate", &["decode", "enrich", "model", "util"]),
    ("pcap", &["util"]),
    ("statedir", &["util"]),
    // the top
    ("daemon", ANY),
    ("cli", ANY),
];

/// What code compiled only for tests may use besides [`ALLOWED`].
const TEST_ONLY: &[(&str, &[&str])] = &[
    // the listener's tests send datagrams encoded by the traffic generator
    ("listener", &["generate"]),
];

/// The crate root's files, which declare the modules (and the binary's `main`).
const ROOTS: &[&str] = &["lib.rs", "main.rs"];

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file relative to `src/` (`decode/mod.rs` -> `[decode]`,
/// `decode/fast.rs` -> `[decode, fast]`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !is_ident_char(c)).unwrap_or(s.len());
    &s[..end]
}

/// The first identifier of every item of a `{a, b::c, d as e}` list (without braces).
fn group_heads(inner: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut item = String::new();
    for c in inner.chars().chain(std::iter::once(',')) {
        match c {
            '{' => {
                depth += 1;
                item.push(c);
            }
            '}' => {
                depth -= 1;
                item.push(c);
            }
            ',' if depth == 0 => {
                let head = ident_at(item.trim()).to_string();
                if !head.is_empty() && head != "self" {
                    out.push(head);
                }
                item.clear();
            }
            _ => item.push(c),
        }
    }
    out
}

/// Top-level modules referenced on `line` for code at module depth `depth`; `rest` is
/// the file from the start of `line` on (a `use crate::{...}` list may span lines).
fn references(line: &str, rest: &str, depth: usize) -> Vec<String> {
    let mut out = Vec::new();
    // crate::x and crate::{x, y}
    let mut from = 0;
    while let Some(i) = line[from..].find("crate::") {
        let at = from + i;
        from = at + "crate::".len();
        // `$crate::` is the same crate; anything else before it (`nagare_crate::`) is not
        let before = line[..at].chars().next_back();
        if before.is_some_and(|c| is_ident_char(c) || c == ':') {
            continue;
        }
        let after = &line[from..];
        if after.starts_with('{') {
            // `rest` starts with this line: the list may run on over the next lines
            let tail = &rest[from + 1..];
            let mut open = 1;
            let mut end = tail.len();
            for (j, c) in tail.char_indices() {
                match c {
                    '{' => open += 1,
                    '}' => {
                        open -= 1;
                        if open == 0 {
                            end = j;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            out.extend(group_heads(&tail[..end]));
        } else {
            let name = ident_at(after);
            if !name.is_empty() {
                out.push(name.to_string());
            }
        }
    }
    // super::super::x climbing to the crate root
    let mut from = 0;
    while let Some(i) = line[from..].find("super::") {
        let at = from + i;
        if line[..at].chars().next_back().is_some_and(is_ident_char) {
            from = at + 1;
            continue;
        }
        let mut s = &line[at..];
        let mut n = 0;
        while let Some(t) = s.strip_prefix("super::") {
            n += 1;
            s = t;
        }
        from = at + n * "super::".len();
        if n == depth {
            let name = ident_at(s);
            if !name.is_empty() {
                out.push(name.to_string());
            }
        }
    }
    out
}

struct Violation {
    file: String,
    line: usize,
    module: String,
    import: String,
    text: String,
}

/// Checks every file under `src`; returns what the table forbids.
fn check(src: &Path) -> Vec<Violation> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let test_only: BTreeMap<&str, &[&str]> = TEST_ONLY.iter().copied().collect();
    let mut files = Vec::new();
    rs_files(src, &mut files);

    // files declared `#[cfg(test)] mod x;`
    let mut test_files = BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read source");
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.trim() != "#[cfg(test)]" {
                continue;
            }
            let Some(next) = lines.get(i + 1) else {
                continue;
            };
            let decl = next.trim().trim_start_matches("pub ");
            if let Some(name) = decl.strip_prefix("mod ").and_then(|d| d.strip_suffix(';')) {
                let dir = if f
                    .file_name()
                    .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
                {
                    f.parent().expect("parent").to_path_buf()
                } else {
                    f.with_extension("")
                };
                test_files.insert(dir.join(format!("{name}.rs")));
                test_files.insert(dir.join(name).join("mod.rs"));
            }
        }
    }

    let mut bad = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(src).expect("under src");
        if ROOTS.iter().any(|r| rel == Path::new(r)) {
            continue;
        }
        let path = module_path(rel);
        let module = path[0].clone();
        let Some(ok) = allowed.get(module.as_str()) else {
            bad.push(Violation {
                file: rel.display().to_string(),
                line: 0,
                module: module.clone(),
                import: String::new(),
                text: format!("module `{module}` is not in the layering table"),
            });
            continue;
        };
        if ok.contains(&"*") {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("read source");
        let whole_file_is_test = test_files.contains(f);
        // inline modules open here: (indentation, is test-only)
        let mut inline: Vec<(usize, bool)> = Vec::new();
        let mut cfg_test_pending = false;
        let mut offset = 0;
        for (i, l) in text.lines().enumerate() {
            let rest = &text[offset..];
            offset += l.len() + 1;
            let indent = l.len() - l.trim_start().len();
            let t = l.trim();
            if let Some(&(ind, _)) = inline.last()
                && indent == ind
                && t == "}"
            {
                inline.pop();
                continue;
            }
            if t.starts_with("//") {
                continue;
            }
            if t == "#[cfg(test)]" {
                cfg_test_pending = true;
                continue;
            }
            let decl = t
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            if decl.starts_with("mod ") && decl.ends_with('{') {
                inline.push((indent, cfg_test_pending));
                cfg_test_pending = false;
                continue;
            }
            if !t.starts_with("#[") {
                cfg_test_pending = false;
            }
            let in_test = whole_file_is_test || inline.iter().any(|m| m.1);
            let depth = path.len() + inline.len();
            for import in references(l, rest, depth) {
                if import == module || import == "self" || import == "super" {
                    continue;
                }
                let extra = test_only.get(module.as_str()).copied().unwrap_or(&[]);
                if ok.contains(&import.as_str()) || (in_test && extra.contains(&import.as_str())) {
                    continue;
                }
                bad.push(Violation {
                    file: rel.display().to_string(),
                    line: i + 1,
                    module: module.clone(),
                    import,
                    text: t.to_string(),
                });
            }
        }
    }
    bad
}

fn report(bad: &[Violation]) -> String {
    bad.iter()
        .map(|v| {
            if v.line == 0 {
                format!("src/{}: {}", v.file, v.text)
            } else {
                format!(
                    "src/{}:{}: `{}` may not import `{}`: {}",
                    v.file, v.line, v.module, v.import, v.text
                )
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn modules_import_only_what_the_layering_table_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = check(&src);
    assert!(
        bad.is_empty(),
        "imports against the pipeline's direction (see the table in tests/layering.rs):\n{}",
        report(&bad)
    );
}

/// The checker itself finds what it should: a backward import in a use line, in a
/// function body, in a `use crate::{...}` list and via `super::super`, and lets test
/// fixtures through only in test code.
#[test]
fn the_checker_catches_backward_imports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    let write = |rel: &str, text: &str| {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    write("lib.rs", "pub mod rollup;\npub mod listener;\n");
    write(
        "rollup/shard.rs",
        "use crate::daemon::now_ms;\n\
         use crate::enrich::Tables;\n\
         // crate::api is only mentioned in a comment\n\
         fn f() {\n    let _ = crate::api::x();\n}\n\
         use crate::{model, query::Context};\n\
         fn g() {\n    super::super::cli::run();\n}\n",
    );
    write(
        "rollup/mod.rs",
        "pub mod shard;\n#[cfg(test)]\nmod route_tests;\n",
    );
    write("rollup/route_tests.rs", "use crate::generate::x;\n");
    write(
        "listener.rs",
        "use crate::pipeline::Handover;\n\
         fn h() {}\n\
         #[cfg(test)]\nmod tests {\n    use super::super::generate::encode;\n    use crate::generate::y;\n}\n\
         fn k() {\n    crate::generate::z();\n}\n",
    );
    write("newthing.rs", "");
    let bad = check(src);
    let got: Vec<(String, usize, String)> = bad
        .iter()
        .map(|v| (v.file.clone(), v.line, v.import.clone()))
        .collect();
    let mut got = got;
    got.sort();
    let want: Vec<(String, usize, String)> = [
        ("listener.rs", 9, "generate"),
        ("newthing.rs", 0, ""),
        ("rollup/route_tests.rs", 1, "generate"),
        ("rollup/shard.rs", 1, "daemon"),
        ("rollup/shard.rs", 5, "api"),
        ("rollup/shard.rs", 7, "query"),
        ("rollup/shard.rs", 9, "cli"),
    ]
    .iter()
    .map(|(f, l, i)| (f.to_string(), *l, i.to_string()))
    .collect();
    assert_eq!(got, want, "{}", report(&bad));
}
