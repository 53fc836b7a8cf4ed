//! `GET /api/status`: the numbers behind the `/status` page — connectivity totals since the
//! server started, the time-to-connect distribution, the last hour minute by minute, and the
//! swarms (their offload: content from peers against content from origins, as reported).
//! The minute series is kept here ([`History`]), sampled every few seconds and on request.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use peerweb_proto::{ClientKind, PathKind, SwarmBytes};
use peerweb_signal::{CONNECT_BUCKETS_MS, Connectivity, Outcome, Stats};
use serde::Serialize;

use crate::AppState;

/// Minutes the series keeps (the page's chart covers the last hour).
const MINUTES: usize = 60;
/// How often the series is sampled between requests.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Cumulative counts at one moment; a minute's numbers are differences of two of these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub connected: u64,
    pub direct: u64,
    pub relayed: u64,
    pub failed: u64,
    pub restarts_recovered: u64,
    pub restarts_failed: u64,
    pub turn_bytes: u64,
    /// Swarm content clients reported getting from origins and from each other.
    pub swarm_http: u64,
    pub swarm_p2p: u64,
}

impl Totals {
    pub fn of(c: &Connectivity, turn_bytes: u64) -> Totals {
        let mut t = Totals {
            turn_bytes,
            ..Totals::default()
        };
        for client in ClientKind::ALL {
            for o in Outcome::ALL {
                let n = c.connects[client.index()][o.index()];
                let r = c.restarts[client.index()][o.index()];
                match o {
                    Outcome::Failed => {
                        t.failed += n;
                        t.restarts_failed += r;
                    }
                    Outcome::Direct(_) => {
                        t.connected += n;
                        t.direct += n;
                        t.restarts_recovered += r;
                    }
                    Outcome::Relayed(_) => {
                        t.connected += n;
                        t.relayed += n;
                        t.restarts_recovered += r;
                    }
                }
            }
        }
        t
    }

    fn minus(self, o: Totals) -> Totals {
        Totals {
            connected: self.connected.saturating_sub(o.connected),
            direct: self.direct.saturating_sub(o.direct),
            relayed: self.relayed.saturating_sub(o.relayed),
            failed: self.failed.saturating_sub(o.failed),
            restarts_recovered: self.restarts_recovered.saturating_sub(o.restarts_recovered),
            restarts_failed: self.restarts_failed.saturating_sub(o.restarts_failed),
            turn_bytes: self.turn_bytes.saturating_sub(o.turn_bytes),
            swarm_http: self.swarm_http.saturating_sub(o.swarm_http),
            swarm_p2p: self.swarm_p2p.saturating_sub(o.swarm_p2p),
        }
    }
}

/// One minute of the series: what happened in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Minute {
    /// Unix time of the minute's start, seconds.
    pub t: u64,
    #[serde(flatten)]
    pub counts: Totals,
}

/// The last hour, as the cumulative totals last seen in each minute.
#[derive(Debug, Default)]
pub struct History {
    /// (unix minute, totals at the latest sample in it), oldest first.
    samples: VecDeque<(u64, Totals)>,
}

impl History {
    /// Records the totals at `unix_secs`.
    pub fn sample(&mut self, unix_secs: u64, totals: Totals) {
        let minute = unix_secs / 60;
        match self.samples.back_mut() {
            Some((m, t)) if *m == minute => *t = totals,
            Some((m, _)) if *m > minute => {} // the clock went back: keep what we have
            _ => self.samples.push_back((minute, totals)),
        }
        while self.samples.len() > MINUTES + 1 {
            self.samples.pop_front();
        }
    }

    /// What happened in each of the last hour's minutes up to the one holding `unix_secs`,
    /// oldest first; minutes with no sample (the server was not running) count nothing.
    pub fn minutes(&self, unix_secs: u64) -> Vec<Minute> {
        let now = unix_secs / 60;
        let first = now.saturating_sub(MINUTES as u64 - 1);
        let mut out = Vec::with_capacity(MINUTES);
        // The totals at the end of the minute before each one (zero before any sample).
        let mut before = Totals::default();
        let mut next = self.samples.iter().peekable();
        while let Some((_, t)) = next.next_if(|(m, _)| *m < first) {
            before = *t;
        }
        for minute in first..=now {
            let counts = match next.next_if(|(m, _)| *m == minute) {
                Some((_, t)) => {
                    let d = t.minus(before);
                    before = *t;
                    d
                }
                None => Totals::default(),
            };
            out.push(Minute {
                t: minute * 60,
                counts,
            });
        }
        out
    }
}

pub(crate) fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The totals now: what clients reported, and the bytes the built-in TURN relayed.
pub(crate) fn totals(state: &AppState, stats: &Stats) -> Totals {
    let turn_bytes = state.turn().map_or(0, |t| {
        let s = t.stats();
        s.bytes_to_peers + s.bytes_to_clients
    });
    Totals {
        swarm_http: stats.swarm_bytes.http,
        swarm_p2p: stats.swarm_bytes.p2p,
        ..Totals::of(&stats.connectivity, turn_bytes)
    }
}

/// Samples the series every [`SAMPLE_EVERY`]; abort the task when the server stops.
pub(crate) fn spawn_sampler(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        loop {
            tick.tick().await;
            let t = totals(&state, &state.hub.stats());
            if let Ok(mut h) = state.history.lock() {
                h.sample(unix_secs(), t);
            }
        }
    })
}

