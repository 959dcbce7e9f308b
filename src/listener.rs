//! UDP intake: SO_REUSEPORT sockets, each read by its own blocking thread with
//! `recvmmsg` (up to 64 datagrams per system call). The thread decodes what it reads
//! and hands the records to the pipeline sink in batches.
//!
//! SO_RCVBUF is set and read back (the kernel caps it at net.core.rmem_max, and a
//! warning says so). The kernel's own drop counter for each socket is read from
//! /proc/net/udp{,6} and exported, so no loss is invisible.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};

use crate::decode::Decoder;
use crate::model::FlowRecord;
use crate::pipeline::{Handover, RecordSink};
use crate::telemetry::{Counter, Exposition, Gauge};
use crate::util::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start receive thread: {0}")]
    Thread(std::io::Error),
    #[error(
        "UDP {addr} is already in use by another process (another nagare?): two collectors sharing a port would each get part of the exporters' traffic; stop it or choose another --listen address"
    )]
    InUse { addr: SocketAddr },
}

/// `[listener]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// UDP addresses to receive NetFlow v5/v9 and IPFIX on; every socket accepts every version.
    pub listen: Vec<SocketAddr>,
    /// SO_REUSEPORT sockets (and receive threads) per address. The kernel hashes each
    /// exporter to one socket, so more sockets spread many exporters over more cores.
    pub sockets_per_address: usize,
    /// Requested SO_RCVBUF in bytes. The kernel caps it at net.core.rmem_max
    /// (see deploy/sysctl.d/90-nagare.conf).
    pub receive_buffer_bytes: usize,
    /// Decoded records handed to the pipeline at once (and the rest at the end of
    /// every receive call). Small enough for the decoded records to stay in the
    /// core's first-level cache; the pipeline collects them per shard, so that
    /// without backlog the receive thread ingests up to
    /// [`crate::rollup::INLINE_BATCH`] at a time into an idle shard itself, and under
    /// backlog hands larger batches to the shard threads.
    pub batch_records: usize,
    /// Exporter networks datagrams are accepted from (for example `["10.0.0.0/8"]`);
    /// a datagram from any other source is dropped before decoding and counted
    /// (`nagare_listener_denied_datagrams_total`). Empty: every source.
    pub allow: Vec<ipnetwork::IpNetwork>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                "0.0.0.0:2055"
                    .parse()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 2055))),
                "0.0.0.0:4739"
                    .parse()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 4739))),
            ],
            sockets_per_address: 1,
            receive_buffer_bytes: 32 << 20,
            batch_records: 64,
            allow: Vec::new(),
        }
    }
}

/// Per-socket counters.
#[derive(Default)]
pub struct SocketMetrics {
    pub datagrams: Counter,
    pub bytes: Counter,
    pub receive_errors: Counter,
    pub truncated: Counter,
    pub kernel_drops: Counter,
    pub rcvbuf: Gauge,
    /// Panics caught while decoding and handing over (a bug: the thread goes on).
    pub panics: Counter,
    /// Datagrams from sources outside `[listener] allow`.
    pub denied: Counter,
}

pub struct BoundSocket {
    pub addr: SocketAddr,
    pub local: SocketAddr,
    /// Shared with [`Listener`], which shuts it down to wake the receive thread.
    socket: Arc<Socket>,
    inode: u64,
    pub metrics: Arc<SocketMetrics>,
}

/// Opens one SO_REUSEPORT UDP socket, sets SO_RCVBUF and reads it back.
/// Fails when another socket holds `addr`: nagare's sockets share their port among
/// themselves (SO_REUSEPORT), which would also let a second process take half of the
/// traffic without a word. A probe socket without the reuse options cannot bind while
/// any other socket holds the port. For port 0, the probe's port is the answer: the
/// kernel would otherwise give a SO_REUSEPORT socket a port that another process of
/// the same user holds with SO_REUSEPORT (two collectors started on port 0, as tests
/// do, would share one port and each other's traffic).
fn ensure_free(addr: SocketAddr) -> Result<SocketAddr, ListenerError> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let err = |source| ListenerError::Bind { addr, source };
    let probe = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    if addr.is_ipv6() {
        let _ = probe.set_only_v6(false);
    }
    match probe.bind(&addr.into()) {
        Ok(()) if addr.port() == 0 => Ok(probe
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(addr)),
        Ok(()) => Ok(addr),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(ListenerError::InUse { addr }),
        Err(e) => Err(err(e)),
    }
}

