//! The HTTP server (axum): `/metrics` and `/healthz`; later issues add the API and page.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::ApiError;
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
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    let mut e = Exposition::new();
    s.metrics.render(&mut e);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        e.finish(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// Binds the HTTP listener (so the caller learns the address, port 0 included).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ApiError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::Bind { addr, source })
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
