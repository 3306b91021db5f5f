//! tunnel-py's native iroh data plane.
//!
//! The core (`options`, `net`, `splice`, `udp`, `counters`) is plain async Rust on tokio and
//! is tested by `cargo test` without Python. The `python` feature adds the thin PyO3 layer
//! (`py`) that the `tunnelpy.worker._native` extension module is built from.

pub mod counters;
pub mod error;
pub mod flows;
pub mod net;
pub mod options;
pub mod paths;
pub mod relays;
pub mod splice;
pub mod udp;
pub mod wire;

#[cfg(feature = "python")]
mod py;

pub use counters::{Counters, CountersSnapshot, PathKind, Stats};
pub use error::{Error, Result};
pub use net::{parse_peer, Connection, Endpoint};
pub use options::{Congestion, EndpointOptions, Relays, TransportOptions};
pub use splice::{splice_tcp, Spliced};
