//! Gathering state: STUN binding queries to the server and TURN allocations (over UDP, TCP and TLS, with the TLS one deferred until the others gave nothing).

use crate::*;

pub(crate) struct StunQuery {
    pub(crate) tid: [u8; 12],
    pub(crate) local: SocketAddr,
    pub(crate) server: SocketAddr,
    pub(crate) req: Vec<u8>,
    pub(crate) sends: u32,
    pub(crate) next: Instant,
}

/// How a TURN allocation reaches its server.
pub(crate) enum Link {
    Udp(Arc<Udp>),
    /// TCP or TLS: a task owns the stream; frames to write go through this channel.
    Stream(mpsc::Sender<Vec<u8>>),
}

pub(crate) struct Turn {
    /// Names the allocation in [`Datagram::turn`] (indexes shift as lost ones are replaced).
    pub(crate) id: usize,
    pub(crate) client: TurnClient,
    /// The task reading its UDP socket, stopped when the allocation is dropped (a stream's
    /// task ends by itself when `link` goes).
    pub(crate) reader: Option<tokio::task::AbortHandle>,
    pub(crate) link: Link,
    /// The local address packets from the server arrive at (UDP), for matching.
    pub(crate) local: Option<SocketAddr>,
    pub(crate) relayed: Option<SocketAddr>,
    /// `udp`, `tcp` or `tls`: how we reach the server.
    pub(crate) kind: &'static str,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(r) = &self.reader {
            r.abort();
        }
    }
}

impl Turn {
    pub(crate) async fn send(&mut self, bytes: Vec<u8>) {
        match &self.link {
            Link::Udp(s) => {
                s.send_to(&bytes, self.client.server()).await;
            }
            Link::Stream(tx) => {
                let _ = tx.try_send(bytes);
            }
        }
    }

    pub(crate) async fn flush(&mut self) {
        while let Some(bytes) = self.client.poll_transmit() {
            self.send(bytes).await;
        }
    }
}

/// How long UDP and TCP allocations get before TURN over TLS is tried too.
pub(crate) const TLS_AFTER: Duration = Duration::from_millis(1500);
/// How long a relayed candidate over TCP waits for one over UDP, which makes it redundant.
pub(crate) const STREAM_RELAY_AFTER: Duration = Duration::from_millis(1000);

pub(crate) struct DeferredTls {
    pub(crate) server: SocketAddr,
    pub(crate) host: String,
    pub(crate) user: String,
    pub(crate) pass: String,
    pub(crate) at: Instant,
}
