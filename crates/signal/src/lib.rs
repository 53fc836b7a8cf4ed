//! Rooms and sessions of peerweb signaling, as a sans-IO state machine.
//!
//! [`Signal`] never touches a socket, a clock or an OS random source: the driver feeds it
//! [`Input`]s with the current [`Instant`], then drains [`Signal::poll_output`] until it returns
//! [`Output::Timeout`], and calls again with [`Input::Timeout`] when that instant has passed.
//! Randomness comes from a seed given to [`Signal::new`].
//!
//! What several nodes share — sessions, rooms, the signals between peers — lives on the
//! cluster bus ([`bus`]): the core asks with [`Output::Bus`] and is told the answers and the
//! bus's wake-ups with [`Signal::handle_bus`]. One node runs the bus in memory
//! ([`bus::Model`]); several share one on Redis.
//!
//! ```
//! use std::time::Instant;
//! use peerweb_signal::bus::{BusEvent, Model};
//! use peerweb_signal::{Config, ConnId, Input, Output, Signal};
//!
//! let now = Instant::now();
//! let mut s = Signal::new(Config::default(), [7; 32], now);
//! let mut bus = Model::new();
//! let c = ConnId(1);
//! s.handle_input(now, Input::Open { conn: c, ip: "127.0.0.1".parse().unwrap() });
//! s.handle_input(now, Input::Text { conn: c, text: r#"{"type":"hello","v":1}"# });
//! // The session is claimed on the bus first.
//! let Output::Bus(op) = s.poll_output() else { panic!() };
//! let answer = bus.execute("node", 1_800_000_000_000, op, &mut Vec::new());
//! s.handle_bus(now, answer.unwrap());
//! let Output::Send { conn, frame } = s.poll_output() else { panic!() };
//! assert_eq!(conn, c);
//! assert!(frame.starts_with(r#"{"type":"welcome""#));
//! ```
//!
//! Sessions: a connection's first frame is `hello`; the server answers `welcome` with a peer
//! id and a resume token, where the id is a hash of the token. A later connection, on any
//! node, that says `hello` with the token gets the same id back, and, while the session is
//! still held (its lease on the bus runs for `resume_grace` after its connection closed), its
//! rooms and the signals sent to it meanwhile: the other members never see it leave. Because
//! the id is derived from the token, this needs no key shared by the nodes.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use peerweb_proto::{ClientMsg, ErrorCode, Limits, Report, ServerMsg, SwarmBytes, close};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

pub mod bus;
mod connectivity;
mod inbox;
mod neighbours;
mod rooms;
mod swarm;
use bus::{BusEvent, BusOp, EntryId, Wake};
use connectivity::{Allow, ReportBucket};
pub use connectivity::{CONNECT_BUCKETS_MS, Connectivity, Histogram, OUTCOMES, Outcome};
use rooms::{Reading, RoomView};

/// A connection, named by the driver. Never reused while the core knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Limits and timers. Every size, count and rate has a bound.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest text frame, in bytes (enforced by the driver's WebSocket reader).
    pub max_frame_bytes: usize,
    pub max_peers_per_room: usize,
    pub max_rooms_per_conn: usize,
    /// Rooms on the whole server.
    pub max_rooms: usize,
    /// Connections on the whole server.
    pub max_conns: usize,
    /// Connections from one IP address (0: no limit).
    pub max_conns_per_ip: usize,
    /// Sustained frames per second per connection.
    pub max_msgs_per_sec: u32,
    /// Frames a connection may send at once before the rate applies.
    pub msg_burst: u32,
    /// Frames dropped in a row for rate before the connection is closed.
    pub max_dropped_in_a_row: u32,
    /// Error frames a connection may provoke before it is closed.
    pub max_errors: u32,
    /// A connection with no frame (nor pong) for this long is closed; at half of it the
    /// driver is asked to send a WebSocket ping.
    pub idle_timeout: Duration,
    /// A connection must say `hello` within this time.
    pub hello_timeout: Duration,
    /// How long a session keeps its rooms after its connection closed.
    pub resume_grace: Duration,
    /// Connectivity reports a connection may send at once...
    pub report_burst: u32,
    /// ...and then per minute; beyond it they are dropped (the connection stays).
    pub max_reports_per_min: u32,
    pub max_swarms_per_conn: usize,
    /// Swarms on the whole server.
    pub max_swarms: usize,
    pub max_peers_per_swarm: usize,
    /// Neighbours introduced on `swarm-join`...
    pub swarm_neighbours: usize,
    /// ...and per `swarm-more`.
    pub swarm_more: usize,
    /// Neighbours one member may have in a swarm.
    pub max_swarm_links: usize,
    /// `swarm-more` a member may send at once; then one per `swarm_more_every`.
    pub swarm_more_burst: u32,
    pub swarm_more_every: Duration,
    /// This node's name on the cluster bus (unique among the nodes that share one).
    pub node: String,
    /// Signals a session may have on the bus unacknowledged; more to it are refused.
    pub max_inbox: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_peers_per_room: 64,
            max_rooms_per_conn: 8,
            max_rooms: 100_000,
            max_conns: 50_000,
            max_conns_per_ip: 1_000,
            max_msgs_per_sec: 50,
            msg_burst: 200,
            max_dropped_in_a_row: 400,
            max_errors: 100,
            idle_timeout: Duration::from_secs(60),
            hello_timeout: Duration::from_secs(10),
            resume_grace: Duration::from_secs(20),
            // A member of a full room reports on 63 connections at once.
            report_burst: 120,
            max_reports_per_min: 60,
            max_swarms_per_conn: 16,
            max_swarms: 100_000,
            max_peers_per_swarm: 100_000,
            swarm_neighbours: 10,
            swarm_more: 8,
            max_swarm_links: 40,
            swarm_more_burst: 3,
            swarm_more_every: Duration::from_secs(2),
            node: "node".to_owned(),
            max_inbox: 512,
        }
    }
}

