//! UDP over a connection, with the semantics of `tunnelpy/worker/forward_udp.py`:
//! many local clients per tunnel, one flow per client address.
//!
//! * Receiver side: one local UDP socket; each client address is a flow (ids from 1).
//! * Worker side: one connected ephemeral UDP socket per flow, to the first of the checked
//!   source addresses that accepts a connect.
//! * Datagrams that fit go as QUIC datagrams, larger ones as frames on the `UDP_FRAMES`
//!   stream ([`crate::wire`]). Queues are bounded and drop when full (counted), flows idle
//!   for [`IDLE_TIMEOUT`] expire, at most [`MAX_FLOWS`] at once.
//!
//! [`FlowTable`] is the sans-IO core (time passed in); the two `serve_*` loops are the glue.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use iroh::endpoint::{RecvStream, SendStream};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::net::Connection;
use crate::splice::{read_error, write_error};
use crate::wire::{self, FrameDecoder};

pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
pub const QUEUE_SIZE: usize = 1024;
pub const MAX_FLOWS: usize = 4096;
const RECV_BUFFER: usize = 65536;

/// Flow ids <-> keys (a client address, or the flow itself), with idle expiry.
#[derive(Debug)]
pub struct FlowTable<K> {
    idle_timeout: Duration,
    max_flows: usize,
    ids: HashMap<K, u32>,
    keys: HashMap<u32, (K, Instant)>,
    next_id: u32,
}

impl<K: Hash + Eq + Clone> FlowTable<K> {
    pub fn new(idle_timeout: Duration, max_flows: usize) -> Self {
        Self {
            idle_timeout,
            max_flows,
            ids: HashMap::new(),
            keys: HashMap::new(),
            next_id: 1,
        }
    }

    /// The flow of `key`, created if new; `None` when the table is full.
    pub fn flow_for(&mut self, key: &K, now: Instant) -> Option<u32> {
        if let Some(&id) = self.ids.get(key) {
            self.keys.get_mut(&id).expect("both maps agree").1 = now;
            return Some(id);
        }
        if self.ids.len() >= self.max_flows {
            return None;
        }
        let mut id = self.next_id;
        while self.keys.contains_key(&id) {
            id = id.wrapping_add(1).max(1);
        }
        self.next_id = id.wrapping_add(1).max(1);
        self.ids.insert(key.clone(), id);
        self.keys.insert(id, (key.clone(), now));
        Some(id)
    }

    /// Records a flow whose id the peer chose (replacing earlier mappings of either side).
    pub fn add(&mut self, flow_id: u32, key: K, now: Instant) {
        if let Some((old_key, _)) = self.keys.remove(&flow_id) {
            self.ids.remove(&old_key);
        }
        if let Some(old_id) = self.ids.remove(&key) {
            self.keys.remove(&old_id);
        }
        self.ids.insert(key.clone(), flow_id);
        self.keys.insert(flow_id, (key, now));
    }

    /// The key of a flow; with `now`, the flow counts as active.
    pub fn key_of(&mut self, flow_id: u32, now: Option<Instant>) -> Option<&K> {
        let entry = self.keys.get_mut(&flow_id)?;
        if let Some(now) = now {
            entry.1 = now;
        }
        Some(&entry.0)
    }

