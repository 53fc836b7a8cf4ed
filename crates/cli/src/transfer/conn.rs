//! One connected peer in a transfer: its messages, and the trust handshake over them.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use peerweb_net::Node;
use peerweb_peer::Event;
use peerweb_transfer::wire::Control;
use peerweb_transfer::{Handshake, TrustError, sas};
use serde_json::json;
use tokio::time::Instant;

use crate::peer::{path_json, path_text};

use super::{Out, STEP_TIMEOUT};

/// The other side ended the transfer with `abort`, saying why.
#[derive(Debug, thiserror::Error)]
#[error("the other side stopped: {0}")]
pub(super) struct Stopped(String);

/// What the chosen peer did next.
pub(super) enum Input {
    Control(Control),
    Data(Vec<u8>),
}

/// One connected peer in a transfer.
pub(super) struct Conn {
    pub(super) node: Node,
    pub(super) peer: String,
}

impl Conn {
    pub(super) async fn send(&self, msg: &Control) -> anyhow::Result<()> {
        self.node
            .send(&self.peer, None, false, msg.encode())
            .await
            .context("cannot send to the peer")
    }

    /// The next message from our peer, within `timeout`.
    pub(super) async fn next(&mut self, timeout: Duration) -> anyhow::Result<Input> {
        let deadline = Instant::now() + timeout;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.node.next_event())
                .await
                .map_err(|_| anyhow!("the other side went quiet for {} s", timeout.as_secs()))?
                .ok_or_else(|| anyhow!("the network driver stopped"))?;
            match ev {
                Event::Message {
                    peer, binary, data, ..
                } if peer == self.peer => {
                    if binary {
                        return Ok(Input::Data(data));
                    }
                    let msg =
                        Control::decode(&data).context("the other side sent a bad message")?;
                    if let Control::Abort { reason } = &msg {
                        let r = peerweb_transfer::wire::cut(
                            reason,
                            peerweb_transfer::wire::MAX_REASON_BYTES,
                        );
                        return Err(Stopped(r.escape_debug().to_string()).into());
                    }
                    return Ok(Input::Control(msg));
                }
                Event::PeerLeft { peer } if peer == self.peer => {
                    bail!("the other side left")
                }
                _ => {}
            }
        }
    }

    pub(super) async fn control(&mut self, timeout: Duration) -> anyhow::Result<Control> {
        match self.next(timeout).await? {
            Input::Control(c) => Ok(c),
            Input::Data(_) => bail!("the other side sent data out of turn"),
        }
    }

    /// Why the other side stopped, if it said so within a second: a send that failed
    /// because the peer aborted and left reports its reason rather than a broken connection.
    pub(super) async fn stopped_why(&mut self) -> Option<anyhow::Error> {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Ok(_) => continue,
                Err(e) if e.is::<Stopped>() => return Some(e),
                Err(_) => return None,
            }
        }
    }

    /// Sends an abort (best effort) and leaves.
    pub(super) async fn abort(self, reason: &str) {
        let _ = self
            .send(&Control::Abort {
                reason: reason.to_owned(),
            })
            .await;
        self.node.leave().await;
    }

    /// The trust handshake, our hello saying `ready` (a receiver that takes any offer whole);
    /// returns the short authentication string and whether the other side said `ready`.
    pub(super) async fn handshake(
        &mut self,
        hs: &mut Handshake,
        ready: bool,
    ) -> anyhow::Result<(String, bool)> {
        let mut hello = hs.hello();
        if let Control::Hello { ready: r, .. } = &mut hello {
            *r = ready;
        }
        self.send(&hello).await?;
        let hello = self.control(STEP_TIMEOUT).await?;
        hs.on_hello(&hello)?;
        let peer_ready = matches!(hello, Control::Hello { ready: true, .. });
        let (local, remote) = self
            .node
            .fingerprints(&self.peer)
            .await?
            .and_then(|(l, r)| Some((l, r?)))
            .ok_or_else(|| anyhow!("no DTLS fingerprints for the peer"))?;
        self.send(&hs.confirm(&local, &remote)?).await?;
        let confirm = self.control(STEP_TIMEOUT).await?;
        hs.verify(&local, &remote, &confirm)?;
        let sas = match hs.role() {
            peerweb_transfer::Role::Send => sas(&local, &remote),
            peerweb_transfer::Role::Receive => sas(&remote, &local),
        };
        Ok((sas, peer_ready))
    }

    /// The path to the peer, waiting up to `wait` for the first statistics to tell.
    pub(super) async fn path(&self, wait: Duration) -> Option<peerweb_peer::Path> {
        let deadline = Instant::now() + wait;
        loop {
            let path = self
                .node
                .status()
                .await
                .ok()?
                .into_iter()
                .find(|p| p.id == self.peer)?
                .path;
            if path.is_some() || Instant::now() >= deadline {
                return path;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs the handshake (our hello saying `ready` or not) and shows the short authentication
/// string; on a failure tells the other side and leaves. Returns whether the peer is ready.
pub(super) async fn authenticate(
    out: &Out,
    mut conn: Conn,
    mut hs: Handshake,
    ready: bool,
) -> anyhow::Result<(Conn, bool)> {
    let (sas, peer_ready) = match conn.handshake(&mut hs, ready).await {
        Ok(v) => v,
        Err(e) => {
            let reason = if e.is::<TrustError>() {
                "verification failed: wrong code or link, or a man in the middle"
            } else {
                "handshake failed"
            };
            conn.abort(reason).await;
            return Err(e);
        }
    };
    let path = conn.path(Duration::ZERO).await;
    out.say(
        || {
            format!(
                "Verified. Compare if you like: {sas}{}",
                path.as_ref()
                    .map(|p| format!("\npath {}", path_text(p)))
                    .unwrap_or_default()
            )
        },
        || json!({"event": "verified", "sas": sas, "path": path.as_ref().map(path_json)}),
    )?;
    Ok((conn, peer_ready))
}