impl Config {
    /// The limits announced to clients in `welcome`.
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_peers_per_room: self.max_peers_per_room,
            max_rooms_per_conn: self.max_rooms_per_conn,
            max_msgs_per_sec: self.max_msgs_per_sec,
            idle_timeout_ms: self.idle_timeout.as_millis() as u64,
            resume_grace_ms: self.resume_grace.as_millis() as u64,
            max_swarms_per_conn: self.max_swarms_per_conn,
        }
    }

    fn swarm_limits(&self) -> swarm::Limits {
        swarm::Limits {
            max_peers: self.max_peers_per_swarm,
            on_join: self.swarm_neighbours,
            per_more: self.swarm_more,
            max_links: self.max_swarm_links,
            more_burst: self.swarm_more_burst,
            more_every: self.swarm_more_every,
        }
    }
}

/// What happened on the driver's side.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A WebSocket connection was accepted from `ip`.
    Open { conn: ConnId, ip: IpAddr },
    /// A text frame arrived.
    Text { conn: ConnId, text: &'a str },
    /// A binary frame arrived (not part of the protocol).
    Binary { conn: ConnId },
    /// A frame larger than `max_frame_bytes` arrived.
    Oversize { conn: ConnId },
    /// A WebSocket pong (or ping) arrived: the connection is alive.
    Alive { conn: ConnId },
    /// The connection is gone (closed by the client, a network error, or after [`Output::Close`]).
    /// `goodbye` is true when the client closed on purpose (close code 1000 or 1001, as
    /// browsers send when a tab closes): its session leaves its rooms at once instead of
    /// being held for the resume grace.
    Closed { conn: ConnId, goodbye: bool },
    /// The connection's access token, verified by the driver (servers that require one send
    /// this right after [`Input::Open`]): it may join only rooms `room` allows — a name, or a
    /// prefix ending in `*` (`*` alone: any room) — and is closed with 4401 at `expires`.
    Grant {
        conn: ConnId,
        room: &'a str,
        expires: Instant,
    },
    /// The instant of the last [`Output::Timeout`] has passed.
    Timeout,
}

/// Whether an access token's room pattern allows `room`.
pub fn grant_allows(pattern: &str, room: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => pattern == room,
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a text frame.
    Send { conn: ConnId, frame: String },
    /// Send a WebSocket ping (the connection has been quiet for half the idle timeout).
    Ping { conn: ConnId },
    /// Send a close frame with this code and reason, then drop the connection. The core has
    /// already forgotten it.
    Close {
        conn: ConnId,
        code: u16,
        reason: &'static str,
    },
    /// Run this on the cluster bus, in order with the others; its result comes back through
    /// [`Signal::handle_bus`].
    Bus(BusOp),
    /// Nothing more to do until this instant; then feed [`Input::Timeout`].
    Timeout(Instant),
}

/// Swarms [`Stats`] describes one by one (the largest): a bound on the metrics' series.
pub const TOP_SWARMS: usize = 10;

