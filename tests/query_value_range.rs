//! Sums over rollups and queries saturate instead of wrapping (this suite runs with
//! overflow checks), and a query's `now` outside years 1970-9999 is an error, not an
//! overflow.

use std::sync::Arc;

use nagare::enrich::Enricher;
use nagare::enrich::fold::FoldLimits;
use nagare::enrich::geoip::GeoTable;
use nagare::enrich::inventory::Inventory;
use nagare::model::{ExporterId, FlowRecord};
use nagare::rollup::shard::Shard;
use nagare::rollup::store::Store;
use nagare::rollup::{FlowIn, RollupConfig};

const T0: i64 = 1_764_000_000_000;

/// One record of `bytes` bytes from 10.0.0.`i` to 192.0.2.9:443, at `T0 + i` seconds.
fn record(i: u8, bytes: u64) -> FlowRecord {
    let mut r = FlowRecord::empty(ExporterId::new("192.0.2.1".parse().unwrap(), 0), 10);
    r.src = format!("10.0.0.{i}").parse().unwrap();
    r.dst = "192.0.2.9".parse().unwrap();
    r.src_port = 40_000;
    r.dst_port = 443;
    r.protocol = 6;
    r.tcp_flags = 0x18;
    r.bytes = bytes;
    r.packets = u64::MAX / 2;
    r.start_ms = T0 + i64::from(i) * 1000;
    r.end_ms = r.start_ms + 500;
    r
}

fn context(recs: &[FlowRecord]) -> nagare::query::Context {
    let inv = Inventory::parse("", "empty").expect("an empty inventory");
    let enr = Arc::new(Enricher::from_parts(inv, GeoTable::default()));
    let store = Store::new(None, RollupConfig::default().resolutions().unwrap(), 1, 0);
    let mut shard = Shard::detached(
        0,
        store.clone(),
        FoldLimits {
            max_sessions: 10_000,
            idle_ms: 300_000,
        },
    );
    let flows: Vec<FlowIn> = recs.iter().map(FlowIn::from_record).collect();
    shard.ingest(&flows, &enr.tables(), &enr.geo(), T0 + 60_000);
    shard.tick_and_commit(T0 + 3 * 3_600_000);
    shard.commit_final();
    nagare::query::Context::new(
        store,
        enr,
        Arc::new(|_, _| None),
        nagare::query::QueryConfig::default(),
    )
}

#[test]
fn totals_past_64_bits_saturate_instead_of_wrapping() {
    // the same flow three times, then two other flows, each of 2^63 bytes: every sum
    // of two of them is past 2^64 - 1
    let half = 1u64 << 63;
    let recs = [
        record(1, half),
        record(1, half),
        record(1, half),
        record(2, half),
        record(3, half),
    ];
    let ctx = context(&recs);
    let now_s = T0 / 1000 + 4 * 3600;
    for q in [
        "flows in last 1 day",
        "sum(bytes) of flows in last 1 day",
        "sum(bytes) of flows group by Port in last 1 day",
        "series(sum(bytes)) of flows in last 1 day",
    ] {
        let r = nagare::query::run(&ctx, q, now_s).unwrap_or_else(|e| panic!("{}", e.render(q)));
        let r = serde_json::to_value(r).unwrap();
        let nums: Vec<f64> = r["rows"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_f64())
            .collect();
        // 2^64 - 1 as a float is 2^64; a wrapped sum would be 0 or 2^63
        assert!(
            nums.iter().any(|&v| v >= 1.8e19),
            "{q}: a saturated total is there: {r}"
        );
    }
}

#[test]
fn a_now_outside_years_1970_to_9999_is_an_error() {
    let ctx = context(&[record(1, 100)]);
    for now in [i64::MIN, -1, 253_402_300_800, i64::MAX] {
        let e = match nagare::query::run(&ctx, "flows in last 7 days", now) {
            Ok(_) => panic!("now = {now} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("not a Unix time"), "{now}: {e}");
    }
    assert!(nagare::query::run(&ctx, "flows in last 7 days", 253_402_300_799).is_ok());
}
