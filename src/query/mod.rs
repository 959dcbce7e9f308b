//! The query language (docs/query-language.md):
//!
//! ```text
//! text --lex--> tokens --parse--> AST (Display = canonical query)
//!      --plan--> Plan (names resolved, resolution and time range chosen, types checked)
//!      --execute over the window store--> QueryResult (one JSON shape for every surface)
//! ```
//! `run` is the single entry point used by the HTTP API, the Unix socket and the CLI;
//! [`wire`] holds what those transports share (the request, the error JSON, `run_query`).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod ast;
pub mod catalog;
pub mod exec;
pub mod gate;
pub mod lexer;
pub mod parser;
pub mod planner;
pub mod render;
pub mod wire;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::enrich::Enricher;
use crate::rollup::store::Store;
use lexer::Span;

/// A query that cannot be run: where (span), what, and a hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    pub message: String,
    pub span: Option<Span>,
    pub hint: Option<String>,
    /// The limit or runtime condition that stopped the query (not a syntax error).
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Syntax,
    Plan,
    Limit,
    Unavailable,
    /// The query queue was full: try again later (HTTP 429).
    Busy,
    /// A bug stopped the query (HTTP 500).
    Internal,
}

impl QueryError {
    pub fn at(span: Span, message: &str, hint: Option<String>) -> Self {
        Self {
            message: message.to_string(),
            span: Some(span),
            hint,
            kind: ErrorKind::Syntax,
        }
    }
    pub fn plan(span: Span, message: &str, hint: Option<String>) -> Self {
        Self {
            kind: ErrorKind::Plan,
            ..Self::at(span, message, hint)
        }
    }
    pub fn limit(message: &str, hint: Option<String>) -> Self {
        Self {
            message: message.to_string(),
            span: None,
            hint,
            kind: ErrorKind::Limit,
        }
    }

    fn runtime(kind: ErrorKind, message: &str, hint: Option<String>) -> Self {
        Self {
            kind,
            ..Self::limit(message, hint)
        }
    }

    /// Line and column (1-based, in characters) of the error in `src`.
    pub fn position(&self, src: &str) -> Option<(usize, usize)> {
        let s = self.span?;
        Some(crate::util::line_col(src, s.start.min(src.len())))
    }

    /// The error as text with the query line and a caret under the faulty part.
    pub fn render(&self, src: &str) -> String {
        let mut out = format!("error: {}\n", self.message);
        if let Some(span) = self.span {
            let start = span.start.min(src.len());
            let end = span.end.clamp(start, src.len());
            let (line, col) = crate::util::line_col(src, start);
            let text = src.lines().nth(line - 1).unwrap_or("");
            let width = src[start..end].chars().count().max(1);
            let gutter = line.to_string().len();
            out.push_str(&format!("{:gutter$}--> line {line}, column {col}\n", ""));
            out.push_str(&format!("{:gutter$} |\n", ""));
            out.push_str(&format!("{line} | {text}\n"));
            out.push_str(&format!(
                "{:gutter$} | {}{}\n",
                "",
                " ".repeat(col - 1),
                "^".repeat(width)
            ));
        }
        if let Some(h) = &self.hint {
            out.push_str(&format!("  = hint: {h}\n"));
        }
        out
    }

    /// The error as JSON (`{"error": {...}}`), as the API returns it with HTTP 400.
    pub fn to_json(&self, src: &str) -> serde_json::Value {
        let pos = self.position(src);
        serde_json::json!({
            "error": {
                "kind": self.kind,
                "message": self.message,
                "line": pos.map(|p| p.0),
                "column": pos.map(|p| p.1),
                "start": self.span.map(|s| s.start),
                "end": self.span.map(|s| s.end),
                "hint": self.hint,
                "rendered": self.render(src),
            }
        })
    }
}

