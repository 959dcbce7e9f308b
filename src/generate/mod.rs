//! Traffic generation for demos, tests and benchmarks: a site model
//! ([`profile::Site`]) whose conversations are exported as real NetFlow v5/v9 and
//! IPFIX ([`encode`]) by emulated exporters (ESXi hosts' VDS and top-of-rack switches).

pub mod encode;
pub mod profile;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use encode::Exporter;
use profile::{Generated, Site, Source};

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("cannot open a socket on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot send to {to}: {source}")]
    Send {
        to: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    Datacenter,
    Random,
}

/// Emulated exporters: one encoder and one socket per source.
pub struct Emitter {
    to: SocketAddr,
    version: Option<u8>,
    encoders: BTreeMap<Source, Exporter>,
    sockets: BTreeMap<Source, UdpSocket>,
    /// Address each source sends from (loopback aliases when the collector is local).
    pub source_ips: BTreeMap<Source, IpAddr>,
    pub datagrams: u64,
    pub records: u64,
    /// Pause every this many datagrams (keeps a local receiver's buffer from overflowing).
    pace_every: u64,
}

/// The observation domain of a source (keeps emulated exporters apart even when they
/// share one source address).
pub fn domain_of(s: Source) -> u32 {
    match s {
        Source::Host(h) => 100 + h as u32,
        Source::Switch(w) => 200 + w as u32,
    }
}

impl Emitter {
    /// `version`: force 5, 9 or 10 for every exporter; None = hosts IPFIX, switches v9.
    pub fn new(to: SocketAddr, version: Option<u8>) -> Self {
        Self {
            to,
            version,
            encoders: BTreeMap::new(),
            sockets: BTreeMap::new(),
            source_ips: BTreeMap::new(),
            datagrams: 0,
            records: 0,
            pace_every: 32,
        }
    }

    /// The source address a source uses: 127.0.2.N for hosts, 127.0.3.N for switches
    /// when the collector is on loopback (so nagare sees distinct exporters), else the
    /// machine's own address.
    pub fn source_ip(&self, s: Source) -> IpAddr {
        if self.to.ip().is_loopback() && self.to.is_ipv4() {
            match s {
                Source::Host(h) => IpAddr::V4(Ipv4Addr::new(127, 0, 2, 1 + h as u8)),
                Source::Switch(w) => IpAddr::V4(Ipv4Addr::new(127, 0, 3, 1 + w as u8)),
            }
        } else if self.to.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        }
    }

    fn version_of(&self, s: Source) -> u8 {
        self.version.unwrap_or(match s {
            Source::Host(_) => 10,
            Source::Switch(_) => 9,
        })
    }

    fn ensure(&mut self, s: Source) -> Result<(), GenError> {
        if self.sockets.contains_key(&s) {
            return Ok(());
        }
        let ip = self.source_ip(s);
        let addr = SocketAddr::new(ip, 0);
        let sock = UdpSocket::bind(addr).map_err(|source| GenError::Bind { addr, source })?;
        let _ = socket2::SockRef::from(&sock).set_send_buffer_size(4 << 20);
        self.sockets.insert(s, sock);
        self.source_ips.insert(s, ip);
        Ok(())
    }

    /// Encodes records (grouped per source, in order), exported at `now_ms`: each
    /// source's datagrams, its templates as devices refresh them. Counts the records.
    pub fn encode(&mut self, batch: &[Generated], now_ms: i64) -> Vec<(Source, Vec<Vec<u8>>)> {
        let mut per: BTreeMap<Source, Vec<encode::GenRecord>> = BTreeMap::new();
        let version_forced = self.version;
        for g in batch {
            let mut r = g.record.clone();
            // v5 carries neither IPv6 nor VMware elements; v9 no VMware elements
            match version_forced.unwrap_or(match g.source {
                Source::Host(_) => 10,
                Source::Switch(_) => 9,
            }) {
                5 if r.src.is_ipv6() || r.dst.is_ipv6() => continue,
                5 | 9 if r.vmware.is_some() => {
                    if let Some(v) = r.vmware.take()
                        && !v.tenant_src.is_unspecified()
                    {
                        r.src = v.tenant_src;
                        r.dst = v.tenant_dst;
                        r.src_port = v.tenant_src_port;
                        r.dst_port = v.tenant_dst_port;
                        r.protocol = v.tenant_protocol;
                    }
                }
                _ => {}
            }
            per.entry(g.source).or_default().push(r);
        }
        let mut out = Vec::with_capacity(per.len());
        for (s, recs) in per {
            let version = self.version_of(s);
            let e = self.encoders.entry(s).or_insert_with(|| {
                let mut e = Exporter::new(version, domain_of(s), now_ms - 86_400_000);
                e.template_every = 20;
                e
            });
            self.records += recs.len() as u64;
            out.push((s, e.encode(&recs, now_ms)));
        }
        out
    }

    /// Encodes and sends records (grouped per source, in order), exported at `now_ms`.
    pub fn send(&mut self, batch: &[Generated], now_ms: i64) -> Result<(), GenError> {
        for (s, dgs) in self.encode(batch, now_ms) {
            self.ensure(s)?;
            let Some(sock) = self.sockets.get(&s) else {
                continue;
            };
            for d in dgs {
                sock.send_to(&d, self.to).map_err(|source| GenError::Send {
                    to: self.to,
                    source,
                })?;
                self.datagrams += 1;
                if self.datagrams.is_multiple_of(self.pace_every) {
                    std::thread::sleep(Duration::from_micros(150));
                }
            }
        }
        Ok(())
    }
}

