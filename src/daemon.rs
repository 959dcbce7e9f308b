//! `nagare serve`: builds the components in dependency order, runs them until the
//! shutdown future completes, then drains them in reverse order.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use std::time::Duration;
use tracing::Instrument;

use crate::api::http::{HealthSource, MetricsSource};
use crate::config::Config;
use crate::decode::Decoder;
use crate::decode::persist::DecoderStateFile;
use crate::enrich::Enricher;
use crate::listener::Listener;
use crate::pipeline::Pipeline;
use crate::rollup::Rollup;
use crate::telemetry::Exposition;
use crate::util::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    StateDir(#[from] crate::statedir::StateDirError),
    #[error(transparent)]
    Listener(#[from] crate::listener::ListenerError),
    #[error(transparent)]
    Api(#[from] crate::api::ApiError),
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error(transparent)]
    Enrich(#[from] crate::enrich::EnrichError),
    #[error(transparent)]
    Rollup(#[from] crate::rollup::RollupError),
}

/// What a started daemon is bound to.
#[derive(Debug, Clone)]
pub struct Bound {
    pub udp: Vec<SocketAddr>,
    pub http: SocketAddr,
    pub socket: PathBuf,
}

pub use crate::decode::persist::DECODER_STATE_FILE;

/// Keeps glibc from handing large blocks back to the kernel at every free. Open
/// buckets are published as fresh copies of their rows every second (megabytes per
/// shard); served by mmap and returned with munmap, every copy would fault in and
/// zero its pages again. Blocks up to 32 MiB come from the heap instead, and up to
/// 256 MiB of free heap is kept for reuse.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before the daemon's
    // threads start allocating large blocks
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// A file size limit (`ulimit -f`, RLIMIT_FSIZE) makes the kernel send SIGXFSZ at the
/// write that crosses it, which would kill the daemon; ignored, the write fails with
/// EFBIG and is handled (retried) like a full disk.
fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Installs the SIGTERM and SIGINT handlers at once, so a signal that arrives while the
/// daemon starts is not lost (nor kills the process before its state is saved), and
/// returns a future that resolves with the signal's name. Call within a tokio runtime.
pub fn termination_signals() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut t), Ok(mut i)) => tokio::select! {
                _ = t.recv() => "SIGTERM",
                _ = i.recv() => "SIGINT",
            },
            (Ok(mut t), Err(e)) => {
                tracing::error!(error = %e, "cannot install the SIGINT handler");
                t.recv().await;
                "SIGTERM"
            }
            (Err(e), Ok(mut i)) => {
                tracing::error!(error = %e, "cannot install the SIGTERM handler");
                i.recv().await;
                "SIGINT"
            }
            (Err(e), Err(_)) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                std::future::pending().await
            }
        }
    }
}

