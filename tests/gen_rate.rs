//! `nagare gen --rate R` sends R records a second of the data-centre profile, whose
//! natural rate (about 60 records/s, varying with the time of day) it scales: the
//! records are counted by decoding what arrives, not by the generator's own report.

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use nagare::decode::{DecodeConfig, Decoder};

#[test]
fn datacenter_rate_is_the_rate_asked_for() {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let to = sock.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let d = Decoder::new(DecodeConfig::default());
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_535];
        let mut records = 0usize;
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            d.decode(from.ip(), 0, &buf[..n], &mut out);
            records += out.len();
            out.clear();
        }
        records
    });
    let (rate, seconds) = (3_000usize, 5usize);
    let out = Command::new(env!("CARGO_BIN_EXE_nagare"))
        .args(["gen", "--to", &to.to_string()])
        .args(["--rate", &rate.to_string()])
        .args(["--duration", &seconds.to_string()])
        .output()
        .expect("run nagare gen");
    assert!(
        out.status.success(),
        "gen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = reader.join().expect("reader");
    let want = rate * seconds;
    // the first second is generated before any correction; the site's traffic is random
    assert!(
        got * 100 >= want * 80 && got * 100 <= want * 115,
        "{got} records received for {want} asked ({})",
        String::from_utf8_lossy(&out.stderr)
    );
}
