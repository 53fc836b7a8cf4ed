//! The driver task: one loop that owns the [`Client`], the sockets, the signaling WebSocket, STUN and TURN, and the application's commands.

use crate::*;

pub(crate) struct Blocked {
    pub(crate) peer: String,
    pub(crate) label: Option<String>,
    pub(crate) binary: bool,
    pub(crate) data: Vec<u8>,
    pub(crate) reply: oneshot::Sender<Result<(), Error>>,
}

pub(crate) struct Driver {
    pub(crate) client: Client,
    pub(crate) urls: Urls,
    pub(crate) trust: Trust,
    pub(crate) opts: Options,
    pub(crate) socks: HashMap<SocketAddr, Arc<Udp>>,
    pub(crate) net_tx: mpsc::Sender<Vec<Datagram>>,
    pub(crate) ws: Option<Ws>,
    /// A reconnect in progress.
    pub(crate) ws_conn: Option<oneshot::Receiver<Result<(Ws, bool), Error>>>,
    pub(crate) backoff: Duration,
    pub(crate) reconnect_at: Option<Instant>,
    pub(crate) stun: Vec<StunQuery>,
    pub(crate) turns: Vec<Turn>,
    /// TURN over TLS, started only if UDP and TCP gave no allocation by the deadline.
    pub(crate) deferred_tls: Option<DeferredTls>,
    /// A relayed candidate from TURN over TCP, held back until the deadline unless TURN over
    /// UDP gives one: str0m gives every relayed candidate the same priority, so offered
    /// together the slower TCP path could win the nomination.
    pub(crate) held_relay: Option<(Candidate, Instant)>,
    pub(crate) next_turn_id: usize,
    /// The STUN server from `/api/ice`, for checking our server-reflexive addresses again.
    pub(crate) stun_server: Option<SocketAddr>,
    /// Our server-reflexive candidate per local socket.
    pub(crate) srflx: HashMap<SocketAddr, Candidate>,
    /// A `/api/ice` request in flight.
    pub(crate) ice_rx: Option<oneshot::Receiver<Result<IceConfig, String>>>,
    /// When our addresses were last checked after a path went down.
    pub(crate) rechecked_at: Option<Instant>,
    /// When to replace lost TURN allocations, and the wait after the next loss.
    pub(crate) realloc_at: Option<Instant>,
    pub(crate) realloc_wait: Duration,
    /// Sends waiting for the send window, in order.
    pub(crate) blocked: VecDeque<Blocked>,
    /// Asked to leave: when to give up waiting for buffered data, and whom to tell.
    pub(crate) leaving: Option<(Instant, oneshot::Sender<()>)>,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) tid: u64,
}

/// The ICE servers `GET /api/ice` hands out.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct IceConfig {
    #[serde(rename = "iceServers")]
    pub(crate) ice_servers: Vec<IceServer>,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct IceServer {
    pub(crate) urls: Vec<String>,
    pub(crate) username: Option<String>,
    pub(crate) credential: Option<String>,
}

