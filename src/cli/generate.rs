use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use nagare::generate::profile::Site;
use nagare::generate::{Emitter, Pacer, site_for};
use nagare::util::now_ms;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Profile {
    /// A VMware site: VMs on ESXi hosts, port groups, physical servers, branches, Internet.
    Datacenter,
    /// Random addresses and ports (load tests).
    Random,
}

#[derive(Args, Debug)]
pub struct GenArgs {
    /// Collector to send to.
    #[arg(long)]
    pub to: SocketAddr,
    /// Export version for every exporter (5, 9 or 10). Default: ESXi hosts IPFIX,
    /// switches NetFlow v9.
    #[arg(long, value_parser = ["5", "9", "10"])]
    pub version: Option<String>,
    /// Records per second (live traffic; 0 = as fast as possible). Default: the site's
    /// natural rate (datacenter) or 10000 (random).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Stop after this long (e.g. 60, 10m). Default: run until interrupted.
    #[arg(long)]
    pub duration: Option<String>,
    /// Exporters for the random profile (observation domains). The datacenter profile
    /// has 12 ESXi hosts and 2 switches.
    #[arg(long, default_value_t = 4)]
    pub exporters: u32,
    #[arg(long, value_enum, default_value = "datacenter")]
    pub profile: Profile,
    /// Seed: the same seed generates the same traffic.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Back-fill history first: flow times spread over this period before now (e.g. 7d).
    #[arg(long)]
    pub start_offset: Option<String>,
    /// Write the site's inventory (hosts, VMs, port groups, switches) to this file and
    /// exit unless --duration/--start-offset is given too.
    #[arg(long)]
    pub write_inventory: Option<PathBuf>,
    /// Number of VMs in the datacenter profile.
    #[arg(long, default_value_t = 500)]
    pub vms: usize,
}

