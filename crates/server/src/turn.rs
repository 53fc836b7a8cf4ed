//! The STUN/TURN driver: one task owns the [`Turn`] core, the UDP listener and the relay
//! sockets. Each relay socket has a small reader task that hands datagrams to the core task.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peerweb_turn::{AllocId, Config, Input, Output, PeerPolicy, Stats, Transport, Turn, Via};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::config::{IceServer, ServerConfig};

/// Socket buffers of the listener: bursts from many clients must not overflow the default.
const LISTENER_BUFFER: usize = 4 << 20;
const RELAY_BUFFER: usize = 256 << 10;
/// Largest datagram read from a peer; WebRTC packets stay far below it.
const RELAY_READ: usize = 4096;
/// Datagrams from peers waiting for the core task; beyond, new ones are dropped.
const PEER_QUEUE: usize = 8192;
/// TCP/TLS client connections at once.
const MAX_STREAMS: usize = 10_000;
/// A TCP/TLS connection that sends nothing for this long is closed (clients refresh their
/// allocation and permissions well within it).
const STREAM_IDLE: Duration = Duration::from_secs(120);
/// Frames queued for one TCP/TLS client; beyond, relayed data is dropped as UDP would lose it.
const STREAM_QUEUE: usize = 512;
/// The largest frame on a stream: a STUN message or ChannelData with its 16-bit length.
const MAX_STREAM_FRAME: usize = 4 + 65_536;

/// The running STUN/TURN server, as the HTTP side sees it.
#[derive(Debug)]
pub struct TurnService {
    local: SocketAddr,
    tls_local: Option<SocketAddr>,
    host: Option<String>,
    tls_host: Option<String>,
    secret: Vec<u8>,
    ttl: Duration,
    stats: watch::Receiver<Stats>,
    tasks: Vec<JoinHandle<()>>,
    /// Its own certificate for TURN over TLS, kept current, when it has one.
    _own_tls: Option<crate::tls::TlsSetup>,
}

impl Drop for TurnService {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl TurnService {
    /// Binds the listener and starts the core task. Call inside a tokio runtime. TURN over
    /// TLS (`turn_tls_listen`) uses `tls`, the server's own certificate, unless
    /// `turn_tls_cert`/`turn_tls_key` name another.
    pub fn start(
        cfg: &ServerConfig,
        listen: SocketAddr,
        tls: Option<&crate::tls::Tls>,
    ) -> io::Result<Self> {
        let (udp, tcp) = udp_and_tcp(listen)?;
        let local = udp.local_addr()?;
        let mut own_tls = None;
        let tls = match (
            &cfg.turn_tls_listen,
            &cfg.turn_tls_cert,
            &cfg.turn_tls_key,
            tls,
        ) {
            (Some(addr), Some(cert), Some(key), _) => {
                let setup = crate::tls::TlsSetup::files(
                    cert,
                    key,
                    Duration::from_secs(cfg.tls_reload_secs),
                    Arc::default(),
                )?;
                let acceptor = tokio_rustls::TlsAcceptor::from(setup.tls.turn.clone());
                own_tls = Some(setup);
                Some((tcp_listener(*addr)?, acceptor))
            }
            (Some(addr), _, _, Some(tls)) => Some((
                tcp_listener(*addr)?,
                tokio_rustls::TlsAcceptor::from(tls.turn.clone()),
            )),
            _ => None,
        };
        let tls_local = match &tls {
            Some((l, _)) => Some(l.local_addr()?),
            None => None,
        };
        let relay_ip = cfg.relay_ip.unwrap_or(local.ip());
        let mut secrets: Vec<Vec<u8>> = cfg
            .turn_secrets
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        if secrets.is_empty() {
            let mut s = [0u8; 32];
            getrandom::fill(&mut s).map_err(io::Error::other)?;
            secrets.push(data_encoding::BASE64URL_NOPAD.encode(&s).into_bytes());
        }
        let (allow, deny) = cfg
            .peer_blocks()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut core_cfg = Config::new(secrets.clone());
        core_cfg.realm = cfg.turn_realm.clone();
        core_cfg.max_allocations = cfg.turn_max_allocations;
        core_cfg.max_allocations_per_user = cfg.turn_max_allocations_per_user;
        core_cfg.bandwidth_per_allocation = cfg.turn_bandwidth_per_allocation;
        core_cfg.max_challenges_per_sec = cfg.turn_max_challenges_per_sec;
        core_cfg.policy = PeerPolicy {
            allow_loopback: cfg.turn_allow_loopback_peers,
            allow,
            deny,
            own: vec![relay_ip, local.ip()],
            relay_ports: Some(cfg.relay_min_port..=cfg.relay_max_port),
        };
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(io::Error::other)?;
        let core = Turn::new(core_cfg, seed, Instant::now().into_std(), unix_now());
        let (stats_tx, stats) = watch::channel(Stats::default());
        let relays = RelayPool {
            ip: relay_ip,
            min: cfg.relay_min_port,
            max: cfg.relay_max_port,
            next: cfg.relay_min_port,
        };
        let (stream_tx, stream_rx) = mpsc::channel(4096);
        let limit = Arc::new(Semaphore::new(MAX_STREAMS));
        let ids = Arc::new(AtomicU64::new(1));
        let mut tasks = vec![tokio::spawn(run(core, udp, relays, stats_tx, stream_rx))];
        tasks.push(tokio::spawn(accept(
            tcp,
            None,
            stream_tx.clone(),
            ids.clone(),
            limit.clone(),
        )));
        if let Some((l, acceptor)) = tls {
            tasks.push(tokio::spawn(accept(
                l,
                Some(acceptor),
                stream_tx,
                ids,
                limit,
            )));
        }
        Ok(Self {
            local,
            tls_local,
            host: cfg.turn_host.clone(),
            tls_host: cfg.turn_tls_host.clone(),
            secret: secrets.swap_remove(0),
            ttl: Duration::from_secs(cfg.turn_credential_ttl_secs),
            stats,
            tasks,
            _own_tls: own_tls,
        })
    }