/// Paces sending to `rate` records per second (0 = as fast as possible).
pub struct Pacer {
    rate: f64,
    start: Instant,
    sent: u64,
}

impl Pacer {
    pub fn new(rate: f64) -> Self {
        Self {
            rate,
            start: Instant::now(),
            sent: 0,
        }
    }
    pub fn wait(&mut self, n: usize) {
        self.sent += n as u64;
        if self.rate <= 0.0 {
            return;
        }
        let due = Duration::from_secs_f64(self.sent as f64 / self.rate);
        let el = self.start.elapsed();
        if due > el {
            std::thread::sleep(due - el);
        }
    }
}

/// Site with its switch exporter addresses set to what an [`Emitter`] to `to` uses, so
/// that the inventory names the switches nagare will see.
pub fn site_for(to: SocketAddr, vms: usize) -> Site {
    let mut site = Site::datacenter(vms);
    let e = Emitter::new(to, None);
    for (i, sw) in site.switches.iter_mut().enumerate() {
        if let IpAddr::V4(a) = e.source_ip(Source::Switch(i))
            && !a.is_unspecified()
        {
            sw.exporter = a;
        }
    }
    site
}

/// The record nagare would decode from a generated one (for benchmarks and tests that
/// feed the pipeline without going through UDP). `exporter_ip` stands for the source.
pub fn to_flow_record(g: &Generated, exporter_ip: IpAddr) -> crate::model::FlowRecord {
    let r = &g.record;
    let mut f = crate::model::FlowRecord::empty(
        crate::model::ExporterId::new(exporter_ip, domain_of(g.source)),
        10,
    );
    f.src = r.src;
    f.dst = r.dst;
    f.src_port = r.src_port;
    f.dst_port = r.dst_port;
    f.protocol = r.protocol;
    f.tcp_flags = u16::from(r.tcp_flags);
    f.bytes = r.bytes;
    f.packets = r.packets;
    f.start_ms = r.start_ms;
    f.end_ms = r.end_ms;
    f.in_if = r.in_if;
    f.out_if = r.out_if;
    f.vlan = r.vlan;
    f.direction = r.direction;
    if let Some(v) = &r.vmware {
        f.vmware.present = true;
        if !v.tenant_src.is_unspecified() {
            f.vmware.tenant_src = Some(v.tenant_src);
            f.vmware.tenant_dst = Some(v.tenant_dst);
            f.vmware.tenant_src_port = v.tenant_src_port;
            f.vmware.tenant_dst_port = v.tenant_dst_port;
            f.vmware.tenant_protocol = v.tenant_protocol;
        }
        f.vmware.ingress_attr = v.ingress_attr;
        f.vmware.egress_attr = v.egress_attr;
        f.vmware.virtual_obs_id = crate::model::InlineStr::from_bytes(v.virtual_obs_id.as_bytes());
        f.vmware.rule_id = v.rule_id;
    }
    f
}
