//! Enrichment: what each end of a flow is (VM, ESXi host, cluster, subnet, L2 network,
//! VLAN, country, internal or Internet), from the inventory and the GeoIP database.
//!
//! The lookup tables are immutable and swapped atomically ([`arc_swap`]) when the
//! inventory or the GeoIP file changes (SIGHUP or a file-change poll); a failed reload
//! keeps the previous tables, logs why and counts it. Lookups on the hot path only load
//! the current tables.

pub mod classify;
pub mod countries;
pub mod fold;
pub mod geoip;
pub mod inventory;
pub mod lpm;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use ipnetwork::IpNetwork;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::sym::{self, Sym};
use crate::telemetry::{Counter, Exposition, Gauge};
use countries::CountryCode;
use geoip::GeoTable;
use inventory::Inventory;
use lpm::IpTable;

#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error(transparent)]
    Inventory(#[from] inventory::InventoryError),
    #[error("cannot read inventory {path}: {source}")]
    ReadInventory {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    GeoIp(#[from] geoip::GeoIpError),
}

/// `[enrich]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichConfig {
    /// Inventory file (hosts, VMs, L2 networks, subnets, switches); see
    /// config/inventory.example.toml. Reloaded on SIGHUP and when it changes.
    pub inventory: Option<PathBuf>,
    /// Country database (.mmdb): MaxMind GeoIP2/GeoLite2-Country or the flat
    /// `country_code` layout. Reloaded like the inventory. Without it, every country
    /// is "Unknown".
    pub geoip: Option<PathBuf>,
}

/// Endpoint flags.
pub mod flag {
    pub const INTERNAL: u8 = 1;
    pub const VM: u8 = 2;
    pub const INTERNET: u8 = 4;
    pub const MULTICAST: u8 = 8;
    pub const BROADCAST: u8 = 16;
    /// The address is an ESXi host's own (management / vmkernel) address.
    pub const ESXI: u8 = 32;
}

/// Everything nagare knows about one end of a flow. Small and `Copy`: it travels with
/// every flow to the rollup shards and is stored once per distinct end per bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub vm: Sym,
    pub host: Sym,
    pub cluster: Sym,
    pub l2: Sym,
    /// Name of the configured subnet containing the address (NONE for derived ones).
    pub subnet_name: Sym,
    /// Prefix length of the subnet: the configured one, else /24 (IPv4) or /64 (IPv6).
    pub subnet_len: u8,
    pub vlan: u16,
    pub country: CountryCode,
    pub asn: u32,
    pub flags: u8,
}

/// Hashes the fields packed into five words, not one by one: a shard hashes an
/// endpoint for every row it creates (to store each distinct end once per bucket).
/// Equal endpoints hash alike, as `Eq` requires.
impl std::hash::Hash for Endpoint {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u128(crate::model::ip_to_u128(self.ip));
        h.write_u64(u64::from(self.vm.0) | u64::from(self.host.0) << 32);
        h.write_u64(u64::from(self.cluster.0) | u64::from(self.l2.0) << 32);
        h.write_u64(
            u64::from(self.subnet_name.0)
                | u64::from(self.subnet_len) << 32
                | u64::from(self.vlan) << 40
                | u64::from(self.flags) << 56,
        );
        h.write_u64(u64::from(self.country) | u64::from(self.asn) << 16);
    }
}

impl Endpoint {
    pub fn is(&self, f: u8) -> bool {
        self.flags & f != 0
    }
    /// The subnet as a prefix.
    pub fn subnet(&self) -> IpNetwork {
        let len = self.subnet_len;
        IpNetwork::new(self.ip, len)
            .and_then(|n| IpNetwork::new(n.network(), len))
            .unwrap_or_else(|_| IpNetwork::from(self.ip))
    }
}

