//! nagare (流れ, "flow"): a streaming NetFlow v5/v9 and IPFIX collector for VMware data
//! centres that answers vRealize Network Insight style flow queries.
//!
//! ```text
//! UDP listeners -> decode -> enrich -> rollup shards -> window store -> query -> api/cli/web
//! ```
//!
//! Every stage is a module with its own `XxxConfig` and `XxxError`; the binary in
//! `src/main.rs` is a thin layer over this library.

pub mod api;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod enrich;
pub mod generate;
pub mod listener;
pub mod model;
pub mod pcap;
pub mod pipeline;
pub mod query;
pub mod rollup;
pub mod statedir;
pub mod sym;
pub mod telemetry;
pub mod util;
