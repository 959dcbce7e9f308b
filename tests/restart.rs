//! Templates survive a restart: template, SIGTERM, start, a data-only datagram decodes at
//! once with no template miss; and a SIGTERM right after start is handled, not fatal.

mod common;

use common::{Daemon, metric_sum};
use nagare::generate::encode::{Exporter, GenRecord};

fn recs(n: usize) -> Vec<GenRecord> {
    (0..n)
        .map(|i| GenRecord {
            src: format!("10.9.0.{}", i + 1).parse().unwrap(),
            dst: "10.9.1.1".parse().unwrap(),
            src_port: 40000 + i as u16,
            dst_port: 443,
            protocol: 6,
            tcp_flags: 0x1b,
            bytes: 1500,
            packets: 3,
            start_ms: 1_764_000_000_000,
            end_ms: 1_764_000_000_500,
            in_if: 1,
            out_if: 2,
            vlan: 0,
            direction: 0,
            vmware: None,
        })
        .collect()
}

#[test]
fn templates_survive_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for version in [9u8, 10] {
        let mut exp = Exporter::new(version, 42, 1_763_999_000_000);
        exp.template_every = 1_000_000; // only the first datagram carries templates
        exp.sampling = 10;
        let first = exp.templates_only(1_764_000_001_000);
        let data = exp.encode(&recs(20), 1_764_000_002_000);

        let d = Daemon::start(&state, &[]);
        d.send(&[first]);
        d.wait_metrics(20, "templates learned", |m| {
            metric_sum(m, "nagare_decode_templates") >= 2.0
        });
        // the template is on disk within a second or so; SIGTERM saves it anyway
        d.terminate();

        let d = Daemon::start(&state, &[]);
        d.send(&data);
        // decoded at once; handed to the pipeline within the listener's batching delay
        let m = d.wait_metrics(20, "records decoded and enriched", |m| {
            metric_sum(m, "nagare_decode_records_total") >= 20.0
                && metric_sum(m, "nagare_pipeline_flow_bytes_total") >= 20.0 * 1500.0
        });
        assert_eq!(
            metric_sum(&m, "nagare_decode_records_total"),
            20.0,
            "v{version}"
        );
        assert_eq!(
            metric_sum(&m, "nagare_decode_template_misses_total"),
            0.0,
            "v{version}"
        );
        assert_eq!(metric_sum(&m, "nagare_decode_errors_total"), 0.0);
        if version == 10 {
            // the sampling rate announced before the restart still applies
            assert_eq!(
                metric_sum(&m, "nagare_pipeline_flow_bytes_total"),
                20.0 * 1500.0 * 10.0
            );
        }
        d.terminate();
    }
}

/// SIGTERM as soon as the daemon says it listens (a service manager stopping a unit
/// that just started): the signal handler is already installed, so the daemon saves
/// its state and exits 0 rather than being killed by the signal.
#[test]
fn sigterm_right_after_start_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for _ in 0..5 {
        Daemon::start(&state, &[]).terminate();
    }
}