/// The MULTICAST / BROADCAST flag of an address, given its subnet's directed-broadcast
/// key and prefix length.
fn group_flag(ip: IpAddr, key: u128, broadcast: u128, subnet_len: u8) -> u8 {
    match ip {
        IpAddr::V4(a) if a.is_multicast() => flag::MULTICAST,
        IpAddr::V6(a) if a.is_multicast() => flag::MULTICAST,
        IpAddr::V4(a) if a.is_broadcast() || (key == broadcast && subnet_len < 31) => {
            flag::BROADCAST
        }
        _ => 0,
    }
}

/// What a configured prefix says about addresses in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubnetInfo {
    name: Sym,
    l2: Sym,
    len: u8,
    /// Last address of the prefix (directed broadcast for IPv4), as a u128 key.
    broadcast: u128,
}

/// A VM's attributes (for VM listings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmInfo {
    pub name: Sym,
    pub ips: Vec<IpAddr>,
    pub host: Sym,
    pub cluster: Sym,
    pub port_group: Sym,
    pub gateway: Option<IpAddr>,
    pub vcpu: Option<u32>,
    pub memory_mb: Option<u64>,
    pub uuid: Option<String>,
}

/// The inventory-derived lookup tables (swapped as a whole on reload).
#[derive(Debug, Default)]
pub struct Tables {
    pub generation: u64,
    internal: IpTable<bool>,
    subnets: IpTable<u32>,
    subnet_info: Vec<SubnetInfo>,
    /// Some configured IPv4 subnet is longer than /24 and shorter than /31: its
    /// directed broadcast need not end in .255.
    has_short_subnets: bool,
    vm_by_ip: FxHashMap<IpAddr, u32>,
    pub vms: Vec<VmInfo>,
    host_by_ip: FxHashMap<IpAddr, (Sym, Sym)>,
    /// host name -> cluster
    pub host_cluster: HashMap<Sym, Sym>,
    l2_by_vlan: FxHashMap<u16, Sym>,
    /// L2 network name -> vlan
    pub l2_vlan: FxHashMap<Sym, u16>,
    /// exporter IP -> (switch name, ifIndex -> interface name)
    pub switches: HashMap<IpAddr, (Sym, HashMap<u32, Sym>)>,
    pub inventory: Inventory,
}

const SPECIAL_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
];
const SPECIAL_V6: &[&str] = &[
    "::/128",
    "::1/128",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

fn not_public() -> &'static IpTable<bool> {
    static T: std::sync::OnceLock<IpTable<bool>> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        IpTable::build(
            SPECIAL_V4
                .iter()
                .chain(SPECIAL_V6)
                .filter_map(|s| s.parse::<IpNetwork>().ok())
                .map(|n| (n, true)),
        )
    })
}

/// Whether an address is public unicast (global, not reserved, documentation,
/// private, loopback, link-local or multicast). Only global unicast IPv6 (2000::/3).
pub fn is_public_unicast(ip: IpAddr) -> bool {
    match crate::model::canonical_ip(ip) {
        IpAddr::V4(a) => !a.is_broadcast() && not_public().get(IpAddr::V4(a)).is_none(),
        IpAddr::V6(a) => {
            (a.segments()[0] & 0xe000) == 0x2000 && not_public().get(IpAddr::V6(a)).is_none()
        }
    }
}

fn last_addr(n: &IpNetwork) -> u128 {
    match n {
        IpNetwork::V4(v) => crate::model::ip_to_u128(IpAddr::V4(v.broadcast())),
        IpNetwork::V6(v) => lpm::v6_bounds(*v).1,
    }
}

