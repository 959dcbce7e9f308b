//! Transports: the HTTP server (metrics, query API, web page) and the Unix query socket.
//! Handlers only decode requests, call into the library and encode responses.
//!
//! - `auth`: bearer tokens and the request guard (tokens, roles, Host/Origin, JSON POSTs);
//! - `conn`: the HTTP accept loop (connection limit, timeouts, optional TLS);
//! - `http`, `web`: the routes; `unix`: the query socket.

pub mod auth;
pub mod conn;
pub mod http;
pub mod unix;
pub mod web;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use serde::{Deserialize, Serialize};

use crate::telemetry::{Counter, Exposition};
use crate::util::EveryFew;

/// `[http]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address of the HTTP server (`/metrics`, `/api/v1/*`, the web page).
    pub listen: SocketAddr,
    /// Unix query socket (one query per line, one JSON answer per line); default
    /// `<state_dir>/query.sock`.
    pub query_socket: Option<PathBuf>,
    /// Bearer tokens (`ROLE NAME SHA256` lines, see `nagare token new`). Without it the
    /// API is open, which is allowed on a loopback address only.
    pub tokens_file: Option<PathBuf>,
    /// Host names the server answers to, besides IP addresses and, on loopback,
    /// `localhost` (requests naming another host in Host or Origin get 403).
    pub allowed_hosts: Vec<String>,
    /// TLS certificate chain (PEM); with `tls_key`, the server speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Open HTTP connections; further ones are closed at once (counted).
    pub max_connections: usize,
    /// A request's headers (and a kept-alive connection's next request) must arrive
    /// within this.
    pub header_read_timeout_ms: u64,
    /// A connection that moves no byte for this long, with no request running, is
    /// closed.
    pub idle_timeout_ms: u64,
    /// A request must be answered within this (its body read, its query queued and
    /// run), else it gets 503.
    pub request_timeout_ms: u64,
    /// A query socket client must send a whole line within this; an idle or
    /// unterminated request is closed.
    pub socket_timeout_ms: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9180)),
            query_socket: None,
            tokens_file: None,
            allowed_hosts: Vec::new(),
            tls_cert: None,
            tls_key: None,
            max_connections: 256,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            request_timeout_ms: 120_000,
            socket_timeout_ms: 30_000,
        }
    }
}