pub fn bind(addr: SocketAddr, rcvbuf: usize) -> Result<BoundSocket, ListenerError> {
    let err = |source| ListenerError::Bind { addr, source };
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    socket.set_reuse_port(true).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if addr.is_ipv6() {
        // Accept IPv4-mapped too when bound to [::].
        let _ = socket.set_only_v6(false);
    }
    let _ = socket.set_recv_buffer_size(rcvbuf);
    socket.set_read_timeout(Some(BUSY_WAIT)).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    let local = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(addr);
    // The kernel doubles the requested value for bookkeeping and caps it at rmem_max.
    let got = socket.recv_buffer_size().unwrap_or(0);
    if got < rcvbuf {
        tracing::warn!(
            addr = %local,
            requested = rcvbuf,
            granted = got,
            "SO_RCVBUF capped by the kernel; raise net.core.rmem_max (see deploy/sysctl.d/90-nagare.conf) to avoid drops under bursts"
        );
    }
    let inode = socket_inode(&socket);
    let metrics = Arc::new(SocketMetrics::default());
    metrics.rcvbuf.set(got as u64);
    Ok(BoundSocket {
        addr,
        local,
        socket: Arc::new(socket),
        inode,
        metrics,
    })
}

fn socket_inode(s: &Socket) -> u64 {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a valid, owned file descriptor into a zeroed stat buffer.
    let rc = unsafe { libc::fstat(s.as_raw_fd(), &mut st) };
    if rc == 0 { st.st_ino } else { 0 }
}

/// Reads the kernel's per-socket drop counters (last column of /proc/net/udp{,6},
/// matched by inode).
pub fn kernel_drops() -> std::collections::HashMap<u64, u64> {
    let mut m = std::collections::HashMap::new();
    for f in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() >= 13
                && let (Ok(inode), Ok(drops)) = (cols[9].parse::<u64>(), cols[12].parse::<u64>())
            {
                m.insert(inode, drops);
            }
        }
    }
    m
}

const BATCH: usize = 64;
/// Datagrams arriving less than this apart mean the exporters are busy...
const BUSY_GAP_MS: i64 = 2;
/// ...and the receive thread then naps this long after draining the socket.
const NAP: Duration = Duration::from_micros(1000);
const MAX_DGRAM: usize = 65_536;
/// How long a receive waits while the pipeline may hold records of this thread's
/// (they are handed over when it times out)...
const BUSY_WAIT: Duration = Duration::from_millis(100);
/// ...and once it handed everything over: an idle collector wakes up once a second
/// per socket, not ten times. Stopping does not wait for it ([`Listener::stop`] shuts
/// the sockets down, which wakes the receive).
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Distance between the starts of two receive buffers: room for the largest datagram,
/// plus 17 cache lines. With a power-of-two distance, the first lines of every buffer
/// (where a datagram of a batch lies) would map to the same few cache sets and evict
/// each other between the kernel's copy and the decoding; shifted by 17 lines each, a
/// batch of datagrams spreads evenly over every set.
const BUF_STRIDE: usize = MAX_DGRAM + 17 * 64;

/// Buffers for `recvmmsg`, set up once per receive thread.
struct RecvBatch {
    /// `n` buffers of `MAX_DGRAM` bytes, [`BUF_STRIDE`] apart
    area: Vec<u8>,
    iov: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    hdrs: Vec<libc::mmsghdr>,
}

