//! The `datacenter` and `random` traffic profiles.
//!
//! `datacenter` models a VMware site so that every seed query has a meaningful answer:
//! ESXi hosts in two clusters, ten port groups (vlan-1101 .. vlan-1110, vlan-1105 among
//! them) holding web, app, db, cache, DNS, directory, monitoring, file, admin and one
//! scanning VM; physical servers behind top-of-rack switch ports; two branch sites;
//! Internet clients and servers in many countries. Traffic: Internet users on HTTPS,
//! three-tier east-west traffic, DNS/directory/NTP, backups and storage replication
//! between physical servers, updates and SaaS from the VMs (vlan-1105 is the heavy
//! Internet user), SSH/Telnet/RDP probes from the Internet, nightly admin SSH/RDP
//! east-west, and a scanning VM sweeping SSH/Telnet/RDP at night.
//!
//! Every record knows its conversation (client, server, port), so tests compute
//! expected answers from the generated data without nagare's code.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::IpNetwork;

use super::encode::{GenRecord, GenVmware};

/// A small, fast, seedable PRNG (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    /// Log-normal-ish size around `median`.
    pub fn size(&mut self, median: u64) -> u64 {
        let f = [0.2, 0.4, 0.7, 1.0, 1.0, 1.3, 2.0, 3.5, 8.0][self.below(9) as usize];
        ((median as f64) * f).max(40.0) as u64
    }
}

/// A stable hash of (a, b): the generator's relationships (which web VM a user lands
/// on, which services a VM calls) are functions of the parties, not fresh draws.
fn mix(a: u64, b: u64) -> u64 {
    Rng::new(a.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ b).next_u64()
}

/// Pool sizes: how many distinct Internet users, attackers and SaaS endpoints the site
/// ever sees. Together with the fixed tier pairs they make ~30k distinct flows per hour
/// but a few hundred thousand per week, as a real site does (the same users and
/// services come back).
const USERS: u64 = 60_000;
const ATTACKERS: u64 = 6_000;
const SAAS: u64 = 600;

/// A skewed pick in `0..n`: low indices are popular (density -ln x).
fn skewed(rng: &mut Rng, n: u64) -> u64 {
    rng.below(n) * rng.below(n) / n.max(1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Web,
    App,
    Db,
    Cache,
    Dns,
    Directory,
    Monitoring,
    File,
    Admin,
    Scanner,
}

#[derive(Debug, Clone)]
pub struct Vm {
    pub name: String,
    pub ip: Ipv4Addr,
    pub host: usize,
    pub net: usize,
    pub role: Role,
    pub vcpu: u32,
    pub memory_mb: u64,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub cluster: &'static str,
    pub ip: Ipv4Addr,
}

#[derive(Debug, Clone)]
pub struct Net {
    pub name: String,
    pub vlan: u16,
    pub subnet: IpNetwork,
    pub gateway: Ipv4Addr,
}

#[derive(Debug, Clone)]
pub struct Physical {
    pub name: String,
    pub ip: Ipv4Addr,
    pub switch: usize,
    pub ifindex: u32,
}

#[derive(Debug, Clone)]
pub struct Switch {
    pub name: String,
    pub exporter: Ipv4Addr,
    /// ifIndex of the uplink towards the core / firewall.
    pub uplink: u32,
}

/// Where a generated record is exported from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// An ESXi host's VDS (IPFIX).
    Host(usize),
    /// A top-of-rack switch (NetFlow v9 or IPFIX).
    Switch(usize),
}

/// One generated record with what the generator knows about it.
#[derive(Debug, Clone)]
pub struct Generated {
    pub source: Source,
    pub record: GenRecord,
    /// The conversation: client, server, server port, protocol.
    pub client: IpAddr,
    pub server: IpAddr,
    pub port: u16,
    pub proto: u8,
    /// True for the reply direction (server to client).
    pub reply: bool,
    /// The record starts a new session (its first record).
    pub session_start: bool,
}