#[derive(Serialize)]
struct Status {
    /// Unix time of this answer, seconds.
    now: u64,
    totals: Totals,
    /// Live numbers: signaling connections, rooms, TURN allocations.
    live: Live,
    /// New connections by kind of client: [connected, failed].
    by_client: Vec<(&'static str, [u64; 2])>,
    /// Connected, by kind of path (relayed split by the transport to the TURN server).
    by_path: Vec<(String, u64)>,
    /// Time to connect: upper bounds in ms (the last bucket has none) and counts per bucket.
    connect_ms: ConnectMs,
    minutes: Vec<Minute>,
    swarms: Swarms,
}

#[derive(Serialize)]
struct Swarms {
    count: usize,
    members: usize,
    /// Reported since the server started.
    bytes: SwarmBytes,
    /// The largest swarms now.
    top: Vec<SwarmRow>,
}

#[derive(Serialize)]
struct SwarmRow {
    id: String,
    members: u32,
    seeds: u32,
    #[serde(flatten)]
    bytes: SwarmBytes,
}

#[derive(Serialize)]
struct Live {
    connections: usize,
    rooms: usize,
    turn_allocations: usize,
}

#[derive(Serialize)]
struct ConnectMs {
    bounds: Vec<u32>,
    counts: Vec<u64>,
    count: u64,
    sum_ms: u64,
}

pub(crate) async fn api(State(state): State<AppState>) -> impl IntoResponse {
    let stats = state.hub.stats();
    let c = &stats.connectivity;
    let now = unix_secs();
    let totals = totals(&state, &stats);
    let minutes = match state.history.lock() {
        Ok(mut h) => {
            h.sample(now, totals);
            h.minutes(now)
        }
        Err(_) => Vec::new(),
    };
    let by_client = ClientKind::ALL
        .iter()
        .map(|k| {
            let row = &c.connects[k.index()];
            let failed = row[Outcome::Failed.index()];
            (k.as_str(), [row.iter().sum::<u64>() - failed, failed])
        })
        .collect();
    let by_path = Outcome::ALL
        .iter()
        .filter(|o| **o != Outcome::Failed)
        .map(|o| {
            let name = match o {
                Outcome::Relayed(_) => format!("relay/{}", o.relay()),
                _ => o.path().to_owned(),
            };
            let n = ClientKind::ALL
                .iter()
                .map(|k| c.connects[k.index()][o.index()])
                .sum();
            (name, n)
        })
        .collect();
    let mut counts = vec![0; CONNECT_BUCKETS_MS.len() + 1];
    let (mut count, mut sum_ms) = (0, 0);
    for p in PathKind::ALL {
        let h = &c.connect_ms[p.index()];
        for (slot, n) in counts.iter_mut().zip(h.buckets) {
            *slot += n;
        }
        count += h.count;
        sum_ms += h.sum_ms;
    }
    let body = Status {
        now,
        totals,
        live: Live {
            connections: stats.conns,
            rooms: stats.rooms,
            turn_allocations: state.turn().map_or(0, |t| t.stats().allocations),
        },
        by_client,
        by_path,
        connect_ms: ConnectMs {
            bounds: CONNECT_BUCKETS_MS.to_vec(),
            counts,
            count,
            sum_ms,
        },
        minutes,
        swarms: Swarms {
            count: stats.swarms,
            members: stats.swarm_members,
            bytes: stats.swarm_bytes,
            top: stats
                .top_swarms
                .iter()
                .flatten()
                .map(|t| SwarmRow {
                    id: t.id().to_owned(),
                    members: t.members,
                    seeds: t.seeds,
                    bytes: t.bytes,
                })
                .collect(),
        },
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(connected: u64, failed: u64) -> Totals {
        Totals {
            connected,
            failed,
            ..Totals::default()
        }
    }

    #[test]
    fn minutes_are_differences_of_the_last_sample_in_each() {
        let mut h = History::default();
        let start = 1_000 * 60;
        h.sample(start + 5, t(1, 0));
        h.sample(start + 50, t(3, 1)); // same minute: replaces
        h.sample(start + 65, t(4, 1));
        // a minute with no sample, then one more
        h.sample(start + 185, t(10, 2));
        let m = h.minutes(start + 190);
        assert_eq!(m.len(), MINUTES);
        let tail: Vec<(u64, u64, u64)> = m[MINUTES - 4..]
            .iter()
            .map(|m| (m.t, m.counts.connected, m.counts.failed))
            .collect();
        assert_eq!(
            tail,
            [
                (start, 3, 1),
                (start + 60, 1, 0),
                (start + 120, 0, 0),
                (start + 180, 6, 1)
            ]
        );
        assert!(
            m[..MINUTES - 4]
                .iter()
                .all(|m| m.counts == Totals::default())
        );
    }

    #[test]
    fn the_series_keeps_one_hour_and_counts_from_the_sample_before_it() {
        let mut h = History::default();
        for i in 0..200u64 {
            h.sample(i * 60, t(i, 0));
        }
        assert!(h.samples.len() <= MINUTES + 1);
        let m = h.minutes(199 * 60);
        assert_eq!(m.len(), MINUTES);
        assert!(m.iter().all(|m| m.counts.connected == 1), "{m:?}");
        // The clock going back is ignored, not a panic or a negative count.
        h.sample(10, t(0, 0));
        assert_eq!(h.minutes(199 * 60), m);
    }
}
