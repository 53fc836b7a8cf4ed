//! Connectivity metrics from clients' `report` messages: how peer connections fare, in fixed
//! arrays indexed by the protocol's closed name sets — nothing a client sends can add a
//! label or grow memory. A connection may report at a bounded rate; beyond it reports are
//! dropped (and counted), and the connection stays.

use std::time::Instant;

use peerweb_proto::{ClientKind, PathKind, RelayTransport, Report, ReportKind};

/// Upper bounds (ms) of the time-to-connect histogram's buckets; a last bucket takes the rest.
pub const CONNECT_BUCKETS_MS: [u32; 9] = [50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000];

/// How a connection (or a restart) ended: failed, or connected over one kind of path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Failed,
    Direct(PathKind),
    Relayed(RelayTransport),
}

impl Outcome {
    /// Every outcome, in index order: failed, the direct paths, then relayed by transport.
    pub const ALL: [Outcome; OUTCOMES] = [
        Outcome::Failed,
        Outcome::Direct(PathKind::Host),
        Outcome::Direct(PathKind::Srflx),
        Outcome::Direct(PathKind::Prflx),
        Outcome::Relayed(RelayTransport::Udp),
        Outcome::Relayed(RelayTransport::Tcp),
        Outcome::Relayed(RelayTransport::Tls),
        Outcome::Relayed(RelayTransport::Unknown),
    ];

    fn of(r: &Report) -> Outcome {
        match (r.ok, r.path) {
            (true, Some(PathKind::Relay)) => {
                Outcome::Relayed(r.relay.unwrap_or(RelayTransport::Unknown))
            }
            (true, Some(p)) => Outcome::Direct(p),
            _ => Outcome::Failed,
        }
    }

    pub fn index(self) -> usize {
        match self {
            Outcome::Failed => 0,
            Outcome::Direct(p) => p.index() + 1,
            Outcome::Relayed(t) => 4 + t.index(),
        }
    }

    /// The `path` label: `none` for a failure.
    pub fn path(self) -> &'static str {
        match self {
            Outcome::Failed => "none",
            Outcome::Direct(p) => p.as_str(),
            Outcome::Relayed(_) => "relay",
        }
    }

    /// The `relay` label: the transport to the TURN server, `none` when not relayed.
    pub fn relay(self) -> &'static str {
        match self {
            Outcome::Relayed(t) => t.as_str(),
            _ => "none",
        }
    }
}

pub const OUTCOMES: usize = 8;

/// A histogram of milliseconds over [`CONNECT_BUCKETS_MS`] (not cumulative; the last slot
/// counts what is above every bound).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Histogram {
    pub buckets: [u64; CONNECT_BUCKETS_MS.len() + 1],
    pub sum_ms: u64,
    pub count: u64,
}

impl Histogram {
    fn add(&mut self, ms: u32) {
        let i = CONNECT_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(CONNECT_BUCKETS_MS.len());
        self.buckets[i] += 1;
        self.sum_ms += u64::from(ms);
        self.count += 1;
    }
}

/// The aggregates, as `/metrics` and `/status` show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Connectivity {
    /// New connections: `[client][outcome]`.
    pub connects: [[u64; OUTCOMES]; ClientKind::COUNT],
    /// ICE restarts of connections whose path went down: `[client][outcome]`.
    pub restarts: [[u64; OUTCOMES]; ClientKind::COUNT],
    /// Time to connect of successful new connections, by the path's kind.
    pub connect_ms: [Histogram; PathKind::COUNT],
    /// Reports dropped because the connection sent them too fast.
    pub dropped_flood: u64,
    /// Report frames refused as malformed (each answered with `bad-message`).
    pub dropped_malformed: u64,
}

impl Connectivity {
    pub(crate) fn record(&mut self, r: &Report) {
        let outcome = Outcome::of(r);
        let c = r.client.index();
        match r.what {
            ReportKind::Connect => {
                self.connects[c][outcome.index()] += 1;
                if let Some(p) = r.path {
                    self.connect_ms[p.index()].add(r.ms);
                }
            }
            ReportKind::Restart => self.restarts[c][outcome.index()] += 1,
        }
    }
}

/// What a connection's report allowance says about one more report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allow {
    Yes,
    /// Dropped; tell the client (once per run of drops).
    DropAndTell,
    /// Dropped; already told.
    Drop,
}

/// A connection's report allowance: `burst` at once, then `per_min` a minute.
#[derive(Debug)]
pub(crate) struct ReportBucket {
    /// In sixty-thousandths of a report: a millisecond adds `per_min` of them, exactly.
    units: u64,
    at: Instant,
    told: bool,
}

const UNIT: u64 = 60_000;

impl ReportBucket {
    pub(crate) fn new(now: Instant, burst: u32) -> Self {
        Self {
            units: u64::from(burst) * UNIT,
            at: now,
            told: false,
        }
    }

    pub(crate) fn take(&mut self, now: Instant, per_min: u32, burst: u32) -> Allow {
        let elapsed_ms = now.saturating_duration_since(self.at).as_millis() as u64;
        let cap = u64::from(burst.max(1)) * UNIT;
        self.units = self
            .units
            .saturating_add(elapsed_ms.saturating_mul(u64::from(per_min)))
            .min(cap);
        self.at = now;
        if self.units >= UNIT {
            self.units -= UNIT;
            self.told = false;
            Allow::Yes
        } else if self.told {
            Allow::Drop
        } else {
            self.told = true;
            Allow::DropAndTell
        }
    }
}
