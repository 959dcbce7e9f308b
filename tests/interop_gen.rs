//! `nagare gen` speaks real NetFlow/IPFIX: what it sends decodes in tshark and in nfcapd
//! with the same record counts as the generator reports (ESXi hosts in IPFIX with the
//! VMware template, switches in NetFlow v9; and everything in NetFlow v5).
//!
//! Needs tshark, nfcapd and nfdump: `cargo test --features interop`.
#![cfg(feature = "interop")]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{tool, tshark_totals};
use nagare::pcap::UdpDatagram;

/// Runs `nagare gen` into a socket of the test and returns (datagrams, records the
/// generator says it sent).
fn capture_gen(extra: &[&str]) -> (Vec<UdpDatagram>, u64) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(32 << 20);
    sock.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let to = sock.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            out.push(UdpDatagram {
                ts_ns: 1_700_000_000_000_000_000 + out.len() as i64 * 1000,
                src: from,
                dst: to,
                payload: buf[..n].to_vec(),
            });
        }
        out
    });
    let to = to.to_string();
    let mut args = vec!["--to", &to, "--start-offset", "15m", "--duration", "0"];
    args.extend(["--rate", "20000"]);
    args.extend_from_slice(extra);
    let err = common::run_gen(&args);
    let sent: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("gen: sent "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no record count in gen's output:\n{err}"));
    (reader.join().unwrap(), sent)
}

fn nfcapd_records(dgs: &[UdpDatagram], work: &Path) -> u64 {
    let dir = work.join("nfcapd");
    std::fs::create_dir_all(&dir).unwrap();
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut nfcapd = Command::new(tool("nfcapd"))
        .arg("-w")
        .arg(&dir)
        .args(["-b", "127.0.0.1", "-p", &port.to_string(), "-t", "3600"])
        // a receive buffer for the whole replay (the kernel caps it at rmem_max): with
        // the default one, nfcapd dropped a datagram when parallel tests kept it off
        // the CPU
        .args(["-B", "33554432"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start nfcapd");
    std::thread::sleep(Duration::from_millis(700));
    // one socket per exporter address, as the exporters sent them
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut socks: std::collections::HashMap<std::net::IpAddr, UdpSocket> = Default::default();
    for (i, d) in dgs.iter().enumerate() {
        let s = socks
            .entry(d.src.ip())
            .or_insert_with(|| UdpSocket::bind(SocketAddr::new(d.src.ip(), 0)).unwrap());
        s.send_to(&d.payload, to).unwrap();
        if i % 32 == 31 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling our own child; nfcapd writes its file on SIGTERM.
    unsafe {
        libc::kill(nfcapd.id() as i32, libc::SIGTERM);
    }
    let _ = nfcapd.wait();
    let out = Command::new(tool("nfdump"))
        .arg("-R")
        .arg(&dir)
        .arg("-I")
        .output()
        .expect("nfdump");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Flows: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("nfdump -I has no Flows:\n{text}"))
}

#[test]
fn gen_output_decodes_in_tshark_and_nfcapd() {
    for (name, extra) in [("IPFIX + v9", &[][..]), ("v5", &["--version", "5"][..])] {
        let (dgs, sent) = capture_gen(extra);
        assert!(sent > 1000, "{name}: only {sent} records");
        let t = tshark_totals(&dgs);
        assert_eq!(t.records, sent, "{name}: tshark's record count");
        let work = tempfile::tempdir().unwrap();
        assert_eq!(
            nfcapd_records(&dgs, work.path()),
            sent,
            "{name}: nfcapd's record count"
        );
        eprintln!(
            "{name}: {sent} records in {} datagrams; tshark and nfcapd agree",
            dgs.len()
        );
    }
}
