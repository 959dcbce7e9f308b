use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use nagare::enrich::{Endpoint, classify, countries};
use nagare::rollup::chunk::Chunk;
use nagare::rollup::segment;
use nagare::sym;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// State directory of the daemon (reads its rollup segments; the daemon may run).
    #[arg(long, env = "STATE_DIRECTORY", default_value = "/var/lib/nagare")]
    pub state_dir: PathBuf,
    /// Start: RFC 3339 ("2026-11-27T21:00:00Z"), "YYYY-MM-DD HH:MM" (UTC), or a duration
    /// before now ("2h", "7d"). Default: 24 hours ago.
    #[arg(long)]
    pub from: Option<String>,
    /// End (same forms; default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// Resolution to read: a bucket size ("1m", "5m", "1h"). Default: the finest.
    #[arg(long)]
    pub resolution: Option<String>,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: Format,
    /// Output file (default: standard output).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Exit 0 even when damaged frames or a truncated last frame were skipped (they are
    /// still reported on standard error). Without it such an export exits with status 3
    /// after writing every row that could be read.
    #[arg(long)]
    pub allow_damaged: bool,
}

/// Exit status of an export that skipped damaged or truncated frames.
pub const EXIT_DAMAGED: u8 = 3;

/// Parses a time argument to Unix seconds.
pub fn parse_time(s: &str, now_s: i64) -> anyhow::Result<i64> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(now_s);
    }
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(ts.as_second());
    }
    if let Ok(dt) = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M", t) {
        let z = dt.to_zoned(jiff::tz::TimeZone::UTC).context("time")?;
        return Ok(z.timestamp().as_second());
    }
    if let Ok(d) = nagare::util::parse_duration(t.trim_start_matches('-')) {
        return Ok(now_s - d);
    }
    bail!(
        "'{s}' is not a time: use RFC 3339, \"YYYY-MM-DD HH:MM\" (UTC), or a duration before now like 2h"
    )
}

fn name(s: sym::Sym) -> String {
    sym::resolve(s).to_string()
}

fn ep_fields(e: &Endpoint) -> [String; 8] {
    [
        e.ip.to_string(),
        name(e.vm),
        name(e.host),
        e.subnet().to_string(),
        name(e.subnet_name),
        name(e.l2),
        countries::unpack(e.country).unwrap_or_default(),
        if e.asn > 0 {
            e.asn.to_string()
        } else {
            String::new()
        },
    ]
}

const HEADER: &[&str] = &[
    "bucket_start",
    "resolution_s",
    "src_ip",
    "src_vm",
    "src_host",
    "src_subnet",
    "src_subnet_name",
    "src_l2_network",
    "src_country",
    "src_as",
    "dst_ip",
    "dst_vm",
    "dst_host",
    "dst_subnet",
    "dst_subnet_name",
    "dst_l2_network",
    "dst_country",
    "dst_as",
    "port",
    "protocol",
    "flow_types",
    "src_bytes",
    "dst_bytes",
    "packets",
    "sessions",
    "first_seen",
    "last_seen",
    "exporter",
    "input_interface",
    "output_interface",
    "firewall_rule",
];

