//! `nagare gen --rate R` sends R records a second of the data-centre profile, whose
//! natural rate (about 60 records/s, varying with the time of day) it scales: the
//! records are counted by decoding what arrives, not by the generator's own report.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use nagare::decode::{DecodeConfig, Decoder};

#[test]
fn datacenter_rate_is_the_rate_asked_for() {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let to = sock.local_addr().expect("addr");
    // (arrival, records) of every datagram
    let reader = std::thread::spawn(move || {
        let d = Decoder::new(DecodeConfig::default());
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_535];
        let mut got = Vec::new();
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            d.decode(from.ip(), 0, &buf[..n], &mut out);
            got.push((Instant::now(), out.len()));
            out.clear();
        }
        got
    });
    let (rate, seconds) = (1_000usize, 6usize);
    let (to, r, d) = (to.to_string(), rate.to_string(), seconds.to_string());
    let err = common::run_gen(&["--to", &to, "--rate", &r, "--duration", &d]);
    let got = reader.join().expect("reader");
    let Some(&(t0, _)) = got.first() else {
        panic!("nothing received ({err})");
    };
    // the steady seconds: from the second to the fifth after the first datagram (a
    // second of traffic is generated when it is over and sent over the next one)
    let (from, to) = (t0 + Duration::from_secs(1), t0 + Duration::from_secs(4));
    let steady: usize = got
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|(_, n)| n)
        .sum();
    let want = rate * 3;
    assert!(
        steady * 100 >= want * 85 && steady * 100 <= want * 115,
        "{steady} records received in 3 s for {want} asked ({err})"
    );
}
