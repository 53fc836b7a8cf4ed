//! The public face of the driver: what a native peer needs to join ([`Options`]), its errors, and [`Node`], the handle the application holds (commands in, events out).

use crate::*;

/// What a native peer needs to join a room.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address of `peerweb serve`: `http://`/`ws://`, or `https://`/`wss://` (TLS, its
    /// certificate checked against Mozilla's roots and [`Options::ca`]).
    pub server: String,
    pub room: String,
    pub settings: Settings,
    /// Offer loopback addresses as host candidates (tests on one machine).
    pub allow_loopback: bool,
    /// Only these interfaces (by name) give host candidates; empty: all.
    pub interfaces: Vec<String>,
    /// These interfaces never do.
    pub deny_interfaces: Vec<String>,
    /// Ask the server's STUN for server-reflexive candidates.
    pub stun: bool,
    /// Allocate relayed candidates on the server's TURN (over UDP, TCP and TLS, as offered).
    pub turn: bool,
    /// Extra CA certificates (PEM) trusted, besides Mozilla's roots, for the server's HTTPS
    /// and for `turns:` (a private CA).
    pub ca: Option<std::path::PathBuf>,
    /// Access token, for servers that require one (`peerweb token` mints them).
    pub token: Option<String>,
}

impl Options {
    pub fn new(server: &str, room: &str) -> Self {
        Options {
            server: server.to_owned(),
            room: room.to_owned(),
            settings: Settings::default(),
            allow_loopback: false,
            interfaces: Vec::new(),
            deny_interfaces: Vec::new(),
            stun: true,
            turn: true,
            ca: None,
            token: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "bad server address {0:?}: expected http://host[:port] or https://host[:port] (or ws://, wss://)"
    )]
    BadUrl(String),
    #[error("cannot use the CA certificates in {path}: {why}")]
    Ca { path: String, why: String },
    #[error("cannot reach the signaling server at {url}: {why}")]
    Connect { url: String, why: String },
    #[error("the server refused to join: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("the server did not confirm the join within {0:?}")]
    JoinTimeout(Duration),
    #[error("no usable network address (use --allow-loopback to include loopback)")]
    NoAddress,
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Peer(#[from] peerweb_peer::Error),
    #[error("the node has stopped")]
    Stopped,
}

/// One remote peer as [`Node::status`] reports it.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub id: String,
    pub state: PeerState,
    pub open: bool,
    pub path: Option<Path>,
}

