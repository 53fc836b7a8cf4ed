//! The STUN/TURN driver: one task owns the [`Turn`] core, the UDP listener and the relay
//! sockets. Each relay socket has a small reader task that hands datagrams to the core task.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peerweb_turn::{AllocId, Config, Input, Output, PeerPolicy, Stats, Transport, Turn, Via};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
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

/// The running STUN/TURN server, as the HTTP side sees it.
#[derive(Debug)]
pub struct TurnService {
    local: SocketAddr,
    host: Option<String>,
    secret: Vec<u8>,
    ttl: Duration,
    stats: watch::Receiver<Stats>,
    task: JoinHandle<()>,
}

impl Drop for TurnService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TurnService {
    /// Binds the listener and starts the core task. Call inside a tokio runtime.
    pub fn start(cfg: &ServerConfig, listen: SocketAddr) -> io::Result<Self> {
        let udp = udp_socket(listen, LISTENER_BUFFER)?;
        let local = udp.local_addr()?;
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
        let task = tokio::spawn(run(core, udp, relays, stats_tx));
        Ok(Self {
            local,
            host: cfg.turn_host.clone(),
            secret: secrets.swap_remove(0),
            ttl: Duration::from_secs(cfg.turn_credential_ttl_secs),
            stats,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Counters as of the last update (at most a quarter second old).
    pub fn stats(&self) -> Stats {
        *self.stats.borrow()
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
                urls: vec![format!("turn:{host}:{port}?transport=udp")],
                username: Some(username),
                credential: Some(credential),
            },
        ]
    }
}

/// The host of a Host header: without the port, IPv6 literals keep their brackets.
fn host_part(h: &str) -> Option<&str> {
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

async fn run(mut core: Turn, udp: UdpSocket, mut pool: RelayPool, stats: watch::Sender<Stats>) {
    let (peer_tx, mut peer_rx) = mpsc::channel::<PeerPacket>(PEER_QUEUE);
    let mut relays: HashMap<AllocId, Relay> = HashMap::new();
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
                    flush(&mut core, &udp, &mut relays, &mut pool, &peer_tx, &mut deadline);
                }
            }
            Some(p) = peer_rx.recv() => {
                let now = Instant::now().into_std();
                core.handle_input(now, Input::FromPeer { alloc: p.alloc, from: p.from, data: &p.data });
                for _ in 1..BATCH {
                    let Ok(p) = peer_rx.try_recv() else { break };
                    core.handle_input(now, Input::FromPeer { alloc: p.alloc, from: p.from, data: &p.data });
                    flush(&mut core, &udp, &mut relays, &mut pool, &peer_tx, &mut deadline);
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
    pool: &mut RelayPool,
    peer_tx: &mpsc::Sender<PeerPacket>,
    deadline: &mut Instant,
) {
    loop {
        match core.poll_output() {
            Output::Transmit(t) => {
                let res = match t.via {
                    Via::Client(Transport::Udp) => udp.try_send_to(&t.data, t.to),
                    Via::Client(_) => continue,
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