/// One swarm in [`Stats::top_swarms`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwarmSummary {
    id: [u8; peerweb_proto::SWARM_ID_LEN],
    pub members: u32,
    pub seeds: u32,
    /// What its members reported moving while it existed.
    pub bytes: SwarmBytes,
}

impl SwarmSummary {
    /// The swarm's id (its content id).
    pub fn id(&self) -> &str {
        // Swarm ids are validated hex.
        std::str::from_utf8(&self.id).unwrap_or_default()
    }
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub conns: usize,
    pub sessions: usize,
    pub rooms: usize,
    pub signals_relayed: u64,
    pub errors_sent: u64,
    pub closes: u64,
    pub swarms: usize,
    /// Members of all swarms.
    pub swarm_members: usize,
    /// Neighbours introduced in swarms.
    pub swarm_introductions: u64,
    /// Neighbours reported for bytes that failed verification.
    pub swarm_bad_reports: u64,
    /// Bytes of swarm content members reported moving, by source.
    pub swarm_bytes: SwarmBytes,
    /// The largest swarms now.
    pub top_swarms: [Option<SwarmSummary>; TOP_SWARMS],
    /// What clients reported of their peer connections.
    pub connectivity: Connectivity,
}

const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// How often the bus is asked for sessions whose lease lapsed.
const REAP_EVERY: Duration = Duration::from_secs(1);
/// Lapsed sessions asked for at once.
const REAP_BATCH: usize = 64;
const ID_CONTEXT: &str = "peerweb signaling v1 peer id from resume token";
const TOKEN_BYTES: usize = 32;

#[derive(Debug)]
struct Conn {
    ip: IpAddr,
    session: Option<String>,
    opened: Instant,
    last_seen: Instant,
    pinged: bool,
    /// Rate bucket in thousandths of a frame.
    bucket_milli: u64,
    bucket_at: Instant,
    dropped_in_a_row: u32,
    told_rate_limited: bool,
    errors: u32,
    /// The access token's room pattern and expiry, on servers that require one.
    grant: Option<(String, Instant)>,
    reports: ReportBucket,
    /// A `hello` whose claim on the bus is under way.
    hello: Option<Hello>,
    /// Ops on the bus (a claim, joins) whose answers the connection's next frames wait for,
    /// and those frames.
    blocked: u32,
    waiting: VecDeque<String>,
}

#[derive(Debug)]
struct Hello {
    token: String,
    id: String,
    last: Option<u64>,
    acks: bool,
}

/// Frames a connection may send while it waits for the bus (see `Conn::blocked`).
const MAX_WAITING_FRAMES: usize = 64;

/// A session this node holds (its connection is here, or it is away within the resume grace).
/// Its rooms and signals are on the bus.
#[derive(Debug)]
struct Session {
    conn: Option<ConnId>,
    away_since: Option<Instant>,
    /// The epoch of this node's claim.
    epoch: u64,
    rooms: Vec<String>,
    swarms: Vec<String>,
    /// The last inbox entry sent to the connection.
    delivered: EntryId,
    reading: Reading,
    /// The client acknowledges signals itself.
    acks: bool,
    /// Signals to it this node handed to the bus and has no answer for yet, and the last one
    /// the bus queued: while the bus is away a signal goes directly only behind none of them.
    sending: u32,
    queued: EntryId,
}

/// The signaling core. See the crate docs.
#[derive(Debug)]
pub struct Signal {
    cfg: Config,
    rng: ChaCha20Rng,
    conns: HashMap<ConnId, Conn>,
    sessions: HashMap<String, Session>,
    /// Views of the rooms this node's sessions are in.
    rooms: HashMap<String, RoomView>,
    swarms: swarm::Swarms,
    per_ip: HashMap<IpAddr, usize>,
    out: VecDeque<Output>,
    next_sweep: Instant,
    next_renew: Instant,
    next_reap: Instant,
    stats: Stats,
    /// The bus is unreachable ([`Wake::Lost`] until [`Wake::Resync`]).
    bus_lost: bool,
}

