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
use crate::query::wire::{self, Answer, QueryRequest, error_json, run_query};
use crate::query::{Context, ErrorKind};
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

#[derive(Deserialize)]
pub struct GetQuery {
    q: Option<String>,
    query: Option<String>,
    now: Option<i64>,
}

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

fn respond(r: Answer) -> Response {
    match r {
        Ok(bytes) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response(),
        Err((kind, e)) => (status_of(kind), Json(e)).into_response(),
    }
}

fn no_query() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(error_json(
            "unavailable",
            "queries are not available on this server",
        )),
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
                Json(error_json(
                    "syntax",
                    &format!("the request body must be JSON {{\"query\": \"...\"}}: {e}"),
                )),
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
            Json(error_json("syntax", "missing ?q=<query>")),
        )
            .into_response();
    };
    respond(run_query(ctx, text, p.now).await)
}

/// Vocabulary for completion in the web page.
async fn vocabulary(State(s): State<HttpState>) -> Response {
    Json(wire::vocabulary(s.query.as_deref())).into_response()
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