pub fn run(a: GenArgs) -> anyhow::Result<ExitCode> {
    let version = a.version.as_deref().map(|v| v.parse::<u8>()).transpose()?;
    let site = site_for(a.to, a.vms);
    if let Some(p) = &a.write_inventory {
        std::fs::write(p, site.inventory_toml())
            .with_context(|| format!("cannot write {}", p.display()))?;
        eprintln!(
            "gen: wrote the inventory of {} VMs to {}",
            site.vms.len(),
            p.display()
        );
        if a.duration.is_none() && a.start_offset.is_none() {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let duration = a
        .duration
        .as_deref()
        .map(nagare::util::parse_duration)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let offset = a
        .start_offset
        .as_deref()
        .map(nagare::util::parse_duration)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let mut em = Emitter::new(a.to, version);
    if let Some(off) = offset {
        backfill(
            &site,
            &mut em,
            off,
            a.seed,
            a.profile,
            a.rate.unwrap_or(0.0),
        )?;
    }
    live(&site, &mut em, &a, duration)?;
    eprintln!(
        "gen: sent {} records in {} datagrams to {}",
        em.records, em.datagrams, a.to
    );
    Ok(ExitCode::SUCCESS)
}

/// Sends the datacenter profile's conversations that start in `[t0, t1)`, an hour at a
/// time, each chunk exported a second after its last flow ended. Stops early when
/// `stop` is set. Returns the records sent.
#[allow(clippy::too_many_arguments)]
pub fn send_range(
    site: &Site,
    em: &mut Emitter,
    t0: i64,
    t1: i64,
    seed: u64,
    intensity: f64,
    pacer: &mut Pacer,
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<u64> {
    let hour = 3_600_000i64;
    let before = em.records;
    let mut t = t0;
    while t < t1 && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let end = (t - t.rem_euclid(hour) + hour).min(t1);
        let g = site.generate(t, end, intensity, seed);
        for chunk in g.chunks(2000) {
            pacer.wait(chunk.len());
            let export = chunk.last().map_or(end, |x| x.record.end_ms + 1000);
            em.send(chunk, export)?;
        }
        t = end;
    }
    Ok(em.records - before)
}

/// History: every hour of the last `offset` seconds, sent as fast as `rate` allows.
pub fn backfill(
    site: &Site,
    em: &mut Emitter,
    offset: i64,
    seed: u64,
    profile: Profile,
    rate: f64,
) -> anyhow::Result<()> {
    let now = now_ms();
    let t0 = now - offset * 1000;
    let hour = 3_600_000i64;
    let mut t = t0;
    let mut pacer = Pacer::new(rate);
    let started = Instant::now();
    let mut last = Instant::now();
    while t < now - 60_000 {
        let t1 = (t - t.rem_euclid(hour) + hour).min(now - 60_000);
        let g = match profile {
            Profile::Datacenter => site.generate(t, t1, 1.0, seed),
            Profile::Random => Site::random(t, 20_000, seed ^ t as u64),
        };
        for chunk in g.chunks(2000) {
            pacer.wait(chunk.len());
            // exported a little after the flows ended
            let export = chunk.last().map_or(t1, |x| x.record.end_ms + 1000);
            em.send(chunk, export)?;
        }
        if last.elapsed() > Duration::from_secs(2) {
            let done = (t1 - t0) as f64 / (now - t0).max(1) as f64;
            eprintln!(
                "gen: back-fill {:>3.0}% ({} records, {:.0}s)",
                done * 100.0,
                em.records,
                started.elapsed().as_secs_f64()
            );
            last = Instant::now();
        }
        t = t1;
    }
    eprintln!(
        "gen: back-filled {}s of history ({} records) in {:.1}s",
        offset,
        em.records,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn live(site: &Site, em: &mut Emitter, a: &GenArgs, duration: Option<i64>) -> anyhow::Result<()> {
    if duration == Some(0) {
        return Ok(());
    }
    let end = duration.map(|d| Instant::now() + Duration::from_secs(d.max(0) as u64));
    let mut tick = now_ms();
    let mut random_i: u64 = 0;
    let rate = a.rate;
    let mut pacer = Pacer::new(rate.unwrap_or(0.0));
    // correction of the site's intensity, so that --rate is the rate sent
    let mut scale = 1.0f64;
    loop {
        if end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
        let now = now_ms();
        match a.profile {
            Profile::Datacenter => {
                // one second of the site's traffic at a time, once that second is over
                let wait = tick + 1000 - now;
                if wait > 0 {
                    std::thread::sleep(Duration::from_millis(wait as u64));
                    continue;
                }
                // natural rate: about 60 records/s, varying with the time of day;
                // --rate scales the site, corrected by what each second generated
                let intensity = |scale: f64| rate.map_or(1.0, |r| (r / 60.0 * scale).max(0.001));
                let mut g = site.generate(tick, now, intensity(scale), a.seed);
                if let Some(r) = rate {
                    let want = r * (now - tick) as f64 / 1000.0;
                    let k = want / g.len().max(1) as f64;
                    if want >= 1.0 && !(0.9..=1.1).contains(&k) {
                        // off by more than a tenth (the first second, or the time of
                        // day changed the site's pace): generate it again corrected
                        scale = (scale * k.clamp(0.5, 2.0)).clamp(0.01, 100.0);
                        g = site.generate(tick, now, intensity(scale), a.seed);
                    }
                }
                tick = now;
                // spread over the next second (in twentieths), as many exporters' are
                let parts = g.len().div_ceil(20).max(1);
                for part in g.chunks(parts) {
                    em.send(part, now)?;
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Profile::Random => {
                let r = rate.unwrap_or(10_000.0);
                let batch = ((r / 10.0).ceil() as usize).clamp(1, 50_000);
                random_i += 1;
                let mut g = Site::random(now, batch, a.seed ^ random_i);
                for (i, x) in g.iter_mut().enumerate() {
                    x.source =
                        nagare::generate::profile::Source::Switch(i % a.exporters.max(1) as usize);
                }
                pacer.wait(batch);
                em.send(&g, now)?;
            }
        }
    }
    if em.datagrams == 0 && a.profile == Profile::Datacenter && a.start_offset.is_none() {
        bail!("nothing was sent");
    }
    Ok(())
}

impl PartialEq for Profile {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}