/// The site model.
#[derive(Debug, Clone)]
pub struct Site {
    pub hosts: Vec<Host>,
    pub nets: Vec<Net>,
    pub vms: Vec<Vm>,
    pub physical: Vec<Physical>,
    pub switches: Vec<Switch>,
    pub branches: Vec<(String, IpNetwork)>,
    /// Internet prefixes by ISO country code.
    pub internet: Vec<(&'static str, IpNetwork)>,
    by_role: BTreeMap<Role, Vec<usize>>,
}

/// Public prefixes per country, chosen inside address space registered to that country.
const INTERNET: &[(&str, &str)] = &[
    ("GB", "81.2.69.0/24"),
    ("GB", "51.140.0.0/16"),
    ("US", "8.8.8.0/24"),
    ("US", "3.80.0.0/16"),
    ("US", "13.52.0.0/16"),
    ("JP", "133.242.0.0/16"),
    ("JP", "210.140.0.0/16"),
    ("DE", "85.214.0.0/16"),
    ("FR", "62.210.0.0/16"),
    ("NL", "145.100.0.0/16"),
    ("CN", "114.114.0.0/16"),
    ("RU", "77.88.0.0/18"),
    ("BR", "200.160.0.0/20"),
    ("IN", "14.139.0.0/16"),
    ("KR", "211.234.0.0/16"),
    ("SG", "165.21.0.0/16"),
    ("AU", "203.2.0.0/16"),
    ("CA", "142.150.0.0/16"),
    ("VN", "113.160.0.0/16"),
    ("IR", "5.200.0.0/16"),
];

fn v4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn nth(net: &IpNetwork, n: u32) -> IpAddr {
    match net {
        IpNetwork::V4(v) => IpAddr::V4(Ipv4Addr::from(u32::from(v.network()).wrapping_add(n))),
        IpNetwork::V6(v) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v.network()).wrapping_add(u128::from(n)),
        )),
    }
}