impl Tables {
    /// Builds lookup tables from a validated inventory.
    pub fn build(inv: Inventory, generation: u64) -> Self {
        let mut t = Tables {
            generation,
            ..Default::default()
        };
        // Internal = configured internal prefixes + every configured subnet.
        let mut internal: Vec<(IpNetwork, bool)> =
            inv.internal.iter().map(|n| (*n, true)).collect();
        // Subnets: l2_network subnets and named subnets; most specific wins.
        let mut subnet_prefixes = Vec::new();
        for l in &inv.l2_networks {
            let l2 = sym::intern(&l.name);
            if let Some(v) = l.vlan {
                t.l2_by_vlan.insert(v, l2);
                t.l2_vlan.insert(l2, v);
            }
            for n in &l.subnets {
                subnet_prefixes.push((
                    *n,
                    SubnetInfo {
                        name: Sym::NONE,
                        l2,
                        len: n.prefix(),
                        broadcast: last_addr(n),
                    },
                ));
            }
        }
        for s in &inv.subnets {
            // a named subnet equal to an L2 network's subnet keeps the L2 network
            let l2 = subnet_prefixes
                .iter()
                .find(|(n, _)| *n == s.cidr)
                .map_or(Sym::NONE, |(_, i)| i.l2);
            subnet_prefixes.push((
                s.cidr,
                SubnetInfo {
                    name: s.name.as_deref().map_or(Sym::NONE, sym::intern),
                    l2,
                    len: s.cidr.prefix(),
                    broadcast: last_addr(&s.cidr),
                },
            ));
        }
        let mut prefixes = Vec::new();
        for (i, (n, info)) in subnet_prefixes.into_iter().enumerate() {
            if matches!(n, IpNetwork::V4(_)) && (25..=30).contains(&n.prefix()) {
                t.has_short_subnets = true;
            }
            internal.push((n, true));
            t.subnet_info.push(info);
            prefixes.push((n, i as u32));
        }
        t.subnets = IpTable::build(prefixes);
        t.internal = IpTable::build(internal);
        for h in &inv.hosts {
            let name = sym::intern(&h.name);
            let cluster = h.cluster.as_deref().map_or(Sym::NONE, sym::intern);
            t.host_cluster.insert(name, cluster);
            if let Some(ip) = h.ip {
                t.host_by_ip.insert(ip, (name, cluster));
            }
        }
        for v in &inv.vms {
            let host = v.host.as_deref().map_or(Sym::NONE, sym::intern);
            let info = VmInfo {
                name: sym::intern(&v.name),
                ips: v.ips.clone(),
                host,
                cluster: t.host_cluster.get(&host).copied().unwrap_or(Sym::NONE),
                port_group: v.port_group.as_deref().map_or(Sym::NONE, sym::intern),
                gateway: v.gateway,
                vcpu: v.vcpu,
                memory_mb: v.memory_mb,
                uuid: v.uuid.clone(),
            };
            let idx = t.vms.len() as u32;
            for ip in &v.ips {
                t.vm_by_ip.insert(*ip, idx);
            }
            t.vms.push(info);
        }
        for s in &inv.switches {
            let ifs = s
                .interfaces
                .iter()
                .map(|(k, v)| (*k, sym::intern(v)))
                .collect();
            t.switches.insert(s.exporter, (sym::intern(&s.name), ifs));
        }
        t.inventory = inv;
        t
    }

    /// Whether an address is multicast or broadcast (what [`Self::endpoint`] flags as
    /// `MULTICAST` or `BROADCAST`), without the rest of the enrichment.
    pub fn is_group(&self, ip: IpAddr) -> bool {
        let ip = crate::model::canonical_ip(ip);
        let key = crate::model::ip_to_u128(ip);
        let (broadcast, len) = match ip {
            IpAddr::V4(a) if a.is_multicast() || a.is_broadcast() => return true,
            IpAddr::V6(a) => return a.is_multicast(),
            // only a last address of a prefix can be a directed broadcast
            IpAddr::V4(a) if a.octets()[3] != 255 && !self.has_short_subnets => return false,
            IpAddr::V4(_) => {
                let mut b = if self.internal.get(ip).is_some() {
                    key | 0xff
                } else {
                    u128::MAX
                };
                let mut len = 24;
                if let Some(i) = self.subnets.get(ip)
                    && let Some(info) = self.subnet_info.get(i as usize)
                {
                    b = info.broadcast;
                    len = info.len;
                }
                (b, len)
            }
        };
        group_flag(ip, key, broadcast, len) != 0
    }

