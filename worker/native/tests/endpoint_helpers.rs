//! The front door's `Incoming` (refuse before any crypto, accept once) and the ticket
//! helpers, on loopback with offline endpoints.

use std::time::Duration;

use tunnelpy_native::net::{endpoint_id_of, ticket_parts, ticket_with};
use tunnelpy_native::{Endpoint, EndpointOptions, Error};

mod common;
use common::{server, ALPN, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_names_its_address_and_accepts_once() {
    let server = server().await;
    let client = Endpoint::bind(&EndpointOptions::offline()).await.unwrap();
    let ticket = server.ticket();
    let dialing = tokio::spawn({
        let client = client.clone();
        async move { client.connect(&ticket, ALPN, DEADLINE).await }
    });
    let incoming = server.accept_incoming().await.unwrap();
    let from: std::net::SocketAddr = incoming.remote_addr().parse().unwrap();
    assert!(from.ip().is_loopback(), "{from}");
    assert!(client
        .bound_sockets()
        .iter()
        .any(|s| s.port() == from.port()));
    let conn = incoming.accept(DEADLINE).await.unwrap();
    assert_eq!(conn.remote_id(), client.endpoint_id());
    let dialed = dialing.await.unwrap().unwrap();
    assert_eq!(dialed.remote_id(), server.endpoint_id());
    // Accepted already: a second accept or a refuse changes nothing.
    let again = incoming.accept(DEADLINE).await.unwrap_err();
    assert!(matches!(again, Error::Config(_)), "{again:?}");
    incoming.refuse();
    assert!(conn.close_reason().is_none(), "still open");
    client.close().await;
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_incoming_fails_the_dialer() {
    let server = server().await;
    let client = Endpoint::bind(&EndpointOptions::offline()).await.unwrap();
    let ticket = server.ticket();
    let dialing = tokio::spawn({
        let client = client.clone();
        async move { client.connect(&ticket, ALPN, Duration::from_secs(5)).await }
    });
    let incoming = server.accept_incoming().await.unwrap();
    incoming.refuse();
    incoming.refuse(); // idempotent
    let err = tokio::time::timeout(DEADLINE, dialing)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::ConnectFailed(_)), "{err:?}");
    let late = incoming.accept(DEADLINE).await.unwrap_err();
    assert!(matches!(late, Error::Config(_)), "{late:?}");
    client.close().await;
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_helpers_round_trip_and_dial() {
    let key = [9u8; 32];
    let server = Endpoint::bind(&EndpointOptions {
        secret_key: Some(key),
        alpns: vec![ALPN.to_vec()],
        ..EndpointOptions::offline()
    })
    .await
    .unwrap();
    let id = server.endpoint_id();
    assert_eq!(endpoint_id_of(&key), id);

    // A bare id has no addresses; the server's own ticket has its bound socket.
    assert_eq!(ticket_parts(&id).unwrap(), (id.clone(), vec![]));
    let (tid, addrs) = ticket_parts(&server.ticket()).unwrap();
    assert_eq!(tid, id);
    assert!(
        addrs.iter().all(|a| server.bound_sockets().contains(a)),
        "{addrs:?}"
    );

    // ticket_with adds addresses to an id (or to a ticket, keeping its own).
    let bound = server.bound_sockets();
    let extra: std::net::SocketAddr = "127.0.0.9:4000".parse().unwrap();
    let built = ticket_with(&id, &bound).unwrap();
    assert!(built.starts_with("endpoint"));
    let (bid, baddrs) = ticket_parts(&built).unwrap();
    assert_eq!((bid, baddrs.len()), (id.clone(), bound.len()));
    let (_, more) = ticket_parts(&ticket_with(&built, &[extra]).unwrap()).unwrap();
    assert!(more.contains(&extra) && bound.iter().all(|a| more.contains(a)));

    // The built ticket dials, offline, with no discovery.
    let client = Endpoint::bind(&EndpointOptions::offline()).await.unwrap();
    let (c, s) = tokio::join!(client.connect(&built, ALPN, DEADLINE), server.accept());
    assert_eq!(c.unwrap().remote_id(), id);
    assert_eq!(s.unwrap().remote_id(), client.endpoint_id());

    for bad in ["", "endpointnotaticket", "zz not an id"] {
        let err = ticket_parts(bad).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{bad:?}: {err:?}");
        assert!(matches!(ticket_with(bad, &[]), Err(Error::Config(_))));
    }
    client.close().await;
    server.close().await;
}