pub(crate) enum Cmd {
    Send {
        peer: String,
        label: Option<String>,
        binary: bool,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Open {
        peer: String,
        label: String,
        opts: ChannelOptions,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Status(oneshot::Sender<Vec<PeerStatus>>),
    Fingerprints(String, oneshot::Sender<Option<(String, Option<String>)>>),
    Buffered(String, Option<String>, oneshot::Sender<usize>),
    Media {
        video: bool,
        rtp_time: u64,
        data: Arc<[u8]>,
    },
    Sending(String, oneshot::Sender<Vec<(String, &'static str)>>),
    AllowMedia(String, bool, oneshot::Sender<bool>),
    SignalApp(String, String, oneshot::Sender<Result<(), Error>>),
    H264Profile(usize, Option<u16>),
    Layer {
        layer: usize,
        rtp_time: u64,
        data: Arc<[u8]>,
    },
    SetLayer(String, usize),
    AudioCodec(peerweb_peer::AudioCodec),
    Swarm(peerweb_peer::SwarmCmd),
    Bitrate(String, u64, u64),
    MediaTo {
        peer: String,
        video: bool,
        rtp_time: u64,
        data: Arc<[u8]>,
    },
    Allow(String, bool),
    Leave(oneshot::Sender<()>),
}

/// Sends on a [`Node`]'s channels from any task (each send waits for its peer's window, so
/// one task per peer keeps a slow peer from holding up the others).
#[derive(Debug, Clone)]
pub struct SendHandle {
    pub(crate) cmds: mpsc::Sender<Cmd>,
}

impl SendHandle {
    /// As [`Node::send`].
    pub async fn send(
        &self,
        peer: &str,
        label: Option<&str>,
        binary: bool,
        data: Vec<u8>,
    ) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Send {
                peer: peer.to_owned(),
                label: label.map(str::to_owned),
                binary,
                data,
                reply,
            })
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }
}

/// Writes media to every connected peer of a [`Node`], from any task.
#[derive(Debug, Clone)]
pub struct MediaHandle {
    pub(crate) cmds: mpsc::Sender<Cmd>,
}

impl MediaHandle {
    /// One command to the driver, in order with every other; `Err` once the node stopped.
    async fn cmd(&self, c: Cmd) -> Result<(), Error> {
        self.cmds.send(c).await.map_err(|_| Error::Stopped)
    }

    /// One frame to `peer` alone, allowed or not (priming a viewer's decoder); in order with
    /// every other write and [`MediaHandle::allow`].
    pub async fn write_to(
        &self,
        peer: &str,
        video: bool,
        rtp_time: u64,
        data: Arc<[u8]>,
    ) -> Result<(), Error> {
        self.cmd(Cmd::MediaTo {
            peer: peer.to_owned(),
            video,
            rtp_time,
            data,
        })
        .await
    }

    /// As [`Node::allow_media`], in order with this handle's writes.
    pub async fn allow(&self, peer: &str, allow: bool) -> Result<(), Error> {
        self.cmd(Cmd::Allow(peer.to_owned(), allow)).await
    }

    /// The profile of the H.264 of `layer` written from now on (see
    /// [`peerweb_peer::Client::set_h264_profile`]).
    pub async fn set_h264_profile(&self, layer: usize, profile: Option<u16>) -> Result<(), Error> {
        self.cmd(Cmd::H264Profile(layer, profile)).await
    }

    /// One access unit of video layer `layer` to the peers on it (see
    /// [`peerweb_peer::Client::write_layer`]).
    pub async fn write_layer(
        &self,
        layer: usize,
        rtp_time: u64,
        data: Arc<[u8]>,
    ) -> Result<(), Error> {
        self.cmd(Cmd::Layer {
            layer,
            rtp_time,
            data,
        })
        .await
    }

    /// Which layer `peer` gets from now on, in order with this handle's writes (see
    /// [`peerweb_peer::Client::set_layer`]).
    pub async fn set_layer(&self, peer: &str, layer: usize) -> Result<(), Error> {
        self.cmd(Cmd::SetLayer(peer.to_owned(), layer)).await
    }

    /// The codec of the audio written from now on (see
    /// [`peerweb_peer::Client::set_audio_codec`]).
    pub async fn set_audio_codec(&self, codec: peerweb_peer::AudioCodec) -> Result<(), Error> {
        self.cmd(Cmd::AudioCodec(codec)).await
    }

    /// See [`peerweb_peer::Client::set_bitrate`].
    pub async fn set_bitrate(&self, peer: &str, min: u64, desired: u64) -> Result<(), Error> {
        self.cmd(Cmd::Bitrate(peer.to_owned(), min, desired)).await
    }

    /// As [`Node::write_media`]; `Err` once the node stopped.
    pub async fn write(&self, video: bool, rtp_time: u64, data: Arc<[u8]>) -> Result<(), Error> {
        self.cmd(Cmd::Media {
            video,
            rtp_time,
            data,
        })
        .await
    }
}

/// A native peer in a room; the driver task runs until [`Node::leave`] or drop.
#[derive(Debug)]
pub struct Node {
    pub(crate) id: String,
    pub(crate) cmds: mpsc::Sender<Cmd>,
    pub(crate) events: mpsc::Receiver<Event>,
    /// Tells the driver how much of each peer's messages the application took, so their
    /// room in the receive window is free again (unbounded: one entry per message taken,
    /// and the messages are bounded by the window).
    pub(crate) read: mpsc::UnboundedSender<(String, usize)>,
    pub(crate) early: VecDeque<Event>,
    pub(crate) task: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Gathers host candidates, connects signaling and joins the room; returns once the
    /// server confirmed the join (the `Welcome` and `Joined` events are still delivered).
    pub async fn join(opts: Options) -> Result<Node, Error> {
        let mut urls = Urls::parse(&opts.server)?;
        urls.token = opts.token.clone();
        let trust = Trust::load(opts.ca.as_deref())?;
        let socks = bind_host_sockets(&opts)?;
        // While signaling connects (it needs round trips anyway).
        tokio::task::spawn_blocking(peerweb_peer::warm_up);
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (ev_tx, mut ev_rx) = mpsc::channel(4096);
        let (read_tx, read_rx) = mpsc::unbounded_channel();
        let now = Instant::now().into_std();
        // What waits for the application is bounded by the receive window, not by the
        // event queue's length: a message keeps its room until `next_event` hands it over.
        let mut settings = opts.settings.clone();
        settings.hold_messages = true;
        let mut client = Client::new(now, &opts.room, settings);
        for s in &socks {
            let addr = s.local_addr()?;
            if let Ok(c) = Candidate::host(addr, "udp") {
                client.add_local_candidate(now, c);
            }
        }
        // A new session's hello and join ride in the URL: the server answers them with the
        // upgrade, a round trip sooner.
        let ws = connect_ws(&urls.ws_url(client.url_frames().as_deref()), &trust).await?;
        let (net_tx, net_rx) = mpsc::channel(1024);
        let mut by_addr = HashMap::new();
        for s in socks {
            let s = Arc::new(s);
            let local = s.local_addr()?;
            spawn_reader(s.clone(), local, net_tx.clone());
            by_addr.insert(local, s);
        }
        let driver = Driver {
            client,
            urls,
            trust,
            opts,
            socks: by_addr,
            net_tx,
            ws: None,
            ws_conn: None,
            backoff: BACKOFF_MIN,
            reconnect_at: None,
            stun: Vec::new(),
            turns: Vec::new(),
            deferred_tls: None,
            held_relay: None,
            next_turn_id: 0,
            stun_server: None,
            srflx: HashMap::new(),
            ice_rx: None,
            rechecked_at: None,
            realloc_at: None,
            realloc_wait: Duration::ZERO,
            blocked: VecDeque::new(),
            leaving: None,
            events: ev_tx,
            tid: 0,
        };
        let task = tokio::spawn(driver.run(ws, cmd_rx, net_rx, read_rx));
        // Wait for the join to be confirmed (or refused).
        let mut early = VecDeque::new();
        let mut id = String::new();
        let deadline = Instant::now() + JOIN_TIMEOUT;
        loop {
            let ev = tokio::time::timeout_at(deadline, ev_rx.recv())
                .await
                .map_err(|_| Error::JoinTimeout(JOIN_TIMEOUT))?
                .ok_or(Error::Stopped)?;
            match &ev {
                Event::Welcome { id: me, .. } => id = me.clone(),
                Event::Error { code, message }
                    if matches!(
                        code.as_str(),
                        "room-full"
                            | "too-many-rooms"
                            | "invalid-room"
                            | "server-full"
                            | "unauthorized"
                            | "forbidden"
                    ) =>
                {
                    task.abort();
                    return Err(Error::Refused {
                        code: code.clone(),
                        message: message.clone(),
                    });
                }
                _ => {}
            }
            let joined = matches!(ev, Event::Joined { .. });
            early.push_back(ev);
            if joined {
                break;
            }
        }
        Ok(Node {
            id,
            cmds: cmd_tx,
            events: ev_rx,
            read: read_tx,
            early,
            task: Some(task),
        })
    }

    /// Our peer id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next event; `None` once the driver stopped.
    pub async fn next_event(&mut self) -> Option<Event> {
        if let Some(e) = self.early.pop_front() {
            return Some(e);
        }
        let e = self.events.recv().await;
        if let Some(Event::Message { peer, data, .. }) = &e {
            let _ = self.read.send((peer.clone(), data.len()));
        }
        e
    }

    /// Sends `data` on the default channel (`label` `None`) or a named one. Waits while the
    /// peer's send window is full: this is the backpressure.
    pub async fn send(
        &self,
        peer: &str,
        label: Option<&str>,
        binary: bool,
        data: Vec<u8>,
    ) -> Result<(), Error> {
        self.send_handle().send(peer, label, binary, data).await
    }

    /// A handle that sends from other tasks.
    pub fn send_handle(&self) -> SendHandle {
        SendHandle {
            cmds: self.cmds.clone(),
        }
    }

    /// Opens a named channel to `peer` (the remote sees it as a new data channel).
    pub async fn open_channel(
        &self,
        peer: &str,
        label: &str,
        opts: ChannelOptions,
    ) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.cmd(Cmd::Open {
            peer: peer.to_owned(),
            label: label.to_owned(),
            opts,
            reply,
        })
        .await?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Every known peer with its state and path.
    pub async fn status(&self) -> Result<Vec<PeerStatus>, Error> {
        let (reply, rx) = oneshot::channel();
        self.cmd(Cmd::Status(reply)).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// DTLS fingerprints (ours, theirs) of the connection to `peer`.
    pub async fn fingerprints(
        &self,
        peer: &str,
    ) -> Result<Option<(String, Option<String>)>, Error> {
        let (reply, rx) = oneshot::channel();
        self.cmd(Cmd::Fingerprints(peer.to_owned(), reply)).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Bytes not yet acknowledged on a channel to `peer`.
    pub async fn buffered(&self, peer: &str, label: Option<&str>) -> Result<usize, Error> {
        let (reply, rx) = oneshot::channel();
        self.cmd(Cmd::Buffered(
            peer.to_owned(),
            label.map(str::to_owned),
            reply,
        ))
        .await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// In a call ([`peerweb_peer::Settings::media`]): one frame to every connected peer —
    /// an H.264 access unit (Annex B) at a 90 kHz `rtp_time`, or an Opus packet at 48 kHz.
    pub async fn write_media(
        &self,
        video: bool,
        rtp_time: u64,
        data: Arc<[u8]>,
    ) -> Result<(), Error> {
        self.cmd(Cmd::Media {
            video,
            rtp_time,
            data,
        })
        .await
    }

    /// A handle that writes media from another task (a paced file source).
    pub fn media_handle(&self) -> MediaHandle {
        MediaHandle {
            cmds: self.cmds.clone(),
        }
    }

    /// Our sending media lines to `peer`: (mid, label), for the call state.
    pub async fn sending(&self, peer: &str) -> Result<Vec<(String, &'static str)>, Error> {
        let (reply, rx) = oneshot::channel();
        self.cmd(Cmd::Sending(peer.to_owned(), reply)).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// With [`peerweb_peer::Settings::gate_media`]: whether media goes to `peer` from now on;
    /// false if there is no such peer.
    pub async fn allow_media(&self, peer: &str, allow: bool) -> Result<bool, Error> {
        let (reply, rx) = oneshot::channel();
        self.cmd(Cmd::AllowMedia(peer.to_owned(), allow, reply))
            .await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// An application's signal to `peer` through the server (see
    /// [`peerweb_peer::Client::signal_app`]); it arrives as an `AppSignal` event.
    pub async fn signal_app(&self, peer: &str, data: &str) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.cmd(Cmd::SignalApp(peer.to_owned(), data.to_owned(), reply))
            .await?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// In a swarm ([`peerweb_peer::Settings::swarm`]): become a seed, ask for more
    /// neighbours, or report and drop a neighbour that sent a bad group.
    pub async fn swarm(&self, cmd: peerweb_peer::SwarmCmd) -> Result<(), Error> {
        self.cmd(Cmd::Swarm(cmd)).await
    }

    /// Leaves the room once what was sent is acknowledged (at most 10 s), so nothing accepted
    /// by [`Node::send`] is lost; others see peer-left at once; releases the TURN allocation
    /// and stops the driver.
    pub async fn leave(mut self) {
        let (reply, rx) = oneshot::channel();
        if self.cmd(Cmd::Leave(reply)).await.is_ok() {
            let _ = tokio::time::timeout(LEAVE_DRAIN + Duration::from_secs(2), rx).await;
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    pub(crate) async fn cmd(&self, c: Cmd) -> Result<(), Error> {
        self.cmds.send(c).await.map_err(|_| Error::Stopped)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Makes a panic anywhere in the process — in a tokio task too, which would otherwise end
/// alone while the rest waits for it forever — end the process: the panic's message, a line
/// saying it is a bug, and exit code 101 (what an uncaught panic in `main` gives). For
/// binaries; call it first thing in `main`.
pub fn exit_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!(
            "peerweb: internal error (a bug, please report it with the message above); exiting"
        );
        std::process::exit(101);
    }));
}
