//! The receiver's UDP side over real endpoints on loopback: many clients, idle expiry, and
//! one local socket that outlives its connections (each gets a duplicate of it, as the
//! Python receiver does across reconnects). Run inside a network namespace holding only `lo`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tunnelpy_native::udp::{self, Limits};
use tunnelpy_native::{Connection, Endpoint, Error};

mod common;
use common::{pair, DEADLINE};

/// A UDP echo source; its address.
async fn echo_source() -> SocketAddr {
    let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    addr
}

/// One tunnel: the receiver serves a duplicate of `listen`, the worker the echo source.
struct Tunnel {
    _endpoints: (Endpoint, Endpoint),
    receiver: Connection,
    serving: JoinHandle<tunnelpy_native::Result<()>>,
}

async fn tunnel(listen: &std::net::UdpSocket, echo: SocketAddr, limits: Limits) -> Tunnel {
    let (ce, se, c, s) = pair().await;
    let (mut fs, fr) = c.open_bi().await.unwrap();
    fs.write_all(&tunnelpy_native::wire::stream_header(2))
        .await
        .unwrap();
    let dup = UdpSocket::from_std(listen.try_clone().unwrap()).unwrap();
    let serving = tokio::spawn(udp::serve_receiver_with(c.clone(), fs, fr, dup, limits));
    tokio::spawn(async move {
        let (ws, mut wr) = s.accept_bi().await.unwrap();
        let mut header = [0u8; 2];
        wr.read_exact(&mut header).await.unwrap();
        udp::serve_worker(s, ws, wr, vec![echo.ip()], echo.port()).await
    });
    Tunnel {
        _endpoints: (ce, se),
        receiver: c,
        serving,
    }
}

fn listener() -> std::net::UdpSocket {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_nonblocking(true).unwrap();
    sock
}

/// Sends `payload` from `client` to `to` until its echo comes back (UDP may drop).
async fn echo_through(client: &UdpSocket, to: SocketAddr, payload: &[u8]) {
    let mut buf = vec![0u8; 65536];
    let got = tokio::time::timeout(DEADLINE, async {
        loop {
            client.send_to(payload, to).await.unwrap();
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buf)).await
            {
                return buf[..n].to_vec();
            }
        }
    })
    .await
    .expect("no echo within the deadline");
    assert_eq!(got, payload);
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_each_get_their_own_flow() {
    let echo = echo_source().await;
    let listen = listener();
    let to = listen.local_addr().unwrap();
    let t = tunnel(&listen, echo, Limits::default()).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()));
    }
    let mut echoes = tokio::task::JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        echoes.spawn(
            async move { echo_through(&client, to, format!("client {i}").as_bytes()).await },
        );
    }
    while let Some(done) = echoes.join_next().await {
        done.unwrap();
    }
    assert_eq!(t.receiver.counters.snapshot().udp_flows, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_flows_expire_and_the_client_comes_back() {
    let echo = echo_source().await;
    let listen = listener();
    let to = listen.local_addr().unwrap();
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        sweep_interval: Duration::from_millis(100),
        ..Limits::default()
    };
    let t = tunnel(&listen, echo, limits).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    echo_through(&client, to, b"before").await;
    assert_eq!(t.receiver.counters.snapshot().udp_flows, 1);
    wait_for("the idle flow was not swept", || {
        t.receiver.counters.snapshot().udp_flows == 0
    })
    .await;
    echo_through(&client, to, b"after").await;
    assert_eq!(t.receiver.counters.snapshot().udp_flows, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_socket_outlives_a_lost_connection_and_serves_the_next() {
    let echo = echo_source().await;
    let listen = listener();
    let to = listen.local_addr().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    let first = tunnel(&listen, echo, Limits::default()).await;
    echo_through(&client, to, b"first connection").await;
    first.receiver.close(0, "gone");
    let ended = tokio::time::timeout(DEADLINE, first.serving)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ended, Err(Error::ConnectionLost(_))), "{ended:?}");

    // Nobody reads the socket now: a datagram sent meanwhile waits in it for its owner.
    client.send_to(b"between", to).await.unwrap();
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(DEADLINE, async {
        loop {
            match listen.recv_from(&mut buf) {
                Ok(got) => return got,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        (&buf[..got.0], got.1),
        (&b"between"[..], client.local_addr().unwrap())
    );

    // The same client address works over the next connection.
    let second = tunnel(&listen, echo, Limits::default()).await;
    echo_through(&client, to, b"second connection").await;
    assert_eq!(second.receiver.counters.snapshot().udp_flows, 1);
}
