//! Rendering results for terminals and files: human units, aligned tables fitting the
//! terminal width, sparklines for series, CSV.

use serde_json::Value as J;

use super::QueryResult;

/// 1234567 -> "1.2 MB" (decimal units, as network tools count).
pub fn human_bytes(v: f64) -> String {
    scaled(v, &["B", "KB", "MB", "GB", "TB", "PB"], 1000.0)
}

/// 12_300_000 bit/s -> "12.3 Mbps".
pub fn human_rate(v: f64) -> String {
    scaled(v, &["bps", "Kbps", "Mbps", "Gbps", "Tbps"], 1000.0)
}

fn scaled(v: f64, units: &[&str], step: f64) -> String {
    let mut x = v;
    let mut i = 0;
    while x.abs() >= step && i + 1 < units.len() {
        x /= step;
        i += 1;
    }
    if i == 0 {
        if x.fract() == 0.0 {
            format!("{} {}", x as i64, units[0])
        } else {
            format!("{x:.1} {}", units[0])
        }
    } else if x.abs() >= 100.0 {
        format!("{x:.0} {}", units[i])
    } else {
        format!("{x:.1} {}", units[i])
    }
}

pub fn human_count(v: f64) -> String {
    if v.abs() < 10_000.0 {
        if v.fract() == 0.0 {
            format!("{}", v as i64)
        } else {
            format!("{v:.2}")
        }
    } else {
        scaled(v, &["", "K", "M", "G", "T"], 1000.0)
            .trim_end()
            .to_string()
    }
}

/// A cell as text, in the column's unit.
pub fn cell(v: &J, unit: Option<&str>) -> String {
    match v {
        J::Null => "Unknown".into(),
        J::String(s) => s.clone(),
        J::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            match unit {
                Some("bytes") => human_bytes(x),
                Some("bit/s") => human_rate(x),
                Some("packets/s") => format!("{} pps", human_count(x)),
                Some("MB") if x >= 1024.0 => {
                    format!("{} GB", human_count((x / 1024.0 * 10.0).round() / 10.0))
                }
                Some("MB") => format!("{} MB", human_count(x)),
                _ => human_count(x),
            }
        }
        J::Array(a) => a
            .iter()
            .map(|x| cell(x, None))
            .collect::<Vec<_>>()
            .join(", "),
        J::Bool(b) => b.to_string(),
        J::Object(_) => v.to_string(),
    }
}

/// Unicode sparkline of values.
pub fn sparkline(vals: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = vals.iter().copied().fold(0.0f64, f64::max);
    vals.iter()
        .map(|v| {
            if max <= 0.0 {
                BARS[0]
            } else {
                BARS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize]
            }
        })
        .collect()
}

fn truncate(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        return s.to_string();
    }
    if w <= 1 {
        return "…".into();
    }
    let mut t: String = s.chars().take(w - 1).collect();
    t.push('…');
    t
}

/// The result as an aligned table no wider than `width`, with sparklines for series.
pub fn table(r: &QueryResult, width: usize) -> String {
    let headers: Vec<String> = r.columns.iter().map(|c| c.name.clone()).collect();
    let cells: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .zip(&r.columns)
                .map(|(v, c)| cell(v, c.unit.as_deref()))
                .collect()
        })
        .collect();
    let n = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &cells {
        for (i, c) in row.iter().enumerate().take(n) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    // shrink the widest columns until the table fits (2 spaces between columns)
    let total = |w: &[usize]| w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1);
    while total(&widths) > width.max(20) {
        let Some((i, _)) = widths.iter().enumerate().max_by_key(|x| *x.1) else {
            break;
        };
        if widths[i] <= 6 {
            break;
        }
        widths[i] -= 1;
    }
    let numeric: Vec<bool> = r
        .columns
        .iter()
        .map(|c| c.unit.is_some() || c.name == "count")
        .collect();
    let mut out = String::new();
    let fmt_row = |vals: &[String], out: &mut String| {
        let parts: Vec<String> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let v = truncate(v, widths[i]);
                if numeric[i] {
                    format!("{v:>w$}", w = widths[i])
                } else {
                    format!("{v:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    fmt_row(&headers, &mut out);
    out.push_str(
        &widths
            .iter()
            .map(|w| "─".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    out.push('\n');
    for row in &cells {
        fmt_row(row, &mut out);
    }
    if !r.series.is_empty() {
        out.push('\n');
        let label_w = r
            .series
            .iter()
            .map(|s| group_label(&s.group).chars().count())
            .max()
            .unwrap_or(0)
            .min(30);
        let mut last_metric = String::new();
        for s in &r.series {
            if s.metric != last_metric {
                out.push_str(&format!(
                    "{} ({}, {}s buckets)\n",
                    s.metric, s.unit, s.bucket_s
                ));
                last_metric = s.metric.clone();
            }
            let vals: Vec<f64> = s.points.iter().map(|p| p.1).collect();
            let spark_w = width.saturating_sub(label_w + 16).max(10);
            // fold points into at most spark_w columns (max of each group)
            let step = vals.len().div_ceil(spark_w).max(1);
            let folded: Vec<f64> = vals
                .chunks(step)
                .map(|c| c.iter().copied().fold(0.0, f64::max))
                .collect();
            let peak = vals.iter().copied().fold(0.0, f64::max);
            let peak_s = match s.unit.as_str() {
                "bit/s" => human_rate(peak),
                "bytes" => human_bytes(peak),
                _ => human_count(peak),
            };
            out.push_str(&format!(
                "  {:<lw$}  {}  peak {}\n",
                truncate(&group_label(&s.group), label_w),
                sparkline(&folded),
                peak_s,
                lw = label_w
            ));
        }
    }
    out.push_str(&format!(
        "\n{} rows{} · {} to {} · {}s resolution · {} rows scanned in {:.1} ms\n",
        r.rows.len(),
        if r.truncated {
            " (truncated by the limit)"
        } else {
            ""
        },
        r.time_range.start,
        r.time_range.end,
        r.resolution_s,
        r.stats.rows_scanned,
        r.stats.took_ms
    ));
    if r.stats.overflow_flows > 0 {
        out.push_str(&format!(
            "note: {} flows ({}) were in buckets over the cardinality cap: counted in overflow totals, not in the groups above\n",
            r.stats.overflow_flows,
            human_bytes(r.stats.overflow_bytes as f64)
        ));
    }
    out
}

fn group_label(g: &[J]) -> String {
    if g.is_empty() {
        return "all".into();
    }
    g.iter()
        .map(|v| cell(v, None))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The rows as CSV (header first; raw numbers).
pub fn csv(r: &QueryResult) -> String {
    let esc = |s: String| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    };
    let mut out = r
        .columns
        .iter()
        .map(|c| esc(c.name.clone()))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for row in &r.rows {
        let vals: Vec<String> = row
            .iter()
            .map(|v| match v {
                J::Null => String::new(),
                J::String(s) => esc(s.clone()),
                J::Array(a) => esc(a
                    .iter()
                    .map(|x| cell(x, None))
                    .collect::<Vec<_>>()
                    .join("|")),
                other => other.to_string(),
            })
            .collect();
        out.push_str(&vals.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(human_bytes(999.0), "999 B");
        assert_eq!(human_bytes(1_500_000.0), "1.5 MB");
        assert_eq!(human_bytes(123_456_789_012.0), "123 GB");
        assert_eq!(human_rate(12_300_000.0), "12.3 Mbps");
        assert_eq!(human_rate(800.0), "800 bps");
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 4.0]), "▁▃▅█");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}
