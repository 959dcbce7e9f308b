//! Feeds arbitrary bytes to both decoders (the fast path and the reference one) as one
//! datagram from one exporter, twice: the first pass may define templates the second
//! uses. A returned error is counted. Seeds (`examples/fuzz_seeds.rs`) are whole
//! generated datagrams, their first ones carrying the templates their data sets use.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nagare::decode::{DecodeConfig, DecodeMode, Decoder};

fuzz_target!(|data: &[u8]| {
    for mode in [DecodeMode::Auto, DecodeMode::Reference] {
        let d = Decoder::new(DecodeConfig { mode, ..Default::default() });
        let mut out = Vec::new();
        let src = "192.0.2.1".parse().unwrap();
        // Raw bytes as a datagram.
        let st = d.decode(src, 0, data, &mut out);
        if st.error.is_some() {
            assert!(d.metrics.total_errors() > 0, "an error was returned but not counted");
        }
        // The same bytes twice: the first may define templates the second uses.
        d.decode(src, 0, data, &mut out);
    }
});
