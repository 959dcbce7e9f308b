//! The HTTP accept loop: at most `http.max_connections` connections (further ones are
//! closed at once), hyper's header-read timeout, an idle timeout (no byte moved and
//! no request running), a per-request timeout, optional TLS (rustls with *ring*), and
//! accept failures counted and logged at most once per interval.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use super::{ACCEPT_LOG_INTERVAL, AcceptErrorLog, ApiConfig, ApiError, ApiMetrics};

#[derive(Clone)]
pub struct ServeOptions {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub tls: Option<TlsAcceptor>,
}

impl ServeOptions {
    pub fn from_config(cfg: &ApiConfig, tls: Option<TlsAcceptor>) -> Self {
        Self {
            max_connections: cfg.max_connections.max(1),
            header_read_timeout: Duration::from_millis(cfg.header_read_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(cfg.idle_timeout_ms.max(1)),
            request_timeout: Duration::from_millis(cfg.request_timeout_ms.max(1)),
            tls,
        }
    }
}

/// Loads the certificate chain and key (PEM) into a TLS acceptor (HTTP/1.1).
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ApiError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ApiError::Tls(format!("certificate {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ApiError::Tls(format!(
            "certificate {}: no certificate in the file",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ApiError::Tls(format!("key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ApiError::Tls(format!("certificate and key: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// When a connection last moved a byte, and how many requests it is running.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    running: AtomicUsize,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            running: AtomicUsize::new(0),
        })
    }
    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let now = self.base.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

struct Running(Arc<Activity>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// An IO that records its activity.
struct Tracked<T> {
    io: T,
    act: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.act.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.act.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The router as a hyper service that counts running requests and bounds their time.
#[derive(Clone)]
struct Svc {
    app: Router,
    act: Arc<Activity>,
    timeout: Duration,
    metrics: Arc<ApiMetrics>,
}

impl hyper::service::Service<Request<Incoming>> for Svc {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        use tower_service::Service;
        let mut app = self.app.clone();
        self.act.running.fetch_add(1, Ordering::Relaxed);
        let running = Running(self.act.clone());
        let (timeout, metrics) = (self.timeout, self.metrics.clone());
        Box::pin(async move {
            let _running = running;
            match tokio::time::timeout(timeout, app.call(req.map(Body::new))).await {
                Ok(r) => r,
                Err(_) => {
                    metrics.request_timeouts.inc();
                    let body = serde_json::json!({"error": {"kind": "timeout", "message": "the request was not answered within http.request_timeout_ms"}});
                    Ok(Response::builder()
                        .status(StatusCode::SERVICE_UNAVAILABLE)
                        .header("content-type", "application/json")
                        .header("connection", "close")
                        .body(Body::from(body.to_string()))
                        .unwrap_or_default())
                }
            }
        })
    }
}

/// Serves one connection until it ends, idles out, or `stop` says so.
async fn connection<T>(
    io: T,
    app: Router,
    opts: ServeOptions,
    metrics: Arc<ApiMetrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let act = Activity::new();
    act.touch();
    let svc = Svc {
        app,
        act: act.clone(),
        timeout: opts.request_timeout,
        metrics: metrics.clone(),
    };
    let io = TokioIo::new(Tracked {
        io,
        act: act.clone(),
    });
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .keep_alive(true);
    let conn = b.serve_connection(io, svc);
    tokio::pin!(conn);
    let check = (opts.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(check);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = tick.tick(), if !closing => {
                if act.running.load(Ordering::Relaxed) == 0 && act.idle_for() >= opts.idle_timeout {
                    metrics.idle_closed.inc();
                    // an idle connection has no request: this closes it now
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = stop.changed(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 86\r\n\r\n{\"error\":{\"kind\":\"busy\",\"message\":\"too many open connections (http.max_connections)\"}}";

/// Accepts and serves connections until `shutdown` completes, then lets running
/// requests finish (at most 10 s).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    metrics: Arc<ApiMetrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(opts.max_connections));
    let log = AcceptErrorLog::new("http", ACCEPT_LOG_INTERVAL);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            a = listener.accept() => match a {
                Ok((stream, _peer)) => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        metrics.connections_refused.inc();
                        if opts.tls.is_none() {
                            let _ = stream.try_write(BUSY_RESPONSE);
                        }
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let (app, opts, metrics, stop) =
                        (app.clone(), opts.clone(), metrics.clone(), stop_rx.clone());
                    conns.spawn(async move {
                        let _permit = permit;
                        match opts.tls.clone() {
                            None => connection(stream, app, opts, metrics, stop).await,
                            Some(tls) => {
                                let hs = tokio::time::timeout(opts.header_read_timeout, tls.accept(stream)).await;
                                match hs {
                                    Ok(Ok(s)) => connection(s, app, opts, metrics, stop).await,
                                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                                    Err(_) => tracing::debug!("TLS handshake timed out"),
                                }
                            }
                        }
                    });
                }
                Err(e) => {
                    log.record(&metrics.http_accept_errors, &e);
                    // out of descriptors: give running requests a moment to free some
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    let _ = stop_tx.send(true);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        conns.abort_all();
    }
    Ok(())
}
