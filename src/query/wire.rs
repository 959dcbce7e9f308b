//! Queries on the wire, the same for every transport (the HTTP API, the Unix socket,
//! which the CLI talks to): the request, the error JSON, running a query off the async
//! threads, and the vocabulary the web page completes with. The transports in `api`
//! only decode, call these and encode.

use std::sync::Arc;

use serde::Deserialize;

use super::{Context, ErrorKind, catalog};
use crate::enrich::{classify, countries};

/// A query request (`POST /api/v1/query`, the Unix socket).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub query: String,
    /// Evaluate as if now were this Unix time (reproducible dashboards and tests).
    #[serde(default)]
    pub now: Option<i64>,
}

/// The error JSON every surface answers with: `{"error": {"kind": ..., "message": ...}}`.
pub fn error_json(kind: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"error": {"kind": kind, "message": message}})
}

/// A query's answer: the result JSON, or the kind of error and the error JSON.
pub type Answer = Result<Vec<u8>, (ErrorKind, serde_json::Value)>;

/// Runs a query on a blocking thread; its result is serialized there, inside the
/// query's slot and byte budget. `now` (Unix seconds) defaults to the clock.
pub async fn run_query(ctx: Arc<Context>, text: String, now: Option<i64>) -> Answer {
    let now = now.unwrap_or_else(|| crate::util::now_ms() / 1000);
    let t = text.clone();
    let res = tokio::task::spawn_blocking(move || super::run_json(&ctx, &t, now)).await;
    match res {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err((e.kind, e.to_json(&text))),
        Err(_) => Err((
            ErrorKind::Internal,
            error_json("internal", "the query failed unexpectedly"),
        )),
    }
}

/// Vocabulary for completion in the web page (names from the inventory when queries
/// are available).
pub fn vocabulary(ctx: Option<&Context>) -> serde_json::Value {
    let mut vms = Vec::new();
    let mut l2 = Vec::new();
    let mut hosts = Vec::new();
    if let Some(ctx) = ctx {
        let t = ctx.enricher.tables();
        vms = t.inventory.vms.iter().map(|v| v.name.clone()).collect();
        l2 = t
            .inventory
            .l2_networks
            .iter()
            .map(|v| v.name.clone())
            .collect();
        hosts = t.inventory.hosts.iter().map(|v| v.name.clone()).collect();
    }
    let names = catalog::all_names();
    let (props, metrics): (Vec<String>, Vec<String>) = names
        .into_iter()
        .partition(|n| !catalog::Metric::ALL.iter().any(|m| m.name() == n));
    serde_json::json!({
        "entities": ["flows", "vms", "switch ports", "hosts", "subnets", "l2 networks", "countries"],
        "properties": props,
        "metrics": metrics,
        "flow_types": classify::TAGS.iter().map(|t| t.1).collect::<Vec<_>>(),
        "countries": countries::COUNTRIES.iter().map(|c| c.1).collect::<Vec<_>>(),
        "vms": vms,
        "l2_networks": l2,
        "hosts": hosts,
        "keywords": ["where", "group by", "order by", "limit", "in last", "between", "at", "during", "series", "sum", "avg", "min", "max", "count", "list", "top", "and", "or", "not", "in", "like", "is set", "asc", "desc"],
    })
}
