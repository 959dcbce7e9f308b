//! `nagare demo`: the daemon on loopback with a generated 500-VM data centre: its
//! inventory, a GeoIP database of its Internet addresses (unless --geoip), a week of
//! back-filled history (newest day first, so the default 24-hour views fill first) and
//! live traffic, sent as real IPFIX (ESXi hosts) and NetFlow v9 (switches).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use nagare::config::Config;
use nagare::generate::{Emitter, Pacer, site_for};

use super::generate::send_range;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Web page and HTTP API.
    #[arg(long, default_value = "127.0.0.1:9180")]
    pub http: SocketAddr,
    /// UDP address the emulated exporters send to.
    #[arg(long, default_value = "127.0.0.1:2055")]
    pub listen: SocketAddr,
    /// Directory for the demo's state, inventory and GeoIP database. Default: a new
    /// directory under the system's temporary directory (printed at start).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// A real country database (MaxMind or the flat `country_code` layout) instead of
    /// the demo's own.
    #[arg(long)]
    pub geoip: Option<PathBuf>,
    /// History to back-fill before live traffic (e.g. 7d, 12h, 0).
    #[arg(long, default_value = "7d")]
    pub history: String,
    /// VMs in the generated site.
    #[arg(long, default_value_t = 500)]
    pub vms: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Traffic volume relative to the nominal site (1.0: ~30k distinct flows and ~60
    /// records per second).
    #[arg(long, default_value_t = 1.0)]
    pub intensity: f64,
    /// Stop after this long (e.g. 10m). Default: run until interrupted.
    #[arg(long)]
    pub duration: Option<String>,
    /// Log filter (tracing syntax).
    #[arg(long, default_value = "warn")]
    pub log: String,
}

/// Records per second while back-filling.
const BACKFILL_RATE: f64 = 300_000.0;

const TRY: [&str; 6] = [
    "flows group by Destination Country",
    "top 5 VMs by Network Rate in last 2 days",
    "series(sum(bytes rate)) of flows group by Destination Country order by sum(Total Traffic)",
    "flows where Flow Type = 'Source is Internet' and Port in ('22', '23', '3389') group by Source Country",
    "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of flow where port in (22, 23, 3389) and flow type = 'east-west' group by source vm in last 7 days during 21:00-06:30",
    "flows where Source L2 Network in ( 'vlan-1105' ) and Destination L2 Network not in ( 'vlan-1105' ) order by Total Traffic",
];

pub fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    nagare::telemetry::init_tracing(&a.log);
    let history = nagare::util::parse_duration(&a.history).map_err(anyhow::Error::msg)?;
    let duration = a
        .duration
        .as_deref()
        .map(nagare::util::parse_duration)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let dir = match &a.state_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("nagare-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let site = site_for(a.listen, a.vms);
    let inventory = dir.join("inventory.toml");
    std::fs::write(&inventory, site.inventory_toml())
        .with_context(|| format!("cannot write {}", inventory.display()))?;
    let geoip = match &a.geoip {
        Some(p) => p.clone(),
        None => {
            let p = dir.join("demo-countries.mmdb");
            let bytes = nagare::enrich::geoip::write_mmdb(&site.geo_prefixes())
                .map_err(anyhow::Error::msg)?;
            std::fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))?;
            p
        }
    };
    let mut cfg = Config {
        state_dir: dir.join("state"),
        ..Config::default()
    };
    cfg.listener.listen = vec![a.listen];
    cfg.http.listen = a.http;
    cfg.http.query_socket = Some(dir.join("query.sock"));
    cfg.enrich.inventory = Some(inventory.clone());
    cfg.enrich.geoip = Some(geoip.clone());
    cfg.validate()?;

    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<nagare::daemon::Bound>();
    let feeder =
        {
            let stop = stop.clone();
            let seed = a.seed;
            let intensity = a.intensity;
            let dir = dir.clone();
            let history_text = a.history.clone();
            std::thread::Builder::new()
            .name("demo-traffic".into())
            .spawn(move || -> anyhow::Result<()> {
                let Ok(b) = ready_rx.recv() else {
                    return Ok(());
                };
                let to = b.udp.first().copied().context("no UDP listener")?;
                // the exporters' addresses and the inventory's switches must agree
                let site = site_for(to, site.vms.len());
                println!(
                    "nagare: listening udp={to} http={} socket={}",
                    b.http,
                    b.socket.display()
                );
                println!("nagare demo: web page  http://{}/", b.http);
                println!(
                    "nagare demo: state in {} (inventory.toml, {})",
                    dir.display(),
                    geoip.display()
                );
                println!("nagare demo: try, in another terminal:");
                for q in TRY {
                    println!("  nagare query --server http://{} \"{q}\"", b.http);
                }
                let mut em = Emitter::new(to, None);
                // paced so that the collector, on the same two cores, keeps up without
                // loss (it decodes, enriches and rolls up ~500k records/s)
                let mut pacer = Pacer::new(BACKFILL_RATE);
                let now = nagare::util::now_ms();
                let started = Instant::now();
                let day = 86_400_000i64;
                let hist_ms = history * 1000;
                if hist_ms > 0 {
                    println!(
                        "nagare demo: back-filling {} of a {}-VM data centre, newest day first ...",
                        history_text,
                        site.vms.len()
                    );
                }
                let mut end = now - 60_000;
                while end > now - hist_ms && !stop.load(Ordering::Relaxed) {
                    let start = (end - day).max(now - hist_ms);
                    send_range(&site, &mut em, start, end, seed, intensity, &mut pacer, &stop)?;
                    println!(
                        "nagare demo: {:>4.1} of {:.1} days loaded ({} records, {:.0}s)",
                        (now - start) as f64 / day as f64,
                        hist_ms as f64 / day as f64,
                        em.records,
                        started.elapsed().as_secs_f64()
                    );
                    end = start;
                }
                println!("nagare demo: ready; live traffic follows (Ctrl-C stops)");
                // live: what started since the back-fill's end, once a second
                let mut tick = now - 60_000;
                while !stop.load(Ordering::Relaxed) {
                    let t = nagare::util::now_ms();
                    let g = site.generate(tick, t, intensity, seed);
                    em.send(&g, t)?;
                    tick = t;
                    std::thread::sleep(Duration::from_secs(1));
                }
                Ok(())
            })
            .context("cannot start the traffic thread")?
        };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("nagare-rt")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let stop2 = stop.clone();
    let res = rt.block_on(async move {
        let signals = nagare::daemon::termination_signals();
        let shutdown = async move {
            let limit = async {
                match duration {
                    Some(d) => tokio::time::sleep(Duration::from_secs(d.max(0) as u64)).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = signals => {}
                _ = limit => {}
            }
            stop2.store(true, Ordering::Relaxed);
        };
        nagare::daemon::run(cfg, shutdown, move |b| {
            let _ = ready_tx.send(b.clone());
        })
        .await
    });
    stop.store(true, Ordering::Relaxed);
    let fed = feeder.join();
    res?;
    match fed {
        Ok(r) => r?,
        Err(_) => anyhow::bail!("the traffic thread failed"),
    }
    Ok(ExitCode::SUCCESS)
}