    /// Enriches one address. `vlan` is the VLAN the record saw on this side (0 = none),
    /// `asn` the AS number the exporter reported (0 = none).
    #[inline]
    pub fn endpoint(&self, geo: &GeoTable, ip: IpAddr, vlan: u16, asn: u32) -> Endpoint {
        let ip = crate::model::canonical_ip(ip);
        let mut e = Endpoint {
            ip,
            vm: Sym::NONE,
            host: Sym::NONE,
            cluster: Sym::NONE,
            l2: Sym::NONE,
            subnet_name: Sym::NONE,
            subnet_len: if ip.is_ipv4() { 24 } else { 64 },
            vlan,
            country: 0,
            asn,
            flags: 0,
        };
        let key = crate::model::ip_to_u128(ip);
        if self.internal.get(ip).is_some() {
            e.flags |= flag::INTERNAL;
        }
        let mut subnet_l2 = Sym::NONE;
        // the directed-broadcast address is known for configured subnets and assumed for
        // internal /24s; an Internet address's prefix length is unknown, so x.y.z.255
        // there is unicast
        let mut broadcast = if ip.is_ipv4() && e.flags & flag::INTERNAL != 0 {
            key | 0xff
        } else {
            u128::MAX
        };
        if let Some(i) = self.subnets.get(ip)
            && let Some(info) = self.subnet_info.get(i as usize)
        {
            e.subnet_name = info.name;
            e.subnet_len = info.len;
            subnet_l2 = info.l2;
            broadcast = info.broadcast;
        }
        if let Some(&idx) = self.vm_by_ip.get(&ip)
            && let Some(vm) = self.vms.get(idx as usize)
        {
            e.flags |= flag::VM;
            e.vm = vm.name;
            e.host = vm.host;
            e.cluster = vm.cluster;
            e.l2 = vm.port_group;
        } else if let Some(&(host, cluster)) = self.host_by_ip.get(&ip) {
            e.flags |= flag::ESXI;
            e.host = host;
            e.cluster = cluster;
        }
        // L2 network: the VM's port group, else the subnet's L2 network, else the VLAN.
        if e.l2.is_none() {
            e.l2 = subnet_l2;
        }
        if e.l2.is_none() && vlan != 0 {
            e.l2 = match self.l2_by_vlan.get(&vlan) {
                Some(s) => *s,
                None => sym::vlan_name(vlan),
            };
        }
        if e.vlan == 0
            && e.l2.is_some()
            && let Some(v) = self.l2_vlan.get(&e.l2)
        {
            e.vlan = *v;
        }
        e.flags |= group_flag(ip, key, broadcast, e.subnet_len);
        if e.flags & (flag::INTERNAL | flag::MULTICAST | flag::BROADCAST) == 0
            && is_public_unicast(ip)
        {
            // only Internet addresses have a country: registries also list special-
            // purpose ranges (documentation, multicast), which are nowhere
            e.flags |= flag::INTERNET;
            e.country = geo.lookup(ip).unwrap_or(0);
        }
        e
    }

    /// Switch name and interface name of (exporter, ifIndex) from the inventory.
    pub fn interface(&self, exporter: IpAddr, ifindex: u32) -> (Option<Sym>, Option<Sym>) {
        match self.switches.get(&exporter) {
            Some((name, ifs)) => (Some(*name), ifs.get(&ifindex).copied()),
            None => (None, None),
        }
    }

    pub fn vm_by_name(&self, name: Sym) -> Option<&VmInfo> {
        self.vms.iter().find(|v| v.name == name)
    }
}

/// Enrichment metrics (`nagare_enrich_*`).
#[derive(Default)]
pub struct EnrichMetrics {
    pub reloads_ok: Counter,
    pub reload_errors_inventory: Counter,
    pub reload_errors_geoip: Counter,
    pub inventory_vms: Gauge,
    pub inventory_warnings: Gauge,
    pub geoip_ranges: Gauge,
    pub geoip_loaded: Gauge,
    pub last_reload_unix: Gauge,
}