impl Signal {
    pub fn new(cfg: Config, seed: [u8; 32], now: Instant) -> Self {
        Self {
            cfg,
            rng: ChaCha20Rng::from_seed(seed),
            conns: HashMap::new(),
            sessions: HashMap::new(),
            rooms: HashMap::new(),
            swarms: swarm::Swarms::default(),
            per_ip: HashMap::new(),
            out: VecDeque::new(),
            next_sweep: now + SWEEP_EVERY,
            next_renew: now,
            next_reap: now + REAP_EVERY,
            stats: Stats::default(),
            bus_lost: false,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn stats(&self) -> Stats {
        Stats {
            conns: self.conns.len(),
            sessions: self.sessions.len(),
            rooms: self.rooms.len(),
            swarms: self.swarms.len(),
            swarm_members: self.swarms.members(),
            swarm_introductions: self.swarms.introductions,
            swarm_bad_reports: self.swarms.bad_reports,
            swarm_bytes: self.swarms.bytes,
            top_swarms: self.swarms.top(),
            ..self.stats
        }
    }

    /// Feeds one input. Drain [`Signal::poll_output`] afterwards.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::Open { conn, ip } => self.open(now, conn, ip),
            Input::Text { conn, text } => {
                if self.admit(now, conn) {
                    self.text(now, conn, text);
                }
            }
            Input::Binary { conn } => {
                if self.admit(now, conn) {
                    self.error(
                        conn,
                        ErrorCode::BinaryUnsupported,
                        "binary frames are not part of the protocol",
                    );
                }
            }
            Input::Oversize { conn } => {
                self.close(now, conn, close::MESSAGE_TOO_BIG, "frame too large");
            }
            Input::Alive { conn } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.last_seen = now;
                    c.pinged = false;
                }
            }
            Input::Closed { conn, goodbye } => {
                if goodbye {
                    self.say_goodbye(conn);
                }
                self.forget_conn(now, conn);
            }
            Input::Grant {
                conn,
                room,
                expires,
            } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.grant = Some((room.to_owned(), expires));
                }
            }
            Input::Timeout => {
                if now >= self.next_sweep {
                    self.sweep(now);
                    self.next_sweep = now + SWEEP_EVERY;
                }
            }
        }
    }

    /// Feeds a cluster bus result or wake-up. Drain [`Signal::poll_output`] afterwards.
    pub fn handle_bus(&mut self, now: Instant, event: BusEvent) {
        match event {
            BusEvent::Claimed { conn, peer, result } => self.claimed(now, conn, &peer, result),
            BusEvent::Renewed { sessions, result } => {
                let Ok(current) = result else { return };
                for ((peer, epoch), current) in sessions.iter().zip(current) {
                    if !current {
                        self.fence(now, peer, epoch + 1);
                    }
                }
            }
            BusEvent::Sent { conn, to, result } => self.sent(conn, &to, result),
            BusEvent::SwarmPicked {
                swarm,
                peer,
                want,
                result,
            } => self.swarm_picked(&peer, &swarm, want, result),
            BusEvent::Inbox {
                peer,
                after,
                result,
            } => self.inbox(&peer, after, result),
            BusEvent::Joined {
                conn,
                room,
                peer,
                reply,
                result,
            } => {
                self.joined(conn, &room, &peer, reply, result);
                if reply {
                    self.unblock(now, conn);
                }
            }
            BusEvent::RoomLog {
                room,
                after,
                count,
                result,
            } => self.room_log(&room, after, count, result),
            BusEvent::Members { room, result } => self.room_members(&room, result),
            BusEvent::Expired { result } => {
                for peer in result.unwrap_or_default() {
                    self.out.push_back(Output::Bus(BusOp::Reap { peer }));
                }
            }
            BusEvent::Wake(Wake::Inbox { peer }) => self.read_inbox(&peer),
            BusEvent::Wake(Wake::Room { room }) => self.read_room(&room),
            BusEvent::Wake(Wake::Evict { peer, epoch }) => self.fence(now, &peer, epoch),
            BusEvent::Wake(Wake::Lost) => self.bus_lost = true,
            BusEvent::Wake(Wake::Resync) => {
                self.bus_lost = false;
                // Back on the bus: the leases first (renewals may have failed meanwhile, and
                // any node reaps a lapsed one), then what may have been missed.
                self.next_renew = now;
                self.sweep(now);
                let mut peers: Vec<String> = self.sessions.keys().cloned().collect();
                peers.sort();
                for p in peers {
                    self.read_inbox(&p);
                }
                let mut rooms: Vec<String> = self.rooms.keys().cloned().collect();
                rooms.sort();
                for r in rooms {
                    self.read_room(&r);
                }
            }
        }
    }

    /// Another node claimed `peer` at `epoch`: a session held here at an older epoch lets go
    /// of its connection, without leaving anything (the session lives on over there).
    fn fence(&mut self, now: Instant, peer: &str, epoch: u64) {
        let Some(s) = self.sessions.get(peer) else {
            return;
        };
        if s.epoch >= epoch {
            return;
        }
        let (conn, rooms, swarms) = (s.conn, s.rooms.clone(), s.swarms.clone());
        self.sessions.remove(peer);
        for room in rooms {
            self.drop_local_member(&room, peer);
        }
        // Its swarms here too, without a word to anyone: its client joins them again over
        // there (the directory keeps it meanwhile) and is introduced anew.
        for swarm in swarms {
            self.swarms.leave(&swarm, peer);
        }
        if let Some(conn) = conn {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.session = None;
            }
            self.close(now, conn, close::REPLACED, "session resumed elsewhere");
        }
    }

    /// The next thing to do. Returns [`Output::Timeout`] when nothing is queued.
    #[must_use]
    pub fn poll_output(&mut self) -> Output {
        self.out
            .pop_front()
            .unwrap_or(Output::Timeout(self.next_sweep))
    }

    fn open(&mut self, now: Instant, conn: ConnId, ip: IpAddr) {
        let ip_count = self.per_ip.get(&ip).copied().unwrap_or(0);
        if self.conns.len() >= self.cfg.max_conns
            || (self.cfg.max_conns_per_ip > 0 && ip_count >= self.cfg.max_conns_per_ip)
        {
            self.stats.closes += 1;
            self.out.push_back(Output::Close {
                conn,
                code: close::SERVER_FULL,
                reason: "server full",
            });
            return;
        }
        *self.per_ip.entry(ip).or_insert(0) += 1;
        self.conns.insert(
            conn,
            Conn {
                ip,
                session: None,
                opened: now,
                last_seen: now,
                pinged: false,
                bucket_milli: u64::from(self.cfg.msg_burst) * 1000,
                bucket_at: now,
                dropped_in_a_row: 0,
                told_rate_limited: false,
                errors: 0,
                grant: None,
                reports: ReportBucket::new(now, self.cfg.report_burst),
                hello: None,
                blocked: 0,
                waiting: VecDeque::new(),
            },
        );
    }

    /// Liveness and rate accounting for one frame; false when the frame must be dropped.
    fn admit(&mut self, now: Instant, conn: ConnId) -> bool {
        let rate = u64::from(self.cfg.max_msgs_per_sec);
        let cap = u64::from(self.cfg.msg_burst.max(1)) * 1000;
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        c.last_seen = now;
        c.pinged = false;
        let elapsed_ms = now.saturating_duration_since(c.bucket_at).as_millis() as u64;
        c.bucket_milli = (c.bucket_milli + elapsed_ms.saturating_mul(rate)).min(cap);
        c.bucket_at = now;
        if c.bucket_milli >= 1000 {
            c.bucket_milli -= 1000;
            c.dropped_in_a_row = 0;
            c.told_rate_limited = false;
            return true;
        }
        c.dropped_in_a_row += 1;
        if c.dropped_in_a_row > self.cfg.max_dropped_in_a_row {
            self.close(now, conn, close::RATE_LIMITED, "message rate exceeded");
        } else if !c.told_rate_limited {
            c.told_rate_limited = true;
            self.error(
                conn,
                ErrorCode::RateLimited,
                "too many messages; frame dropped",
            );
        }
        false
    }

    fn text(&mut self, now: Instant, conn: ConnId, text: &str) {
        // A connection's frames are handled in order: those after a `hello` or `join` the
        // bus has not answered yet wait for the answer.
        if let Some(c) = self.conns.get_mut(&conn)
            && c.blocked > 0
        {
            if c.waiting.len() >= MAX_WAITING_FRAMES {
                return self.error(
                    conn,
                    ErrorCode::RateLimited,
                    "too many frames waiting for the server; frame dropped",
                );
            }
            c.waiting.push_back(text.to_owned());
            return;
        }
        self.dispatch(now, conn, text);
    }

    /// The bus answered an op the connection's later frames waited for: handle them, up to
    /// the next such op.
    fn unblock(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.blocked = c.blocked.saturating_sub(1);
        }
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            if c.blocked > 0 {
                return;
            }
            let Some(text) = c.waiting.pop_front() else {
                return;
            };
            self.dispatch(now, conn, &text);
        }
    }

    fn dispatch(&mut self, now: Instant, conn: ConnId, text: &str) {
        let msg = match ClientMsg::decode(text) {
            Ok(m) => m,
            Err(e) => {
                if e.is_about_report() {
                    self.stats.connectivity.dropped_malformed += 1;
                }
                return self.error(conn, e.code, &e.message);
            }
        };
        let session = self.conns.get(&conn).and_then(|c| c.session.clone());
        let Some(me) = session else {
            return match msg {
                ClientMsg::Hello {
                    v,
                    token,
                    last,
                    acks,
                } => self.hello(conn, v, token.as_deref(), last, acks),
                _ => self.error(conn, ErrorCode::HelloRequired, "say hello first"),
            };
        };
        match msg {
            ClientMsg::Hello { .. } => {
                self.error(conn, ErrorCode::AlreadyHello, "hello was already said")
            }
            ClientMsg::Join { room, meta } => self.join(conn, &me, &room, meta),
            ClientMsg::Leave { room } => self.leave(conn, &me, &room),
            ClientMsg::Signal { to, data } => self.signal(conn, &me, &to, data),
            ClientMsg::Ack { n } => self.ack(conn, &me, n),
            ClientMsg::Ping { data } => self.send(conn, &ServerMsg::Pong { data }),
            ClientMsg::Report(r) => self.report(now, conn, &r),
            ClientMsg::SwarmJoin { swarm, seed } => self.swarm_join(now, conn, &me, &swarm, seed),
            ClientMsg::SwarmMore { swarm } => self.swarm_more(now, conn, &me, &swarm),
            ClientMsg::SwarmSeed { swarm } => self.swarm_seed(conn, &me, &swarm),
            ClientMsg::SwarmLeave { swarm } => {
                if self.remove_from_swarm(&me, &swarm) {
                    self.send(conn, &ServerMsg::SwarmLeft { swarm: &swarm });
                } else {
                    self.error(conn, ErrorCode::NotInSwarm, "not in that swarm");
                }
            }
            ClientMsg::SwarmBytes { swarm, bytes } => {
                if !self.swarms.report_bytes(&swarm, &me, bytes) {
                    self.error(conn, ErrorCode::NotInSwarm, "not in that swarm");
                }
            }
            ClientMsg::SwarmBad { swarm, id } => self.swarm_bad(conn, &me, &swarm, &id),
            _ => self.error(conn, ErrorCode::UnknownType, "unsupported message"),
        }
    }

    /// Counts a connectivity report, within the connection's allowance.
    fn report(&mut self, now: Instant, conn: ConnId, r: &Report) {
        let (per_min, burst) = (self.cfg.max_reports_per_min, self.cfg.report_burst);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match c.reports.take(now, per_min, burst) {
            Allow::Yes => self.stats.connectivity.record(r),
            Allow::Drop => self.stats.connectivity.dropped_flood += 1,
            Allow::DropAndTell => {
                self.stats.connectivity.dropped_flood += 1;
                self.error(
                    conn,
                    ErrorCode::RateLimited,
                    "too many reports; dropped (the connection stays)",
                );
            }
        }
    }

    fn hello(&mut self, conn: ConnId, v: u32, token: Option<&str>, last: Option<u64>, acks: bool) {
        if v != peerweb_proto::VERSION {
            return self.error(
                conn,
                ErrorCode::UnsupportedVersion,
                "this server speaks version 1",
            );
        }
        let (token, id) = match token {
            Some(t) => match peer_id_for(t) {
                Some(id) => (t.to_owned(), id),
                None => {
                    return self.error(
                        conn,
                        ErrorCode::BadToken,
                        "resume token is not one this protocol issues",
                    );
                }
            },
            None => {
                let mut bytes = [0u8; TOKEN_BYTES];
                self.rng.fill_bytes(&mut bytes);
                let t = data_encoding::BASE64URL_NOPAD.encode(&bytes);
                let id = peer_id_for(&t).unwrap_or_default();
                (t, id)
            }
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.hello = Some(Hello {
                token,
                id: id.clone(),
                last,
                acks,
            });
            c.blocked += 1;
        }
        // The session is this node's once the bus says so (and which rooms it is in).
        self.out.push_back(Output::Bus(BusOp::Claim {
            conn,
            peer: id,
            lease: self.cfg.resume_grace,
        }));
    }

    fn claimed(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: &str,
        result: Result<bus::Claim, String>,
    ) {
        // A connection gone meanwhile: the claim's lease runs out like any away session's.
        let Some(h) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.hello.take_if(|h| h.id == id))
        else {
            return;
        };
        let claim = match result {
            Ok(c) => c,
            Err(_) => {
                return self.close(
                    now,
                    conn,
                    close::TRY_AGAIN_LATER,
                    "the servers' shared state is unreachable; reconnect shortly",
                );
            }
        };
        let previous = self.sessions.get(id).and_then(|s| s.conn);
        if let Some(old) = previous
            && old != conn
        {
            // The same token on a new connection: the old one is stale (or stolen, which the
            // token's secrecy rules out). The newest wins.
            if let Some(c) = self.conns.get_mut(&old) {
                c.session = None;
            }
            self.close(now, old, close::REPLACED, "session resumed elsewhere");
        }
        if let Some(node) = &claim.previous
            && *node != self.cfg.node
        {
            self.out.push_back(Output::Bus(BusOp::Evict {
                node: node.clone(),
                peer: id.to_owned(),
                epoch: claim.epoch,
            }));
        }
        let resumed = claim.previous.is_some();
        let session = self
            .sessions
            .entry(id.to_owned())
            .or_insert_with(|| Session {
                conn: None,
                away_since: None,
                epoch: 0,
                rooms: Vec::new(),
                swarms: Vec::new(),
                delivered: EntryId::ZERO,
                reading: Reading::Idle,
                acks: false,
                sending: 0,
                queued: EntryId::ZERO,
            });
        session.conn = Some(conn);
        session.away_since = None;
        session.epoch = claim.epoch;
        session.acks = h.acks;
        session.reading = Reading::Idle;
        // Signals after what the client says it has (a new session's inbox starts empty).
        session.delivered = match h.last {
            Some(n) if resumed => inbox::id_of(n),
            _ => EntryId::ZERO,
        };
        session.rooms = claim.rooms;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(id.to_owned());
        }
        // A session resumed under another access token keeps only the rooms it allows.
        let grant = self.conns.get(&conn).and_then(|c| c.grant.clone());
        if let Some((pattern, _)) = grant {
            let barred: Vec<String> = self
                .sessions
                .get(id)
                .map(|s| s.rooms.iter())
                .into_iter()
                .flatten()
                .filter(|r| !grant_allows(&pattern, r))
                .cloned()
                .collect();
            for room in barred {
                if let Some(s) = self.sessions.get_mut(id) {
                    s.rooms.retain(|r| *r != room);
                }
                self.out.push_back(Output::Bus(BusOp::Leave {
                    room,
                    peer: id.to_owned(),
                }));
            }
            let barred: Vec<String> = self
                .sessions
                .get(id)
                .map(|s| s.swarms.iter())
                .into_iter()
                .flatten()
                .filter(|w| !grant_allows(&pattern, &format!("swarm:{w}")))
                .cloned()
                .collect();
            for swarm in barred {
                self.remove_from_swarm(id, &swarm);
            }
        }
        let rooms: Vec<String> = self
            .sessions
            .get(id)
            .map(|s| s.rooms.clone())
            .unwrap_or_default();
        let names: Vec<&str> = rooms.iter().map(String::as_str).collect();
        let frame = ServerMsg::Welcome {
            v: peerweb_proto::VERSION,
            id,
            token: &h.token,
            resumed,
            rooms: &names,
            limits: self.cfg.limits(),
        }
        .encode();
        self.out.push_back(Output::Send { conn, frame });
        // This node's views of the session's rooms: a join the bus answers with the members
        // (it is one already), and no `joined` for the client, which re-joins when it wants
        // the list.
        for room in rooms {
            self.out.push_back(Output::Bus(BusOp::Join {
                conn,
                room,
                peer: id.to_owned(),
                meta: None,
                max_members: self.cfg.max_peers_per_room,
                reply: false,
            }));
        }
        self.read_inbox(id);
        self.unblock(now, conn);
    }

    fn send(&mut self, conn: ConnId, msg: &ServerMsg<'_>) {
        self.out.push_back(Output::Send {
            conn,
            frame: msg.encode(),
        });
    }

    fn error(&mut self, conn: ConnId, code: ErrorCode, message: &str) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.errors += 1;
        if c.errors > self.cfg.max_errors {
            let now = c.last_seen;
            return self.close(
                now,
                conn,
                close::PROTOCOL_ERRORS,
                "too many protocol errors",
            );
        }
        self.stats.errors_sent += 1;
        self.send(conn, &ServerMsg::Error { code, message });
    }

    /// Closes a connection from the server side.
    fn close(&mut self, now: Instant, conn: ConnId, code: u16, reason: &'static str) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.forget_conn(now, conn);
        self.stats.closes += 1;
        self.out.push_back(Output::Close { conn, code, reason });
    }

    /// The connection's session ends now: out of its rooms (the others hear it from the
    /// bus's log) and swarms.
    fn say_goodbye(&mut self, conn: ConnId) {
        let Some(id) = self.conns.get(&conn).and_then(|c| c.session.clone()) else {
            return;
        };
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        if s.conn != Some(conn) {
            return;
        }
        let (epoch, rooms) = (s.epoch, s.rooms.clone());
        self.out.push_back(Output::Bus(BusOp::End {
            peer: id.clone(),
            epoch,
        }));
        for room in rooms {
            self.drop_local_member(&room, &id);
        }
        self.leave_swarms(&id);
        self.sessions.remove(&id);
    }

    /// Drops a connection's state. Its session's lease runs for the resume grace from now (the
    /// bus ends it then, unless it resumes on any node); swarms, which live here, hold it as
    /// away meanwhile.
    fn forget_conn(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(n) = self.per_ip.get_mut(&c.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&c.ip);
            }
        }
        let Some(id) = c.session else { return };
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.conn != Some(conn) {
            return;
        }
        s.conn = None;
        self.out.push_back(Output::Bus(BusOp::Renew {
            sessions: vec![(id.clone(), s.epoch)],
            lease: self.cfg.resume_grace,
        }));
        let rooms = std::mem::take(&mut s.rooms);
        if s.swarms.is_empty() {
            self.sessions.remove(&id);
        } else {
            s.away_since = Some(now);
        }
        for room in rooms {
            self.drop_local_member(&room, &id);
        }
    }

    fn sweep(&mut self, now: Instant) {
        let idle = self.cfg.idle_timeout;
        let mut to_close = Vec::new();
        for (&id, c) in &mut self.conns {
            let quiet = now.saturating_duration_since(c.last_seen);
            if c.grant.as_ref().is_some_and(|(_, expires)| now >= *expires) {
                to_close.push((id, "access token expired"));
            } else if c.session.is_none()
                && now.saturating_duration_since(c.opened) >= self.cfg.hello_timeout
            {
                to_close.push((id, "no hello in time"));
            } else if quiet >= idle {
                to_close.push((id, "idle timeout"));
            } else if quiet >= idle / 2 && !c.pinged {
                c.pinged = true;
                self.out.push_back(Output::Ping { conn: id });
            }
        }
        to_close.sort();
        for (id, reason) in to_close {
            let code = if reason == "access token expired" {
                close::UNAUTHORIZED
            } else {
                close::IDLE_TIMEOUT
            };
            self.close(now, id, code, reason);
        }
        let grace = self.cfg.resume_grace;
        let mut expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.away_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= grace)
            })
            .map(|(id, _)| id.clone())
            .collect();
        expired.sort();
        for id in expired {
            self.leave_swarms(&id);
            self.sessions.remove(&id);
        }
        // The leases of the sessions connected here, renewed well within the grace.
        if now >= self.next_renew {
            self.next_renew = now + grace / 4;
            let mut held: Vec<(String, u64)> = self
                .sessions
                .iter()
                .filter(|(_, s)| s.conn.is_some())
                .map(|(id, s)| (id.clone(), s.epoch))
                .collect();
            held.sort();
            if !held.is_empty() {
                self.out.push_back(Output::Bus(BusOp::Renew {
                    sessions: held,
                    lease: grace,
                }));
            }
        }
        // Sessions whose lease lapsed, on any node: each ends once, whichever node reaps it.
        if now >= self.next_reap {
            self.next_reap = now + REAP_EVERY;
            self.out
                .push_back(Output::Bus(BusOp::Expired { max: REAP_BATCH }));
        }
    }
}

/// The peer id a resume token stands for, or `None` if the token is not one this protocol
/// issues (32 bytes, base64url without padding).
pub fn peer_id_for(token: &str) -> Option<String> {
    let bytes = data_encoding::BASE64URL_NOPAD
        .decode(token.as_bytes())
        .ok()?;
    if bytes.len() != TOKEN_BYTES {
        return None;
    }
    let hash = blake3::derive_key(ID_CONTEXT, &bytes);
    Some(
        data_encoding::BASE32_NOPAD
            .encode(&hash[..10])
            .to_ascii_lowercase(),
    )
}

#[cfg(test)]
mod tests;