    /// The UDP (and TCP) address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The TLS address, when TLS is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_local
    }

    /// Counters as of the last update (at most a quarter second old).
    pub fn stats(&self) -> Stats {
        *self.stats.borrow()
    }

    /// How long the credentials [`Self::ice_servers`] hands out stay valid.
    pub fn credential_ttl(&self) -> Duration {
        self.ttl
    }

    /// STUN and TURN entries for `RTCConfiguration.iceServers`, with fresh REST credentials.
    /// `request_host` is the Host header of the request, used when no host is configured.
    pub fn ice_servers(&self, request_host: Option<&str>) -> Vec<IceServer> {
        let host = self
            .host
            .clone()
            .or_else(|| request_host.and_then(host_part).map(str::to_owned))
            .unwrap_or_else(|| match self.local.ip() {
                IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            });
        let port = self.local.port();
        let mut id = [0u8; 9];
        let _ = getrandom::fill(&mut id);
        let username = format!(
            "{}:{}",
            unix_now() + self.ttl.as_secs(),
            data_encoding::BASE64URL_NOPAD.encode(&id)
        );
        let credential = peerweb_turn::rest_password(&self.secret, &username);
        vec![
            IceServer {
                urls: vec![format!("stun:{host}:{port}")],
                username: None,
                credential: None,
            },
            IceServer {
                urls: std::iter::once(format!("turn:{host}:{port}?transport=udp"))
                    .chain(std::iter::once(format!("turn:{host}:{port}?transport=tcp")))
                    .chain(self.tls_local.map(|t| {
                        let tls_host = self.tls_host.as_deref().unwrap_or(&host);
                        format!("turns:{tls_host}:{}?transport=tcp", t.port())
                    }))
                    .collect(),
                username: Some(username),
                credential: Some(credential),
            },
        ]
    }
}