/// The current tables, swapped atomically.
pub struct Enricher {
    cfg: EnrichConfig,
    tables: ArcSwap<Tables>,
    geo: ArcSwap<GeoTable>,
    generation: AtomicU64,
    /// mtimes of the files when last loaded
    inv_mtime: std::sync::Mutex<Option<SystemTime>>,
    geo_mtime: std::sync::Mutex<Option<SystemTime>>,
    warned_no_geo: AtomicBool,
    pub metrics: EnrichMetrics,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn read_inventory(path: &Path) -> Result<Inventory, EnrichError> {
    let text = std::fs::read_to_string(path).map_err(|source| EnrichError::ReadInventory {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Inventory::parse(&text, &path.display().to_string())?)
}

impl Enricher {
    /// Loads the configured files. At start-up a broken file is an error (the operator
    /// sees it at once); later reloads keep the previous tables instead.
    pub fn new(cfg: EnrichConfig) -> Result<Self, EnrichError> {
        let inv = match &cfg.inventory {
            Some(p) => read_inventory(p)?,
            None => Inventory::empty(),
        };
        for w in &inv.warnings {
            tracing::warn!(warning = %w, "inventory");
        }
        let geo = match &cfg.geoip {
            Some(p) => {
                let g = GeoTable::load(p)?;
                tracing::info!(db = %g.description, networks = g.networks, ranges = g.ranges(), "GeoIP database loaded");
                g
            }
            None => {
                tracing::info!("no GeoIP database configured (--geoip): every country is Unknown");
                GeoTable::default()
            }
        };
        let e = Self {
            inv_mtime: std::sync::Mutex::new(cfg.inventory.as_deref().and_then(mtime)),
            geo_mtime: std::sync::Mutex::new(cfg.geoip.as_deref().and_then(mtime)),
            tables: ArcSwap::from_pointee(Tables::build(inv, 1)),
            geo: ArcSwap::from_pointee(geo),
            generation: AtomicU64::new(1),
            warned_no_geo: AtomicBool::new(cfg.geoip.is_none()),
            cfg,
            metrics: EnrichMetrics::default(),
        };
        e.update_gauges();
        Ok(e)
    }

    /// An enricher over an in-memory inventory and GeoIP table (tests, benchmarks).
    pub fn from_parts(inv: Inventory, geo: GeoTable) -> Self {
        Self {
            cfg: EnrichConfig::default(),
            tables: ArcSwap::from_pointee(Tables::build(inv, 1)),
            geo: ArcSwap::from_pointee(geo),
            generation: AtomicU64::new(1),
            inv_mtime: std::sync::Mutex::new(None),
            geo_mtime: std::sync::Mutex::new(None),
            warned_no_geo: AtomicBool::new(true),
            metrics: EnrichMetrics::default(),
        }
    }

    fn update_gauges(&self) {
        let t = self.tables.load();
        let g = self.geo.load();
        self.metrics.inventory_vms.set(t.vms.len() as u64);
        self.metrics
            .inventory_warnings
            .set(t.inventory.warnings.len() as u64);
        self.metrics.geoip_ranges.set(g.ranges() as u64);
        self.metrics.geoip_loaded.set(u64::from(g.networks > 0));
    }

    /// The current tables (cheap: an atomic load).
    pub fn tables(&self) -> arc_swap::Guard<Arc<Tables>> {
        self.tables.load()
    }

    pub fn geo(&self) -> arc_swap::Guard<Arc<GeoTable>> {
        self.geo.load()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Reloads the inventory and GeoIP files. With `force` (SIGHUP) both are read;
    /// otherwise only files whose mtime changed. Returns human-readable outcomes.
    pub fn reload(&self, force: bool) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = &self.cfg.inventory {
            let m = mtime(p);
            let changed = {
                let g = self.inv_mtime.lock().map(|g| *g).unwrap_or(None);
                g != m
            };
            if force || changed {
                if let Ok(mut g) = self.inv_mtime.lock() {
                    *g = m;
                }
                match read_inventory(p) {
                    Ok(inv) => {
                        for w in &inv.warnings {
                            tracing::warn!(warning = %w, "inventory");
                        }
                        let gen_ = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
                        let vms = inv.vms.len();
                        self.tables.store(Arc::new(Tables::build(inv, gen_)));
                        self.metrics.reloads_ok.inc();
                        out.push(format!("inventory reloaded: {vms} VMs"));
                        tracing::info!(path = %p.display(), vms, "inventory reloaded");
                    }
                    Err(e) => {
                        self.metrics.reload_errors_inventory.inc();
                        out.push(format!(
                            "inventory NOT reloaded (previous tables kept): {e}"
                        ));
                        tracing::error!(error = %e, "inventory reload failed; keeping the previous inventory");
                    }
                }
            }
        }
        if let Some(p) = &self.cfg.geoip {
            let m = mtime(p);
            let changed = {
                let g = self.geo_mtime.lock().map(|g| *g).unwrap_or(None);
                g != m
            };
            if force || changed {
                if let Ok(mut g) = self.geo_mtime.lock() {
                    *g = m;
                }
                match GeoTable::load(p) {
                    Ok(g) => {
                        out.push(format!("GeoIP reloaded: {}", g.description));
                        tracing::info!(db = %g.description, "GeoIP database reloaded");
                        self.geo.store(Arc::new(g));
                        self.generation.fetch_add(1, Ordering::Relaxed);
                        self.metrics.reloads_ok.inc();
                    }
                    Err(e) => {
                        self.metrics.reload_errors_geoip.inc();
                        out.push(format!("GeoIP NOT reloaded (previous database kept): {e}"));
                        tracing::error!(error = %e, "GeoIP reload failed; keeping the previous database");
                    }
                }
            }
        }
        if !out.is_empty() {
            self.metrics.last_reload_unix.set(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            );
        }
        self.update_gauges();
        out
    }

    /// Says once that countries are unknown without a database.
    pub fn warn_no_geo_once(&self) {
        if !self.warned_no_geo.swap(true, Ordering::Relaxed) {
            tracing::warn!("no GeoIP database: countries are Unknown");
        }
    }

    pub fn render_metrics(&self, out: &mut Exposition) {
        let m = &self.metrics;
        out.counter(
            "nagare_enrich_reloads_total",
            "Successful reloads of the inventory or GeoIP database.",
            m.reloads_ok.get(),
        );
        out.header(
            "nagare_enrich_reload_errors_total",
            "Failed reloads (the previous tables stay in use).",
            "counter",
        );
        out.sample(
            "nagare_enrich_reload_errors_total",
            &[("source", "inventory")],
            m.reload_errors_inventory.get() as f64,
        );
        out.sample(
            "nagare_enrich_reload_errors_total",
            &[("source", "geoip")],
            m.reload_errors_geoip.get() as f64,
        );
        out.gauge(
            "nagare_enrich_inventory_vms",
            "VMs in the inventory.",
            m.inventory_vms.get() as f64,
        );
        out.gauge(
            "nagare_enrich_inventory_warnings",
            "Warnings from the last inventory load.",
            m.inventory_warnings.get() as f64,
        );
        out.gauge(
            "nagare_enrich_geoip_ranges",
            "Address ranges in the flattened GeoIP table.",
            m.geoip_ranges.get() as f64,
        );
        out.gauge(
            "nagare_enrich_geoip_loaded",
            "1 when a GeoIP database is loaded.",
            m.geoip_loaded.get() as f64,
        );
        out.gauge(
            "nagare_enrich_last_reload_timestamp_seconds",
            "Time of the last reload attempt.",
            m.last_reload_unix.get() as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> Tables {
        let inv = Inventory::parse(
            r#"
[[host]]
name = "esxi-01"
cluster = "prod"
ip = "10.1.0.11"
[[host]]
name = "esxi-02"
cluster = "prod"
[[vm]]
name = "web-01"
ips = ["10.11.5.21"]
host = "esxi-01"
port_group = "vlan-1105"
[[vm]]
name = "db-01"
ips = ["10.11.6.5"]
host = "esxi-02"
[[l2_network]]
name = "vlan-1105"
vlan = 1105
subnets = ["10.11.5.0/24"]
[[l2_network]]
name = "vlan-1106"
vlan = 1106
subnets = ["10.11.6.0/24"]
[[l2_network]]
name = "dmz"
vlan = 300
[[subnet]]
cidr = "10.20.0.0/16"
name = "osaka-branch"
[[subnet]]
cidr = "10.20.7.0/24"
name = "osaka-lab"
[[subnet]]
cidr = "203.0.113.0/24"
name = "partner-net"
"#,
            "t",
        )
        .unwrap();
        Tables::build(inv, 1)
    }

    fn geo() -> GeoTable {
        GeoTable::from_prefixes(vec![
            ("81.2.69.0/24".parse().unwrap(), countries::pack("GB")),
            ("8.8.8.0/24".parse().unwrap(), countries::pack("US")),
        ])
    }

    /// `is_group` (used for every new session) agrees with the full enrichment on
    /// multicast, limited and directed broadcasts (derived /24s, configured /16 and /26
    /// subnets) and on unicast neighbours of each.
    #[test]
    fn is_group_matches_endpoint_flags() {
        let with_short = Tables::build(
            Inventory::parse(
                "[[subnet]]\ncidr = \"10.30.1.64/26\"\nname = \"mgmt\"\n[[subnet]]\ncidr = \"10.40.0.0/16\"\n",
                "t",
            )
            .unwrap(),
            1,
        );
        let g = geo();
        let addrs = [
            "224.0.0.251",
            "239.255.255.250",
            "255.255.255.255",
            "10.11.5.255",
            "10.11.5.254",
            "10.99.1.255",
            "10.20.7.255",
            "10.20.255.255",
            "10.30.1.127",
            "10.30.1.126",
            "10.30.1.255",
            "10.40.255.255",
            "10.40.3.255",
            "8.8.8.255",
            "203.0.113.255",
            "ff02::1",
            "2001:db8::ff",
            "::ffff:10.11.5.255",
        ];
        for t in [tables(), with_short] {
            for a in addrs {
                let ip: IpAddr = a.parse().unwrap();
                let e = t.endpoint(&g, ip, 0, 0);
                assert_eq!(
                    t.is_group(ip),
                    e.is(flag::MULTICAST | flag::BROADCAST),
                    "{a}"
                );
            }
        }
    }

    #[test]
    fn subnet_choice_table() {
        let t = tables();
        let g = geo();
        // (address, expected subnet, expected subnet name)
        let cases = [
            ("10.20.7.9", "10.20.7.0/24", "osaka-lab"), // most specific configured
            ("10.20.8.9", "10.20.0.0/16", "osaka-branch"), // enclosing configured
            ("10.11.5.21", "10.11.5.0/24", ""),         // l2 network's subnet, no name
            ("10.99.1.2", "10.99.1.0/24", ""),          // derived /24
            ("2001:db8:5:6::1", "2001:db8:5:6::/64", ""), // derived /64
            ("203.0.113.7", "203.0.113.0/24", "partner-net"),
        ];
        for (ip, net, name) in cases {
            let e = t.endpoint(&g, ip.parse().unwrap(), 0, 0);
            assert_eq!(e.subnet().to_string(), net, "{ip}");
            assert_eq!(&*sym::resolve(e.subnet_name), name, "{ip}");
        }
    }

    #[test]
    fn l2_network_choice_table() {
        let t = tables();
        let g = geo();
        // (address, vlan seen by the exporter, expected L2 network)
        let cases = [
            ("10.11.5.21", 0, "vlan-1105"),  // the VM's port group
            ("10.11.6.5", 0, "vlan-1106"),   // VM without port group: its subnet's L2 network
            ("10.11.6.99", 42, "vlan-1106"), // physical in an L2 network's subnet: subnet wins over VLAN
            ("10.50.0.1", 300, "dmz"),       // only the record's VLAN: the inventory's name for it
            ("10.50.0.1", 77, "vlan-77"),    // unknown VLAN: named after it
            ("10.50.0.1", 0, ""),            // nothing known
        ];
        for (ip, vlan, l2) in cases {
            let e = t.endpoint(&g, ip.parse().unwrap(), vlan, 0);
            assert_eq!(&*sym::resolve(e.l2), l2, "{ip} vlan {vlan}");
        }
        assert_eq!(
            t.endpoint(&g, "10.11.5.21".parse().unwrap(), 0, 0).vlan,
            1105
        );
    }

    #[test]
    fn endpoint_attributes() {
        let t = tables();
        let g = geo();
        let e = t.endpoint(&g, "10.11.5.21".parse().unwrap(), 0, 0);
        assert!(e.is(flag::VM) && e.is(flag::INTERNAL) && !e.is(flag::INTERNET));
        assert_eq!(&*sym::resolve(e.vm), "web-01");
        assert_eq!(&*sym::resolve(e.host), "esxi-01");
        assert_eq!(&*sym::resolve(e.cluster), "prod");
        let h = t.endpoint(&g, "10.1.0.11".parse().unwrap(), 0, 0);
        assert!(h.is(flag::ESXI) && !h.is(flag::VM));
        assert_eq!(&*sym::resolve(h.host), "esxi-01");
        let uk = t.endpoint(&g, "81.2.69.142".parse().unwrap(), 0, 0);
        assert!(uk.is(flag::INTERNET));
        assert_eq!(countries::name(uk.country), Some("United Kingdom"));
        // documentation range configured as a subnet: internal, not Internet
        let doc = t.endpoint(&g, "203.0.113.9".parse().unwrap(), 0, 0);
        assert!(doc.is(flag::INTERNAL) && !doc.is(flag::INTERNET));
        // unconfigured documentation range: neither
        let doc = t.endpoint(&g, "198.51.100.9".parse().unwrap(), 0, 0);
        assert_eq!(doc.flags & (flag::INTERNAL | flag::INTERNET), 0);
        assert_eq!(doc.country, 0);
        assert!(
            t.endpoint(&g, "224.0.0.252".parse().unwrap(), 0, 0)
                .is(flag::MULTICAST)
        );
        assert!(
            t.endpoint(&g, "ff02::1:3".parse().unwrap(), 0, 0)
                .is(flag::MULTICAST)
        );
        assert!(
            t.endpoint(&g, "10.11.5.255".parse().unwrap(), 0, 0)
                .is(flag::BROADCAST)
        );
        assert!(
            t.endpoint(&g, "10.99.3.255".parse().unwrap(), 0, 0)
                .is(flag::BROADCAST)
        );
        assert!(
            t.endpoint(&g, "255.255.255.255".parse().unwrap(), 0, 0)
                .is(flag::BROADCAST)
        );
        assert!(
            !t.endpoint(&g, "10.20.0.255".parse().unwrap(), 0, 0)
                .is(flag::BROADCAST)
        ); // inside a /16
        // a public address without a country in the database
        let x = t.endpoint(&g, "1.1.1.1".parse().unwrap(), 0, 0);
        assert!(x.is(flag::INTERNET));
        assert_eq!(x.country, 0);
    }

    #[test]
    fn public_unicast() {
        for (ip, public) in [
            ("8.8.8.8", true),
            ("10.1.1.1", false),
            ("100.64.1.1", false),
            ("192.0.2.1", false),
            ("203.0.113.200", false),
            ("224.0.0.1", false),
            ("255.255.255.255", false),
            ("2001:4860:4860::8888", true),
            ("2001:db8::1", false),
            ("fe80::1", false),
            ("fd00::1", false),
            ("::ffff:8.8.8.8", true),
        ] {
            assert_eq!(is_public_unicast(ip.parse().unwrap()), public, "{ip}");
        }
    }
}