impl Site {
    /// The data centre: `vms` virtual machines (500 by default).
    pub fn datacenter(vms: usize) -> Self {
        let mut hosts = Vec::new();
        for i in 0..12 {
            hosts.push(Host {
                name: format!("esxi-{:02}", i + 1),
                cluster: if i < 8 { "prod" } else { "mgmt" },
                ip: v4(10, 1, 0, 11 + i as u8),
            });
        }
        let nets: Vec<Net> = (0..10)
            .map(|i| Net {
                name: format!("vlan-{}", 1101 + i),
                vlan: 1101 + i as u16,
                subnet: format!("10.11.{}.0/24", i + 1)
                    .parse()
                    .unwrap_or_else(|_| IpNetwork::from(IpAddr::from([10, 11, 0, 0]))),
                gateway: v4(10, 11, i as u8 + 1, 1),
            })
            .collect();
        // Roles, in proportions of a typical site.
        let plan: [(Role, usize, u32, u64); 10] = [
            (Role::Web, 16, 4, 8192),
            (Role::App, 24, 8, 16384),
            (Role::Db, 8, 16, 65536),
            (Role::Cache, 4, 4, 32768),
            (Role::Dns, 1, 2, 4096),
            (Role::Directory, 1, 4, 8192),
            (Role::Monitoring, 2, 4, 8192),
            (Role::File, 2, 8, 16384),
            (Role::Admin, 1, 2, 4096),
            (Role::Scanner, 0, 2, 4096),
        ];
        let weight: usize = plan.iter().map(|p| p.1).sum();
        let mut vm_list = Vec::new();
        let mut counts: BTreeMap<Role, usize> = BTreeMap::new();
        for (role, w, vcpu, mem) in plan {
            let n = if role == Role::Scanner {
                1
            } else {
                ((vms * w) / weight).max(match role {
                    Role::Dns | Role::Directory => 2,
                    Role::Admin => 3,
                    _ => 1,
                })
            };
            for _ in 0..n {
                let k = counts.entry(role).or_default();
                *k += 1;
                let prefix = match role {
                    Role::Web => "web",
                    Role::App => "app",
                    Role::Db => "db",
                    Role::Cache => "cache",
                    Role::Dns => "dns",
                    Role::Directory => "ad",
                    Role::Monitoring => "mon",
                    Role::File => "files",
                    Role::Admin => "admin",
                    Role::Scanner => "vuln-scan",
                };
                vm_list.push((format!("{prefix}-{:02}", k), role, vcpu, mem));
            }
        }
        // rounding: top up with app servers, or trim
        let mut extra = 0;
        while vm_list.len() < vms {
            extra += 1;
            vm_list.push((format!("app-x{extra:02}"), Role::App, 8, 16384));
        }
        // over the target (every role has a minimum): drop app servers, the largest pool,
        // so that every role keeps at least one VM
        let target = vms.max(20);
        while vm_list.len() > target {
            match vm_list.iter().rposition(|v| v.1 == Role::App) {
                Some(i) if vm_list.iter().filter(|v| v.1 == Role::App).count() > 1 => {
                    vm_list.remove(i);
                }
                _ => break,
            }
        }
        let mut vms_out = Vec::new();
        let mut per_net = [0u32; 10];
        for (i, (name, role, vcpu, mem)) in vm_list.into_iter().enumerate() {
            // web tier in vlan-1105 (the Internet-facing port group), others spread
            let net = match role {
                Role::Web => 4,
                Role::Db => 6 + i % 2,
                Role::Admin | Role::Scanner | Role::Monitoring => 9,
                _ => i % 10,
            };
            per_net[net] += 1;
            let host_ip = 10 + per_net[net];
            vms_out.push(Vm {
                name,
                ip: v4(10, 11, net as u8 + 1, (host_ip % 250) as u8 + 3),
                host: i % 12,
                net,
                role,
                vcpu,
                memory_mb: mem,
            });
        }
        // ensure unique addresses if a port group overflowed
        let mut seen = std::collections::HashSet::new();
        for vm in vms_out.iter_mut() {
            while !seen.insert(vm.ip) {
                let o = vm.ip.octets();
                vm.ip = v4(10, 12 + o[2] / 20, o[2], o[3].wrapping_add(1).max(3));
            }
        }
        let switches = vec![
            Switch {
                name: "tor-a1".into(),
                exporter: v4(10, 0, 0, 2),
                uplink: 49,
            },
            Switch {
                name: "tor-a2".into(),
                exporter: v4(10, 0, 0, 3),
                uplink: 49,
            },
        ];
        let physical = (0..40)
            .map(|i| Physical {
                name: format!(
                    "{}-{:02}",
                    ["backup", "storage", "legacy-db", "hyperv", "printsrv"][i % 5],
                    i / 5 + 1
                ),
                ip: v4(10, 40, 0, 10 + i as u8),
                switch: i % 2,
                ifindex: 1 + (i / 2) as u32,
            })
            .collect();
        let mut by_role: BTreeMap<Role, Vec<usize>> = BTreeMap::new();
        for (i, v) in vms_out.iter().enumerate() {
            by_role.entry(v.role).or_default().push(i);
        }
        Self {
            hosts,
            nets,
            vms: vms_out,
            physical,
            switches,
            branches: vec![
                (
                    "osaka-branch".into(),
                    "10.20.0.0/16"
                        .parse()
                        .unwrap_or_else(|_| IpNetwork::from(IpAddr::from([10, 20, 0, 0]))),
                ),
                (
                    "tokyo-branch".into(),
                    "10.21.0.0/16"
                        .parse()
                        .unwrap_or_else(|_| IpNetwork::from(IpAddr::from([10, 21, 0, 0]))),
                ),
            ],
            internet: INTERNET
                .iter()
                .filter_map(|(c, p)| Some((*c, p.parse().ok()?)))
                .collect(),
            by_role,
        }
    }

    pub fn role(&self, r: Role) -> &[usize] {
        self.by_role.get(&r).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The inventory file for this site (config/inventory.example.toml schema).
    pub fn inventory_toml(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Generated by `nagare gen --write-inventory` (datacenter profile)."
        );
        let _ = writeln!(
            s,
            "internal = [\"10.0.0.0/8\", \"172.16.0.0/12\", \"192.168.0.0/16\"]\n"
        );
        for h in &self.hosts {
            let _ = writeln!(
                s,
                "[[host]]\nname = \"{}\"\ncluster = \"{}\"\nip = \"{}\"\n",
                h.name, h.cluster, h.ip
            );
        }
        for n in &self.nets {
            let _ = writeln!(
                s,
                "[[l2_network]]\nname = \"{}\"\nvlan = {}\nsubnets = [\"{}\"]\n",
                n.name, n.vlan, n.subnet
            );
        }
        let _ = writeln!(
            s,
            "[[l2_network]]\nname = \"servers-phys\"\nvlan = 400\nsubnets = [\"10.40.0.0/24\"]\n"
        );
        for (name, net) in &self.branches {
            let _ = writeln!(s, "[[subnet]]\ncidr = \"{net}\"\nname = \"{name}\"\n");
        }
        for v in &self.vms {
            let n = &self.nets[v.net];
            let _ = writeln!(
                s,
                "[[vm]]\nname = \"{}\"\nips = [\"{}\"]\nhost = \"{}\"\nvcpu = {}\nmemory_mb = {}\ngateway = \"{}\"\nport_group = \"{}\"\n",
                v.name, v.ip, self.hosts[v.host].name, v.vcpu, v.memory_mb, n.gateway, n.name
            );
        }
        for sw in &self.switches {
            let mut ifs: Vec<String> = (1..=48)
                .map(|i| format!("{i} = \"Ethernet1/{i}\""))
                .collect();
            ifs.push(format!("{} = \"Ethernet1/49 (uplink)\"", sw.uplink));
            let _ = writeln!(
                s,
                "[[switch]]\nname = \"{}\"\nexporter = \"{}\"\ninterfaces = {{ {} }}\n",
                sw.name,
                sw.exporter,
                ifs.join(", ")
            );
        }
        s
    }

