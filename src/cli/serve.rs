use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use nagare::config::Config;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Configuration file (TOML); flags override its keys.
    #[arg(long, short = 'c', env = "NAGARE_CONFIG")]
    pub config: Option<PathBuf>,
    /// UDP address to receive flows on (repeatable). Default 0.0.0.0:2055 and 0.0.0.0:4739.
    #[arg(long = "listen", short = 'l')]
    pub listen: Vec<SocketAddr>,
    /// HTTP address for /metrics, the API and the web page. Default 127.0.0.1:9180.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Directory for state that must survive a restart. Default /var/lib/nagare.
    #[arg(long, env = "STATE_DIRECTORY")]
    pub state_dir: Option<PathBuf>,
    /// Bearer tokens file (`ROLE NAME SHA256` lines; `nagare token new` makes them).
    /// Required when --http is not a loopback address.
    #[arg(long)]
    pub tokens_file: Option<PathBuf>,
    /// Unix query socket (default <state-dir>/query.sock).
    #[arg(long)]
    pub query_socket: Option<PathBuf>,
    /// Inventory file (hosts, VMs, L2 networks, subnets, switches). Reloaded on SIGHUP
    /// and when it changes.
    #[arg(long)]
    pub inventory: Option<PathBuf>,
    /// Country database (.mmdb, GeoLite2-Country or ip-location-db layout).
    #[arg(long)]
    pub geoip: Option<PathBuf>,
    /// Log filter (RUST_LOG syntax), e.g. info or nagare=debug.
    #[arg(long, default_value = "info")]
    pub log: String,
}

pub fn build_config(a: &ServeArgs) -> anyhow::Result<Config> {
    let mut cfg = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if !a.listen.is_empty() {
        cfg.listener.listen = a.listen.clone();
    }
    if let Some(h) = a.http {
        cfg.http.listen = h;
    }
    if let Some(p) = &a.tokens_file {
        cfg.http.tokens_file = Some(p.clone());
    }
    if let Some(p) = &a.query_socket {
        cfg.http.query_socket = Some(p.clone());
    }
    if let Some(p) = &a.inventory {
        cfg.enrich.inventory = Some(p.clone());
    }
    if let Some(p) = &a.geoip {
        cfg.enrich.geoip = Some(p.clone());
    }
    if let Some(d) = &a.state_dir {
        // systemd's STATE_DIRECTORY may list several directories separated by ':'.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        cfg.state_dir = PathBuf::from(first);
    }
    cfg.validate()?;
    Ok(cfg)
}

pub fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    nagare::telemetry::init_tracing(&a.log);
    let cfg = build_config(&a)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("nagare-rt")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let signals = nagare::daemon::termination_signals();
        let shutdown = async {
            let name = signals.await;
            tracing::info!("{name} received");
        };
        nagare::daemon::run(cfg, shutdown, |b| {
            let udp: Vec<String> = b.udp.iter().map(|a| a.to_string()).collect();
            // One machine-readable line for scripts and tests.
            println!(
                "nagare: listening udp={} http={} socket={}",
                udp.join(","),
                b.http,
                b.socket.display()
            );
        })
        .await
    })?;
    Ok(ExitCode::SUCCESS)
}
