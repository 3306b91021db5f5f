//! The endpoint and its connections: bind, dial by ticket or id with a deadline, accept,
//! streams, datagrams and the stats snapshot. Async methods run on the caller's tokio
//! runtime; nothing here knows about Python.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use iroh::endpoint::{
    Connection as IrohConnection, ConnectionError, Incoming as IrohIncoming, IncomingAddr,
    RecvStream, SendStream,
};
use iroh::{EndpointAddr, EndpointId, TransportAddr};
use iroh_tickets::endpoint::EndpointTicket;

use crate::counters::{Counters, PathKind, Stats};
use crate::error::{describe, Error, Result};
use crate::options::EndpointOptions;

/// A bound iroh endpoint. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    inner: iroh::Endpoint,
}

impl Endpoint {
    pub async fn bind(options: &EndpointOptions) -> Result<Self> {
        let inner =
            options.builder()?.bind().await.map_err(|e| {
                Error::Config(format!("cannot bind the endpoint: {}", describe(&e)))
            })?;
        Ok(Self { inner })
    }

    pub fn raw(&self) -> &iroh::Endpoint {
        &self.inner
    }

    /// The EndpointId, 64 lowercase hex digits.
    pub fn endpoint_id(&self) -> String {
        self.inner.id().to_string()
    }

    pub fn addr(&self) -> EndpointAddr {
        self.inner.addr()
    }

    /// An endpoint ticket carrying the current direct addresses (and relay, if any).
    pub fn ticket(&self) -> String {
        EndpointTicket::new(self.inner.addr()).to_string()
    }

    /// The local UDP sockets, as bound.
    pub fn bound_sockets(&self) -> Vec<std::net::SocketAddr> {
        self.inner.bound_sockets()
    }

    /// Waits until a home relay is connected; with relays disabled it never returns, so
    /// callers bound it with a timeout.
    pub async fn online(&self) {
        self.inner.online().await
    }

    /// Dial `peer` (a ticket, or a bare EndpointId found through discovery).
    pub async fn connect(&self, peer: &str, alpn: &[u8], timeout: Duration) -> Result<Connection> {
        let addr = parse_peer(peer)?;
        let short = addr.id.fmt_short().to_string();
        match tokio::time::timeout(timeout, self.inner.connect(addr, alpn)).await {
            Err(_) => Err(Error::ConnectFailed(format!(
                "no answer from {short} within {:.1} s",
                timeout.as_secs_f64()
            ))),
            Ok(Err(e)) => Err(Error::ConnectFailed(format!(
                "cannot connect to {short}: {}",
                describe(&e)
            ))),
            Ok(Ok(conn)) => Ok(Connection::new(conn)),
        }
    }

    /// The next incoming connection that completes its handshake; `None` once closed.
    /// A failed handshake is skipped (it concerns that peer only).
    pub async fn accept(&self) -> Option<Connection> {
        loop {
            let incoming = self.inner.accept().await?;
            let Ok(accepting) = incoming.accept() else {
                continue;
            };
            if let Ok(conn) = accepting.await {
                return Some(Connection::new(conn));
            }
        }
    }

    /// The next incoming connection *before* its handshake, so a caller can refuse it by
    /// address without spending any crypto; `None` once closed.
    pub async fn accept_incoming(&self) -> Option<Incoming> {
        let incoming = self.inner.accept().await?;
        let remote = match incoming.remote_addr() {
            IncomingAddr::Ip(addr) => addr.to_string(),
            IncomingAddr::Relay { url, .. } => format!("relay {url}"),
            _ => "custom".to_string(),
        };
        Some(Incoming {
            inner: std::sync::Mutex::new(Some(incoming)),
            remote,
        })
    }

    pub async fn close(&self) {
        self.inner.close().await
    }

    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

/// An incoming connection whose handshake has not started: accept it once or refuse it.
#[derive(Debug)]
pub struct Incoming {
    inner: std::sync::Mutex<Option<IrohIncoming>>,
    remote: String,
}

impl Incoming {
    /// `IP:PORT`, `relay <url>` or `custom`.
    pub fn remote_addr(&self) -> &str {
        &self.remote
    }

    fn take(&self) -> Result<IrohIncoming> {
        self.inner
            .lock()
            .expect("not poisoned")
            .take()
            .ok_or_else(|| {
                Error::Config("this incoming connection was already accepted or refused".into())
            })
    }

    /// Runs the handshake; `timeout` bounds it.
    pub async fn accept(&self, timeout: Duration) -> Result<Connection> {
        let accepting = self
            .take()?
            .accept()
            .map_err(|e| Error::ConnectFailed(format!("handshake refused: {}", describe(&e))))?;
        match tokio::time::timeout(timeout, accepting).await {
            Err(_) => Err(Error::ConnectFailed(format!(
                "handshake not done within {:.1} s",
                timeout.as_secs_f64()
            ))),
            Ok(Err(e)) => Err(Error::ConnectFailed(format!(
                "handshake failed: {}",
                describe(&e)
            ))),
            Ok(Ok(conn)) => Ok(Connection::new(conn)),
        }
    }