    /// Internet prefixes and their countries (for the demo's own GeoIP database).
    pub fn geo_prefixes(&self) -> Vec<(IpNetwork, &'static str)> {
        self.internet.iter().map(|(c, n)| (*n, *c)).collect()
    }

    /// Exporter address of a source.
    pub fn exporter_ip(&self, s: Source) -> IpAddr {
        match s {
            Source::Host(h) => IpAddr::V4(self.hosts[h].ip),
            Source::Switch(w) => IpAddr::V4(self.switches[w].exporter),
        }
    }

    /// The address numbered `h` in one of a country's prefixes (stable for a given h).
    fn internet_pooled(&self, country: &str, h: u64) -> IpAddr {
        let cands: Vec<&(&str, IpNetwork)> = self
            .internet
            .iter()
            .filter(|(k, _)| *k == country)
            .collect();
        let Some((_, net)) = cands.get((h % cands.len().max(1) as u64) as usize) else {
            return IpAddr::V4(Ipv4Addr::new(203, 0, 113, (h % 250) as u8 + 1));
        };
        let span = match net {
            IpNetwork::V4(n) => 1u64 << (32 - u32::from(n.prefix())).min(16),
            IpNetwork::V6(_) => 65_536,
        };
        nth(net, 1 + ((h >> 16) % span.saturating_sub(2).max(1)) as u32)
    }

    fn vm_addr(&self, i: usize) -> IpAddr {
        IpAddr::V4(self.vms[i].ip)
    }