impl Driver {
    pub(crate) async fn run(
        mut self,
        (ws, taken): (Ws, bool),
        mut cmds: mpsc::Receiver<Cmd>,
        mut net: mpsc::Receiver<Vec<Datagram>>,
        mut read: mpsc::UnboundedReceiver<(String, usize)>,
    ) {
        self.connected(ws, taken);
        if self.opts.stun || self.opts.turn {
            self.fetch_ice();
        }
        loop {
            if self.flush().await.is_err() {
                return;
            }
            if let Some((until, _)) = &self.leaving
                && (Instant::now() >= *until || self.drained())
            {
                self.leave().await;
                if let Some((_, reply)) = self.leaving.take() {
                    let _ = reply.send(());
                }
                return;
            }
            let mut deadline = self.deadline();
            if self.leaving.is_some() {
                deadline = deadline.min(Instant::now() + Duration::from_millis(10));
            }
            tokio::select! {
                biased;
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Leave(reply)) => {
                        // Messages already accepted must reach the peers before we go: wait
                        // (bounded) until nothing is waiting or unacknowledged.
                        self.leaving = Some((Instant::now() + LEAVE_DRAIN, reply));
                    }
                    Some(c) => self.on_cmd(c),
                    None => {
                        self.leave().await;
                        return;
                    }
                },
                Some((peer, bytes)) = read.recv() => {
                    // The application read messages: their room in the receive window is
                    // free (all the reads waiting, summed per peer).
                    let mut by_peer = HashMap::from([(peer, bytes)]);
                    while let Ok((peer, bytes)) = read.try_recv() {
                        *by_peer.entry(peer).or_default() += bytes;
                    }
                    let now = now();
                    for (peer, bytes) in by_peer {
                        self.client.release(now, &peer, bytes);
                    }
                }
                Some(batch) = net.recv() => {
                    // Peers answer (acknowledge) once for all the datagrams read together.
                    self.client.begin_batch();
                    for d in batch {
                        self.on_datagram(d);
                    }
                    for _ in 0..BATCH {
                        match net.try_recv() {
                            Ok(batch) => batch.into_iter().for_each(|d| self.on_datagram(d)),
                            Err(_) => break,
                        }
                    }
                    self.client.end_batch(now());
                }
                frame = next_frame(&mut self.ws) => self.on_ws(frame),
                conn = wait_conn(&mut self.ws_conn) => self.on_reconnected(conn),
                ice = wait_ice(&mut self.ice_rx) => {
                    self.ice_rx = None;
                    self.on_ice(ice).await;
                }
                _ = tokio::time::sleep_until(deadline) => self.on_timeout(),
            }
        }
    }

    /// Carries out what the client and the TURN client asked for.
    pub(crate) async fn flush(&mut self) -> Result<(), ()> {
        loop {
            let now = now();
            // Datagrams on our own sockets leave together after the client is drained:
            // runs to one address in one system call each.
            let mut udp = Vec::new();
            loop {
                match self.client.poll_output(now) {
                    Output::Timeout(_) => break,
                    Output::Transmit(t) if self.socks.contains_key(&t.source) => udp.push(t),
                    Output::Frame(f) => {
                        if let Some(ws) = &mut self.ws
                            && ws.send(WsMessage::text(f)).await.is_err()
                        {
                            self.lost_ws();
                        }
                    }
                    Output::Transmit(t) => self.transmit(t).await,
                    Output::Event(e) => {
                        // Writable is the driver's business: the sends waiting on it go on.
                        if let Event::Writable { peer, label } = &e {
                            self.retry_blocked(Some((peer.clone(), label.clone())));
                            continue;
                        }
                        if let Event::PeerLeft { peer } = &e {
                            self.fail_blocked(peer);
                        }
                        if let Event::State {
                            state: PeerState::Disconnected,
                            ..
                        } = &e
                        {
                            self.recheck();
                        }
                        if self.events.send(e).await.is_err() {
                            return Err(());
                        }
                    }
                }
            }
            self.send_udp(udp).await;
            let mut added = false;
            let mut lost = Vec::new();
            for t in &mut self.turns {
                t.flush().await;
                while let Some(ev) = t.client.poll_event() {
                    match ev {
                        TurnEvent::Allocated { relayed, .. } => {
                            t.relayed = Some(relayed);
                            self.client.set_relay_transport(relayed, t.kind);
                            self.realloc_wait = Duration::ZERO;
                            // Peers reach the relayed address over UDP, whatever carries us
                            // to the server; the candidate's base is the relayed address.
                            let Ok(c) = Candidate::relayed(relayed, relayed, "udp") else {
                                continue;
                            };
                            match t.kind {
                                "udp" => {
                                    self.client.add_local_candidate(now, c);
                                    self.held_relay = None;
                                    added = true;
                                }
                                "tcp" => {
                                    self.held_relay =
                                        Some((c, Instant::now() + STREAM_RELAY_AFTER));
                                }
                                _ => {
                                    self.client.add_local_candidate(now, c);
                                    added = true;
                                }
                            }
                        }
                        TurnEvent::Failed(why) => {
                            let message = match t.relayed.take() {
                                // It worked and is gone: it is replaced.
                                Some(relayed) => {
                                    lost.push(relayed);
                                    format!(
                                        "TURN over {}: allocation lost ({why}); allocating again",
                                        t.kind
                                    )
                                }
                                None => format!("TURN over {}: {why}", t.kind),
                            };
                            let e = Event::Error {
                                code: "turn-failed".into(),
                                message,
                            };
                            let _ = self.events.send(e).await;
                        }
                    }
                }
            }
            for relayed in lost {
                self.lost_relay(relayed);
            }
            // A relayed candidate was added: its trickle goes out on the next round.
            if !added {
                return Ok(());
            }
        }
    }

    /// Sends datagrams from our sockets, in order: each run of datagrams from one socket to
    /// one address, all of one size but the last, goes in one system call (GSO).
    pub(crate) async fn send_udp(&mut self, out: Vec<peerweb_peer::Transmit>) {
        let mut buf = Vec::new();
        let mut i = 0;
        while i < out.len() {
            let t = &out[i];
            let Some(s) = self.socks.get(&t.source).cloned() else {
                i += 1;
                continue;
            };
            let size = t.contents.len();
            let max = s.max_segments().min(MAX_SEGMENTS);
            let mut j = i + 1;
            while j < out.len()
                && j - i < max
                && out[j].source == t.source
                && out[j].destination == t.destination
                && out[j].contents.len() <= size
            {
                j += 1;
                if out[j - 1].contents.len() < size {
                    break;
                }
            }
            if j - i == 1 {
                s.send(t.destination, &t.contents, None).await;
            } else {
                buf.clear();
                for x in &out[i..j] {
                    buf.extend_from_slice(&x.contents);
                }
                s.send(t.destination, &buf, Some(size)).await;
            }
            i = j;
        }
    }

    pub(crate) async fn transmit(&mut self, t: peerweb_peer::Transmit) {
        if let Some(s) = self.socks.get(&t.source) {
            s.send_to(&t.contents, t.destination).await;
            return;
        }
        if let Some(turn) = self
            .turns
            .iter_mut()
            .find(|turn| turn.relayed == Some(t.source))
        {
            turn.client.send_to(now(), t.destination, &t.contents);
            turn.flush().await;
        }
    }

    pub(crate) fn deadline(&self) -> Instant {
        let now = now();
        let mut t = Instant::from_std(self.client.next_timeout(now));
        for q in &self.stun {
            t = t.min(q.next);
        }
        for turn in &self.turns {
            if let Some(x) = turn.client.poll_timeout() {
                t = t.min(Instant::from_std(x));
            }
        }
        if let Some(r) = self.reconnect_at {
            t = t.min(r);
        }
        if let Some(d) = &self.deferred_tls {
            t = t.min(d.at);
        }
        if let Some((_, at)) = &self.held_relay {
            t = t.min(*at);
        }
        if let Some(at) = self.realloc_at {
            t = t.min(at);
        }
        t
    }

    /// A peer's path went down: check whether our own addresses changed under us (a NAT
    /// that dropped its mappings gives a new server-reflexive address and strands our TURN
    /// allocations, whose refresh then fails and has them replaced).
    pub(crate) fn recheck(&mut self) {
        let t = Instant::now();
        if self.rechecked_at.is_some_and(|at| t < at + RECHECK_EVERY) {
            return;
        }
        self.rechecked_at = Some(t);
        if let Some(server) = self.stun_server
            && self.stun.is_empty()
        {
            self.start_stun(server);
        }
        for turn in &mut self.turns {
            turn.client.refresh_now(now());
        }
    }

    /// A TURN allocation we offered is gone: no peer may use it any more, and a new one is
    /// made with fresh credentials.
    pub(crate) fn lost_relay(&mut self, relayed: SocketAddr) {
        if let Ok(c) = Candidate::relayed(relayed, relayed, "udp") {
            if self.held_relay.as_ref().is_some_and(|(h, _)| *h == c) {
                self.held_relay = None;
            } else {
                self.client.remove_local_candidate(now(), &c);
            }
        }
        if self.realloc_at.is_none() {
            self.realloc_at = Some(Instant::now() + self.realloc_wait);
            self.realloc_wait = (self.realloc_wait * 2).clamp(REALLOC_BACKOFF.0, REALLOC_BACKOFF.1);
        }
    }

    /// Asks the server for ICE servers (fresh TURN credentials); [`Driver::on_ice`] follows.
    pub(crate) fn fetch_ice(&mut self) {
        let (tx, rx) = oneshot::channel();
        // A swarm member gets relays only where the server allows them for swarms.
        let purpose = if self.client.in_swarm() {
            "?for=swarm"
        } else {
            ""
        };
        let url = format!("{}/api/ice{purpose}", self.urls.http);
        let agent = self.trust.agent.clone();
        let bearer = self.urls.token.as_ref().map(|t| format!("Bearer {t}"));
        tokio::task::spawn_blocking(move || {
            let mut req = agent.get(&url);
            if let Some(b) = bearer {
                req = req.header("Authorization", b);
            }
            let r = req
                .call()
                .and_then(|mut r| r.body_mut().read_json::<IceConfig>());
            let _ =
                tx.send(r.map_err(|e| certificate_problem(&e).unwrap_or_else(|| e.to_string())));
        });
        self.ice_rx = Some(rx);
    }

    /// Offers the held TCP relayed candidate once UDP had its time (or gave up) without one.
    pub(crate) fn maybe_release_relay(&mut self) {
        let Some((_, at)) = &self.held_relay else {
            return;
        };
        let mut udp = self.turns.iter().filter(|t| t.kind == "udp");
        if udp.clone().any(|t| t.relayed.is_some()) {
            self.held_relay = None;
            return;
        }
        let udp_failed = udp.all(|t| t.client.is_failed());
        if (Instant::now() >= *at || udp_failed)
            && let Some((c, _)) = self.held_relay.take()
        {
            self.client.add_local_candidate(now(), c);
        }
    }

    /// Starts TURN over TLS once UDP and TCP have had their chance without an allocation.
    pub(crate) fn maybe_start_tls(&mut self) {
        let Some(d) = &self.deferred_tls else {
            return;
        };
        if self.turns.iter().any(|t| t.relayed.is_some()) {
            self.deferred_tls = None;
            return;
        }
        let all_failed = self.turns.iter().all(|t| t.client.is_failed());
        if (Instant::now() >= d.at || all_failed)
            && let Some(d) = self.deferred_tls.take()
        {
            self.start_turn("tls", d.server, &d.host, &d.user, &d.pass);
        }
    }

    pub(crate) fn on_timeout(&mut self) {
        if self.realloc_at.is_some_and(|at| Instant::now() >= at) && self.ice_rx.is_none() {
            self.realloc_at = None;
            // Failed allocations go (those that never worked are tried again too: the
            // network may have changed) and every transport missing is allocated anew.
            self.turns.retain(|t| !t.client.is_failed());
            self.deferred_tls = None;
            self.fetch_ice();
        }
        self.maybe_start_tls();
        self.maybe_release_relay();
        let t = now();
        self.client.handle_timeout(t);
        for turn in &mut self.turns {
            turn.client.handle_timeout(t);
        }
        let tnow = Instant::now();
        let mut resend = Vec::new();
        self.stun.retain_mut(|q| {
            if tnow < q.next {
                return true;
            }
            if q.sends >= STUN_SENDS {
                return false;
            }
            q.sends += 1;
            q.next = tnow + Duration::from_millis(250 << q.sends);
            resend.push((q.local, q.server, q.req.clone()));
            true
        });
        for (local, server, req) in resend {
            if let Some(s) = self.socks.get(&local) {
                s.try_send_to(&req, server);
            }
        }
        if self.reconnect_at.is_some_and(|r| tnow >= r) && self.ws_conn.is_none() {
            self.reconnect_at = None;
            let (tx, rx) = oneshot::channel();
            let url = self.urls.ws_url(self.client.url_frames().as_deref());
            let trust = self.trust.clone();
            tokio::spawn(async move {
                let _ = tx.send(connect_ws(&url, &trust).await);
            });
            self.ws_conn = Some(rx);
        }
    }

    pub(crate) fn on_datagram(&mut self, d: Datagram) {
        let t = now();
        let idx = match d.turn {
            Some(id) => self.turns.iter().position(|x| x.id == id),
            None => self
                .turns
                .iter()
                .position(|x| x.local == Some(d.local) && x.client.server() == d.from),
        };
        if let Some(turn) = idx.and_then(|i| self.turns.get_mut(i)) {
            let relayed = turn.relayed;
            if let (Some(relayed), Some((peer, data))) =
                (relayed, turn.client.handle_input(t, &d.data))
            {
                self.client
                    .handle_receive(t, Protocol::Udp, peer, relayed, data);
            }
            return;
        }
        if let Some(i) = self
            .stun
            .iter()
            .position(|q| q.local == d.local && q.server == d.from)
            && let Ok(m) = Message::parse(&d.data)
            && m.tid == self.stun[i].tid
        {
            let q = self.stun.swap_remove(i);
            if m.class == Class::Success
                && let Some(mapped) = m.xor_address(attr::XOR_MAPPED_ADDRESS)
                && mapped != q.local
                && let Ok(c) = Candidate::server_reflexive(mapped, q.local, "udp")
            {
                // Our public address changed (a NAT that dropped its mappings, a new
                // uplink): the old one is gone.
                if let Some(old) = self.srflx.insert(q.local, c.clone())
                    && old != c
                {
                    self.client.remove_local_candidate(t, &old);
                }
                self.client.add_local_candidate(t, c);
            }
            return;
        }
        self.client
            .handle_receive(t, Protocol::Udp, d.from, d.local, &d.data);
    }

    pub(crate) fn on_ws(
        &mut self,
        frame: Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>,
    ) {
        match frame {
            Some(Ok(WsMessage::Text(text))) => self.client.handle_frame(now(), text.as_str()),
            Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => self.lost_ws(),
            Some(Ok(_)) => {}
        }
    }

    pub(crate) fn lost_ws(&mut self) {
        if self.ws.take().is_some() {
            self.client.signaling_lost(now());
            self.reconnect_at = Some(Instant::now() + self.backoff);
        }
    }

    /// A WebSocket is open; `taken`: its server took the frames in its URL.
    fn connected(&mut self, ws: Ws, taken: bool) {
        self.ws = Some(ws);
        if taken {
            self.client.signaling_connected_with_url_frames(now());
        } else {
            self.client.signaling_connected(now());
        }
    }

    pub(crate) fn on_reconnected(&mut self, conn: Result<(Ws, bool), Error>) {
        self.ws_conn = None;
        match conn {
            Ok((ws, taken)) => {
                self.connected(ws, taken);
                self.backoff = BACKOFF_MIN;
            }
            Err(e) => {
                tracing::debug!("signaling reconnect: {e}");
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                self.reconnect_at = Some(Instant::now() + self.backoff);
            }
        }
    }

    pub(crate) async fn on_ice(
        &mut self,
        ice: Result<Result<IceConfig, String>, oneshot::error::RecvError>,
    ) {
        let cfg = match ice {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let _ = self
                    .events
                    .send(Event::Error {
                        code: "ice-servers".into(),
                        message: format!("cannot fetch ICE servers: {e}; host candidates only"),
                    })
                    .await;
                return;
            }
            Err(_) => return,
        };
        for server in &cfg.ice_servers {
            for url in &server.urls {
                if self.opts.stun && url.starts_with("stun:") && self.stun.is_empty() {
                    if let Some(addr) = resolve(url).await {
                        self.stun_server = Some(addr);
                        self.start_stun(addr);
                    }
                    continue;
                }
                let (Some(u), Some(p)) = (&server.username, &server.credential) else {
                    continue;
                };
                // Like a browser: an allocation on every transport offered, so a network
                // that blocks UDP (or all but TLS) still gets a relayed candidate.
                let kind = if url.starts_with("turns:") {
                    "tls"
                } else if url.starts_with("turn:") && url.contains("transport=tcp") {
                    "tcp"
                } else if url.starts_with("turn:") {
                    "udp"
                } else {
                    continue;
                };
                if !self.opts.turn
                    || self.turns.iter().any(|t| t.kind == kind)
                    || (kind == "tls" && self.deferred_tls.is_some())
                {
                    continue;
                }
                if let Some(addr) = resolve(url).await {
                    let host = url_host(url).unwrap_or_default().to_owned();
                    if kind == "tls" {
                        // The last resort (it costs a TLS handshake and an allocation):
                        // only when UDP and TCP did not give one in time.
                        self.deferred_tls = Some(DeferredTls {
                            server: addr,
                            host,
                            user: u.clone(),
                            pass: p.clone(),
                            at: Instant::now() + TLS_AFTER,
                        });
                    } else {
                        self.start_turn(kind, addr, &host, u, p);
                    }
                }
            }
        }
    }

    pub(crate) fn start_stun(&mut self, server: SocketAddr) {
        let locals: Vec<SocketAddr> = self
            .socks
            .keys()
            .filter(|a| !a.ip().is_loopback() && a.is_ipv4() == server.is_ipv4())
            .copied()
            .collect();
        for local in locals {
            self.tid += 1;
            let mut tid = [0u8; 12];
            tid[..8].copy_from_slice(&self.tid.to_be_bytes());
            tid[8..].copy_from_slice(b"pwsb");
            let req = Builder::new(Class::Request, method::BINDING, &tid).fingerprint();
            if let Some(s) = self.socks.get(&local) {
                s.try_send_to(&req, server);
            }
            self.stun.push(StunQuery {
                tid,
                local,
                server,
                req,
                sends: 1,
                next: Instant::now() + Duration::from_millis(250),
            });
        }
    }

    pub(crate) fn start_turn(
        &mut self,
        kind: &'static str,
        server: SocketAddr,
        host: &str,
        user: &str,
        pass: &str,
    ) {
        let id = self.next_turn_id;
        self.next_turn_id += 1;
        let seed = (id as u64) << 48 | u64::from(std::process::id());
        let (link, local, reader, transport) = if kind == "udp" {
            let bind = if server.is_ipv4() {
                SocketAddr::from(([0, 0, 0, 0], 0))
            } else {
                SocketAddr::from(([0u16; 8], 0))
            };
            let Ok(sock) = bind_udp(bind) else {
                return;
            };
            let sock = Arc::new(sock);
            let Ok(local) = sock.local_addr() else {
                return;
            };
            let reader = spawn_reader(sock.clone(), local, self.net_tx.clone());
            (Link::Udp(sock), Some(local), Some(reader), Transport::Udp)
        } else {
            let tls = (kind == "tls").then(|| (self.trust.tls.clone(), host.to_owned()));
            let tx = spawn_stream(id, server, tls, self.net_tx.clone());
            (Link::Stream(tx), None, None, Transport::Stream)
        };
        let client = TurnClient::new(now(), server, transport, user, pass, seed);
        self.turns.push(Turn {
            id,
            client,
            reader,
            link,
            local,
            relayed: None,
            kind,
        });
    }

    pub(crate) fn on_cmd(&mut self, c: Cmd) {
        let t = now();
        match c {
            Cmd::Send {
                peer,
                label,
                binary,
                data,
                reply,
            } => {
                // Keep order: behind anything already waiting for the same channel.
                let waiting = self
                    .blocked
                    .iter()
                    .any(|b| b.peer == peer && b.label == label);
                if waiting {
                    self.blocked.push_back(Blocked {
                        peer,
                        label,
                        binary,
                        data,
                        reply,
                    });
                    return;
                }
                match self.client.send(t, &peer, label.as_deref(), binary, &data) {
                    Ok(true) => {
                        let _ = reply.send(Ok(()));
                    }
                    Ok(false) => self.blocked.push_back(Blocked {
                        peer,
                        label,
                        binary,
                        data,
                        reply,
                    }),
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Cmd::Open {
                peer,
                label,
                opts,
                reply,
            } => {
                let r = self.client.open_channel(t, &peer, &label, opts);
                let _ = reply.send(r.map_err(Into::into));
            }
            Cmd::Status(reply) => {
                let ids: Vec<String> = self.client.peers().map(str::to_owned).collect();
                let list = ids
                    .into_iter()
                    .map(|id| PeerStatus {
                        state: self.client.peer_state(&id).unwrap_or(PeerState::Closed),
                        open: self.client.is_open(&id),
                        path: self.client.path(&id),
                        id,
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Cmd::Fingerprints(peer, reply) => {
                let _ = reply.send(self.client.fingerprints(&peer));
            }
            Cmd::Buffered(peer, label, reply) => {
                let _ = reply.send(self.client.buffered(&peer, label.as_deref()));
            }
            Cmd::Media {
                video,
                rtp_time,
                data,
            } => {
                self.client.write_media(t, video, rtp_time, &data);
            }
            Cmd::Sending(peer, reply) => {
                let _ = reply.send(self.client.sending(&peer));
            }
            Cmd::H264Profile(layer, p) => self.client.set_h264_profile(layer, p),
            Cmd::Layer {
                layer,
                rtp_time,
                data,
            } => {
                self.client.write_layer(t, layer, rtp_time, &data);
            }
            Cmd::AudioCodec(c) => self.client.set_audio_codec(c),
            Cmd::Swarm(c) => self.client.swarm(t, c),
            Cmd::SetLayer(peer, layer) => {
                self.client.set_layer(&peer, layer);
            }
            Cmd::Bitrate(peer, min, desired) => {
                self.client.set_bitrate(&peer, min, desired);
            }
            Cmd::MediaTo {
                peer,
                video,
                rtp_time,
                data,
            } => {
                self.client.write_media_to(t, &peer, video, rtp_time, &data);
            }
            Cmd::Allow(peer, allow) => {
                self.client.allow_media(&peer, allow);
            }
            Cmd::AllowMedia(peer, allow, reply) => {
                let _ = reply.send(self.client.allow_media(&peer, allow));
            }
            Cmd::SignalApp(peer, data, reply) => {
                let _ = reply.send(self.client.signal_app(&peer, &data).map_err(Error::from));
            }
            Cmd::Leave(_) => {}
        }
    }

    /// Retries waiting sends (of one channel, or all) in order until one does not fit.
    pub(crate) fn retry_blocked(&mut self, only: Option<(String, String)>) {
        let t = now();
        let mut keep = VecDeque::new();
        let mut stuck: Vec<(String, Option<String>)> = Vec::new();
        while let Some(b) = self.blocked.pop_front() {
            let key = (b.peer.clone(), b.label.clone());
            let matches = only.as_ref().is_none_or(|(p, l)| {
                *p == b.peer && b.label.as_deref().unwrap_or(peerweb_peer::DEFAULT_LABEL) == l
            });
            if !matches || stuck.contains(&key) {
                keep.push_back(b);
                continue;
            }
            match self
                .client
                .send(t, &b.peer, b.label.as_deref(), b.binary, &b.data)
            {
                Ok(true) => {
                    let _ = b.reply.send(Ok(()));
                }
                Ok(false) => {
                    stuck.push(key);
                    keep.push_back(b);
                }
                Err(e) => {
                    let _ = b.reply.send(Err(e.into()));
                }
            }
        }
        self.blocked = keep;
    }

    /// Nothing waits for the window and nothing sent is unacknowledged, to any peer.
    pub(crate) fn drained(&mut self) -> bool {
        let ids: Vec<String> = self.client.peers().map(str::to_owned).collect();
        self.blocked.is_empty()
            && ids
                .iter()
                .all(|id| !self.client.is_open(id) || self.client.buffered(id, None) == 0)
    }

    pub(crate) fn fail_blocked(&mut self, peer: &str) {
        let (gone, keep): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.blocked)
            .into_iter()
            .partition(|b| b.peer == peer);
        self.blocked = keep;
        for b in gone {
            let _ = b
                .reply
                .send(Err(Error::Peer(peerweb_peer::Error::PeerGone)));
        }
    }

    pub(crate) async fn leave(&mut self) {
        self.client.leave(now());
        for t in &mut self.turns {
            t.client.close(now());
        }
        let _ = self.flush().await;
        if let Some(mut ws) = self.ws.take() {
            let _ = ws.close(None).await;
        }
    }
}

pub(crate) fn now() -> std::time::Instant {
    std::time::Instant::now()
}
