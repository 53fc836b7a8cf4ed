//! What the native peer reports of each peer connection to the server's connectivity
//! metrics (the protocol's optional `report`, as the browser SDK sends it): whether a new
//! connection connected and over which path, and whether an ICE restart brought a path that
//! went down back. Fed the connection's state and path events as they pass to the app.

use std::time::{Duration, Instant};

use peerweb_proto::{ClientKind, PathKind, RelayTransport, Report, ReportKind};

use crate::{Path, PeerState};

/// A new connection not connected by then is reported failed (the SDK's value).
pub(crate) const CONNECT_GIVE_UP: Duration = Duration::from_secs(30);
/// A path down this long, with restarts made, is reported as a restart that failed.
pub(crate) const RESTART_GIVE_UP: Duration = Duration::from_secs(60);
/// Connected but no path known after this long: nothing is reported (a report always names
/// its path).
const PATH_WAIT: Duration = Duration::from_secs(10);

/// One connection's reporting: at most one `connect` report, and one `restart` report per
/// time its path went down and was restarted.
#[derive(Debug)]
pub(crate) struct Watch {
    born: Instant,
    /// The `connect` report is made (or given up).
    connect_done: bool,
    /// Connected at this time; waiting for the path to report it.
    connected_at: Option<Instant>,
    /// The path went down at this time (after having connected), with the connection's
    /// restart count then.
    down: Option<(Instant, u32)>,
    /// Back up after a restart: the time it took, waiting for the path.
    recovered: Option<(Instant, Duration)>,
    path: Option<(PathKind, Option<RelayTransport>)>,
}

impl Watch {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            born: now,
            connect_done: false,
            connected_at: None,
            down: None,
            recovered: None,
            path: None,
        }
    }

    /// Not connected yet, nor reported failed.
    pub(crate) fn connecting(&self) -> bool {
        !self.connect_done && self.connected_at.is_none()
    }

    /// The connection's state changed; `restarts` is how many ICE restarts it has made.
    pub(crate) fn on_state(
        &mut self,
        now: Instant,
        state: PeerState,
        restarts: u32,
    ) -> Option<Report> {
        match state {
            PeerState::Connected => {
                if !self.connect_done {
                    self.connected_at.get_or_insert(now);
                }
                if let Some((since, at_down)) = self.down.take()
                    && restarts > at_down
                {
                    // Reported with the path known now: a restart usually finds the same
                    // pair again, which brings no new Path event.
                    self.recovered = Some((now, now - since));
                }
                self.ready()
            }
            PeerState::Disconnected if self.connect_done || self.connected_at.is_some() => {
                self.down.get_or_insert((now, restarts));
                None
            }
            _ => None,
        }
    }

    /// The selected path changed.
    pub(crate) fn on_path(&mut self, path: &Path) -> Option<Report> {
        self.path = Some(kind_of(path));
        self.ready()
    }

    /// The connection ended by itself (its ICE agent gave up): what was pending failed.
    pub(crate) fn on_closed(&mut self, now: Instant, restarts: u32) -> Option<Report> {
        if self.connecting() {
            self.connect_done = true;
            return Some(failed(ReportKind::Connect, now - self.born));
        }
        match self.down.take() {
            Some((since, at_down)) if restarts > at_down => {
                Some(failed(ReportKind::Restart, now - since))
            }
            _ => None,
        }
    }

    /// Time passed: give up on what took too long.
    pub(crate) fn on_timeout(&mut self, now: Instant, restarts: u32) -> Option<Report> {
        if !self.connect_done && self.connected_at.is_none() && now >= self.born + CONNECT_GIVE_UP {
            self.connect_done = true;
            return Some(failed(ReportKind::Connect, now - self.born));
        }
        if let Some(at) = self.connected_at
            && now >= at + PATH_WAIT
        {
            self.connected_at = None;
            self.connect_done = true;
        }
        if let Some((since, at_down)) = self.down
            && restarts > at_down
            && now >= since + RESTART_GIVE_UP
        {
            self.down = None;
            return Some(failed(ReportKind::Restart, now - since));
        }
        if let Some((at, _)) = self.recovered
            && now >= at + PATH_WAIT
        {
            self.recovered = None;
        }
        None
    }

    /// When [`Watch::on_timeout`] has something to do.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        let connect = (!self.connect_done).then(|| match self.connected_at {
            Some(at) => at + PATH_WAIT,
            None => self.born + CONNECT_GIVE_UP,
        });
        let restart = self.down.map(|(since, _)| since + RESTART_GIVE_UP);
        let recovered = self.recovered.map(|(at, _)| at + PATH_WAIT);
        [connect, restart, recovered].into_iter().flatten().min()
    }

    /// A report that was waiting for the path, once it is known.
    fn ready(&mut self) -> Option<Report> {
        let (path, relay) = self.path?;
        if let Some(at) = self.connected_at.take() {
            self.connect_done = true;
            return Some(connected(ReportKind::Connect, at - self.born, path, relay));
        }
        if let Some((_, took)) = self.recovered.take() {
            return Some(connected(ReportKind::Restart, took, path, relay));
        }
        None
    }
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis())
        .unwrap_or(u32::MAX)
        .min(peerweb_proto::MAX_REPORT_MS)
}

fn failed(what: ReportKind, took: Duration) -> Report {
    Report {
        what,
        ok: false,
        ms: ms(took),
        path: None,
        relay: None,
        client: ClientKind::Native,
    }
}

fn connected(
    what: ReportKind,
    took: Duration,
    path: PathKind,
    relay: Option<RelayTransport>,
) -> Report {
    Report {
        what,
        ok: true,
        ms: ms(took),
        path: Some(path),
        relay,
        client: ClientKind::Native,
    }
}

/// The path's kind as the SDK names it: relay if either end relays, host if both are host.
fn kind_of(p: &Path) -> (PathKind, Option<RelayTransport>) {
    let ends = [p.local, p.remote];
    if ends.contains(&"relay") {
        let relay = match p.relay_protocol {
            Some("udp") => RelayTransport::Udp,
            Some("tcp") => RelayTransport::Tcp,
            Some("tls") => RelayTransport::Tls,
            // The remote's relay: we cannot tell how it reaches its server.
            _ => RelayTransport::Unknown,
        };
        (PathKind::Relay, Some(relay))
    } else if ends.iter().all(|e| *e == "host") {
        (PathKind::Host, None)
    } else if ends.contains(&"srflx") {
        (PathKind::Srflx, None)
    } else {
        (PathKind::Prflx, None)
    }
}
