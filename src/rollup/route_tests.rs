//! The router's queues are bounded in records: one datagram of 65 000 tiny records
//! cannot queue 65 000 records behind a busy shard (it took RSS to 1.7 GB).

use std::sync::Arc;

use super::tests::test_flow;
use super::*;
use crate::enrich::geoip::GeoTable;
use crate::enrich::inventory::Inventory;

#[test]
fn a_huge_handover_is_queued_in_bounded_batches_and_the_excess_counted() {
    let cfg = RollupConfig {
        shards: 1,
        queue_batches: 4,
        ..RollupConfig::default()
    };
    let enr = Arc::new(Enricher::from_parts(
        Inventory::default(),
        GeoTable::default(),
    ));
    let (r, _) = Rollup::start(&cfg, None, enr).unwrap();
    let now = crate::util::now_ms();
    let n = 65_000u32;
    let mut batch: Vec<FlowRecord> = (0..n).map(|i| test_flow(i, now)).collect();
    let m = r.shard_metrics[0].clone();
    {
        // the shard is busy (its lock is held): its thread takes at most one batch
        // and waits for the lock with it, the queue holds 4 more
        let held = lock_shard(&r.shard_locks[0]);
        r.ingest(&mut batch, Handover::End { backlog: true });
        let queued = m.queued_records.get();
        let dropped = m.queue_dropped.get();
        let max = 5 * ROUTE_BATCH as u64;
        assert!(queued <= max, "{queued} records queued");
        // what is neither queued nor dropped is the batch the thread holds
        let taken = u64::from(n) - queued - dropped;
        assert!(
            taken <= ROUTE_BATCH as u64,
            "{taken} records in the thread's hands"
        );
        assert!(dropped >= u64::from(n) - max, "{dropped} dropped");
        drop(held);
    }
    r.stop();
    // every record is either ingested or counted as dropped
    assert_eq!(m.records.get() + m.queue_dropped.get(), u64::from(n));
    assert!(m.records.get() <= 5 * ROUTE_BATCH as u64);
    assert_eq!(m.queued_records.get(), 0);
}

#[test]
fn the_pool_does_not_keep_a_huge_buffer() {
    let pool = BatchPool::new(4);
    let mut big = pool.take(ROUTE_BATCH);
    big.reserve(65_000);
    pool.put(big);
    assert!(pool.take(0).capacity() <= 2 * ROUTE_BATCH);
    let small = pool.take(ROUTE_BATCH);
    let cap = small.capacity();
    pool.put(small);
    assert_eq!(pool.take(0).capacity(), cap);
}