impl RecvBatch {
    fn new(n: usize) -> Box<Self> {
        let mut b = Box::new(Self {
            area: vec![0u8; n * BUF_STRIDE],
            iov: Vec::with_capacity(n),
            // SAFETY: sockaddr_storage and mmsghdr are plain C structs; all-zero is valid.
            addrs: vec![unsafe { std::mem::zeroed() }; n],
            hdrs: Vec::with_capacity(n),
        });
        for i in 0..n {
            if let Some(buf) = b.area.get_mut(i * BUF_STRIDE..i * BUF_STRIDE + MAX_DGRAM) {
                b.iov.push(libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: buf.len(),
                });
            }
        }
        for i in 0..n {
            // SAFETY: as above, an all-zero mmsghdr is valid; pointers are filled below.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_iov = &mut b.iov[i];
            h.msg_hdr.msg_iovlen = 1;
            b.hdrs.push(h);
        }
        b
    }

    /// The first `len` bytes of buffer `i`, at most `MAX_DGRAM` (empty when `i` is out
    /// of range).
    fn datagram(&self, i: usize, len: usize) -> &[u8] {
        let start = i * BUF_STRIDE;
        self.area
            .get(start..start + len.min(MAX_DGRAM))
            .unwrap_or_default()
    }

    /// Receives up to `n` datagrams (blocking for the first, up to SO_RCVTIMEO) and
    /// reports (length, source, truncated) for each.
    fn recv(
        &mut self,
        fd: i32,
        out: &mut Vec<(usize, Option<SocketAddr>, bool)>,
    ) -> std::io::Result<()> {
        out.clear();
        for h in self.hdrs.iter_mut() {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points at a buffer, iovec and address slot owned by this
        // boxed struct, whose vectors are never resized after construction.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(std::io::Error::last_os_error());
        }
        for (h, a) in self.hdrs.iter().zip(&self.addrs).take(got as usize) {
            let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            // no source address: not a datagram (the wake-up of a shut down socket)
            let src = (h.msg_hdr.msg_namelen > 0)
                .then(|| sockaddr_to(a))
                .flatten();
            out.push((h.msg_len as usize, src, truncated));
        }
        Ok(())
    }
}

fn sockaddr_to(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(a.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(a as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(a as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be(sin6.sin6_port),
            ))
        }
        _ => None,
    }
}

/// The running listener: sockets and their receive threads.
pub struct Listener {
    sockets: Vec<(SocketAddr, u64, Arc<SocketMetrics>)>,
    /// The sockets, to wake their receive threads when stopping.
    wake: Vec<Arc<Socket>>,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
    stop: Arc<AtomicBool>,
}

