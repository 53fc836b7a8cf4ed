//! The WebSocket driver of the signaling core.
//!
//! One hub task owns the [`Signal`] core. Each connection has a task that forwards what it
//! reads to the hub and writes what the hub sends it. Outbound frames are counted in bytes per
//! connection; a client that lets more than `max_send_queue_bytes` pile up is disconnected
//! (close code 4430) so that one slow reader cannot make the server hold unbounded memory.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use peerweb_proto::close;
use peerweb_signal::bus::{BusEvent, BusOp};
use peerweb_signal::{ConnId, Input, Output, Signal, Stats};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span, warn};

use crate::bus::{Bus, Wake};
use crate::cluster::ClusterStats;

/// What a connection task tells the hub.
#[derive(Debug)]
enum Event {
    Open {
        conn: ConnId,
        ip: IpAddr,
        handle: ConnHandle,
        grant: Option<crate::auth::Grant>,
    },
    Text {
        conn: ConnId,
        text: Utf8Bytes,
    },
    Binary {
        conn: ConnId,
    },
    Oversize {
        conn: ConnId,
    },
    Alive {
        conn: ConnId,
    },
    Closed {
        conn: ConnId,
        goodbye: bool,
    },
    Shutdown,
}

/// What the hub tells a connection task.
#[derive(Debug)]
enum Out {
    Text(String),
    Ping,
    Close(u16, &'static str),
}

#[derive(Debug)]
struct ConnHandle {
    tx: mpsc::UnboundedSender<Out>,
    queued: Arc<AtomicUsize>,
    kill: Arc<Notify>,
}

/// Handle to the running hub, shared by the HTTP handlers.
#[derive(Debug, Clone)]
pub struct Hub {
    events: mpsc::Sender<Event>,
    next_conn: Arc<AtomicU64>,
    /// WebSocket tasks still running (a drain waits for none).
    live: Arc<AtomicUsize>,
    stats: watch::Receiver<Stats>,
    cluster: Arc<ClusterStats>,
    max_frame_bytes: usize,
}

/// One running WebSocket task in the count, for as long as it lives.
struct Live(Arc<AtomicUsize>);

impl Live {
    fn count(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hub {
    /// Starts the hub task, and the task that runs its ops on `bus` (whose wake-ups for this
    /// node come on `wakes`); `info` is what the node tells the others about itself.
    pub fn spawn<B: Bus>(
        core: peerweb_signal::Config,
        max_send_queue_bytes: usize,
        bus: B,
        wakes: mpsc::Receiver<Wake>,
        info: String,
    ) -> Self {
        let mut seed = [0u8; 32];
        // Without OS randomness tokens would be guessable; refuse to run rather than degrade.
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut seed).expect("the OS random source is unavailable");
        let max_frame_bytes = core.max_frame_bytes;
        let node = core.node.clone();
        let signal = Signal::new(core, seed, Instant::now().into_std());
        let (events_tx, events_rx) = mpsc::channel(4096);
        let (stats_tx, stats_rx) = watch::channel(Stats::default());
        let (ops_tx, ops_rx) = mpsc::channel(MAX_QUEUED_OPS);
        let (bus_tx, bus_rx) = mpsc::channel(4096);
        let cluster = Arc::new(ClusterStats::default());
        tokio::spawn(crate::cluster::run(
            bus,
            node,
            info,
            ops_rx,
            wakes,
            bus_tx,
            cluster.clone(),
        ));
        let channels = Channels {
            events: events_rx,
            ops: ops_tx,
            bus: bus_rx,
        };
        tokio::spawn(run_hub(signal, channels, stats_tx, max_send_queue_bytes));
        Self {
            events: events_tx,
            next_conn: Arc::new(AtomicU64::new(1)),
            live: Arc::default(),
            stats: stats_rx,
            cluster,
            max_frame_bytes,
        }
    }

    /// Nodes alive on the cluster bus, and the sessions and rooms on it (all nodes'), as of
    /// the last beat (every second).
    pub fn cluster(&self) -> (usize, usize, usize) {
        let c = &self.cluster;
        (
            c.nodes.load(Ordering::Relaxed),
            c.sessions.load(Ordering::Relaxed),
            c.rooms.load(Ordering::Relaxed),
        )
    }

    /// Counters as of the last sweep (at most half a second old).
    pub fn stats(&self) -> Stats {
        *self.stats.borrow()
    }

    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Asks every connection to close with 1001 (going away).
    pub async fn shutdown(&self) {
        let _ = self.events.send(Event::Shutdown).await;
    }

    /// WebSocket connections whose tasks still run.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Serves one WebSocket until it closes; `grant` is what its access token allows (servers that require
    /// one).
    pub async fn serve_socket(
        self,
        socket: WebSocket,
        peer: SocketAddr,
        grant: Option<crate::auth::Grant>,
        first: Vec<String>,
    ) {
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let span = info_span!("ws", conn = conn.0);
        let _live = Live::count(&self.live);
        self.serve_inner(socket, conn, peer.ip(), grant, first)
            .instrument(span)
            .await;
    }

    /// A connection of the server's own, with no socket: the WHEP bridge speaks the signaling
    /// protocol through it, under the same limits as any client from `ip`.
    pub(crate) async fn open_local(
        &self,
        ip: IpAddr,
        grant: Option<crate::auth::Grant>,
    ) -> Option<LocalConn> {
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let (rx, queued, _kill) = self.register(conn, ip, grant).await?;
        Some(LocalConn {
            conn,
            events: self.events.clone(),
            rx,
            queued,
        })
    }

    /// Tells the hub about a new connection: what it sends the connection, the bytes queued
    /// for it, and its kill switch; `None` if the hub is gone.
    async fn register(
        &self,
        conn: ConnId,
        ip: IpAddr,
        grant: Option<crate::auth::Grant>,
    ) -> Option<(mpsc::UnboundedReceiver<Out>, Arc<AtomicUsize>, Arc<Notify>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let kill = Arc::new(Notify::new());
        let handle = ConnHandle {
            tx,
            queued: queued.clone(),
            kill: kill.clone(),
        };
        let open = Event::Open {
            conn,
            ip,
            handle,
            grant,
        };
        self.events.send(open).await.ok()?;
        Some((rx, queued, kill))
    }

    async fn serve_inner(
        self,
        socket: WebSocket,
        conn: ConnId,
        ip: IpAddr,
        grant: Option<crate::auth::Grant>,
        first: Vec<String>,
    ) {
        let Some((mut rx, queued, kill)) = self.register(conn, ip, grant).await else {
            return;
        };
        debug!("open");
        let (mut sink, mut stream) = socket.split();
        let events = &self.events;
        let limit = self.max_frame_bytes;
        let reader = async {
            // Frames from the URL come first, as if read from the socket.
            for text in first {
                if events
                    .send(Event::Text {
                        conn,
                        text: text.into(),
                    })
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            while let Some(msg) = stream.next().await {
                let ev = match msg {
                    Ok(Message::Text(text)) if text.len() > limit => Event::Oversize { conn },
                    Ok(Message::Binary(b)) if b.len() > limit => Event::Oversize { conn },
                    Ok(Message::Text(text)) => Event::Text { conn, text },
                    Ok(Message::Binary(_)) => Event::Binary { conn },
                    Ok(Message::Ping(_) | Message::Pong(_)) => Event::Alive { conn },
                    Ok(Message::Close(frame)) => {
                        let code = frame.map(|f| f.code);
                        return matches!(code, Some(close::NORMAL | close::GOING_AWAY));
                    }
                    // Beyond the hard cap the frame is not even read; the close frame may
                    // not reach the client, whose unread bytes make the kernel reset.
                    Err(e) if is_oversize(&e) => Event::Oversize { conn },
                    Err(_) => return false,
                };
                let oversize = matches!(ev, Event::Oversize { .. });
                if events.send(ev).await.is_err() {
                    return false;
                }
                if oversize {
                    // Read no further; the hub answers with a close frame.
                    return std::future::pending().await;
                }
            }
            false
        };
        let writer = async {
            // Frames queued together leave in one write: feed what is queued (up to
            // WRITE_BATCH bytes), then flush once.
            while let Some(first) = rx.recv().await {
                let mut next = Some(first);
                let mut batch = 0usize;
                while let Some(out) = next.take() {
                    let res = match out {
                        Out::Text(text) => {
                            let len = text.len();
                            batch += len;
                            let r = sink.feed(Message::Text(text.into())).await;
                            queued.fetch_sub(len, Ordering::Relaxed);
                            r
                        }
                        Out::Ping => sink.feed(Message::Ping(Default::default())).await,
                        Out::Close(code, reason) => {
                            let frame = CloseFrame {
                                code,
                                reason: reason.into(),
                            };
                            let _ = sink.send(Message::Close(Some(frame))).await;
                            return;
                        }
                    };
                    if res.is_err() {
                        return;
                    }
                    if batch < WRITE_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        };
        let ended = tokio::select! {
            goodbye = reader => End::ClientClosed { goodbye },
            _ = writer => End::ServerClosed,
            _ = kill.notified() => End::Killed,
        };
        if ended == End::Killed {
            let frame = CloseFrame {
                code: close::SLOW_CONSUMER,
                reason: "send queue overflow".into(),
            };
            let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(Message::Close(Some(frame)))).await;
        }
        if !matches!(ended, End::ClientClosed { .. }) {
            await_client_close(&mut stream).await;
        }
        debug!(?ended, "closed");
        let goodbye = matches!(ended, End::ClientClosed { goodbye: true });
        let _ = self.events.send(Event::Closed { conn, goodbye }).await;
    }
}

/// A connection the server itself holds ([`Hub::open_local`]): frames in and out as text.
/// Dropped, it leaves like a client that said goodbye.
#[derive(Debug)]
pub(crate) struct LocalConn {
    conn: ConnId,
    events: mpsc::Sender<Event>,
    rx: mpsc::UnboundedReceiver<Out>,
    queued: Arc<AtomicUsize>,
}

impl LocalConn {
    /// One client frame; false once the hub is gone.
    pub(crate) async fn send(&self, text: String) -> bool {
        let ev = Event::Text {
            conn: self.conn,
            text: text.into(),
        };
        self.events.send(ev).await.is_ok()
    }

    /// The next server frame; `None` when the hub closed the connection (or is gone). Pings
    /// are answered here.
    pub(crate) async fn recv(&mut self) -> Option<String> {
        loop {
            match self.rx.recv().await? {
                Out::Text(t) => {
                    self.queued.fetch_sub(t.len(), Ordering::Relaxed);
                    return Some(t);
                }
                Out::Ping => {
                    let _ = self.events.send(Event::Alive { conn: self.conn }).await;
                }
                Out::Close(..) => return None,
            }
        }
    }
}

impl Drop for LocalConn {
    fn drop(&mut self) {
        let ev = Event::Closed {
            conn: self.conn,
            goodbye: true,
        };
        if self.events.try_send(ev).is_err() {
            let events = self.events.clone();
            let conn = self.conn;
            tokio::spawn(async move {
                let _ = events
                    .send(Event::Closed {
                        conn,
                        goodbye: true,
                    })
                    .await;
            });
        }
    }
}

const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The end of the closing handshake, after our close frame: reads (and drops) what the
/// client still sends until its close, at most [`CLOSE_WAIT`], so the socket ends with FIN.
/// Dropping it with unread bytes would reset it, and a reset can destroy what we sent last
/// (our close frame, or an error frame before it: Firefox then never sees it).
pub(crate) async fn await_client_close<S, E>(stream: &mut S)
where
    S: futures_util::Stream<Item = Result<Message, E>> + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}
/// Bytes of frames written to a socket with one flush.
pub(crate) const WRITE_BATCH: usize = 16 * 1024;

#[derive(Debug, PartialEq, Eq)]
enum End {
    ClientClosed { goodbye: bool },
    ServerClosed,
    Killed,
}

fn is_oversize(e: &axum::Error) -> bool {
    use std::error::Error as _;
    matches!(
        e.source()
            .and_then(|s| s.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// Bus ops a node may have queued for its bus task; beyond, they fail at once (the clients
/// are told to try again) rather than pile up while the bus is slow or away.
const MAX_QUEUED_OPS: usize = 16_384;

struct Channels {
    events: mpsc::Receiver<Event>,
    ops: mpsc::Sender<BusOp>,
    bus: mpsc::Receiver<BusEvent>,
}

async fn run_hub(
    mut signal: Signal,
    mut ch: Channels,
    stats: watch::Sender<Stats>,
    max_queue: usize,
) {
    let mut conns: HashMap<ConnId, ConnHandle> = HashMap::new();
    let mut deadline = Instant::now();
    let mut batch = Vec::with_capacity(64);
    let mut from_bus = Vec::with_capacity(64);
    loop {
        batch.clear();
        from_bus.clear();
        let mut timeout = false;
        tokio::select! {
            n = ch.events.recv_many(&mut batch, 64) => {
                if n == 0 {
                    return;
                }
            }
            n = ch.bus.recv_many(&mut from_bus, 64) => {
                if n == 0 {
                    // The bus task ended: it never does while the node runs.
                    warn!("the cluster bus task ended; the signaling hub stops");
                    return;
                }
            }
            () = tokio::time::sleep_until(deadline) => timeout = true,
        }
        let now = Instant::now().into_std();
        if timeout {
            signal.handle_input(now, Input::Timeout);
            stats.send_replace(signal.stats());
        }
        for ev in from_bus.drain(..) {
            signal.handle_bus(now, ev);
        }
        for ev in batch.drain(..) {
            let input = match &ev {
                Event::Open { conn, ip, .. } => Input::Open {
                    conn: *conn,
                    ip: *ip,
                },
                Event::Text { conn, text } => Input::Text {
                    conn: *conn,
                    text: text.as_str(),
                },
                Event::Binary { conn } => Input::Binary { conn: *conn },
                Event::Oversize { conn } => Input::Oversize { conn: *conn },
                Event::Alive { conn } => Input::Alive { conn: *conn },
                Event::Closed { conn, goodbye } => {
                    conns.remove(conn);
                    Input::Closed {
                        conn: *conn,
                        goodbye: *goodbye,
                    }
                }
                Event::Shutdown => {
                    // Every client is told to reconnect (to another node, or to this one when
                    // it is back), and its session's lease runs for the resume grace from now:
                    // the bus task runs those last ops before it ends.
                    for (conn, h) in conns.drain() {
                        let _ =
                            h.tx.send(Out::Close(close::GOING_AWAY, "server shutting down"));
                        signal.handle_input(
                            now,
                            Input::Closed {
                                conn,
                                goodbye: false,
                            },
                        );
                    }
                    drain(&mut signal, &mut conns, &ch.ops, now, max_queue);
                    return;
                }
            };
            signal.handle_input(now, input);
            if let Event::Open {
                conn,
                handle,
                grant,
                ..
            } = ev
            {
                if let Some(g) = grant {
                    signal.handle_input(
                        now,
                        Input::Grant {
                            conn,
                            room: &g.room,
                            expires: g.expires,
                        },
                    );
                }
                conns.insert(conn, handle);
            }
        }
        deadline = Instant::from_std(drain(&mut signal, &mut conns, &ch.ops, now, max_queue));
    }
}

/// Sends the core's output until it is quiet: frames to connections (a slow consumer found
/// on the way is closed, which may queue more output), ops to the bus task (one that finds its
/// queue full fails at once). Returns when the core next wants a timeout.
fn drain(
    signal: &mut Signal,
    conns: &mut HashMap<ConnId, ConnHandle>,
    ops: &mpsc::Sender<BusOp>,
    now: std::time::Instant,
    max_queue: usize,
) -> std::time::Instant {
    loop {
        match signal.poll_output() {
            Output::Send { conn, frame } => {
                let Some(h) = conns.get(&conn) else { continue };
                let len = frame.len();
                if h.queued.load(Ordering::Relaxed) + len > max_queue {
                    debug!(conn = conn.0, "slow consumer");
                    h.kill.notify_one();
                    conns.remove(&conn);
                    signal.handle_input(
                        now,
                        Input::Closed {
                            conn,
                            goodbye: false,
                        },
                    );
                    continue;
                }
                h.queued.fetch_add(len, Ordering::Relaxed);
                let _ = h.tx.send(Out::Text(frame));
            }
            Output::Ping { conn } => {
                if let Some(h) = conns.get(&conn) {
                    let _ = h.tx.send(Out::Ping);
                }
            }
            Output::Close { conn, code, reason } => match conns.remove(&conn) {
                Some(h) => {
                    let _ = h.tx.send(Out::Close(code, reason));
                }
                // Refused at open: the handle is not stored yet.
                None => debug!(conn = conn.0, code, "close before register"),
            },
            Output::Bus(op) => {
                if let Err(e) = ops.try_send(op) {
                    let op = match e {
                        mpsc::error::TrySendError::Full(op)
                        | mpsc::error::TrySendError::Closed(op) => op,
                    };
                    if let Some(ev) = op.failed("the node's bus queue is full") {
                        signal.handle_bus(now, ev);
                    }
                }
            }
            Output::Timeout(at) => return at,
        }
    }
}