/// Runs the daemon until `shutdown` completes. `on_ready` is called once everything
/// is bound (tests and `nagare serve` use it to learn the addresses).
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&Bound) + Send,
) -> Result<(), DaemonError> {
    tune_allocator();
    ignore_file_size_signal();
    let state_dir = cfg.state_dir.clone();
    // before any history is read: writable, and ours alone
    crate::statedir::prepare(&state_dir)?;
    let state_lock = crate::statedir::lock(&state_dir)?;
    tracing::info!(lock = %state_lock.path.display(), pid = std::process::id(), "state directory locked");

    let decoder = Arc::new(Decoder::new(cfg.decode.clone()));
    let decoder_file = Arc::new(DecoderStateFile::new(&state_dir, cfg.decoder_state.clone()));
    decoder_file.load(&decoder, now_ms());

    let enricher = Arc::new(Enricher::new(cfg.enrich.clone())?);
    let (rollup, report) = Rollup::start(&cfg.rollup, Some(state_dir.clone()), enricher.clone())?;
    for bad in &report.bad_frames {
        tracing::error!(problem = %bad, "damaged rollup data skipped");
    }
    tracing::info!(
        chunks = report.chunks,
        rows = report.rows,
        recovered = report.recovered,
        damaged = report.bad_frames.len(),
        seconds = report.seconds,
        "history loaded"
    );
    let pipeline = {
        let rollup = rollup.clone();
        Arc::new(Pipeline::with_next(Box::new(move |batch, how| {
            rollup.ingest(batch, how)
        })))
    };
    let listener = Arc::new(Listener::start(
        &cfg.listener,
        decoder.clone(),
        pipeline.clone(),
    )?);
    let udp = listener.local_addrs();

    let metrics: Arc<dyn MetricsSource> = {
        let decoder = decoder.clone();
        let listener = listener.clone();
        let pipeline = pipeline.clone();
        let enricher = enricher.clone();
        let rollup = rollup.clone();
        let decoder_file = decoder_file.clone();
        Arc::new(move |out: &mut Exposition| {
            listener.render_metrics(out);
            decoder.render_metrics(out);
            decoder_file.render_metrics(out);
            pipeline.render_metrics(out);
            enricher.render_metrics(out);
            rollup.render_metrics(out);
        })
    };
    let learned: Arc<dyn Fn(crate::model::ExporterId, u32) -> Option<String> + Send + Sync> = {
        let d = decoder.clone();
        Arc::new(move |e, i| d.interface_name(e, i))
    };
    let qctx = Arc::new(crate::query::Context::new(
        rollup.store.clone(),
        enricher.clone(),
        learned,
        cfg.query.clone(),
    ));
    let metrics: Arc<dyn MetricsSource> = {
        let qm = qctx.metrics.clone();
        let inner = metrics;
        Arc::new(move |out: &mut Exposition| {
            inner.render(out);
            qm.render(out);
        })
    };
    let web = Arc::new(crate::api::web::Web::load(&state_dir));
    let health: HealthSource = {
        let rollup = rollup.clone();
        let decoder_file = decoder_file.clone();
        Arc::new(move || {
            let problems: Vec<String> = [rollup.store.health(), decoder_file.health()]
                .into_iter()
                .filter_map(Result::err)
                .collect();
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            }
        })
    };
    let api = crate::api::Api::start(
        &cfg.http,
        &state_dir,
        metrics,
        qctx.clone(),
        web,
        Some(health),
    )
    .await?;
    let (http_addr, sock_path) = (api.http_addr, api.socket_path.clone());

    // Housekeeping: persist templates when they change, poll kernel drops, expire.
    let (stop_bg_tx, mut stop_bg_rx) = tokio::sync::watch::channel(false);
    let bg =
        {
            let decoder = decoder.clone();
            let decoder_file = decoder_file.clone();
            let listener = listener.clone();
            let enricher = enricher.clone();
            let rollup = rollup.clone();
            let span = tracing::info_span!("housekeeping");
            tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n: u64 = 0;
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                let hup_fut = async {
                    match hup.as_mut() {
                        Some(h) => {
                            h.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = hup_fut => {
                        tracing::info!("SIGHUP: reloading the inventory and GeoIP database");
                        let e = enricher.clone();
                        let _ = tokio::task::spawn_blocking(move || e.reload(true)).await;
                        continue;
                    }
                    _ = stop_bg_rx.changed() => break,
                }
                n += 1;
                if n.is_multiple_of(2) {
                    let e = enricher.clone();
                    let _ = tokio::task::spawn_blocking(move || e.reload(false)).await;
                }
                if n.is_multiple_of(60) {
                    let r = rollup.clone();
                    let _ =
                        tokio::task::spawn_blocking(move || r.store.expire(now_ms() / 1000)).await;
                }
                {
                    // written only when changed, at most every decoder_state.min_interval_secs
                    let (d, f) = (decoder.clone(), decoder_file.clone());
                    let _ = tokio::task::spawn_blocking(move || f.tick(&d, now_ms())).await;
                }
                if n.is_multiple_of(5) {
                    listener.poll_kernel_drops();
                }
                if n.is_multiple_of(60) {
                    let now = now_ms();
                    decoder.expire_held(now);
                    let gone = decoder.templates.expire(now / 1000);
                    if gone > 0 {
                        tracing::info!(
                            templates = gone,
                            "expired templates not refreshed within the TTL"
                        );
                    }
                    let gone = decoder.expire_exporters(now);
                    if gone > 0 {
                        tracing::info!(
                            exporters = gone,
                            "forgot exporters silent for longer than exporter_idle_secs"
                        );
                    }
                }
            }
        }.instrument(span))
        };

    let bound = Bound {
        udp,
        http: http_addr,
        socket: sock_path.clone(),
    };
    tracing::info!(udp = ?bound.udp, http = %bound.http, state_dir = %state_dir.display(), "nagare is running");
    on_ready(&bound);

    shutdown.await;
    tracing::info!("shutting down");

    // Reverse order: stop intake, flush, persist, stop serving.
    let _ = stop_bg_tx.send(true);
    let _ = bg.await;
    {
        let l = listener.clone();
        let _ = tokio::task::spawn_blocking(move || l.stop()).await;
    }
    {
        // drain the shard queues, close every open bucket, wait for the disk
        let r = rollup.clone();
        let _ = tokio::task::spawn_blocking(move || r.stop()).await;
    }
    decoder_file.save_now(&decoder, now_ms());
    api.stop().await.map_err(DaemonError::Http)?;
    tracing::info!("stopped");
    drop(state_lock);
    Ok(())
}
