//! Shared by the server's integration tests: a server on free loopback ports, raw HTTP.
#![allow(clippy::unwrap_used, dead_code)]

use std::net::SocketAddr;

use peerweb_server::{Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Binds `cfg` with HTTP and STUN/TURN on free loopback ports (tests run in parallel).
pub async fn bind(cfg: ServerConfig) -> Server {
    Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        turn_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..cfg
    })
    .await
    .unwrap()
}

/// `GET path` with this Host header; the whole response, headers included.
pub async fn http_get(addr: SocketAddr, host: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

pub mod redis;
