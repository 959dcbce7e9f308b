//! Feeds arbitrary bytes to the rollup segment reader, three ways: as a segment file;
//! as the same file with every frame's checksum made right (so mutations of a payload
//! reach the chunk decoder instead of stopping at the checksum); and as one bare chunk
//! payload. Never a panic, and whatever is read is consistent:
//! - the report counts exactly the chunks handed over, bad frames in file order;
//! - every chunk read re-encodes to a payload that decodes to the same chunk, and the
//!   writer's frames of the chunks read back as exactly those chunks, nothing bad;
//! - time arithmetic on a chunk (its start plus or minus a bucket or an offset) fits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nagare::rollup::chunk::Chunk;
use nagare::rollup::segment::{self, MAGIC, VERSION};

/// "NGRC" version:u8 reserved:u8 length:u32le crc32:u32le (src/rollup/segment.rs).
const HEADER: usize = 14;

fn read(b: &[u8]) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let rep = segment::read_frames(b, |c| chunks.push(c));
    assert_eq!(rep.chunks, chunks.len(), "the report miscounts the chunks");
    assert!(
        rep.bad_frames.windows(2).all(|w| w[0].0 < w[1].0),
        "bad frames out of order: {:?}",
        rep.bad_frames
    );
    assert!(rep.bad_frames.iter().all(|(off, _)| *off < b.len()));
    for c in &chunks {
        check(c);
    }
    chunks
}

fn check(c: &Chunk) {
    // a bucket's end and the offsets in it are computed as start + u32/u16 seconds
    let span = i64::from(u32::MAX);
    assert!(
        c.start.checked_add(span).is_some() && c.start.checked_sub(span).is_some(),
        "time arithmetic on a chunk overflows: start {} res {}",
        c.start,
        c.res
    );
    let again = segment::decode(&segment::encode(c)).expect("a chunk read re-encodes");
    assert_eq!(&again, c, "re-encoding a chunk changes it");
}

/// The bytes with the checksum of every frame the walk finds set right.
fn fix_checksums(b: &[u8]) -> Vec<u8> {
    let mut f = b.to_vec();
    let mut p = 0;
    while p + HEADER <= f.len() {
        let len = u32::from_le_bytes([f[p + 6], f[p + 7], f[p + 8], f[p + 9]]) as usize;
        if &f[p..p + 4] == MAGIC && f[p + 4] == VERSION && len <= f.len() - p - HEADER {
            let crc = crc32fast::hash(&f[p + HEADER..p + HEADER + len]);
            f[p + 10..p + 14].copy_from_slice(&crc.to_le_bytes());
            p += HEADER + len;
        } else {
            p += 1;
        }
    }
    f
}

fuzz_target!(|data: &[u8]| {
    let mut chunks = read(data);
    let fixed = fix_checksums(data);
    if fixed != data {
        chunks.extend(read(&fixed));
    }
    if let Ok(c) = segment::decode(data) {
        check(&c);
        chunks.push(c);
    }
    // what the writer makes of the chunks reads back as they are
    let mut file = Vec::new();
    for c in &chunks {
        file.extend(segment::frame(c));
    }
    let mut back = Vec::new();
    let rep = segment::read_frames(&file, |c| back.push(c));
    assert!(rep.bad_frames.is_empty() && !rep.truncated_tail, "{rep:?}");
    assert_eq!(back, chunks, "the writer's frames read back differently");
});
