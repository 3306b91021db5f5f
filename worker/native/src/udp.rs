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
//! [`FlowTable`] ([`crate::flows`]) is the sans-IO core (time passed in); the two `serve_*`
//! loops are the glue.

use std::collections::HashMap;
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

pub use crate::flows::{FlowTable, Limits, IDLE_TIMEOUT, MAX_FLOWS, SWEEP_INTERVAL};

pub const QUEUE_SIZE: usize = 1024;
const RECV_BUFFER: usize = 65536;

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
///
/// The table lives as long as the call: a receiver that outlives its connections passes a
/// duplicate of its one socket to each (the new worker knows no flow either, so a client's
/// next datagram opens its flow again on both sides).
pub async fn serve_receiver(
    conn: Connection,
    frames_send: SendStream,
    frames_recv: RecvStream,
    socket: UdpSocket,
) -> Result<()> {
    serve_receiver_with(conn, frames_send, frames_recv, socket, Limits::default()).await
}

/// [`serve_receiver`] with other [`Limits`] than the defaults.
pub async fn serve_receiver_with(
    conn: Connection,
    mut frames_send: SendStream,
    mut frames_recv: RecvStream,
    socket: UdpSocket,
    limits: Limits,
) -> Result<()> {
    let (tx, rx) = mpsc::channel(QUEUE_SIZE);
    tokio::try_join!(
        send_loop(&conn, &mut frames_send, rx),
        receiver_loop(&conn, &mut frames_recv, &socket, tx, limits),
    )
    .map(|_| ())
}

async fn receiver_loop(
    conn: &Connection,
    frames_recv: &mut RecvStream,
    socket: &UdpSocket,
    tx: Outbox,
    limits: Limits,
) -> Result<()> {
    let counters = &conn.counters;
    let mut flows: FlowTable<SocketAddr> = FlowTable::with_limits(&limits);
    let mut decoder = FrameDecoder::default();
    let mut frames_open = true;
    let mut sweep = tokio::time::interval(limits.sweep_interval);
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