/// The host of a Host header: without the port, IPv6 literals keep their brackets.
pub(crate) fn host_part(h: &str) -> Option<&str> {
    let host = if h.starts_with('[') {
        &h[..=h.find(']')?]
    } else {
        h.rsplit_once(':').map_or(h, |(host, _)| host)
    };
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    ok.then_some(host)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// UDP and TCP on the same address and port (RFC 8656: TCP for clients whose UDP is
/// blocked). With port 0 the TCP port the kernel gave UDP may be taken: try a few.
fn udp_and_tcp(listen: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let attempts = if listen.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = udp_socket(listen, LISTENER_BUFFER)?;
        match tcp_listener(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port for UDP and TCP")))
}

fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    TcpListener::from_std(l)
}

fn udp_socket(addr: SocketAddr, buffer: usize) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_nonblocking(true)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = s.set_recv_buffer_size(buffer);
    let _ = s.set_send_buffer_size(buffer);
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// What TCP/TLS connection tasks tell the core task.
#[derive(Debug)]
enum StreamEvent {
    Open {
        transport: Transport,
        tx: mpsc::Sender<Vec<u8>>,
    },
    Frame {
        transport: Transport,
        from: SocketAddr,
        data: Vec<u8>,
    },
    Closed {
        transport: Transport,
    },
}

async fn accept(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    events: mpsc::Sender<StreamEvent>,
    ids: Arc<AtomicU64>,
    limit: Arc<Semaphore>,
) {
    loop {
        let (tcp, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                debug!("TURN accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            debug!("TURN stream limit reached; refusing {from}");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let events = events.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_stream(tcp, Transport::Tcp(id), from, events).await,
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(s)) => serve_stream(s, Transport::Tls(id), from, events).await,
                        Ok(Err(e)) => debug!("TLS handshake with {from}: {e}"),
                        Err(_) => debug!("TLS handshake with {from} timed out"),
                    }
                }
            }
        });
    }
}

/// Splits a TCP/TLS byte stream into STUN messages and ChannelData frames for the core, and
/// writes what the core sends back.
async fn serve_stream<S: AsyncRead + AsyncWrite>(
    stream: S,
    transport: Transport,
    from: SocketAddr,
    events: mpsc::Sender<StreamEvent>,
) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    if events
        .send(StreamEvent::Open { transport, tx })
        .await
        .is_err()
    {
        return;
    }
    let (mut r, mut w) = tokio::io::split(stream);
    let reader = async {
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = match tokio::time::timeout(STREAM_IDLE, r.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                Ok(Ok(n)) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while let Some(len) = peerweb_turn::stun::stream_frame_len(&buf) {
                if len > MAX_STREAM_FRAME {
                    return;
                }
                if buf.len() < len {
                    break;
                }
                let data: Vec<u8> = buf.drain(..len).collect();
                let ev = StreamEvent::Frame {
                    transport,
                    from,
                    data,
                };
                if events.send(ev).await.is_err() {
                    return;
                }
            }
        }
    };
    let writer = async {
        while let Some(d) = rx.recv().await {
            if w.write_all(&d).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = reader => {}
        () = writer => {}
    }
    let _ = events.send(StreamEvent::Closed { transport }).await;
}

/// Binds relay sockets on the relay address, walking the port range.
#[derive(Debug)]
struct RelayPool {
    ip: IpAddr,
    min: u16,
    max: u16,
    next: u16,
}

impl RelayPool {
    fn bind(&mut self) -> Option<UdpSocket> {
        let span = u32::from(self.max - self.min) + 1;
        for _ in 0..span {
            let port = self.next;
            self.next = if port >= self.max { self.min } else { port + 1 };
            match udp_socket(SocketAddr::new(self.ip, port), RELAY_BUFFER) {
                Ok(s) => return Some(s),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => {
                    warn!("cannot bind a relay socket on {}:{port}: {e}", self.ip);
                    return None;
                }
            }
        }
        warn!("no free relay port in {}..={}", self.min, self.max);
        None
    }
}

#[derive(Debug)]
struct PeerPacket {
    alloc: AllocId,
    from: SocketAddr,
    data: Vec<u8>,
}

#[derive(Debug)]
struct Relay {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

async fn read_relay(alloc: AllocId, socket: Arc<UdpSocket>, tx: mpsc::Sender<PeerPacket>) {
    let mut buf = vec![0u8; RELAY_READ];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let p = PeerPacket {
                    alloc,
                    from,
                    data: buf[..n].to_vec(),
                };
                if tx.try_send(p).is_err() && tx.is_closed() {
                    return;
                }
            }
            // ICMP errors surface as failed reads on some systems; keep reading.
            Err(e) => debug!("relay read: {e}"),
        }
    }
}

/// Datagrams handled per wake-up before outputs are flushed.
const BATCH: usize = 64;

