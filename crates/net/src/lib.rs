//! The native peer's driver: tokio sockets and timers around the sans-IO [`Client`].
//!
//! [`Node::join`] gathers candidates (a UDP socket per usable interface address; the
//! server-reflexive address of each through the server's STUN; relayed addresses through its
//! TURN over UDP and TCP, and over TLS when those give none, with the short-lived credentials
//! of `GET /api/ice`), connects the signaling
//! WebSocket (reconnecting with backoff, resuming the same peer id, without touching live
//! peer connections), and runs one task that owns all of it. The application talks to that
//! task through [`Node`]: events in order, sends with backpressure.
//!
//! ```no_run
//! # async fn demo() -> Result<(), peerweb_net::Error> {
//! use peerweb_net::{Node, Options};
//! use peerweb_peer::Event;
//!
//! let mut node = Node::join(Options::new("http://127.0.0.1:8080", "lobby")).await?;
//! while let Some(ev) = node.next_event().await {
//!     if let Event::Open { peer } = ev {
//!         node.send(&peer, None, false, b"hello".to_vec()).await?;
//!     }
//! }
//! # Ok(()) }
//! ```

pub(crate) use std::collections::{HashMap, VecDeque};
pub(crate) use std::net::{IpAddr, SocketAddr};
pub(crate) use std::sync::Arc;
pub(crate) use std::time::Duration;

pub(crate) use futures_util::{SinkExt, StreamExt};
pub(crate) use peerweb_peer::{
    Candidate, ChannelOptions, Client, Event, Output, Path, PeerState, Protocol, Settings,
};
pub(crate) use peerweb_turn::client::{Client as TurnClient, Event as TurnEvent, Transport};
pub(crate) use peerweb_turn::stun::{Builder, Class, Message, attr, method};
pub(crate) use tokio::net::UdpSocket;
pub(crate) use tokio::sync::{mpsc, oneshot};
pub(crate) use tokio::time::Instant;
pub(crate) use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Socket buffer size asked for each UDP socket (the kernel may cap it).
pub const UDP_BUFFER: usize = 4 << 20;
/// Datagrams read per wake-up before str0m is polled again.
pub(crate) const BATCH: usize = 64;
/// Datagrams sent in one system call at most (GSO; the kernel takes up to 64 KiB).
pub(crate) const MAX_SEGMENTS: usize = 40;
/// How long leaving waits for sent messages to be acknowledged.
pub(crate) const LEAVE_DRAIN: Duration = Duration::from_secs(10);
/// How long [`Node::join`] waits for the server to confirm the join.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect backoff of the signaling WebSocket.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(250);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// STUN binding retransmissions (to the server's STUN) before giving up on srflx.
pub(crate) const STUN_SENDS: u32 = 5;
/// When a peer's path goes down, our own addresses are checked again (a new STUN binding,
/// a TURN refresh: after a NAT dropped its mappings both have changed) at most this often.
pub(crate) const RECHECK_EVERY: Duration = Duration::from_secs(5);
/// A TURN allocation that was lost is replaced (fresh credentials from `/api/ice`) at once,
/// then after waits doubling from the first to the second while they keep being lost.
pub(crate) const REALLOC_BACKOFF: (Duration, Duration) =
    (Duration::from_secs(2), Duration::from_secs(60));

mod driver;
mod gather;
pub mod http;
mod node;
mod signaling;
mod sockets;

pub(crate) use driver::*;
pub(crate) use gather::*;
pub(crate) use node::*;
pub use node::{Error, MediaHandle, Node, Options, PeerStatus, SendHandle, exit_on_panic};
pub(crate) use signaling::*;
pub(crate) use sockets::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_become_endpoints() {
        let u = Urls::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (u.ws.as_str(), u.http.as_str()),
            ("ws://127.0.0.1:8080/ws", "http://127.0.0.1:8080")
        );
        let u = Urls::parse("ws://example.org/some/page?x#y").unwrap();
        assert_eq!(
            (u.ws.as_str(), u.http.as_str()),
            ("ws://example.org/ws", "http://example.org")
        );
        for tls in ["https://example.org:8443/x", "wss://example.org:8443"] {
            let u = Urls::parse(tls).unwrap();
            assert_eq!(
                (u.ws.as_str(), u.http.as_str()),
                ("wss://example.org:8443/ws", "https://example.org:8443")
            );
        }
        for bad in ["example.org", "ftp://x", "http://", "http://user@host"] {
            assert!(matches!(Urls::parse(bad), Err(Error::BadUrl(_))), "{bad}");
        }
    }
}
