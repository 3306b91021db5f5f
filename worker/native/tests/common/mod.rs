//! What the loopback test files share: two offline endpoints and a connection between them.

#![allow(dead_code)] // each test file uses its own part of it

use std::time::Duration;

use tunnelpy_native::{Connection, Endpoint, EndpointOptions};

pub const ALPN: &[u8] = b"tunnel-py/test";
pub const DEADLINE: Duration = Duration::from_secs(20);

/// An offline endpoint that accepts `ALPN`.
pub async fn server() -> Endpoint {
    Endpoint::bind(&EndpointOptions {
        alpns: vec![ALPN.to_vec()],
        ..EndpointOptions::offline()
    })
    .await
    .unwrap()
}

/// (client endpoint, server endpoint, client's connection, server's connection).
pub async fn pair() -> (Endpoint, Endpoint, Connection, Connection) {
    let server = server().await;
    let client = Endpoint::bind(&EndpointOptions::offline()).await.unwrap();
    let ticket = server.ticket();
    let (a, b) = tokio::join!(client.connect(&ticket, ALPN, DEADLINE), server.accept());
    (client, server, a.unwrap(), b.unwrap())
}
