//! Every open network path of a connection, as a snapshot: what `status` shows of a
//! multipath connection (one relay path and, after holepunching, one or more direct ones).

use iroh::TransportAddr;

use crate::counters::PathKind;
use crate::net::Connection;

/// One open path of a connection at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct PathSummary {
    pub kind: PathKind,
    /// `IP:PORT` of a direct path, the relay URL of a relayed one.
    pub remote: String,
    /// The path iroh sends on now.
    pub selected: bool,
    pub rtt_ms: f64,
}

/// The open paths of `conn`, the selected one first, then direct before relayed.
pub fn paths(conn: &Connection) -> Vec<PathSummary> {
    let list = conn.raw().paths();
    let mut out: Vec<PathSummary> = list
        .iter()
        .map(|p| PathSummary {
            kind: if p.is_relay() {
                PathKind::Relay
            } else {
                PathKind::Direct
            },
            remote: match p.remote_addr() {
                TransportAddr::Ip(a) => a.to_string(),
                TransportAddr::Relay(url) => url.to_string(),
                other => format!("{other:?}"),
            },
            selected: p.is_selected(),
            rtt_ms: p.rtt().as_secs_f64() * 1000.0,
        })
        .collect();
    out.sort_by_key(|p| (!p.selected, p.kind == PathKind::Relay));
    out
}