    /// Refuse without a handshake (idempotent).
    pub fn refuse(&self) {
        if let Ok(incoming) = self.take() {
            incoming.refuse();
        }
    }
}

/// A ticket for `peer` (a ticket or an EndpointId) with `extra` direct addresses added.
pub fn ticket_with(peer: &str, extra: &[std::net::SocketAddr]) -> Result<String> {
    let mut addr = parse_peer(peer)?;
    for a in extra {
        addr = addr.with_ip_addr(*a);
    }
    Ok(EndpointTicket::new(addr).to_string())
}

/// A ticket's (or EndpointId's) id and direct addresses.
pub fn ticket_parts(peer: &str) -> Result<(String, Vec<std::net::SocketAddr>)> {
    let addr = parse_peer(peer)?;
    Ok((addr.id.to_string(), addr.ip_addrs().copied().collect()))
}

/// The EndpointId (64 hex digits) of a 32-byte secret key.
pub fn endpoint_id_of(secret: &[u8; 32]) -> String {
    iroh::SecretKey::from_bytes(secret).public().to_string()
}

/// A ticket (`endpoint...`) or a bare EndpointId (hex or base32).
pub fn parse_peer(text: &str) -> Result<EndpointAddr> {
    let text = text.trim();
    if text.starts_with("endpoint") {
        let ticket: EndpointTicket = text
            .parse()
            .map_err(|e| Error::Config(format!("not a valid endpoint ticket: {}", describe(&e))))?;
        return Ok(ticket.endpoint_addr().clone());
    }
    let id: EndpointId = text.parse().map_err(|_| {
        let head: String = text.chars().take(16).collect();
        Error::Config(format!(
            "{head:?}... is neither an EndpointId nor an endpoint ticket"
        ))
    })?;
    Ok(EndpointAddr::new(id))
}

/// One peer connection with its live counters. Cloning shares both.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: IrohConnection,
    pub counters: Arc<Counters>,
}

/// Maps a connection-level failure to `ConnectionLost` with the peer's reason.
pub fn lost(err: &ConnectionError) -> Error {
    Error::ConnectionLost(close_reason(err))
}

/// A closed connection's reason in words (the application reason if the peer gave one).
pub fn close_reason(err: &ConnectionError) -> String {
    match err {
        ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason);
            if reason.is_empty() {
                format!("closed by peer (code {})", close.error_code)
            } else {
                format!("closed by peer: {reason}")
            }
        }
        ConnectionError::LocallyClosed => "closed locally".into(),
        ConnectionError::TimedOut => "timed out (peer unreachable)".into(),
        other => describe(other),
    }
}

impl Connection {
    pub fn new(inner: IrohConnection) -> Self {
        Self {
            inner,
            counters: Arc::default(),
        }
    }

    pub fn raw(&self) -> &IrohConnection {
        &self.inner
    }

    pub fn remote_id(&self) -> String {
        self.inner.remote_id().to_string()
    }

    pub fn alpn(&self) -> Vec<u8> {
        self.inner.alpn().to_vec()
    }

    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream)> {
        self.inner.open_bi().await.map_err(|e| lost(&e))
    }

    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream)> {
        self.inner.accept_bi().await.map_err(|e| lost(&e))
    }

    pub fn max_datagram_size(&self) -> Option<usize> {
        self.inner.max_datagram_size()
    }

    /// Sends one datagram, waiting (bounded by QUIC) for send-buffer room.
    pub async fn send_datagram(&self, data: Bytes) -> Result<()> {
        use iroh::endpoint::SendDatagramError as E;
        match self.inner.send_datagram_wait(data).await {
            Ok(()) => Ok(()),
            Err(E::ConnectionLost(e)) => Err(lost(&e)),
            Err(E::TooLarge) => Err(Error::Config(format!(
                "datagram too large: at most {} bytes now",
                self.inner.max_datagram_size().unwrap_or(0)
            ))),
            Err(e) => Err(Error::Config(format!(
                "cannot send a datagram: {}",
                describe(&e)
            ))),
        }
    }

    pub async fn recv_datagram(&self) -> Result<Bytes> {
        self.inner.read_datagram().await.map_err(|e| lost(&e))
    }

    pub fn close(&self, code: u32, reason: &str) {
        self.inner.close(code.into(), reason.as_bytes())
    }

    /// Waits until the connection is closed, by either side; returns why.
    pub async fn closed(&self) -> String {
        close_reason(&self.inner.closed().await)
    }

    pub fn close_reason(&self) -> Option<String> {
        self.inner.close_reason().map(|e| close_reason(&e))
    }

    pub fn stats(&self) -> Stats {
        let s = self.inner.stats();
        let paths = self.inner.paths();
        let selected = paths.iter().find(|p| p.is_selected());
        let (path, remote_addr, rtt) = match &selected {
            Some(p) => {
                let kind = if p.is_relay() {
                    PathKind::Relay
                } else {
                    PathKind::Direct
                };
                let addr = match p.remote_addr() {
                    TransportAddr::Ip(a) => Some(a.to_string()),
                    TransportAddr::Relay(url) => Some(url.to_string()),
                    _ => None,
                };
                (kind, addr, Some(p.rtt()))
            }
            None => (PathKind::None, None, None),
        };
        Stats {
            rtt_ms: rtt.map(|d| d.as_secs_f64() * 1000.0),
            lost_packets: s.lost_packets,
            sent_packets: s.sent_packets,
            udp_tx_bytes: s.udp_tx.bytes,
            udp_rx_bytes: s.udp_rx.bytes,
            path,
            remote_addr,
            max_datagram_size: self.inner.max_datagram_size(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_peer_rejects_garbage_in_one_line() {
        let err = parse_peer("hello world").unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        assert!(!err.message().contains('\n'));
        let err = parse_peer("endpointgarbage").unwrap_err();
        assert!(matches!(err, Error::Config(_)));
    }

    #[test]
    fn parse_peer_takes_a_hex_id() {
        let key = iroh::SecretKey::from_bytes(&[7u8; 32]);
        let id = key.public().to_string();
        assert_eq!(parse_peer(&id).unwrap().id, key.public());
    }
}