fn csv_escape(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn rfc3339(s: i64) -> String {
    jiff::Timestamp::from_second(s)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn write_chunk(out: &mut dyn Write, c: &Chunk, f: Format) -> std::io::Result<u64> {
    let mut n = 0;
    for r in &c.rows {
        let (Some(s), Some(d), Some(o)) = (
            c.endpoints.get(r.src as usize),
            c.endpoints.get(r.dst as usize),
            c.obs.get(r.obs as usize),
        ) else {
            continue;
        };
        let mut vals: Vec<String> = vec![rfc3339(c.start), c.res.to_string()];
        vals.extend(ep_fields(s));
        vals.extend(ep_fields(d));
        vals.push(r.port.to_string());
        vals.push(r.proto.to_string());
        vals.push(classify::tag_names(r.tags).join("|"));
        vals.push(r.src_bytes.to_string());
        vals.push(r.dst_bytes.to_string());
        vals.push(r.packets.to_string());
        vals.push(r.sessions.to_string());
        vals.push(rfc3339(c.start + i64::from(r.first)));
        vals.push(rfc3339(c.start + i64::from(r.last)));
        vals.push(o.exporter.to_string());
        vals.push(o.in_if.to_string());
        vals.push(o.out_if.to_string());
        vals.push(if r.rule > 0 {
            r.rule.to_string()
        } else {
            String::new()
        });
        match f {
            Format::Csv => {
                let line: Vec<String> = vals.iter().map(|v| csv_escape(v)).collect();
                writeln!(out, "{}", line.join(","))?;
            }
            Format::Jsonl => {
                let mut m = serde_json::Map::new();
                for (k, v) in HEADER.iter().zip(vals) {
                    let num = matches!(
                        *k,
                        "resolution_s"
                            | "port"
                            | "protocol"
                            | "src_bytes"
                            | "dst_bytes"
                            | "packets"
                            | "sessions"
                    );
                    let val = if num {
                        v.parse::<u64>()
                            .map(serde_json::Value::from)
                            .unwrap_or(serde_json::Value::String(v))
                    } else if v.is_empty() {
                        serde_json::Value::Null
                    } else {
                        serde_json::Value::String(v)
                    };
                    m.insert((*k).to_string(), val);
                }
                writeln!(out, "{}", serde_json::Value::Object(m))?;
            }
        }
        n += 1;
    }
    if !c.overflow.is_empty() {
        let o = &c.overflow;
        match f {
            Format::Csv => writeln!(
                out,
                "{},{},(overflow: {} flows),,,,,,,,,,,,,,,,,,,{},{},{},{},,,,,,",
                rfc3339(c.start),
                c.res,
                o.flows,
                o.src_bytes,
                o.dst_bytes,
                o.packets,
                o.sessions
            )?,
            Format::Jsonl => writeln!(
                out,
                "{}",
                serde_json::json!({"bucket_start": rfc3339(c.start), "resolution_s": c.res, "overflow": true,
                    "flows": o.flows, "src_bytes": o.src_bytes, "dst_bytes": o.dst_bytes,
                    "packets": o.packets, "sessions": o.sessions})
            )?,
        }
        n += 1;
    }
    Ok(n)
}

pub fn run(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let now = nagare::util::now_ms() / 1000;
    let from = a
        .from
        .as_deref()
        .map(|s| parse_time(s, now))
        .transpose()?
        .unwrap_or(now - 86_400);
    let to =
        a.to.as_deref()
            .map(|s| parse_time(s, now))
            .transpose()?
            .unwrap_or(now);
    if to <= from {
        bail!("--to must be after --from");
    }
    let root = a.state_dir.join("rollup");
    let mut resolutions: Vec<u32> = std::fs::read_dir(&root)
        .with_context(|| {
            format!(
                "no rollups under {} (is --state-dir right?)",
                root.display()
            )
        })?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix('r')?
                .parse()
                .ok()
        })
        .collect();
    resolutions.sort_unstable();
    let res = match &a.resolution {
        Some(r) => {
            let s = nagare::util::parse_duration(r).map_err(anyhow::Error::msg)? as u32;
            if !resolutions.contains(&s) {
                bail!(
                    "no {s}s resolution under {} (have: {:?})",
                    root.display(),
                    resolutions
                );
            }
            s
        }
        None => *resolutions.first().context("no resolutions stored yet")?,
    };
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    if matches!(a.format, Format::Csv) {
        writeln!(out, "{}", HEADER.join(","))?;
    }
    let mut rows = 0u64;
    let mut damaged = 0usize;
    for (start, path) in segment::list(&root, res) {
        if start + segment::file_span(res) <= from || start >= to {
            continue;
        }
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut chunks = Vec::new();
        let rep = segment::read_frames(&bytes, |c| {
            if c.start >= from && c.start < to {
                chunks.push(c);
            }
        });
        for (off, why) in &rep.bad_frames {
            eprintln!("export: {} at byte {off}: {why} (skipped)", path.display());
        }
        damaged += rep.bad_frames.len();
        if rep.truncated_tail {
            let off = rep.truncated_at.unwrap_or(bytes.len());
            eprintln!(
                "export: warning: {} at byte {off}: truncated last frame ({} of its bytes present; an interrupted write, or one in progress) (skipped)",
                path.display(),
                bytes.len().saturating_sub(off)
            );
            damaged += 1;
        }
        chunks.sort_by_key(|c| (c.start, c.seq));
        for c in &chunks {
            rows += write_chunk(&mut *out, c, a.format)?;
        }
    }
    out.flush()?;
    eprintln!(
        "export: {rows} rows at {res}s resolution from {} to {}{}",
        rfc3339(from),
        rfc3339(to),
        if damaged > 0 {
            format!(", {damaged} damaged or truncated frames skipped")
        } else {
            String::new()
        }
    );
    if damaged > 0 && !a.allow_damaged {
        eprintln!(
            "export: exit status {EXIT_DAMAGED}: some stored data could not be read (--allow-damaged exits 0)"
        );
        return Ok(ExitCode::from(EXIT_DAMAGED));
    }
    Ok(ExitCode::SUCCESS)
}