async fn run(
    mut core: Turn,
    udp: UdpSocket,
    mut pool: RelayPool,
    stats: watch::Sender<Stats>,
    mut stream_rx: mpsc::Receiver<StreamEvent>,
) {
    let (peer_tx, mut peer_rx) = mpsc::channel::<PeerPacket>(PEER_QUEUE);
    let mut relays: HashMap<AllocId, Relay> = HashMap::new();
    let mut streams: HashMap<Transport, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let mut deadline = Instant::now();
    let mut publish = tokio::time::interval(Duration::from_millis(250));
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = publish.tick() => {
                stats.send_replace(core.stats());
            }
            r = udp.recv_from(&mut buf) => {
                let now = Instant::now().into_std();
                if let Ok((n, from)) = r {
                    core.handle_input(now, Input::FromClient { transport: Transport::Udp, from, data: &buf[..n] });
                }
                // More may be waiting: take them without another trip through select.
                for _ in 1..BATCH {
                    let Ok((n, from)) = udp.try_recv_from(&mut buf) else { break };
                    core.handle_input(now, Input::FromClient { transport: Transport::Udp, from, data: &buf[..n] });
                }
            }
            Some(p) = peer_rx.recv() => {
                let now = Instant::now().into_std();
                core.handle_input(now, Input::FromPeer { alloc: p.alloc, from: p.from, data: &p.data });
                for _ in 1..BATCH {
                    let Ok(p) = peer_rx.try_recv() else { break };
                    core.handle_input(now, Input::FromPeer { alloc: p.alloc, from: p.from, data: &p.data });
                }
            }
            Some(ev) = stream_rx.recv() => {
                let now = Instant::now().into_std();
                match ev {
                    StreamEvent::Open { transport, tx } => {
                        streams.insert(transport, tx);
                    }
                    StreamEvent::Frame { transport, from, data } => {
                        core.handle_input(now, Input::FromClient { transport, from, data: &data });
                    }
                    StreamEvent::Closed { transport } => {
                        streams.remove(&transport);
                        core.handle_input(now, Input::ClientClosed { transport });
                    }
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                core.handle_input(Instant::now().into_std(), Input::Timeout);
            }
        }
        flush(
            &mut core,
            &udp,
            &mut relays,
            &streams,
            &mut pool,
            &peer_tx,
            &mut deadline,
        );
    }
}

/// Carries out everything the core asked for.
fn flush(
    core: &mut Turn,
    udp: &UdpSocket,
    relays: &mut HashMap<AllocId, Relay>,
    streams: &HashMap<Transport, mpsc::Sender<Vec<u8>>>,
    pool: &mut RelayPool,
    peer_tx: &mpsc::Sender<PeerPacket>,
    deadline: &mut Instant,
) {
    loop {
        match core.poll_output() {
            Output::Transmit(t) => {
                let res = match t.via {
                    Via::Client(Transport::Udp) => udp.try_send_to(&t.data, t.to),
                    Via::Client(stream) => {
                        if let Some(tx) = streams.get(&stream) {
                            let _ = tx.try_send(t.data);
                        }
                        continue;
                    }
                    Via::Relay(id) => match relays.get(&id) {
                        Some(r) => r.socket.try_send_to(&t.data, t.to),
                        None => continue,
                    },
                };
                // UDP: a full socket buffer loses the datagram, as the network could.
                if let Err(e) = res {
                    debug!("send to {}: {e}", t.to);
                }
            }
            Output::BindRelay { alloc } => {
                let bound = pool.bind().and_then(|s| {
                    let addr = s.local_addr().ok()?;
                    let socket = Arc::new(s);
                    let reader = tokio::spawn(read_relay(alloc, socket.clone(), peer_tx.clone()));
                    relays.insert(alloc, Relay { socket, reader });
                    Some(addr)
                });
                core.handle_input(
                    Instant::now().into_std(),
                    Input::RelayBound { alloc, addr: bound },
                );
            }
            Output::CloseRelay { alloc } => {
                if let Some(r) = relays.remove(&alloc) {
                    r.reader.abort();
                }
            }
            Output::Timeout(at) => {
                *deadline = Instant::from_std(at);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_part;

    #[test]
    fn host_header_forms() {
        assert_eq!(host_part("127.0.0.1:8080"), Some("127.0.0.1"));
        assert_eq!(host_part("example.org"), Some("example.org"));
        assert_eq!(host_part("[::1]:8080"), Some("[::1]"));
        assert_eq!(host_part("[::1"), None);
        assert_eq!(host_part("evil.org/x?:1"), None);
        assert_eq!(host_part(":80"), None);
    }
}