impl ApiConfig {
    /// Checks what can be checked without reading files.
    pub fn validate(&self) -> Result<(), ApiError> {
        if !self.listen.ip().is_loopback() && self.tokens_file.is_none() {
            return Err(ApiError::Config(format!(
                "http.listen {} is not a loopback address and no tokens file is set: anyone \
                 who can reach it could read every flow. Create a token with \
                 `nagare token new --role read NAME >> /etc/nagare/tokens`, then set \
                 http.tokens_file (or pass --tokens-file), or listen on 127.0.0.1",
                self.listen
            )));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ApiError::Config(
                "http.tls_cert and http.tls_key go together: set both or neither".into(),
            ));
        }
        for (k, v) in [
            ("max_connections", self.max_connections as u64),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("socket_timeout_ms", self.socket_timeout_ms),
        ] {
            if v == 0 {
                return Err(ApiError::Config(format!("http.{k} must be at least 1")));
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("query socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "query socket {path} is in use: another nagare (or another program) accepts \
         connections on it. Stop it, or give this instance another socket \
         (--query-socket or http.query_socket)"
    )]
    SocketInUse { path: PathBuf },
    #[error("invalid [http] configuration: {0}")]
    Config(String),
    #[error("tokens file {path}: {source}")]
    TokensRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tokens file {path}, line {line}: {message}")]
    Tokens {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("TLS: {0}")]
    Tls(String),
}

/// Counters of the transports (`nagare_api_*`).
#[derive(Default)]
pub struct ApiMetrics {
    pub http_accept_errors: Counter,
    pub socket_accept_errors: Counter,
    pub connections_refused: Counter,
    pub unauthorized: Counter,
    pub forbidden: Counter,
    pub bad_host: Counter,
    pub unsupported_media_type: Counter,
    pub request_timeouts: Counter,
    pub idle_closed: Counter,
    pub socket_errors: Counter,
}

impl ApiMetrics {
    pub fn render(&self, out: &mut Exposition) {
        out.header(
            "nagare_api_accept_errors_total",
            "Failed accept() calls (e.g. out of file descriptors), by listener.",
            "counter",
        );
        for (l, c) in [
            ("http", &self.http_accept_errors),
            ("socket", &self.socket_accept_errors),
        ] {
            out.sample(
                "nagare_api_accept_errors_total",
                &[("listener", l)],
                c.get() as f64,
            );
        }
        out.counter(
            "nagare_api_connections_refused_total",
            "HTTP connections closed at once because http.max_connections were open.",
            self.connections_refused.get(),
        );
        out.header(
            "nagare_api_requests_rejected_total",
            "HTTP requests refused before their handler, by reason.",
            "counter",
        );
        for (r, c) in [
            ("unauthorized", &self.unauthorized),
            ("forbidden", &self.forbidden),
            ("host", &self.bad_host),
            ("unsupported_media_type", &self.unsupported_media_type),
            ("timeout", &self.request_timeouts),
        ] {
            out.sample(
                "nagare_api_requests_rejected_total",
                &[("reason", r)],
                c.get() as f64,
            );
        }
        out.counter(
            "nagare_api_idle_connections_closed_total",
            "HTTP connections closed after http.idle_timeout_ms without traffic.",
            self.idle_closed.get(),
        );
        out.counter(
            "nagare_api_socket_request_errors_total",
            "Query socket requests refused (over-long, not UTF-8, timed out).",
            self.socket_errors.get(),
        );
    }
}

/// Logs accept() failures at most once per interval, with how many were not logged
/// (an [`EveryFew`] on a monotonic clock).
pub struct AcceptErrorLog {
    what: &'static str,
    interval: Duration,
    /// Instants are measured from here, in milliseconds, for the limiter.
    origin: Instant,
    limit: EveryFew,
}

impl AcceptErrorLog {
    pub fn new(what: &'static str, interval: Duration) -> Self {
        Self {
            what,
            interval,
            origin: Instant::now(),
            limit: EveryFew::new(i64::try_from(interval.as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// Counts one failure; returns the number of failures suppressed since the last
    /// logged one when this one is to be logged, else None.
    pub fn should_log(&self, now: Instant) -> Option<u64> {
        let ms = now.saturating_duration_since(self.origin).as_millis();
        self.limit.check(i64::try_from(ms).unwrap_or(i64::MAX))
    }

    /// Counts and (rate-limited) logs one failure.
    pub fn record(&self, counter: &Counter, e: &std::io::Error) {
        counter.inc();
        if let Some(suppressed) = self.should_log(Instant::now()) {
            tracing::warn!(
                listener = self.what,
                error = %e,
                suppressed,
                "accept failed (more failures within {:?} are counted, not logged)",
                self.interval
            );
        }
    }
}

/// How often an accept failure is logged at most.
pub const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// The running transports.
pub struct Api {
    pub http_addr: SocketAddr,
    pub socket_path: PathBuf,
    stop_sock: tokio::sync::watch::Sender<bool>,
    sock_task: tokio::task::JoinHandle<()>,
    stop_http: tokio::sync::oneshot::Sender<()>,
    http_task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Api {
    /// Checks the configuration, loads the tokens and TLS files, binds the HTTP
    /// listener and the query socket, and serves both.
    pub async fn start(
        cfg: &ApiConfig,
        state_dir: &Path,
        metrics: Arc<dyn http::MetricsSource>,
        query: Arc<crate::query::Context>,
        web: Arc<web::Web>,
        health: Option<http::HealthSource>,
    ) -> Result<Self, ApiError> {
        cfg.validate()?;
        let tokens = match &cfg.tokens_file {
            Some(p) => Some(auth::Tokens::load(p)?),
            None => None,
        };
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => Some(conn::tls_acceptor(c, k)?),
            _ => None,
        };
        let api_metrics = Arc::new(ApiMetrics::default());
        let tcp = http::bind(cfg.listen).await?;
        let http_addr = tcp.local_addr().map_err(|source| ApiError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let access = Arc::new(auth::Access::new(
            tokens,
            http_addr,
            &cfg.allowed_hosts,
            api_metrics.clone(),
        ));
        let app = http::router(
            http::HttpState {
                metrics,
                query: Some(query.clone()),
                web: Some(web),
                health,
                api: api_metrics.clone(),
            },
            access,
        );
        let socket_path = cfg
            .query_socket
            .clone()
            .unwrap_or_else(|| state_dir.join("query.sock"));
        let sock = unix::bind(&socket_path)?;
        let (stop_sock, stop_sock_rx) = tokio::sync::watch::channel(false);
        let sock_span = tracing::info_span!("query_socket", path = %socket_path.display());
        let sock_task = tokio::spawn(
            unix::serve(
                sock,
                socket_path.clone(),
                query,
                stop_sock_rx,
                unix::SocketOptions {
                    timeout: Duration::from_millis(cfg.socket_timeout_ms),
                },
                api_metrics.clone(),
            )
            .instrument(sock_span),
        );
        let (stop_http, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
        let opts = conn::ServeOptions::from_config(cfg, tls);
        let http_span = tracing::info_span!("http", addr = %http_addr);
        let http_task = tokio::spawn(
            conn::serve(tcp, app, opts, api_metrics, async move {
                let _ = stop_http_rx.await;
            })
            .instrument(http_span),
        );
        Ok(Self {
            http_addr,
            socket_path,
            stop_sock,
            sock_task,
            stop_http,
            http_task,
        })
    }

    /// Stops the query socket (removing it), then the HTTP server.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.stop_sock.send(true);
        let _ = self.sock_task.await;
        let _ = self.stop_http.send(());
        match self.http_task.await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_logged_once_per_interval_with_the_suppressed_count() {
        let log = AcceptErrorLog::new("test", Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(log.should_log(t0), Some(0), "the first is logged");
        for i in 1..=9 {
            // ten failures within a second: none of these is logged
            assert_eq!(log.should_log(t0 + Duration::from_millis(100 * i)), None);
        }
        assert_eq!(log.should_log(t0 + Duration::from_secs(5)), Some(9));
        assert_eq!(log.should_log(t0 + Duration::from_secs(6)), None);
        assert_eq!(log.should_log(t0 + Duration::from_secs(11)), Some(1));
    }

    #[test]
    fn a_non_loopback_listen_needs_a_tokens_file() {
        let open = ApiConfig {
            listen: "0.0.0.0:9180".parse().expect("addr"),
            ..ApiConfig::default()
        };
        let e = open.validate().expect_err("refused").to_string();
        assert!(
            e.contains("0.0.0.0:9180") && e.contains("tokens_file"),
            "{e}"
        );
        assert!(e.contains("nagare token new"), "{e}");
        let with_tokens = ApiConfig {
            tokens_file: Some("/etc/nagare/tokens".into()),
            ..open
        };
        with_tokens.validate().expect("allowed with tokens");
        let v6_loopback = ApiConfig {
            listen: "[::1]:9180".parse().expect("addr"),
            ..ApiConfig::default()
        };
        v6_loopback.validate().expect("loopback needs no tokens");
    }

    #[test]
    fn tls_cert_and_key_go_together() {
        let half = ApiConfig {
            tls_cert: Some("/etc/nagare/cert.pem".into()),
            ..ApiConfig::default()
        };
        assert!(half.validate().is_err());
    }
}