    /// Records of every conversation that starts in `[t0_ms, t1_ms)`, in time order.
    /// `intensity` scales the number of conversations (1.0 = the nominal site: about
    /// 30 000 distinct flows per hour).
    pub fn generate(&self, t0_ms: i64, t1_ms: i64, intensity: f64, seed: u64) -> Vec<Generated> {
        let mut out = Vec::new();
        let minute = 60_000i64;
        let mut t = t0_ms.div_euclid(minute) * minute;
        while t < t1_ms {
            let mut rng = Rng::new(seed ^ (t as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
            self.minute(t, intensity, &mut rng, &mut out);
            t += minute;
        }
        out.retain(|g| g.record.start_ms >= t0_ms && g.record.start_ms < t1_ms);
        out.sort_by_key(|g| g.record.start_ms);
        out
    }

    fn minute(&self, t: i64, intensity: f64, rng: &mut Rng, out: &mut Vec<Generated>) {
        let hour = (t.div_euclid(3_600_000)).rem_euclid(24);
        let night = !(7..21).contains(&hour);
        let day_factor = if night { 0.35 } else { 1.0 };
        let n = |base: f64, rng: &mut Rng| -> usize {
            let x = base * 1.9 * intensity * day_factor;
            let whole = x.floor() as usize;
            whole + usize::from(rng.chance(x - x.floor()))
        };
        let web = self.role(Role::Web);
        let app = self.role(Role::App);
        let db = self.role(Role::Db);
        let cache = self.role(Role::Cache);
        let dns = self.role(Role::Dns);
        let ad = self.role(Role::Directory);
        let mon = self.role(Role::Monitoring);
        let files = self.role(Role::File);
        let admin = self.role(Role::Admin);
        let scanner = self.role(Role::Scanner);
        let all: Vec<usize> = (0..self.vms.len()).collect();
        let countries = [
            "US", "GB", "JP", "DE", "FR", "NL", "BR", "IN", "KR", "SG", "AU", "CA",
        ];

        // Internet users -> web tier (HTTPS, some HTTP); a user sticks to one web VM
        for _ in 0..n(160.0, rng) {
            let u = skewed(rng, USERS);
            let country = countries[(mix(u, 1) % countries.len() as u64) as usize];
            let c = self.internet_pooled(country, mix(u, 2));
            let w = web[(mix(u, 3) % web.len() as u64) as usize];
            let port = if !mix(u, 4).is_multiple_of(7) {
                443
            } else {
                80
            };
            self.conv(rng, out, t, c, self.vm_addr(w), port, 6, 40_000, 600_000);
        }
        // branches -> web/app, each branch user to its own application
        for _ in 0..n(40.0, rng) {
            let b = rng.below(self.branches.len() as u64);
            let Some((_, net)) = self.branches.get(b as usize) else {
                break;
            };
            let k = rng.below(2000);
            let c = nth(net, 256 + k as u32);
            let h = mix(k, b);
            let target = if h.is_multiple_of(2) {
                web[((h >> 8) % web.len() as u64) as usize]
            } else {
                app[((h >> 8) % app.len() as u64) as usize]
            };
            let port = [443, 8443, 445][((h >> 20) % 3) as usize];
            self.conv(
                rng,
                out,
                t,
                c,
                self.vm_addr(target),
                port,
                6,
                20_000,
                200_000,
            );
        }
        // three tiers east-west: each web VM calls three app VMs, each app VM two
        // databases, one cache and one peer
        for _ in 0..n(120.0, rng) {
            let (a, b, port) = match rng.below(4) {
                0 => {
                    let a = *rng.pick(web);
                    (
                        a,
                        app[(mix(a as u64, rng.below(3)) % app.len() as u64) as usize],
                        8080,
                    )
                }
                1 => {
                    let a = *rng.pick(app);
                    let d = db[(mix(a as u64, 10 + rng.below(2)) % db.len() as u64) as usize];
                    (a, d, [5432u16, 3306, 1433][d % 3])
                }
                2 => {
                    let a = *rng.pick(app);
                    (
                        a,
                        cache[(mix(a as u64, 20) % cache.len() as u64) as usize],
                        6379,
                    )
                }
                _ => {
                    let a = *rng.pick(app);
                    (
                        a,
                        app[(mix(a as u64, 30) % app.len() as u64) as usize],
                        8443,
                    )
                }
            };
            if a != b {
                self.conv(
                    rng,
                    out,
                    t,
                    self.vm_addr(a),
                    self.vm_addr(b),
                    port,
                    6,
                    8_000,
                    60_000,
                );
            }
        }
        // infrastructure: DNS, directory, NTP, monitoring
        for _ in 0..n(90.0, rng) {
            let a = *rng.pick(&all);
            match rng.below(4) {
                0 => {
                    let h2 = *rng.pick(dns);
                    self.conv(
                        rng,
                        out,
                        t,
                        self.vm_addr(a),
                        self.vm_addr(h2),
                        53,
                        17,
                        80,
                        200,
                    );
                }
                1 => {
                    let h3 = *rng.pick(ad);
                    let h4 = *rng.pick(&[389u16, 88, 445]);
                    self.conv(
                        rng,
                        out,
                        t,
                        self.vm_addr(a),
                        self.vm_addr(h3),
                        h4,
                        6,
                        3_000,
                        6_000,
                    );
                }
                2 => {
                    let h5 = *rng.pick(mon);
                    let h6 = *rng.pick(&[161u16, 9100]);
                    let h7 = rng.chance(0.5);
                    self.conv(
                        rng,
                        out,
                        t,
                        self.vm_addr(h5),
                        self.vm_addr(a),
                        h6,
                        if h7 { 17 } else { 6 },
                        300,
                        4_000,
                    );
                }
                _ => self.conv(
                    rng,
                    out,
                    t,
                    self.vm_addr(a),
                    IpAddr::V4(self.physical[3].ip),
                    123,
                    17,
                    76,
                    76,
                ),
            }
        }
        // file shares
        for _ in 0..n(20.0, rng) {
            let a = *rng.pick(&all);
            if let Some(f) = files.first().map(|_| *rng.pick(files)) {
                self.conv(
                    rng,
                    out,
                    t,
                    self.vm_addr(a),
                    self.vm_addr(f),
                    445,
                    6,
                    30_000,
                    300_000,
                );
            }
        }
        // backups (physical backup servers pull from DB VMs) and storage replication
        for _ in 0..n(8.0, rng) {
            let p = &self.physical[(rng.below(8) * 5) as usize];
            let h8 = *rng.pick(db);
            let h9 = rng.below(3);
            self.conv(
                rng,
                out,
                t,
                IpAddr::V4(p.ip),
                self.vm_addr(h8),
                10000 + h9 as u16 * 100,
                6,
                20_000,
                50_000_000,
            );
        }
        for _ in 0..n(12.0, rng) {
            let a = &self.physical[(rng.below(8) * 5 + 1) as usize];
            let b = &self.physical[(rng.below(8) * 5 + 1) as usize];
            if a.ip != b.ip {
                let h10 = *rng.pick(&[3260u16, 2049]);
                self.conv(
                    rng,
                    out,
                    t,
                    IpAddr::V4(a.ip),
                    IpAddr::V4(b.ip),
                    h10,
                    6,
                    20_000_000,
                    400_000,
                );
            }
        }
        // VMs -> Internet (updates, SaaS); vlan-1105 (the web tier) is the heavy user.
        // Each VM calls a handful of the site's SaaS endpoints.
        for _ in 0..n(70.0, rng) {
            let a = if rng.chance(0.6) {
                *rng.pick(web)
            } else {
                *rng.pick(&all)
            };
            let svc = mix(a as u64, 100 + rng.below(6)) % SAAS;
            let country = if svc.is_multiple_of(8) {
                "GB"
            } else {
                ["US", "US", "NL", "DE", "JP", "GB", "SG"][(svc % 7) as usize]
            };
            let s = self.internet_pooled(country, mix(svc, 5));
            let port = if !svc.is_multiple_of(10) { 443 } else { 80 };
            self.conv(rng, out, t, self.vm_addr(a), s, port, 6, 15_000, 900_000);
        }
        // probes from the Internet: SSH, Telnet, RDP; an attacker mostly hammers one
        // target and service
        for _ in 0..n(25.0, rng) {
            let k = rng.below(ATTACKERS);
            let country =
                ["CN", "RU", "BR", "VN", "IR", "US", "IN", "KR"][(mix(k, 1) % 8) as usize];
            let c = self.internet_pooled(country, mix(k, 2));
            let (target, port) = if rng.chance(0.8) {
                (
                    web[(mix(k, 3) % web.len() as u64) as usize],
                    [22u16, 23, 3389][(mix(k, 4) % 3) as usize],
                )
            } else {
                (*rng.pick(web), *rng.pick(&[22u16, 23, 3389]))
            };
            self.conv(rng, out, t, c, self.vm_addr(target), port, 6, 800, 600);
        }
        // admins: east-west SSH/RDP (mostly at night for patching)
        let admin_rate = if night { 18.0 } else { 4.0 } / day_factor;
        for _ in 0..n(admin_rate, rng) {
            let a = *rng.pick(admin);
            let b = *rng.pick(&all);
            if a != b {
                let port = if rng.chance(0.6) { 22 } else { 3389 };
                self.conv(
                    rng,
                    out,
                    t,
                    self.vm_addr(a),
                    self.vm_addr(b),
                    port,
                    6,
                    40_000,
                    200_000,
                );
            }
        }
        // the scanning VM: many short SSH/Telnet/RDP attempts to many peers, at night
        if night {
            for _ in 0..n(60.0 / day_factor, rng) {
                let s = *rng.pick(scanner);
                let target = if rng.chance(0.7) {
                    self.vm_addr(*rng.pick(&all))
                } else {
                    IpAddr::V4(rng.pick(&self.physical).ip)
                };
                let port = *rng.pick(&[22u16, 23, 3389]);
                self.conv(rng, out, t, self.vm_addr(s), target, port, 6, 120, 60);
            }
        }
    }

    /// Where a record between two addresses is exported: ESXi hosts export their VMs'
    /// traffic; top-of-rack switches export physical servers' and the uplink's.
    fn sources(&self, rng: &mut Rng, a: IpAddr, b: IpAddr) -> (Source, u32, u32) {
        let _ = rng;
        let vm = |ip: IpAddr| self.vms.iter().position(|v| IpAddr::V4(v.ip) == ip);
        let phys = |ip: IpAddr| self.physical.iter().find(|p| IpAddr::V4(p.ip) == ip);
        match (vm(a), vm(b)) {
            // VDS port numbers: each VM's port is fixed; 1 is the uplink
            (Some(x), Some(y)) if self.vms[x].host == self.vms[y].host => {
                return (
                    Source::Host(self.vms[x].host),
                    1000 + x as u32,
                    1000 + y as u32,
                );
            }
            (Some(x), _) => return (Source::Host(self.vms[x].host), 1000 + x as u32, 1),
            (None, Some(y)) => return (Source::Host(self.vms[y].host), 1, 1000 + y as u32),
            _ => {}
        }
        if let Some(p) = phys(a).or_else(|| phys(b)) {
            let sw = &self.switches[p.switch];
            let other = phys(if phys(a).is_some() { b } else { a });
            let out_if = match other {
                Some(o) if o.switch == p.switch => o.ifindex,
                _ => sw.uplink,
            };
            return (Source::Switch(p.switch), p.ifindex, out_if);
        }
        (Source::Switch(0), self.switches[0].uplink, 48)
    }

    /// One conversation: 1..4 sessions, each exported as a forward and a reply record
    /// (long sessions in several records, as active timeouts do).
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &self,
        rng: &mut Rng,
        out: &mut Vec<Generated>,
        t: i64,
        client: IpAddr,
        server: IpAddr,
        port: u16,
        proto: u8,
        up: u64,
        down: u64,
    ) {
        if client == server {
            return;
        }
        let (up, down) = (rng.size(up), rng.size(down));
        let sessions = 1 + rng.below(3) as usize;
        for _ in 0..sessions {
            let start = t + rng.below(60_000) as i64;
            let dur = rng.below(20_000) as i64;
            let cport = 32_768 + rng.below(28_000) as u16;
            let (source, in_if, out_if) = self.sources(rng, client, server);
            let parts = if dur > 15_000 && rng.chance(0.3) {
                2
            } else {
                1
            };
            for part in 0..parts {
                let s = start + part as i64 * (dur / parts as i64);
                let e = s + dur / parts as i64;
                for reply in [false, true] {
                    let bytes = (if reply { down } else { up }) / parts as u64;
                    let packets = (bytes / 900).max(1) + 1;
                    let (src, sp, dst, dp) = if reply {
                        (server, port, client, cport)
                    } else {
                        (client, cport, server, port)
                    };
                    let flags = if proto != 6 {
                        0
                    } else if part == 0 {
                        0x1b
                    } else {
                        0x18
                    };
                    // A tenth of the VM traffic crosses an NSX overlay segment: the host
                    // exports it with the VTEP pair outside and the VMs inside.
                    // ESXi hosts export with the VDS template (VMware port attributes
                    // always; tenant fields for overlay traffic). A tenth of the TCP
                    // traffic crosses an NSX overlay segment: the host exports it with
                    // the VTEP pair outside and the VMs inside.
                    let overlay = matches!(source, Source::Host(_))
                        && proto == 6
                        && u32::from(cport) % 10 == 0;
                    let unspec = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
                    let vmware = match source {
                        Source::Host(h) => Some(GenVmware {
                            tenant_src: if overlay { src } else { unspec },
                            tenant_dst: if overlay { dst } else { unspec },
                            tenant_src_port: if overlay { sp } else { 0 },
                            tenant_dst_port: if overlay { dp } else { 0 },
                            tenant_protocol: if overlay { proto } else { 0 },
                            ingress_attr: if in_if >= 1000 { 2 } else { 1 },
                            egress_attr: if out_if >= 1000 { 2 } else { 1 },
                            virtual_obs_id: format!("{}.vmnic{}", self.hosts[h].name, in_if % 4),
                            rule_id: 1000 + u32::from(port % 50),
                        }),
                        _ => None,
                    };
                    let (rsrc, rdst) = match source {
                        Source::Host(h) if overlay => {
                            let peer =
                                (h + 1 + (u32::from(cport) as usize % 11)) % self.hosts.len();
                            (
                                IpAddr::V4(self.hosts[h].ip),
                                IpAddr::V4(self.hosts[peer].ip),
                            )
                        }
                        _ => (src, dst),
                    };
                    out.push(Generated {
                        source,
                        record: GenRecord {
                            src: rsrc,
                            dst: rdst,
                            src_port: if overlay { 4789 } else { sp },
                            dst_port: if overlay { 4789 } else { dp },
                            protocol: if overlay { 17 } else { proto },
                            tcp_flags: flags,
                            bytes: bytes.max(40),
                            packets,
                            start_ms: s,
                            end_ms: e,
                            in_if: if reply { out_if } else { in_if },
                            out_if: if reply { in_if } else { out_if },
                            vlan: 0,
                            direction: u8::from(reply),
                            vmware,
                        },
                        client,
                        server,
                        port,
                        proto,
                        reply,
                        session_start: part == 0 && !reply,
                    });
                }
            }
        }
    }

    /// The `random` profile: uniformly random addresses, ports and sizes (load tests).
    pub fn random(t0_ms: i64, n: usize, seed: u64) -> Vec<Generated> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|i| {
                let src = IpAddr::V4(Ipv4Addr::from(rng.next_u64() as u32));
                let dst = IpAddr::V4(Ipv4Addr::from(rng.next_u64() as u32));
                let sp = rng.next_u64() as u16;
                let dp = rng.next_u64() as u16;
                let bytes = 40 + rng.below(100_000);
                Generated {
                    source: Source::Switch(0),
                    record: GenRecord {
                        src,
                        dst,
                        src_port: sp,
                        dst_port: dp,
                        protocol: if rng.chance(0.7) { 6 } else { 17 },
                        tcp_flags: 0x18,
                        bytes,
                        packets: 1 + bytes / 1000,
                        start_ms: t0_ms + i as i64,
                        end_ms: t0_ms + i as i64 + 100,
                        in_if: 1,
                        out_if: 2,
                        vlan: 0,
                        direction: 0,
                        vmware: None,
                    },
                    client: src,
                    server: dst,
                    port: dp,
                    proto: 6,
                    reply: false,
                    session_start: true,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::inventory::Inventory;

    #[test]
    fn small_sites_keep_every_role() {
        for n in [20, 60, 120] {
            let s = Site::datacenter(n);
            for r in [
                Role::Web,
                Role::App,
                Role::Db,
                Role::Cache,
                Role::Dns,
                Role::Directory,
                Role::Monitoring,
                Role::File,
                Role::Admin,
                Role::Scanner,
            ] {
                assert!(!s.role(r).is_empty(), "{n} VMs: no {r:?}");
            }
            let g = s.generate(1_764_000_000_000, 1_764_000_120_000, 1.0, 1);
            assert!(!g.is_empty());
        }
    }

    #[test]
    fn inventory_is_valid_and_complete() {
        let s = Site::datacenter(500);
        assert_eq!(s.vms.len(), 500);
        let inv = Inventory::parse(&s.inventory_toml(), "gen").unwrap();
        assert_eq!(inv.vms.len(), 500);
        assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
        assert!(inv.l2_networks.iter().any(|l| l.name == "vlan-1105"));
        assert_eq!(s.role(Role::Scanner).len(), 1);
    }

    #[test]
    fn about_thirty_thousand_flows_per_hour() {
        let s = Site::datacenter(500);
        let day0 = 1_764_000_000_000 - 1_764_000_000_000 % 86_400_000;
        let count = |h: i64| {
            let t0 = day0 + h * 3_600_000;
            let g = s.generate(t0, t0 + 3_600_000, 1.0, 7);
            assert!(
                g.windows(2)
                    .all(|w| w[0].record.start_ms <= w[1].record.start_ms)
            );
            g.iter()
                .map(|g| (g.client, g.server, g.port, g.proto))
                .collect::<std::collections::HashSet<_>>()
                .len()
        };
        // 14 day hours, 10 night hours (UTC)
        let (noon, night) = (count(12), count(2));
        let avg = (14 * noon + 10 * night) / 24;
        assert!(
            (24_000..38_000).contains(&avg),
            "noon {noon}, night {night}, average {avg} flows per hour"
        );
        // the same users and services come back: four hours hold far fewer distinct
        // flows than four independent hours would
        let four: std::collections::HashSet<_> = s
            .generate(day0 + 12 * 3_600_000, day0 + 16 * 3_600_000, 1.0, 7)
            .iter()
            .map(|g| (g.client, g.server, g.port, g.proto))
            .collect();
        assert!(
            four.len() < 5 * noon / 2,
            "{} distinct flows in four hours vs {noon} in one",
            four.len()
        );
        let t0 = day0 + 12 * 3_600_000;
        // deterministic
        let g2 = s.generate(t0, t0 + 600_000, 1.0, 7);
        let g3 = s.generate(t0, t0 + 600_000, 1.0, 7);
        assert_eq!(g2.len(), g3.len());
        assert!(g2.iter().zip(&g3).all(|(a, b)| a.record == b.record));
    }
}