    /// Removes and returns the flows idle longer than the timeout.
    pub fn expire(&mut self, now: Instant) -> Vec<(u32, K)> {
        let gone: Vec<u32> = self
            .keys
            .iter()
            .filter(|(_, (_, seen))| now.saturating_duration_since(*seen) > self.idle_timeout)
            .map(|(id, _)| *id)
            .collect();
        gone.into_iter()
            .map(|id| {
                let (key, _) = self.keys.remove(&id).expect("listed above");
                self.ids.remove(&key);
                (id, key)
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

type Outbox = mpsc::Sender<(u32, Bytes)>;

/// Queues one payload for the tunnel, dropping (and counting) when the queue is full.
fn enqueue(outbox: &Outbox, counters: &Counters, flow_id: u32, payload: Bytes) {
    if outbox.try_send((flow_id, payload)).is_err() {
        counters.dropped();
    }
}

/// Drains the outbox into the tunnel: a datagram when it fits, else a frame on the stream.
async fn send_loop(
    conn: &Connection,
    frames: &mut SendStream,
    mut outbox: mpsc::Receiver<(u32, Bytes)>,
) -> Result<()> {
    while let Some((flow_id, payload)) = outbox.recv().await {
        let fits = conn
            .max_datagram_size()
            .is_some_and(|max| wire::FLOW_HEADER + payload.len() <= max);
        let sent = if fits {
            match conn
                .send_datagram(wire::encode_datagram(flow_id, &payload))
                .await
            {
                Ok(()) => true,
                Err(Error::Config(_)) => false, // shrank meanwhile: frame it
                Err(e) => return Err(e),
            }
        } else {
            false
        };
        if !sent {
            let Some(frame) = wire::encode_frame(flow_id, &payload) else {
                conn.counters.dropped();
                continue;
            };
            frames.write_chunk(frame).await.map_err(write_error)?;
        }
        conn.counters.add_sent(payload.len());
    }
    Ok(())
}

/// What arrived from the tunnel, one item per wake-up of the receive loop.
enum Inbound {
    Payloads(Vec<(u32, Bytes)>),
    FramesEnded,
}

/// Waits for the next datagram or frame-stream bytes. Both branches are cancel-safe.
async fn next_inbound(
    conn: &Connection,
    frames: &mut RecvStream,
    decoder: &mut FrameDecoder,
    frames_open: bool,
) -> Result<Inbound> {
    tokio::select! {
        datagram = conn.recv_datagram() => {
            match wire::decode_datagram(datagram?) {
                Some(item) => Ok(Inbound::Payloads(vec![item])),
                None => {
                    conn.counters.dropped();
                    Ok(Inbound::Payloads(Vec::new()))
                }
            }
        }
        chunk = frames.read_chunk(256 * 1024), if frames_open => {
            match chunk.map_err(read_error)? {
                Some(data) => Ok(Inbound::Payloads(decoder.feed(&data))),
                None if decoder.pending() > 0 => Err(Error::StreamReset(format!(
                    "UDP frame stream ended inside a frame ({} bytes left)",
                    decoder.pending()
                ))),
                None => Ok(Inbound::FramesEnded),
            }
        }
    }
}

/// Receiver side: clients of `socket` (already bound by the caller), each address a flow.
/// Runs until the connection ends (`Err(ConnectionLost)`) or the frame stream fails.
pub async fn serve_receiver(
    conn: Connection,
    mut frames_send: SendStream,
    mut frames_recv: RecvStream,
    socket: UdpSocket,
) -> Result<()> {
    let (tx, rx) = mpsc::channel(QUEUE_SIZE);
    tokio::try_join!(
        send_loop(&conn, &mut frames_send, rx),
        receiver_loop(&conn, &mut frames_recv, &socket, tx),
    )
    .map(|_| ())
}

async fn receiver_loop(
    conn: &Connection,
    frames_recv: &mut RecvStream,
    socket: &UdpSocket,
    tx: Outbox,
) -> Result<()> {
    let counters = &conn.counters;
    let mut flows: FlowTable<SocketAddr> = FlowTable::new(IDLE_TIMEOUT, MAX_FLOWS);
    let mut decoder = FrameDecoder::default();
    let mut frames_open = true;
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        tokio::select! {
            got = socket.recv_from(&mut buf) => {
                let Ok((n, addr)) = got else { continue };
                match flows.flow_for(&addr, Instant::now()) {
                    Some(id) => enqueue(&tx, counters, id, Bytes::copy_from_slice(&buf[..n])),
                    None => counters.dropped(),
                }
                counters.set_flows(flows.len());
            }
            inbound = next_inbound(conn, frames_recv, &mut decoder, frames_open) => {
                match inbound? {
                    Inbound::FramesEnded => frames_open = false,
                    Inbound::Payloads(items) => {
                        for (id, payload) in items {
                            counters.add_received(payload.len());
                            if let Some(addr) = flows.key_of(id, Some(Instant::now())) {
                                if socket.try_send_to(&payload, *addr).is_err() {
                                    counters.dropped();
                                }
                            }
                        }
                    }
                }
            }
            _ = sweep.tick() => {
                flows.expire(Instant::now());
                counters.set_flows(flows.len());
            }
        }
    }
}

/// One flow's socket on the worker side.
struct FlowSocket {
    socket: Arc<UdpSocket>,
    reader: tokio::task::AbortHandle,
}

/// Worker side: one connected UDP socket per flow to `addresses` (tried in order) at `port`.
pub async fn serve_worker(
    conn: Connection,
    mut frames_send: SendStream,
    mut frames_recv: RecvStream,
    addresses: Vec<IpAddr>,
    port: u16,
) -> Result<()> {
    if addresses.is_empty() {
        return Err(Error::Config(
            "serve_udp_worker needs at least one address".into(),
        ));
    }
    let (tx, rx) = mpsc::channel(QUEUE_SIZE);
    tokio::try_join!(
        send_loop(&conn, &mut frames_send, rx),
        worker_loop(&conn, &mut frames_recv, &addresses, port, tx),
    )
    .map(|_| ())
}

async fn worker_loop(
    conn: &Connection,
    frames_recv: &mut RecvStream,
    addresses: &[IpAddr],
    port: u16,
    tx: Outbox,
) -> Result<()> {
    let counters = &conn.counters;
    let mut flows: FlowTable<u32> = FlowTable::new(IDLE_TIMEOUT, MAX_FLOWS);
    let mut sockets: HashMap<u32, FlowSocket> = HashMap::new();
    let mut readers = JoinSet::new();
    let mut decoder = FrameDecoder::default();
    let mut frames_open = true;
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tokio::select! {
            inbound = next_inbound(conn, frames_recv, &mut decoder, frames_open) => {
                let items = match inbound? {
                    Inbound::FramesEnded => { frames_open = false; continue }
                    Inbound::Payloads(items) => items,
                };
                for (id, payload) in items {
                    counters.add_received(payload.len());
                    if !sockets.contains_key(&id) {
                        if sockets.len() >= MAX_FLOWS {
                            counters.dropped();
                            continue;
                        }
                        let Some(socket) = open_flow(addresses, port) else {
                            counters.dropped();
                            continue;
                        };
                        let socket = Arc::new(socket);
                        let reader = readers.spawn(read_flow(
                            socket.clone(), id, tx.clone(), counters.clone(),
                        ));
                        sockets.insert(id, FlowSocket { socket, reader });
                        flows.add(id, id, Instant::now());
                        counters.set_flows(sockets.len());
                    }
                    flows.key_of(id, Some(Instant::now()));
                    if sockets[&id].socket.try_send(&payload).is_err() {
                        counters.dropped();
                    }
                }
            }
            _ = sweep.tick() => {
                for (id, _) in flows.expire(Instant::now()) {
                    if let Some(flow) = sockets.remove(&id) {
                        flow.reader.abort();
                    }
                }
                counters.set_flows(sockets.len());
            }
            Some(_) = readers.join_next(), if !readers.is_empty() => {}
        }
    }
}

fn open_flow(addresses: &[IpAddr], port: u16) -> Option<UdpSocket> {
    for &ip in addresses {
        let local: IpAddr = if ip.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let Ok(socket) = std::net::UdpSocket::bind((local, 0)) else {
            continue;
        };
        if socket.connect((ip, port)).is_err() || socket.set_nonblocking(true).is_err() {
            continue;
        }
        if let Ok(socket) = UdpSocket::from_std(socket) {
            return Some(socket);
        }
    }
    None
}

async fn read_flow(socket: Arc<UdpSocket>, id: u32, outbox: Outbox, counters: Arc<Counters>) {
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => enqueue(&outbox, &counters, id, Bytes::copy_from_slice(&buf[..n])),
            // ICMP port unreachable and the like: the source may come back; keep the flow.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_ids_start_at_one_and_are_stable() {
        let t0 = Instant::now();
        let mut t: FlowTable<&str> = FlowTable::new(IDLE_TIMEOUT, 2);
        assert_eq!(t.flow_for(&"a", t0), Some(1));
        assert_eq!(t.flow_for(&"b", t0), Some(2));
        assert_eq!(t.flow_for(&"a", t0), Some(1));
        assert_eq!(t.flow_for(&"c", t0), None, "full");
        assert_eq!(t.key_of(2, None), Some(&"b"));
    }

    #[test]
    fn idle_flows_expire_and_activity_keeps_them() {
        let t0 = Instant::now();
        let mut t: FlowTable<&str> = FlowTable::new(Duration::from_secs(120), 10);
        t.flow_for(&"a", t0);
        t.flow_for(&"b", t0);
        t.key_of(2, Some(t0 + Duration::from_secs(100)));
        let gone = t.expire(t0 + Duration::from_secs(121));
        assert_eq!(gone, vec![(1, "a")]);
        assert_eq!(t.len(), 1);
        assert!(t.expire(t0 + Duration::from_secs(219)).is_empty());
        assert_eq!(t.expire(t0 + Duration::from_secs(221)).len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn add_replaces_either_side() {
        let t0 = Instant::now();
        let mut t: FlowTable<&str> = FlowTable::new(IDLE_TIMEOUT, 10);
        t.add(5, "x", t0);
        t.add(5, "y", t0);
        assert_eq!(t.key_of(5, None), Some(&"y"));
        assert_eq!(t.len(), 1);
        t.add(6, "y", t0);
        assert_eq!(t.key_of(5, None), None);
        assert_eq!(t.len(), 1);
    }
}
