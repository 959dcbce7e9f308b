//! The HTTP server (axum): `/metrics`, `/healthz`, the query API and the web page.
//! Handlers decode, call the library, encode: nothing else.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query as UrlQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::ApiError;
use crate::query::{self, Context, ErrorKind};
use crate::telemetry::Exposition;

/// Anything that can render Prometheus metrics.
pub trait MetricsSource: Send + Sync {
    fn render(&self, out: &mut Exposition);
}

impl<F: Fn(&mut Exposition) + Send + Sync> MetricsSource for F {
    fn render(&self, out: &mut Exposition) {
        self(out)
    }
}

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<dyn MetricsSource>,
    pub query: Option<Arc<Context>>,
    pub web: Option<Arc<super::web::Web>>,
    /// What `/healthz` reports: Err(reason) answers 503 with the reason (None: always ok).
    pub health: Option<HealthSource>,
    pub api: Arc<super::ApiMetrics>,
}

/// Err(reason) while the daemon cannot do its job (e.g. data cannot be written).
pub type HealthSource = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    let mut e = Exposition::new();
    s.metrics.render(&mut e);
    s.api.render(&mut e);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        e.finish(),
    )
}

async fn healthz(State(s): State<HttpState>) -> Response {
    match s.health.as_ref().map_or(Ok(()), |h| h()) {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        )
            .into_response(),
    }
}

/// A query request (`POST /api/v1/query`, the Unix socket).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub query: String,
    /// Evaluate as if now were this Unix time (reproducible dashboards and tests).
    #[serde(default)]
    pub now: Option<i64>,
}

#[derive(Deserialize)]
pub struct GetQuery {
    q: Option<String>,
    query: Option<String>,
    now: Option<i64>,
}

/// A query's answer: the result JSON, or an HTTP status and the error JSON.
pub type Answer = Result<Vec<u8>, (StatusCode, serde_json::Value)>;

/// The HTTP status of a query error: 429 busy, 500 internal, 400 otherwise.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Busy => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Syntax | ErrorKind::Plan | ErrorKind::Limit | ErrorKind::Unavailable => {
            StatusCode::BAD_REQUEST
        }
    }
}

/// Runs a query on a blocking thread; its result is serialized there, inside the
/// query's slot and byte budget.
pub async fn run_query(ctx: Arc<Context>, text: String, now: Option<i64>) -> Answer {
    let now = now.unwrap_or_else(|| crate::daemon::now_ms() / 1000);
    let t = text.clone();
    let res = tokio::task::spawn_blocking(move || query::run_json(&ctx, &t, now)).await;
    match res {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err((status_of(e.kind), e.to_json(&text))),
        Err(_) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"error": {"kind": "internal", "message": "the query failed unexpectedly"}}),
        )),
    }
}

fn respond(r: Answer) -> Response {
    match r {
        Ok(bytes) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response(),
        Err((code, e)) => (code, Json(e)).into_response(),
    }
}

fn no_query() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({"error": {"kind": "unavailable", "message": "queries are not available on this server"}})),
    )
        .into_response()
}

async fn query_post(State(s): State<HttpState>, body: axum::body::Bytes) -> Response {
    let Some(ctx) = s.query.clone() else {
        return no_query();
    };
    let req: QueryRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": {"kind": "syntax", "message": format!("the request body must be JSON {{\"query\": \"...\"}}: {e}")}})),
            )
                .into_response();
        }
    };
    respond(run_query(ctx, req.query, req.now).await)
}

async fn query_get(State(s): State<HttpState>, UrlQuery(p): UrlQuery<GetQuery>) -> Response {
    let Some(ctx) = s.query.clone() else {
        return no_query();
    };
    let Some(text) = p.q.or(p.query) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": {"kind": "syntax", "message": "missing ?q=<query>"}})),
        )
            .into_response();
    };
    respond(run_query(ctx, text, p.now).await)
}

/// Vocabulary for completion in the web page.
async fn vocabulary(State(s): State<HttpState>) -> Response {
    let mut vms = Vec::new();
    let mut l2 = Vec::new();
    let mut hosts = Vec::new();
    if let Some(ctx) = &s.query {
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
    let names = crate::query::catalog::all_names();
    let (props, metrics): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| {
        !crate::query::catalog::Metric::ALL
            .iter()
            .any(|m| m.name() == n)
    });
    Json(serde_json::json!({
        "entities": ["flows", "vms", "switch ports", "hosts", "subnets", "l2 networks", "countries"],
        "properties": props,
        "metrics": metrics,
        "flow_types": crate::enrich::classify::TAGS.iter().map(|t| t.1).collect::<Vec<_>>(),
        "countries": crate::enrich::countries::COUNTRIES.iter().map(|c| c.1).collect::<Vec<_>>(),
        "vms": vms,
        "l2_networks": l2,
        "hosts": hosts,
        "keywords": ["where", "group by", "order by", "limit", "in last", "between", "at", "during", "series", "sum", "avg", "min", "max", "count", "list", "top", "and", "or", "not", "in", "like", "is set", "asc", "desc"],
    }))
    .into_response()
}

/// The routes, behind the request guard (see `auth`).
pub fn router(state: HttpState, access: Arc<super::auth::Access>) -> Router {
    let mut r = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/v1/query", get(query_get).post(query_post))
        .route("/api/v1/vocabulary", get(vocabulary));
    if state.web.is_some() {
        r = super::web::routes(r);
    }
    r.with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            access,
            super::auth::guard,
        ))
}

/// Binds the HTTP listener (so the caller learns the address, port 0 included).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ApiError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::Bind { addr, source })
}
