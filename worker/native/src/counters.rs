//! Per-connection counters (live, lock-free) and the stats snapshot.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counted from this side's point of view: `sent` is local socket -> peer.
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub streams_open: AtomicU64,
    pub streams_total: AtomicU64,
    pub udp_flows: AtomicU64,
    pub datagrams_dropped: AtomicU64,
}

/// A copy of [`Counters`] at one instant.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CountersSnapshot {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub streams_open: u64,
    pub streams_total: u64,
    pub udp_flows: u64,
    pub datagrams_dropped: u64,
}

impl Counters {
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            bytes_sent: self.bytes_sent.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            streams_open: self.streams_open.load(Relaxed),
            streams_total: self.streams_total.load(Relaxed),
            udp_flows: self.udp_flows.load(Relaxed),
            datagrams_dropped: self.datagrams_dropped.load(Relaxed),
        }
    }

    pub fn add_sent(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Relaxed);
    }

    pub fn add_received(&self, n: usize) {
        self.bytes_received.fetch_add(n as u64, Relaxed);
    }

    pub fn dropped(&self) {
        self.datagrams_dropped.fetch_add(1, Relaxed);
    }

    pub fn set_flows(&self, n: usize) {
        self.udp_flows.store(n as u64, Relaxed);
    }

    /// Counts an open stream until the returned guard drops.
    pub fn open_stream(&self) -> StreamGuard<'_> {
        self.streams_open.fetch_add(1, Relaxed);
        self.streams_total.fetch_add(1, Relaxed);
        StreamGuard(self)
    }
}

pub struct StreamGuard<'a>(&'a Counters);

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        self.0.streams_open.fetch_sub(1, Relaxed);
    }
}

/// The path a connection currently sends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    Direct,
    Relay,
    None,
}

impl PathKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Relay => "relay",
            PathKind::None => "none",
        }
    }
}

/// A transport snapshot of one connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Smoothed RTT of the selected path, milliseconds.
    pub rtt_ms: Option<f64>,
    pub lost_packets: u64,
    pub sent_packets: u64,
    pub udp_tx_bytes: u64,
    pub udp_rx_bytes: u64,
    pub path: PathKind,
    /// The selected path's remote address (`IP:PORT` or the relay URL).
    pub remote_addr: Option<String>,
    pub max_datagram_size: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_guard_counts_open_and_total() {
        let c = Counters::default();
        {
            let _a = c.open_stream();
            let _b = c.open_stream();
            assert_eq!(c.snapshot().streams_open, 2);
        }
        let s = c.snapshot();
        assert_eq!((s.streams_open, s.streams_total), (0, 2));
    }
}
