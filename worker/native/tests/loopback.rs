//! In-process endpoints on loopback, offline (no relay, discovery, port mapper or probes).
//! Run inside a network namespace holding only `lo` (see scripts/check).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tunnelpy_native::{splice_tcp, Connection, Endpoint, EndpointOptions, Error};

mod common;
use common::{pair, ALPN, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_endpoint_binds_only_loopback_v4() {
    let ep = Endpoint::bind(&EndpointOptions::offline()).await.unwrap();
    let socks = ep.bound_sockets();
    assert!(!socks.is_empty());
    for s in &socks {
        assert!(s.ip().is_loopback() && s.is_ipv4(), "unexpected socket {s}");
    }
    assert_eq!(ep.endpoint_id().len(), 64);
    assert!(ep.ticket().starts_with("endpoint"));
    ep.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_secret_key_gives_fixed_id() {
    let opts = EndpointOptions {
        secret_key: Some([3u8; 32]),
        ..EndpointOptions::offline()
    };
    let a = Endpoint::bind(&opts).await.unwrap();
    let id = a.endpoint_id();
    a.close().await;
    let b = Endpoint::bind(&opts).await.unwrap();
    assert_eq!(b.endpoint_id(), id);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_by_ticket_streams_datagrams_stats() {
    let (client, server, c, s) = pair().await;
    assert_eq!(s.remote_id(), client.endpoint_id());
    assert_eq!(c.remote_id(), server.endpoint_id());
    assert_eq!(s.alpn(), ALPN);

    let (mut send, mut recv) = c.open_bi().await.unwrap();
    send.write_all(b"hello").await.unwrap();
    send.finish().unwrap();
    let (mut s_send, mut s_recv) = s.accept_bi().await.unwrap();
    assert_eq!(s_recv.read_to_end(100).await.unwrap(), b"hello");
    s_send.write_all(b"world").await.unwrap();
    s_send.finish().unwrap();
    assert_eq!(recv.read_to_end(100).await.unwrap(), b"world");

    c.send_datagram(bytes::Bytes::from_static(b"dgram"))
        .await
        .unwrap();
    assert_eq!(&s.recv_datagram().await.unwrap()[..], b"dgram");

    let stats = c.stats();
    assert_eq!(stats.path.as_str(), "direct");
    assert!(stats.rtt_ms.is_some());
    assert!(stats.max_datagram_size.unwrap() >= 1100);

    c.close(7, "bye");
    let reason = tokio::time::timeout(DEADLINE, s.closed()).await.unwrap();
    assert!(reason.contains("bye"), "{reason}");
    client.close().await;
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_dead_address_fails_within_timeout() {
    let (client, server, _c, _s) = pair().await;
    let ticket = server.ticket();
    server.close().await;
    let ep = Endpoint::bind(&EndpointOptions::offline()).await.unwrap();
    let err = ep
        .connect(&ticket, ALPN, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ConnectFailed(_)), "{err:?}");
    assert!(!err.message().contains(".rs"), "{err}");
    client.close().await;
}

/// An echo/sink pair of TCP sockets joined by one spliced bi-stream each side:
/// `local` <-> splice(client side) <-> QUIC <-> splice(server side) <-> `remote`.
async fn spliced_tcp_pair(c: &Connection, s: &Connection) -> (TcpStream, TcpStream) {
    let lst = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = lst.local_addr().unwrap();
    let local = TcpStream::connect(addr).await.unwrap();
    let (local_peer, _) = lst.accept().await.unwrap();
    let (remote_peer, (remote, _)) = tokio::join!(TcpStream::connect(addr), async {
        lst.accept().await.unwrap()
    });
    let remote_peer = remote_peer.unwrap();

    let (send, recv) = c.open_bi().await.unwrap();
    let cc = c.clone();
    tokio::spawn(async move { splice_tcp(local_peer, send, recv, &cc.counters).await });
    // The stream becomes visible to the peer with its first byte: the test writes first.
    let ss = s.clone();
    tokio::spawn(async move {
        let (send, recv) = ss.accept_bi().await.unwrap();
        splice_tcp(remote_peer, send, recv, &ss.counters).await
    });
    (local, remote)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splice_carries_bytes_and_half_close_both_ways() {
    let (_ce, _se, c, s) = pair().await;
    let (mut local, mut remote) = spliced_tcp_pair(&c, &s).await;
    let up: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    local.write_all(&up).await.unwrap();
    local.shutdown().await.unwrap(); // FIN -> stream finish
    let mut got = Vec::new();
    remote.read_to_end(&mut got).await.unwrap(); // ends: FIN arrived
    assert_eq!(got, up);
    // The other direction still works after the half-close.
    remote.write_all(b"reply after half-close").await.unwrap();
    remote.shutdown().await.unwrap();
    let mut back = Vec::new();
    local.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"reply after half-close");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while c.counters.snapshot().streams_open != 0 || s.counters.snapshot().streams_open != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "splices did not end"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cs = c.counters.snapshot();
    assert_eq!((cs.bytes_sent, cs.bytes_received), (up.len() as u64, 22));
    assert_eq!(cs.streams_total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_reset_arrives_as_reset_at_local() {
    let (_ce, _se, c, s) = pair().await;
    let (mut local, remote) = spliced_tcp_pair(&c, &s).await;
    local.write_all(b"x").await.unwrap();
    // Abort the remote side: linger 0 then close sends RST.
    socket2::SockRef::from(&remote)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(remote);
    let mut buf = [0u8; 16];
    let err = tokio::time::timeout(DEADLINE, async {
        loop {
            match local.read(&mut buf).await {
                Ok(0) => panic!("clean EOF instead of a reset"),
                Ok(_) => continue,
                Err(e) => return e,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_two_clients_and_an_oversize_payload() {
    let (_ce, _se, c, s) = pair().await;
    // The source: a UDP echo server.
    let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    // Receiver side: the frames stream starts with its header (written by Python in real use).
    let (mut fs, fr) = c.open_bi().await.unwrap();
    fs.write_all(&tunnelpy_native::wire::stream_header(2))
        .await
        .unwrap();
    let listen = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let listen_addr = listen.local_addr().unwrap();
    let cc = c.clone();
    tokio::spawn(tunnelpy_native::udp::serve_receiver(cc, fs, fr, listen));
    let ss = s.clone();
    tokio::spawn(async move {
        let (ws, mut wr) = ss.accept_bi().await.unwrap();
        let mut header = [0u8; 2];
        wr.read_exact(&mut header).await.unwrap();
        assert_eq!(header, [1, 2]);
        tunnelpy_native::udp::serve_worker(ss, ws, wr, vec![echo_addr.ip()], echo_addr.port()).await
    });

    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let big = vec![0x5au8; 5000];
    let mut buf = vec![0u8; 65536];
    for (sock, payload) in [
        (&a, b"from a".to_vec()),
        (&b, b"from b".to_vec()),
        (&a, big.clone()),
    ] {
        // UDP may drop: resend until the echo comes back, within the deadline.
        let got = tokio::time::timeout(DEADLINE, async {
            loop {
                sock.send_to(&payload, listen_addr).await.unwrap();
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(300), sock.recv(&mut buf)).await
                {
                    return buf[..n].to_vec();
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(got, payload);
    }
    assert!(c.counters.snapshot().udp_flows >= 2);
}
