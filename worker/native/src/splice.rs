//! The TCP splice: one TCP socket <-> one QUIC bi-stream, both directions at once.
//!
//! * Half-close is carried: TCP FIN -> stream finish; stream FIN -> TCP `shutdown(Write)`.
//! * Reset is carried: a TCP reset or socket error -> stream reset + stop; a stream reset (or
//!   stop) from the peer -> TCP RST (SO_LINGER 0, then close). A splice dropped before it
//!   ends (its awaiting task was cancelled) aborts the same way, never as a clean FIN.
//! * Buffers are bounded: one chunk in flight per direction on top of QUIC's flow-control
//!   windows and the kernel's socket buffers, so a slow side stalls the fast one.

use std::time::Duration;

use bytes::BytesMut;
use iroh::endpoint::{ReadError, RecvStream, SendStream, StoppedError, VarInt, WriteError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::net::lost;

/// The error code of our stream resets and stops (the Python data plane uses 0 too).
pub const RESET_CODE: u32 = 0;
/// Largest read per direction and step.
pub const CHUNK: usize = 256 * 1024;

/// Bytes moved by one splice: `sent` = TCP -> stream, `received` = stream -> TCP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spliced {
    pub sent: u64,
    pub received: u64,
}

/// Owns the three ends; unless `finished`, dropping it aborts them (reset, stop, RST).
struct Ends {
    tcp: TcpStream,
    send: SendStream,
    recv: RecvStream,
    finished: bool,
}

impl Drop for Ends {
    fn drop(&mut self) {
        if !self.finished {
            abort(&self.tcp, &mut self.send, &mut self.recv);
        }
    }
}

fn abort(tcp: &TcpStream, send: &mut SendStream, recv: &mut RecvStream) {
    let code = VarInt::from_u32(RESET_CODE);
    let _ = send.reset(code);
    let _ = recv.stop(code);
    // With linger 0 the close that follows sends RST instead of FIN.
    let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
}

/// Splices until both directions ended. `Err(StreamReset)` if either side reset (the other
/// side then got a reset too); `Err(ConnectionLost)` if the connection went away.
pub async fn splice_tcp(
    tcp: TcpStream,
    send: SendStream,
    recv: RecvStream,
    counters: &Counters,
) -> Result<Spliced> {
    let _open = counters.open_stream();
    let _ = tcp.set_nodelay(true);
    let mut ends = Ends {
        tcp,
        send,
        recv,
        finished: false,
    };
    let Ends {
        tcp, send, recv, ..
    } = &mut ends;
    let (mut rd, mut wr) = tcp.split();
    let result = tokio::try_join!(
        tcp_to_stream(&mut rd, send, counters),
        stream_to_tcp(recv, &mut wr, counters),
    );
    match result {
        Ok((sent, received)) => {
            ends.finished = true;
            Ok(Spliced { sent, received })
        }
        Err(e) => Err(e), // `ends` drops here and aborts all three
    }
}

async fn tcp_to_stream(
    rd: &mut ReadHalf<'_>,
    send: &mut SendStream,
    counters: &Counters,
) -> Result<u64> {
    let mut total = 0u64;
    let mut buf = BytesMut::new();
    loop {
        if buf.capacity() < CHUNK / 4 {
            buf.reserve(CHUNK);
        }
        let n = match rd.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Err(Error::StreamReset(format!("local TCP socket failed: {e}"))),
        };
        send.write_chunk(buf.split().freeze())
            .await
            .map_err(write_error)?;
        total += n as u64;
        counters.add_sent(n);
    }
    let _ = send.finish();
    // Returns once the peer acknowledged every byte, or stopped reading early.
    match send.stopped().await {
        Ok(None) => Ok(total),
        Ok(Some(_)) => Err(Error::StreamReset(
            "the peer stopped reading before all data arrived".into(),
        )),
        Err(StoppedError::ConnectionLost(e)) => Err(lost(&e)),
        Err(e) => Err(Error::StreamReset(format!("stream failed: {e}"))),
    }
}

async fn stream_to_tcp(
    recv: &mut RecvStream,
    wr: &mut WriteHalf<'_>,
    counters: &Counters,
) -> Result<u64> {
    let mut total = 0u64;
    // `read` gathers every chunk already received (one per QUIC packet, ~1.4 kB) into one
    // buffer: one TCP write per batch instead of one per packet.
    let mut buf = vec![0u8; CHUNK];
    loop {
        match recv.read(&mut buf).await {
            Ok(Some(n)) => {
                wr.write_all(&buf[..n])
                    .await
                    .map_err(|e| Error::StreamReset(format!("local TCP socket failed: {e}")))?;
                total += n as u64;
                counters.add_received(n);
            }
            Ok(None) => break,
            Err(e) => return Err(read_error(e)),
        }
    }
    // The peer finished: half-close our write side (FIN); reading goes on.
    let _ = wr.shutdown().await;
    Ok(total)
}

pub fn read_error(e: ReadError) -> Error {
    match e {
        ReadError::Reset(code) => {
            Error::StreamReset(format!("the peer reset the stream (code {code})"))
        }
        ReadError::ConnectionLost(e) => lost(&e),
        other => Error::StreamReset(format!("stream failed: {other}")),
    }
}

pub fn write_error(e: WriteError) -> Error {
    match e {
        WriteError::Stopped(code) => {
            Error::StreamReset(format!("the peer stopped the stream (code {code})"))
        }
        WriteError::ConnectionLost(e) => lost(&e),
        other => Error::StreamReset(format!("stream failed: {other}")),
    }
}
