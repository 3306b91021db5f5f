//! The core's ceiling without Python: one TCP stream through two spliced endpoints in one
//! process. Not a test (ignored); run it on loopback in a network namespace:
//! `cargo test --release --test throughput -- --ignored --nocapture`

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tunnelpy_native::{splice_tcp, Endpoint, EndpointOptions};

mod common;
use common::{server, ALPN};
const SIZE: u64 = 1 << 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored --nocapture"]
async fn one_stream_mb_per_s() {
    let server = server().await;
    let client = Endpoint::bind(&EndpointOptions::offline()).await.unwrap();
    let ticket = server.ticket();
    let (c, s) = tokio::join!(
        client.connect(&ticket, ALPN, Duration::from_secs(10)),
        server.accept()
    );
    let (c, s) = (c.unwrap(), s.unwrap());

    // The sink: counts bytes to EOF, answers the count.
    let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut sock, _) = sink.accept().await.unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            match sock.read(&mut buf).await.unwrap() {
                0 => break,
                k => n += k as u64,
            }
        }
        sock.write_all(&n.to_be_bytes()).await.unwrap();
    });
    // Worker side: accept the stream, dial the sink, splice.
    tokio::spawn(async move {
        let (send, recv) = s.accept_bi().await.unwrap();
        let tcp = TcpStream::connect(sink_addr).await.unwrap();
        splice_tcp(tcp, send, recv, &s.counters).await.unwrap();
    });
    // Receiver side: a local listener whose one client is spliced onto a new stream.
    let local = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local_addr = local.local_addr().unwrap();
    let cc = c.clone();
    tokio::spawn(async move {
        let (tcp, _) = local.accept().await.unwrap();
        let (mut send, recv) = cc.open_bi().await.unwrap();
        send.write_all(&[1, 1]).await.unwrap();
        splice_tcp(tcp, send, recv, &cc.counters).await.unwrap();
    });

    let mut client_sock = TcpStream::connect(local_addr).await.unwrap();
    // The worker side reads the 2-byte header as payload here: the sink counts it too.
    let chunk = vec![0x42u8; 1 << 20];
    let started = Instant::now();
    for _ in 0..(SIZE >> 20) {
        client_sock.write_all(&chunk).await.unwrap();
    }
    client_sock.shutdown().await.unwrap();
    let mut count = [0u8; 8];
    client_sock.read_exact(&mut count).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(u64::from_be_bytes(count), SIZE + 2);
    println!(
        "one stream, in-process: {:.0} MB/s ({} MiB in {secs:.2} s)",
        SIZE as f64 / secs / 1e6,
        SIZE >> 20
    );
}
