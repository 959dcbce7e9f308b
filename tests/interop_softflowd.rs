//! softflowd reads a traffic capture that the test makes and exports it as NetFlow v5,
//! v9 and IPFIX to `nagare serve` and to nfcapd; the record, byte and packet totals of
//! the two collectors agree.
//!
//! Needs softflowd, nfcapd and nfdump: `cargo test --features interop`.
#![cfg(feature = "interop")]

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Daemon, metric_sum, tool};

/// Ethernet + IP + L4 frame with a TCP, UDP or ICMP header and `payload` bytes.
fn frame(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    sport: u16,
    dport: u16,
    flags: u8,
    payload: usize,
) -> Vec<u8> {
    let mut l4 = Vec::new();
    match proto {
        6 => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&1u32.to_be_bytes());
            l4.extend_from_slice(&1u32.to_be_bytes());
            l4.push(0x50);
            l4.push(flags);
            l4.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        }
        17 => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        _ => {
            l4.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]); // echo request
        }
    }
    l4.extend(std::iter::repeat_n(0x61u8, payload));
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let total = (20 + l4.len()) as u16;
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&total.to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let mut sum: u32 = ip
                .chunks(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
                .sum();
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            let ck = !(sum as u16);
            ip[10..12].copy_from_slice(&ck.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            f.push(if proto == 1 { 58 } else { proto });
            f.push(64);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => unreachable!("mixed families"),
    }
    f.extend_from_slice(&l4);
    f
}