/// `[query]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Time zone for `during` windows and local date-times ("Asia/Tokyo"); default: the
    /// TZ environment variable, else the system's zone.
    pub timezone: Option<String>,
    /// A query running longer than this stops with an error.
    pub timeout_ms: u64,
    /// Distinct groups (or flows in a listing) a query may build.
    pub max_groups: usize,
    /// Rows returned when the query gives no limit.
    pub default_limit: usize,
    /// Queries running at once; more wait their turn.
    pub max_concurrent: usize,
    /// Queries waiting for their turn; past it a query is refused as busy (HTTP 429).
    pub max_queued: usize,
    /// Bytes of JSON one query's result may take; a larger result is an error.
    pub max_result_bytes: usize,
    /// Threads one query scans with.
    pub threads: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timezone: None,
            timeout_ms: 10_000,
            max_groups: 500_000,
            default_limit: 100,
            max_concurrent: 2,
            max_queued: 16,
            max_result_bytes: 64 << 20,
            threads: 2,
        }
    }
}

/// One result column.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Column {
    pub name: String,
    pub unit: Option<String>,
}

/// One time series.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Series {
    pub group: Vec<serde_json::Value>,
    pub metric: String,
    pub unit: String,
    pub bucket_s: u32,
    /// [unix seconds, value]
    pub points: Vec<(i64, f64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TimeRangeOut {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub rows_scanned: u64,
    pub took_ms: f64,
    /// Flows (and their bytes) in the read buckets that had reached the cardinality cap:
    /// they are counted in the buckets' overflow totals, not attributable to groups.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub overflow_flows: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub overflow_bytes: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The result shape of every surface.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueryResult {
    pub query: String,
    pub time_range: TimeRangeOut,
    pub resolution_s: u32,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<serde_json::Value>>,
    pub series: Vec<Series>,
    pub truncated: bool,
    pub stats: Stats,
}

/// What a query needs to run.
pub struct Context {
    pub store: Arc<Store>,
    pub enricher: Arc<Enricher>,
    /// Interface names learned from exporters' options data.
    pub learned_ifnames: Arc<dyn Fn(crate::model::ExporterId, u32) -> Option<String> + Send + Sync>,
    pub cfg: QueryConfig,
    pub metrics: Arc<QueryMetrics>,
    gate: gate::Gate,
}

#[derive(Default)]
pub struct QueryMetrics {
    pub ok: crate::telemetry::Counter,
    pub syntax_errors: crate::telemetry::Counter,
    pub plan_errors: crate::telemetry::Counter,
    pub limit_errors: crate::telemetry::Counter,
    pub busy: crate::telemetry::Counter,
    pub internal_errors: crate::telemetry::Counter,
    pub rows_scanned: crate::telemetry::Counter,
    pub duration: std::sync::OnceLock<crate::telemetry::Histogram>,
}

impl QueryMetrics {
    fn hist(&self) -> &crate::telemetry::Histogram {
        self.duration
            .get_or_init(|| crate::telemetry::Histogram::new(crate::telemetry::LATENCY_BOUNDS))
    }
    pub fn render(&self, out: &mut crate::telemetry::Exposition) {
        out.header(
            "nagare_query_queries_total",
            "Queries by outcome.",
            "counter",
        );
        for (k, v) in [
            ("ok", self.ok.get()),
            ("syntax_error", self.syntax_errors.get()),
            ("plan_error", self.plan_errors.get()),
            ("limit_error", self.limit_errors.get()),
            ("busy", self.busy.get()),
            ("internal_error", self.internal_errors.get()),
        ] {
            out.sample("nagare_query_queries_total", &[("outcome", k)], v as f64);
        }
        out.counter(
            "nagare_query_scanned_rows_total",
            "Stored rows scanned by queries.",
            self.rows_scanned.get(),
        );
        self.hist().render(
            out,
            "nagare_query_duration_seconds",
            "Time to run a query.",
            &[],
        );
    }
}

impl Context {
    pub fn new(
        store: Arc<Store>,
        enricher: Arc<Enricher>,
        learned_ifnames: Arc<dyn Fn(crate::model::ExporterId, u32) -> Option<String> + Send + Sync>,
        cfg: QueryConfig,
    ) -> Self {
        Self {
            store,
            enricher,
            learned_ifnames,
            metrics: Arc::new(QueryMetrics::default()),
            gate: gate::Gate::new(cfg.max_concurrent, cfg.max_queued),
            cfg,
        }
    }

    /// The gate queries run through.
    pub fn gate(&self) -> &gate::Gate {
        &self.gate
    }

    /// The time zone for `during` and local date-times.
    pub fn timezone(&self) -> jiff::tz::TimeZone {
        if let Some(name) = &self.cfg.timezone
            && let Ok(tz) = jiff::tz::TimeZone::get(name)
        {
            return tz;
        }
        jiff::tz::TimeZone::system()
    }
}

/// Parses, plans and runs a query at time `now_s` (Unix seconds). Blocking: call from
/// a blocking context.
pub fn run(ctx: &Context, text: &str, now_s: i64) -> Result<QueryResult, QueryError> {
    gated(ctx, text, now_s, Ok)
}

/// Runs a query and serializes its result as JSON, both inside the query's slot and
/// within `query.max_result_bytes`. What the API and the socket answer with.
pub fn run_json(ctx: &Context, text: &str, now_s: i64) -> Result<Vec<u8>, QueryError> {
    gated(ctx, text, now_s, |r| {
        let mut w = gate::BudgetWriter::new(ctx.cfg.max_result_bytes);
        match serde_json::to_writer(&mut w, &r) {
            Ok(()) => Ok(w.into_inner()),
            Err(_) if w.over_budget() => Err(QueryError::limit(
                &format!(
                    "the result is larger than {} bytes",
                    ctx.cfg.max_result_bytes
                ),
                Some("add or lower the limit, filter more, or raise query.max_result_bytes".into()),
            )),
            Err(e) => Err(QueryError::runtime(
                ErrorKind::Internal,
                &format!("cannot encode the result: {e}"),
                None,
            )),
        }
    })
}

/// Test-only: a query with this text panics while it holds its slot.
#[cfg(test)]
pub(crate) const PANIC_QUERY: &str = "test: panic while running";

/// Waits for a slot (or answers busy), then parses, plans, runs and `finish`es the
/// query while holding it. The time limit counts from when the query starts running.
/// A panic is caught and answered as an internal error; the slot is released by its
/// guard either way.
fn gated<R>(
    ctx: &Context,
    text: &str,
    now_s: i64,
    finish: impl FnOnce(QueryResult) -> Result<R, QueryError>,
) -> Result<R, QueryError> {
    let res = match ctx.gate.acquire() {
        Err(gate::Busy) => Err(QueryError::runtime(
            ErrorKind::Busy,
            "busy: too many queries are running or waiting",
            Some("try again in a moment".into()),
        )),
        Ok(slot) => {
            let t0 = std::time::Instant::now();
            let work = std::panic::AssertUnwindSafe(|| {
                #[cfg(test)]
                if text == PANIC_QUERY {
                    panic!("test panic inside a query");
                }
                let ast = parser::parse(text)?;
                let plan = planner::plan(&ast, ctx, now_s)?;
                let r = exec::execute(&plan, ctx, t0)?;
                ctx.metrics.rows_scanned.add(r.stats.rows_scanned);
                finish(r)
            });
            let res = std::panic::catch_unwind(work).unwrap_or_else(|_| {
                tracing::error!(query = %text, "a query panicked (a bug); its slot is released");
                Err(QueryError::runtime(
                    ErrorKind::Internal,
                    "the query failed unexpectedly (an internal error)",
                    None,
                ))
            });
            drop(slot);
            ctx.metrics.hist().observe(t0.elapsed().as_secs_f64());
            res
        }
    };
    match &res {
        Ok(_) => ctx.metrics.ok.inc(),
        Err(e) => match e.kind {
            ErrorKind::Syntax => ctx.metrics.syntax_errors.inc(),
            ErrorKind::Plan => ctx.metrics.plan_errors.inc(),
            ErrorKind::Limit | ErrorKind::Unavailable => ctx.metrics.limit_errors.inc(),
            ErrorKind::Busy => ctx.metrics.busy.inc(),
            ErrorKind::Internal => ctx.metrics.internal_errors.inc(),
        },
    }
    res
}