impl Listener {
    /// Binds every configured socket first (so a bad address fails before anything
    /// runs), then starts one receive thread per socket.
    pub fn start(
        cfg: &ListenerConfig,
        decoder: Arc<Decoder>,
        sink: Arc<dyn RecordSink>,
    ) -> Result<Self, ListenerError> {
        let mut bound = Vec::new();
        for addr in &cfg.listen {
            let addr = &ensure_free(*addr)?;
            let first = bind(*addr, cfg.receive_buffer_bytes)?;
            // With port 0, the extra sockets must share the port the kernel picked.
            let actual = first.local;
            bound.push(first);
            for _ in 1..cfg.sockets_per_address.max(1) {
                bound.push(bind(actual, cfg.receive_buffer_bytes)?);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut sockets = Vec::new();
        let mut threads = Vec::new();
        let mut wake = Vec::new();
        for (i, b) in bound.into_iter().enumerate() {
            sockets.push((b.local, b.inode, b.metrics.clone()));
            wake.push(b.socket.clone());
            let decoder = decoder.clone();
            let sink = sink.clone();
            let stop = stop.clone();
            let batch = cfg.batch_records.max(1);
            let allow: Arc<[ipnetwork::IpNetwork]> = cfg.allow.clone().into();
            let h = std::thread::Builder::new()
                .name(format!("nagare-rx-{i}"))
                .spawn(move || receive_loop(b, decoder, sink, stop, batch, allow))
                .map_err(ListenerError::Thread)?;
            threads.push(h);
        }
        Ok(Self {
            sockets,
            wake,
            threads: std::sync::Mutex::new(threads),
            stop,
        })
    }

    /// Local addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.sockets.iter().map(|s| s.0).collect();
        v.dedup();
        v
    }

    /// Refreshes the kernel drop counters from /proc.
    pub fn poll_kernel_drops(&self) {
        let drops = kernel_drops();
        for (_, inode, m) in &self.sockets {
            if let Some(d) = drops.get(inode) {
                m.kernel_drops.set_max(*d);
            }
        }
    }

    pub fn totals(&self) -> (u64, u64) {
        let d = self.sockets.iter().map(|s| s.2.datagrams.get()).sum();
        let k = self.sockets.iter().map(|s| s.2.kernel_drops.get()).sum();
        (d, k)
    }

    /// Stops the receive threads and waits for them (they flush their last batch).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in &self.wake {
            // Wakes a receive blocked on the socket (Linux sets the shutdown flag and
            // wakes the waiters even on an unconnected UDP socket, which reports
            // ENOTCONN); without it the receive ends at its timeout.
            let _ = s.shutdown(std::net::Shutdown::Read);
        }
        let threads = match self.threads.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        for t in threads {
            let _ = t.join();
        }
    }

    pub fn render_metrics(&self, out: &mut Exposition) {
        type Get = fn(&SocketMetrics) -> u64;
        let families: [(&str, &str, &str, Get); 8] = [
            (
                "nagare_listener_datagrams_total",
                "Datagrams received.",
                "counter",
                |m| m.datagrams.get(),
            ),
            (
                "nagare_listener_received_bytes_total",
                "UDP payload bytes received.",
                "counter",
                |m| m.bytes.get(),
            ),
            (
                "nagare_listener_receive_errors_total",
                "Receive system call errors.",
                "counter",
                |m| m.receive_errors.get(),
            ),
            (
                "nagare_listener_truncated_datagrams_total",
                "Datagrams larger than the receive buffer (truncated, counted as decode errors).",
                "counter",
                |m| m.truncated.get(),
            ),
            (
                "nagare_listener_kernel_drops_total",
                "Datagrams the kernel dropped because the socket buffer was full (/proc/net/udp).",
                "counter",
                |m| m.kernel_drops.get(),
            ),
            (
                "nagare_listener_panics_total",
                "Panics caught in the receive thread while decoding or handing over records (a bug; the records of that receive may be lost, the thread goes on).",
                "counter",
                |m| m.panics.get(),
            ),
            (
                "nagare_listener_denied_datagrams_total",
                "Datagrams dropped because their source is outside [listener] allow.",
                "counter",
                |m| m.denied.get(),
            ),
            (
                "nagare_listener_receive_buffer_bytes",
                "SO_RCVBUF granted by the kernel.",
                "gauge",
                |m| m.rcvbuf.get(),
            ),
        ];
        for (name, help, kind, get) in families {
            out.header(name, help, kind);
            for (i, (addr, _, m)) in self.sockets.iter().enumerate() {
                let a = addr.to_string();
                let s = i.to_string();
                out.sample(name, &[("address", &a), ("socket", &s)], get(m) as f64);
            }
        }
    }
}

/// Whether `ip` may send (an IPv4-mapped IPv6 source counts as its IPv4 address).
#[inline]
fn allowed(allow: &[ipnetwork::IpNetwork], ip: std::net::IpAddr) -> bool {
    if allow.is_empty() {
        return true;
    }
    let ip = crate::model::canonical_ip(ip);
    allow.iter().any(|n| n.contains(ip))
}

/// Runs `f` (decoding and handing over one receive's records); a panic in it is caught
/// and counted, so a bug triggered by some input does not end the receive thread and
/// with it all intake on the socket. The records still held (`records`) are dropped:
/// the state they would have gone into may be half-updated.
fn guarded(m: &SocketMetrics, records: &mut Vec<FlowRecord>, f: impl FnOnce(&mut Vec<FlowRecord>)) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut *records)));
    if r.is_err() {
        records.clear();
        m.panics.inc();
        let n = m.panics.get();
        // a panic on every datagram must not flood the log
        if n <= 10 || n.is_power_of_two() {
            tracing::error!(
                panics = n,
                "caught a panic while decoding or ingesting a receive's records (a bug: please report it with the panic message above); receiving goes on"
            );
        }
    }
}