/// A capture of TCP conversations (handshake, data both ways, FIN), DNS over UDP and
/// pings, IPv4 and IPv6, over about a minute.
fn traffic_pcap(path: &Path) -> usize {
    let mut frames: Vec<(i64, Vec<u8>)> = Vec::new();
    let t0: i64 = 1_764_000_000_000_000; // microseconds
    for c in 0..40u32 {
        let v6 = c % 5 == 4;
        let (cli, srv): (IpAddr, IpAddr) = if v6 {
            (
                format!("2001:db8:1::{}", c + 1).parse().unwrap(),
                "2001:db8:2::80".parse().unwrap(),
            )
        } else {
            (
                format!("10.1.{}.{}", c / 100, c % 100 + 10)
                    .parse()
                    .unwrap(),
                format!("192.0.2.{}", c % 7 + 1).parse().unwrap(),
            )
        };
        let sport = 40000 + c as u16;
        let dport = [443u16, 22, 80, 3389][c as usize % 4];
        let mut t = t0 + i64::from(c) * 1_000_000;
        let mut push = |t: &mut i64, f: Vec<u8>| {
            frames.push((*t, f));
            *t += 1_000;
        };
        push(&mut t, frame(cli, srv, 6, sport, dport, 0x02, 0));
        push(&mut t, frame(srv, cli, 6, dport, sport, 0x12, 0));
        push(&mut t, frame(cli, srv, 6, sport, dport, 0x10, 0));
        for k in 0..(3 + c % 6) {
            push(
                &mut t,
                frame(
                    cli,
                    srv,
                    6,
                    sport,
                    dport,
                    0x18,
                    100 + (k as usize * 37) % 900,
                ),
            );
            push(
                &mut t,
                frame(
                    srv,
                    cli,
                    6,
                    dport,
                    sport,
                    0x18,
                    1000 + (k as usize * 53) % 400,
                ),
            );
        }
        push(&mut t, frame(cli, srv, 6, sport, dport, 0x11, 0));
        push(&mut t, frame(srv, cli, 6, dport, sport, 0x11, 0));
        push(&mut t, frame(cli, srv, 6, sport, dport, 0x10, 0));
        // DNS
        let dns: IpAddr = if v6 {
            "2001:db8:53::53".parse().unwrap()
        } else {
            "10.0.0.53".parse().unwrap()
        };
        push(&mut t, frame(cli, dns, 17, sport + 1000, 53, 0, 40));
        push(&mut t, frame(dns, cli, 17, 53, sport + 1000, 0, 120));
        if !v6 && c % 3 == 0 {
            push(&mut t, frame(cli, srv, 1, 0, 0, 0, 56));
        }
    }
    frames.sort_by_key(|(t, _)| *t);
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (t, f) in &frames {
        out.extend_from_slice(&((t / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((t % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).unwrap();
    frames.len()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs softflowd over the capture, exporting to `to`; it exports every flow at the end
/// of the file and exits. softflowd 1.1.0 never reads the file when its control-socket
/// path is 13 characters or longer (it then sits in accept()), so the control socket
/// gets a short path relative to the work directory.
fn softflowd(pcap: &Path, to: &str, version: &str, work: &Path) {
    let mut child = Command::new(tool("softflowd"))
        .current_dir(work)
        .arg("-r")
        .arg(pcap)
        .args([
            "-n", to, "-v", version, "-6", "-d", "-c", "sf.ctl", "-p", "sf.pid",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run softflowd");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                assert!(st.success(), "softflowd exited with {st}");
                return;
            }
            _ if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                panic!("softflowd did not finish reading {}", pcap.display());
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Flows / bytes / packets of an nfcapd directory, as nfdump reports them.
fn nfdump_totals(dir: &Path) -> (u64, u64, u64) {
    let out = Command::new(tool("nfdump"))
        .arg("-R")
        .arg(dir)
        .arg("-I")
        .output()
        .expect("nfdump");
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("nfdump -I has no {k}:\n{text}"))
    };
    (get("Flows"), get("Bytes"), get("Packets"))
}

#[test]
fn softflowd_exports_agree_between_nagare_and_nfcapd() {
    let work = tempfile::tempdir().unwrap();
    let pcap = work.path().join("traffic.pcap");
    let frames = traffic_pcap(&pcap);
    assert!(frames > 500);
    for version in ["5", "9", "10"] {
        // nfcapd
        let nfdir = work.path().join(format!("nfcapd-{version}"));
        std::fs::create_dir_all(&nfdir).unwrap();
        let port = free_udp_port();
        let mut nfcapd = Command::new(tool("nfcapd"))
            .arg("-w")
            .arg(&nfdir)
            .args(["-b", "127.0.0.1", "-p", &port.to_string(), "-t", "3600"])
            // as large a receive buffer as nagare's (the kernel caps both at rmem_max)
            .args(["-B", "33554432"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nfcapd");
        // nagare
        let d = Daemon::start(&work.path().join(format!("state-{version}")), &[]);
        std::thread::sleep(Duration::from_millis(500));
        softflowd(&pcap, &format!("127.0.0.1:{port}"), version, work.path());
        softflowd(&pcap, &d.udp[0].to_string(), version, work.path());

        // Let both settle, then stop nfcapd (it writes its file on SIGTERM).
        let m = d.wait_metrics(20, "records", |m| {
            metric_sum(m, "nagare_decode_records_total") > 0.0
        });
        std::thread::sleep(Duration::from_millis(1500));
        let m2 = d.metrics();
        assert_eq!(
            metric_sum(&m, "nagare_decode_records_total"),
            metric_sum(&m2, "nagare_decode_records_total"),
            "still receiving"
        );
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(nfcapd.id() as i32, libc::SIGTERM);
        }
        let _ = nfcapd.wait();
        let (flows, bytes, packets) = nfdump_totals(&nfdir);
        let ours = (
            metric_sum(&m2, "nagare_decode_records_total") as u64,
            metric_sum(&m2, "nagare_pipeline_flow_bytes_total") as u64,
            metric_sum(&m2, "nagare_pipeline_flow_packets_total") as u64,
        );
        eprintln!(
            "v{version}: nfcapd flows/bytes/packets {flows}/{bytes}/{packets}, nagare {ours:?}"
        );
        assert!(
            flows > 50,
            "v{version}: softflowd exported only {flows} flows"
        );
        assert_eq!(ours, (flows, bytes, packets), "v{version}");
        assert_eq!(metric_sum(&m2, "nagare_decode_errors_total"), 0.0);
        d.terminate();
    }
}