fn receive_loop(
    b: BoundSocket,
    decoder: Arc<Decoder>,
    sink: Arc<dyn RecordSink>,
    stop: Arc<AtomicBool>,
    batch_records: usize,
    allow: Arc<[ipnetwork::IpNetwork]>,
) {
    let span = tracing::info_span!("listener", addr = %b.local);
    let _g = span.enter();
    tracing::debug!("receiving");
    let fd = b.socket.as_raw_fd();
    let mut rb = RecvBatch::new(BATCH);
    let mut got = Vec::with_capacity(BATCH);
    let mut records: Vec<FlowRecord> = Vec::with_capacity(batch_records + 64);
    let m = &b.metrics;
    let mut last_data_ms = i64::MIN / 2;
    let mut idle = false;
    while !stop.load(Ordering::Relaxed) {
        match rb.recv(fd, &mut got) {
            Ok(()) => {
                let now = now_ms();
                let backlog = got.len() >= BATCH;
                let stopping = stop.load(Ordering::Relaxed);
                if idle {
                    idle = false;
                    let _ = b.socket.set_read_timeout(Some(BUSY_WAIT));
                }
                guarded(m, &mut records, |records| {
                    for (i, (len, src, truncated)) in got.iter().enumerate() {
                        if stopping && src.is_none() {
                            // the wake-up of a socket shut down by `stop`, not a datagram
                            continue;
                        }
                        m.datagrams.inc();
                        m.bytes.add(*len as u64);
                        if *truncated {
                            m.truncated.inc();
                        }
                        let Some(src) = src else { continue };
                        if !allowed(&allow, src.ip()) {
                            m.denied.inc();
                            continue;
                        }
                        let _ = decoder.decode(src.ip(), now, rb.datagram(i, *len), records);
                        // small hand-overs keep the decoded records in the core's cache;
                        // the pipeline batches them for the shards
                        if records.len() >= batch_records {
                            sink.ingest(records, Handover::Part { backlog });
                        }
                    }
                    sink.ingest(records, Handover::End { backlog });
                });
                // Under load, a drained socket refills within microseconds: waking up
                // for every datagram costs more than the datagram. Nap briefly so the
                // next receive takes many at once (the socket buffer holds far more
                // than a nap's worth of traffic).
                let busy = now - last_data_ms <= BUSY_GAP_MS;
                last_data_ms = now;
                if busy && got.len() < BATCH {
                    std::thread::sleep(NAP);
                }
            }
            Err(e) => {
                // the socket is quiet: let the pipeline hand over what it holds, then
                // wait longer (nothing of this thread's is left to hand over)
                guarded(m, &mut records, |records| {
                    sink.ingest(records, Handover::Quiet);
                });
                if !idle {
                    idle = true;
                    let _ = b.socket.set_read_timeout(Some(IDLE_WAIT));
                }
                match e.kind() {
                    std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::Interrupted => {}
                    _ => {
                        m.receive_errors.inc();
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
    }
    guarded(m, &mut records, |records| {
        sink.ingest(records, Handover::Quiet)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::DecodeConfig;
    use crate::generate::encode::{Exporter, GenRecord};

    /// Keeps every record it is given.
    #[derive(Default)]
    struct Keep(std::sync::Mutex<Vec<FlowRecord>>);

    impl RecordSink for Keep {
        fn ingest(&self, batch: &mut Vec<FlowRecord>, _how: Handover) {
            if let Ok(mut v) = self.0.lock() {
                v.append(batch);
            }
            batch.clear();
        }
    }

    fn rec(i: u16) -> GenRecord {
        GenRecord {
            src: IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 0, i as u8)),
            dst: IpAddr::V4(std::net::Ipv4Addr::new(10, 2, 0, 1)),
            src_port: 40_000 + i,
            dst_port: 443,
            protocol: 6,
            tcp_flags: 0x1b,
            bytes: 100 * u64::from(i),
            packets: u64::from(i),
            start_ms: 1_764_000_000_000,
            end_ms: 1_764_000_000_500,
            in_if: 1,
            out_if: 2,
            vlan: 0,
            direction: 0,
            vmware: None,
        }
    }

    /// Panics (as a bug in decoding or shard code would) on its first non-empty batch,
    /// then keeps records.
    #[derive(Default)]
    struct PanicsOnce {
        panicked: AtomicBool,
        kept: Keep,
    }

    impl RecordSink for PanicsOnce {
        fn ingest(&self, batch: &mut Vec<FlowRecord>, how: Handover) {
            if !batch.is_empty() && !self.panicked.swap(true, Ordering::SeqCst) {
                panic!("test sink: first batch");
            }
            self.kept.ingest(batch, how);
        }
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let t0 = std::time::Instant::now();
        while !done() {
            assert!(t0.elapsed() < Duration::from_secs(20), "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A listener on a free loopback port feeding `sink`, its decoder, and a socket and
    /// a v5 exporter to send to it.
    struct Setup {
        l: Listener,
        decoder: Arc<Decoder>,
        to: SocketAddr,
        tx: std::net::UdpSocket,
        ex: Exporter,
    }

    fn setup(sink: Arc<dyn RecordSink>) -> Setup {
        let cfg = ListenerConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            ..ListenerConfig::default()
        };
        let decoder = Arc::new(Decoder::new(DecodeConfig::default()));
        let l = Listener::start(&cfg, decoder.clone(), sink).unwrap();
        Setup {
            to: l.local_addrs()[0],
            l,
            decoder,
            tx: std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
            ex: Exporter::new(5, 0, 1_764_000_000_000 - 60_000),
        }
    }

    /// A panic while handing over records is caught and counted: the receive thread
    /// goes on, and what arrives afterwards is delivered.
    #[test]
    fn a_panic_in_the_pipeline_does_not_end_the_receive_thread() {
        let sink = Arc::new(PanicsOnce::default());
        let Setup {
            l, to, tx, mut ex, ..
        } = setup(sink.clone());
        for d in ex.encode(&[rec(1), rec(2)], 1_764_000_001_000) {
            tx.send_to(&d, to).unwrap();
        }
        let panics = || l.sockets.iter().map(|s| s.2.panics.get()).sum::<u64>();
        wait_for("the first batch never reached the sink", || panics() == 1);
        for d in ex.encode(&[rec(3), rec(4), rec(5)], 1_764_000_002_000) {
            tx.send_to(&d, to).unwrap();
        }
        wait_for("records sent after the panic were not delivered", || {
            sink.kept.0.lock().unwrap().len() == 3
        });
        l.stop();
        assert_eq!(panics(), 1);
        let got = sink.kept.0.lock().unwrap();
        let mut ports: Vec<u16> = got.iter().map(|r| r.src_port).collect();
        ports.sort_unstable();
        assert_eq!(ports, vec![40_003, 40_004, 40_005]);
        let mut text = crate::telemetry::Exposition::default();
        l.render_metrics(&mut text);
        let text = text.finish();
        assert!(
            text.lines()
                .any(|x| x.starts_with("nagare_listener_panics_total{") && x.ends_with(" 1")),
            "panics are exported"
        );
    }

    /// A listener whose receive thread went idle (it waits [`IDLE_WAIT`] then) stops
    /// when asked; the shutdown that wakes its receive is not counted as a datagram,
    /// and every record sent before is delivered.
    #[test]
    fn idle_receive_wakes_on_stop_and_counts_only_datagrams() {
        let sink = Arc::new(Keep::default());
        let Setup {
            l,
            decoder,
            to,
            tx,
            mut ex,
        } = setup(sink.clone());
        let recs: Vec<GenRecord> = (1..=7).map(rec).collect();
        let dgrams = ex.encode(&recs, 1_764_000_001_000);
        for d in &dgrams {
            tx.send_to(d, to).unwrap();
        }
        let t0 = std::time::Instant::now();
        while sink.0.lock().unwrap().len() < recs.len() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "records not received"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // past the busy wait: the receive thread handed over and waits idle now
        std::thread::sleep(BUSY_WAIT * 3);
        l.stop();
        let (datagrams, _) = l.totals();
        assert_eq!(datagrams, dgrams.len() as u64);
        assert_eq!(decoder.metrics.total_errors(), 0);
        let got = sink.0.lock().unwrap();
        assert_eq!(got.len(), 7);
        assert_eq!(got.iter().map(|r| r.packets).sum::<u64>(), 28);
    }
}
