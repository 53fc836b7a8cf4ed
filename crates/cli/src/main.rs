//! `peerweb`: the command line. `peerweb serve` runs the server with embedded defaults;
//! configuration comes from an optional TOML file, then `PEERWEB_*` environment variables,
//! then flags, each overriding the one before. `peerweb join` and `peerweb ping` are the
//! native peer (crates/peer, crates/net).

mod call;
mod camera;
mod manifest;
mod peer;
mod swarm;
mod transfer;

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use peerweb_server::{IceServer, Server, ServerConfig};

#[derive(Debug, Parser)]
#[command(
    name = "peerweb",
    version,
    about = "The peer-to-peer web: signaling, SDK and apps in one binary"
)]
struct Cli {
    /// Log filter (tracing syntax, e.g. `info` or `peerweb_server=debug`); logs go to stderr.
    #[arg(long, global = true, env = "PEERWEB_LOG", default_value = "warn")]
    log: String,
    /// Log lines as text for people, or one JSON object each for log collectors.
    #[arg(long, global = true, env = "PEERWEB_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: WebSocket signaling, the browser SDK and the demo app.
    Serve(Box<ServeArgs>),
    /// Join a room as a native WebRTC peer: chat on stdin/stdout with the browsers there.
    Join(peer::JoinArgs),
    /// Join a room and report the path and round-trip time to each peer, once a second.
    /// Exits 1 if no peer connected in time.
    Ping(peer::PingArgs),
    /// Send files and folders privately: prints a code and a link for the receiver.
    /// Exit 3 if the other side could not prove it holds them (wrong code, or a man in the
    /// middle).
    Send(transfer::SendArgs),
    /// Receive files from `peerweb send` (by its code or link) into a folder; run it again
    /// to resume an interrupted transfer.
    Receive(transfer::ReceiveArgs),
    /// Stream a camera (or the test pattern) to the viewers it paired with, through any NAT:
    /// prints a pairing code while it pairs. Nobody unpaired gets a frame.
    Camera(Box<camera::CameraArgs>),
    /// Watch a camera: pair with the code or link it shows, then watch it by name.
    /// Exit 3 if the camera refused or could not prove itself (a wrong code, a revoked
    /// pairing, or a man in the middle).
    Watch(Box<camera::WatchArgs>),
    /// List files in a manifest for verified swarms: each file's BLAKE3 root (its id),
    /// an outboard beside each file above 16 KiB, the manifest signed if --key is given.
    /// `--check MANIFEST` checks files against one (exit 1 if any differs).
    Manifest(manifest::ManifestArgs),
    /// Seed files of a manifest to their swarms (keeps serving until Ctrl-C); prints what
    /// it served.
    Seed(Box<swarm::SeedArgs>),
    /// Fetch a file from its swarm, verified group by group, taking from its origin only
    /// what no neighbour can give; resumable.
    Fetch(Box<swarm::FetchArgs>),
    /// Mint an access token for a server started with --auth-secret (prints it).
    Token(TokenArgs),
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// The server's secret (the first --auth-secret it was given).
    #[arg(long, env = "PEERWEB_AUTH_SECRET", hide_env_values = true)]
    secret: String,
    /// Rooms the token may join: a name, or a prefix ending in `*` (`*`: every room).
    #[arg(long)]
    room: String,
    /// How long it is valid, e.g. 90s, 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: u64,
    /// Who it is for (shows in the server's logs).
    #[arg(long)]
    identity: Option<String>,
    /// No TURN credentials for it (direct connections only).
    #[arg(long)]
    no_relay: bool,
}

/// `90s`, `30m`, `1h`, `7d` or plain seconds.
fn parse_ttl(s: &str) -> Result<u64, String> {
    let (n, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30m or 1h"))?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    match n.checked_mul(mul) {
        Some(0) | None => Err(format!("{s:?} is not a usable lifetime")),
        Some(v) => Ok(v),
    }
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.secret.len() >= peerweb_server::MIN_SECRET_BYTES,
        "the secret must be at least {} bytes, like the server's",
        peerweb_server::MIN_SECRET_BYTES
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let t = peerweb_server::mint_token(
        &args.secret,
        &peerweb_server::Claims {
            room: args.room,
            exp: now + args.ttl,
            sub: args.identity,
            relay: !args.no_relay,
        },
    )
    .context("cannot sign the token")?;
    peer::say(&t)
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML configuration file; its keys are the long flag names with `_` for `-`.
    #[arg(long, short, env = "PEERWEB_CONFIG")]
    config: Option<PathBuf>,
    /// Check the configuration (values, certificate and key files) and exit: 0 if it would
    /// start, 1 with the reason if not.
    #[arg(long)]
    check_config: bool,
    /// HTTP/WebSocket listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "PEERWEB_LISTEN")]
    listen: Option<SocketAddr>,
    /// Certificate chain (PEM) for HTTPS, the signaling WebSocket and TURN over TLS;
    /// re-read on SIGHUP and when it changes.
    #[arg(long, env = "PEERWEB_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `--tls-cert`.
    #[arg(long, env = "PEERWEB_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How often the certificate files are checked for changes, seconds [default: 10].
    #[arg(long, env = "PEERWEB_TLS_RELOAD_SECS")]
    tls_reload_secs: Option<u64>,
    /// Unfinished TLS handshakes one client address may hold [default: 16].
    #[arg(long, env = "PEERWEB_TLS_HANDSHAKES_PER_IP")]
    tls_handshakes_per_ip: Option<usize>,
    /// Plain-HTTP address (e.g. 0.0.0.0:80) that redirects to HTTPS and answers ACME HTTP-01.
    #[arg(long, env = "PEERWEB_HTTP_REDIRECT_LISTEN")]
    http_redirect_listen: Option<SocketAddr>,
    /// Get a certificate for this domain by ACME (repeatable); HTTPS on `--listen`.
    #[arg(
        long = "acme-domain",
        env = "PEERWEB_ACME_DOMAINS",
        value_delimiter = ','
    )]
    acme_domains: Vec<String>,
    /// Contact address for the ACME account (repeatable): expiry notices go there.
    #[arg(long = "acme-email", env = "PEERWEB_ACME_EMAIL", value_delimiter = ',')]
    acme_email: Vec<String>,
    /// ACME directory URL [default: Let's Encrypt].
    #[arg(long, env = "PEERWEB_ACME_DIRECTORY")]
    acme_directory: Option<String>,
    /// Use Let's Encrypt's staging directory (untrusted certificates, generous limits).
    #[arg(long, env = "PEERWEB_ACME_STAGING")]
    acme_staging: bool,
    /// Folder for the ACME account key and certificates [default: peerweb-acme].
    #[arg(long, env = "PEERWEB_ACME_CACHE")]
    acme_cache: Option<PathBuf>,
    /// Trust only this CA (PEM) for the ACME directory's HTTPS (a private ACME server).
    #[arg(long, env = "PEERWEB_ACME_DIRECTORY_CA")]
    acme_directory_ca: Option<PathBuf>,
    /// ACME challenge: tls-alpn-01 (on the HTTPS port) or http-01 (needs
    /// --http-redirect-listen on port 80) [default: tls-alpn-01].
    #[arg(long, env = "PEERWEB_ACME_CHALLENGE", value_parser = ["tls-alpn-01", "http-01"])]
    acme_challenge: Option<String>,
    /// Require access tokens signed with this secret (repeatable, for rotation: the first
    /// signs, all are accepted) for signaling and TURN credentials. At least 32 bytes.
    #[arg(
        long = "auth-secret",
        env = "PEERWEB_AUTH_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    auth_secrets: Vec<String>,
    /// With --auth-secret: a password the bundled pages trade for short-lived tokens (one
    /// room each), so people can use them; 8 characters at least.
    #[arg(long, env = "PEERWEB_PAGE_PASSWORD", hide_env_values = true)]
    page_password: Option<String>,
    /// A reverse proxy's address block (repeatable), e.g. `127.0.0.1/32`: only from there are
    /// `Forwarded`/`X-Forwarded-For` believed, for per-address limits and logs.
    #[arg(
        long = "trusted-proxy",
        env = "PEERWEB_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<String>,
    /// On SIGTERM, seconds to wait for WebSocket clients to go once told to reconnect
    /// [default: 10].
    #[arg(long, env = "PEERWEB_DRAIN_SECS")]
    drain_secs: Option<u64>,
    /// Largest signaling frame in bytes [default: 65536].
    #[arg(long, env = "PEERWEB_MAX_FRAME_BYTES")]
    max_frame_bytes: Option<usize>,
    /// Peers in one room [default: 64].
    #[arg(long, env = "PEERWEB_MAX_PEERS_PER_ROOM")]
    max_peers_per_room: Option<usize>,
    /// Rooms one connection may be in [default: 8].
    #[arg(long, env = "PEERWEB_MAX_ROOMS_PER_CONN")]
    max_rooms_per_conn: Option<usize>,
    /// Rooms on the server [default: 100000].
    #[arg(long, env = "PEERWEB_MAX_ROOMS")]
    max_rooms: Option<usize>,
    /// Swarms one connection may be in [default: 16].
    #[arg(long, env = "PEERWEB_MAX_SWARMS_PER_CONN")]
    max_swarms_per_conn: Option<usize>,
    /// Peers in one swarm (nothing is broadcast to a swarm: each peer costs the server its
    /// few links) [default: 100000].
    #[arg(long, env = "PEERWEB_MAX_PEERS_PER_SWARM")]
    max_peers_per_swarm: Option<usize>,
    /// Swarms on the server [default: 100000].
    #[arg(long, env = "PEERWEB_MAX_SWARMS")]
    max_swarms: Option<usize>,
    /// Connections on the server [default: 50000].
    #[arg(long, env = "PEERWEB_MAX_CONNS")]
    max_conns: Option<usize>,
    /// Connections from one IP address, 0 for no limit [default: 1000].
    #[arg(long, env = "PEERWEB_MAX_CONNS_PER_IP")]
    max_conns_per_ip: Option<usize>,
    /// Sustained messages per second per connection [default: 50].
    #[arg(long, env = "PEERWEB_MAX_MSGS_PER_SEC")]
    max_msgs_per_sec: Option<u32>,
    /// Messages a connection may send in a burst [default: 200].
    #[arg(long, env = "PEERWEB_MSG_BURST")]
    msg_burst: Option<u32>,
    /// Connectivity reports a connection may send per minute, after a burst of twice as
    /// many; more are dropped [default: 60].
    #[arg(long, env = "PEERWEB_MAX_REPORTS_PER_MIN")]
    max_reports_per_min: Option<u32>,
    /// Bytes queued for a slow client before it is dropped [default: 1048576].
    #[arg(long, env = "PEERWEB_MAX_SEND_QUEUE_BYTES")]
    max_send_queue_bytes: Option<usize>,
    /// Seconds without a frame before a connection is closed [default: 60].
    #[arg(long, env = "PEERWEB_IDLE_TIMEOUT_SECS")]
    idle_timeout_secs: Option<u64>,
    /// Seconds a disconnected peer keeps its rooms, to resume [default: 20].
    #[arg(long, env = "PEERWEB_RESUME_GRACE_SECS")]
    resume_grace_secs: Option<u64>,
    /// Extra ICE server URL handed to clients (repeatable), e.g. `stun:stun.example.org:3478`.
    #[arg(long = "ice-url", env = "PEERWEB_ICE_URLS", value_delimiter = ',')]
    ice_urls: Vec<String>,
    /// UDP address of the built-in STUN/TURN server [default: the HTTP IP, port 3478].
    #[arg(long, env = "PEERWEB_TURN_LISTEN")]
    turn_listen: Option<SocketAddr>,
    /// TLS (`turns:`) address for networks that only pass TLS, e.g. `0.0.0.0:5349`; its
    /// certificate is `--tls-cert`'s (or ACME's) unless `--turn-tls-cert` names another.
    #[arg(long, env = "PEERWEB_TURN_TLS_LISTEN")]
    turn_tls_listen: Option<SocketAddr>,
    /// TLS certificate chain (PEM) for `--turn-tls-listen`.
    #[arg(long, env = "PEERWEB_TURN_TLS_CERT")]
    turn_tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for `--turn-tls-listen`.
    #[arg(long, env = "PEERWEB_TURN_TLS_KEY")]
    turn_tls_key: Option<PathBuf>,
    /// Host in `turns:` URLs, the name on the certificate [default: the `turn:` host].
    #[arg(long, env = "PEERWEB_TURN_TLS_HOST")]
    turn_tls_host: Option<String>,
    /// Run without the built-in STUN/TURN server.
    #[arg(long, env = "PEERWEB_NO_TURN")]
    no_turn: bool,
    /// Let swarm members connect through TURN (by default swarms get STUN only: relayed
    /// content costs the relay what it would cost the origin).
    #[arg(long, env = "PEERWEB_SWARM_RELAY")]
    swarm_relay: bool,
    /// Share rooms, sessions and signals with the other nodes on this Redis
    /// (`redis://host:port/db`, `rediss://…`, `redis+unix:///path`) [default: one node].
    #[arg(long, env = "PEERWEB_REDIS", value_name = "URL")]
    redis: Option<String>,
    /// The prefix of this cluster's keys and channels on Redis [default: pw:].
    #[arg(long, env = "PEERWEB_REDIS_PREFIX")]
    redis_prefix: Option<String>,
    /// This node's name in the cluster (unique among the nodes) [default: random].
    #[arg(long, env = "PEERWEB_NODE_NAME")]
    node_name: Option<String>,
    /// Address relay sockets bind to and announce [default: the TURN listen IP].
    #[arg(long, env = "PEERWEB_RELAY_IP")]
    relay_ip: Option<IpAddr>,
    /// Lowest relay port [default: 49152].
    #[arg(long, env = "PEERWEB_RELAY_MIN_PORT")]
    relay_min_port: Option<u16>,
    /// Highest relay port [default: 65535].
    #[arg(long, env = "PEERWEB_RELAY_MAX_PORT")]
    relay_max_port: Option<u16>,
    /// Host name browsers use for STUN/TURN [default: the host they reached /api/ice on].
    #[arg(long, env = "PEERWEB_TURN_HOST")]
    turn_host: Option<String>,
    /// TURN REST secret (repeatable; the first signs, all are accepted) [default: random].
    #[arg(
        long = "turn-secret",
        env = "PEERWEB_TURN_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    turn_secrets: Vec<String>,
    /// TURN realm [default: peerweb].
    #[arg(long, env = "PEERWEB_TURN_REALM")]
    turn_realm: Option<String>,
    /// Lifetime of the TURN credentials /api/ice hands out, seconds [default: 43200].
    #[arg(long, env = "PEERWEB_TURN_CREDENTIAL_TTL_SECS")]
    turn_credential_ttl_secs: Option<u64>,
    /// Relay to loopback peers (tests on one machine only).
    #[arg(long, env = "PEERWEB_TURN_ALLOW_LOOPBACK_PEERS")]
    turn_allow_loopback_peers: bool,
    /// Peer address block always allowed (repeatable), e.g. `10.0.0.0/8`.
    #[arg(
        long = "turn-allowed-peer",
        env = "PEERWEB_TURN_ALLOWED_PEERS",
        value_delimiter = ','
    )]
    turn_allowed_peers: Vec<String>,
    /// Peer address block always refused (repeatable).
    #[arg(
        long = "turn-denied-peer",
        env = "PEERWEB_TURN_DENIED_PEERS",
        value_delimiter = ','
    )]
    turn_denied_peers: Vec<String>,
    /// TURN allocations on the server [default: 10000].
    #[arg(long, env = "PEERWEB_TURN_MAX_ALLOCATIONS")]
    turn_max_allocations: Option<usize>,
    /// TURN allocations per credential; a tab's credential serves all its connections in a
    /// room, up to three allocations each [default: 256].
    #[arg(long, env = "PEERWEB_TURN_MAX_ALLOCATIONS_PER_USER")]
    turn_max_allocations_per_user: Option<usize>,
    /// Bytes per second one allocation may relay, 0 for no cap [default: 12500000].
    #[arg(long, env = "PEERWEB_TURN_BANDWIDTH_PER_ALLOCATION")]
    turn_bandwidth_per_allocation: Option<u64>,
    /// 401 answers per second to one client address, burst 4x [default: 20].
    #[arg(long, env = "PEERWEB_TURN_MAX_CHALLENGES_PER_SEC")]
    turn_max_challenges_per_sec: Option<u32>,
}

macro_rules! overlay {
    ($cfg:ident, $args:ident, $($field:ident),* $(,)?) => {
        $( if let Some(v) = $args.$field { $cfg.$field = v; } )*
    };
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<ServerConfig> {
        let mut cfg = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => ServerConfig::default(),
        };
        let args = self;
        overlay!(
            cfg,
            args,
            listen,
            tls_reload_secs,
            tls_handshakes_per_ip,
            acme_cache,
            drain_secs,
            max_frame_bytes,
            max_peers_per_room,
            max_rooms_per_conn,
            max_rooms,
            max_swarms_per_conn,
            max_peers_per_swarm,
            max_swarms,
            max_conns,
            max_conns_per_ip,
            max_msgs_per_sec,
            msg_burst,
            max_reports_per_min,
            max_send_queue_bytes,
            idle_timeout_secs,
            resume_grace_secs,
            relay_min_port,
            relay_max_port,
            turn_credential_ttl_secs,
            turn_realm,
            turn_max_allocations,
            turn_max_allocations_per_user,
            turn_bandwidth_per_allocation,
            turn_max_challenges_per_sec,
        );
        for (slot, v) in [
            (&mut cfg.tls_cert, args.tls_cert),
            (&mut cfg.tls_key, args.tls_key),
            (&mut cfg.acme_directory_ca, args.acme_directory_ca),
        ] {
            if v.is_some() {
                *slot = v;
            }
        }
        if let Some(p) = args.page_password {
            cfg.page_password = Some(p);
        }
        if let Some(a) = args.http_redirect_listen {
            cfg.http_redirect_listen = Some(a);
        }
        if let Some(d) = args.acme_directory {
            cfg.acme_directory = Some(d);
        }
        if args.acme_staging {
            cfg.acme_staging = true;
        }
        if let Some(c) = args.acme_challenge {
            cfg.acme_challenge = match c.as_str() {
                "http-01" => peerweb_server::AcmeChallenge::Http01,
                _ => peerweb_server::AcmeChallenge::TlsAlpn01,
            };
        }
        if let Some(ip) = args.relay_ip {
            cfg.relay_ip = Some(ip);
        }
        if let Some(h) = args.turn_host {
            cfg.turn_host = Some(h);
        }
        if let Some(l) = args.turn_listen {
            cfg.turn_listen = Some(l);
        }
        if let Some(l) = args.turn_tls_listen {
            cfg.turn_tls_listen = Some(l);
        }
        if let Some(p) = args.turn_tls_cert {
            cfg.turn_tls_cert = Some(p);
        }
        if let Some(p) = args.turn_tls_key {
            cfg.turn_tls_key = Some(p);
        }
        if let Some(h) = args.turn_tls_host {
            cfg.turn_tls_host = Some(h);
        }
        if args.no_turn {
            cfg.turn = false;
        }
        if args.swarm_relay {
            cfg.swarm_relay = true;
        }
        if let Some(u) = args.redis {
            cfg.redis = Some(u);
        }
        if let Some(p) = args.redis_prefix {
            cfg.redis_prefix = p;
        }
        if let Some(n) = args.node_name {
            cfg.node_name = Some(n);
        }
        if args.turn_allow_loopback_peers {
            cfg.turn_allow_loopback_peers = true;
        }
        for (list, from) in [
            (&mut cfg.auth_secrets, args.auth_secrets),
            (&mut cfg.trusted_proxies, args.trusted_proxies),
            (&mut cfg.acme_domains, args.acme_domains),
            (&mut cfg.acme_email, args.acme_email),
            (&mut cfg.turn_secrets, args.turn_secrets),
            (&mut cfg.turn_allowed_peers, args.turn_allowed_peers),
            (&mut cfg.turn_denied_peers, args.turn_denied_peers),
        ] {
            if !from.is_empty() {
                *list = from;
            }
        }
        if !args.ice_urls.is_empty() {
            cfg.ice_servers = args
                .ice_urls
                .into_iter()
                .map(|u| IceServer {
                    urls: vec![u],
                    username: None,
                    credential: None,
                })
                .collect();
        }
        cfg.validate().context("invalid configuration")?;
        Ok(cfg)
    }
}

fn main() -> ExitCode {
    peerweb_net::exit_on_panic();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Join(args) => peer_runtime().and_then(|rt| rt.block_on(peer::join(args))),
        Command::Ping(args) => match peer_runtime().and_then(|rt| rt.block_on(peer::ping(args))) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Send(args) => peer_runtime().and_then(|rt| rt.block_on(transfer::send(args))),
        Command::Receive(args) => {
            peer_runtime().and_then(|rt| rt.block_on(transfer::receive(args)))
        }
        Command::Camera(args) => runtime().and_then(|rt| rt.block_on(camera::camera(*args))),
        Command::Watch(args) => peer_runtime().and_then(|rt| rt.block_on(camera::watch(*args))),
        Command::Manifest(args) => match manifest::manifest(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Seed(args) => peer_runtime().and_then(|rt| rt.block_on(swarm::seed(*args))),
        Command::Fetch(args) => peer_runtime().and_then(|rt| rt.block_on(swarm::fetch(*args))),
        Command::Token(args) => token(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peerweb: {e:#}");
            if e.is::<peerweb_transfer::TrustError>() || peerweb_apps::watch::refused(&e) {
                ExitCode::from(3)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}

/// The runtime of a command that is one peer: one thread. All of a peer's connections live
/// in one driver task; with worker threads the socket reader, the driver and the application
/// wake each other across threads for every batch of datagrams (a loopback transfer ran 1.48x
/// faster on one thread, with less CPU per byte at both ends). Blocking work (disk syncs,
/// questions on the terminal, hashing what is staged) goes to `spawn_blocking`. The camera
/// keeps the worker threads: its RTSP session and its viewers' connections run side by side.
fn peer_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let check_only = args.check_config;
    let cfg = args.into_config()?;
    if check_only {
        cfg.check().context("the configuration would not start")?;
        return peer::say("peerweb serve: configuration OK");
    }
    raise_open_file_limit(cfg.max_conns);
    let rt = runtime()?;
    rt.block_on(async {
        let listen = cfg.listen;
        if cfg.auth_secrets.is_empty() && !listen.ip().is_loopback() {
            eprintln!(
                "peerweb: warning: no --auth-secret: anyone who reaches {listen} may use its \
                 rooms and its TURN relay"
            );
        }
        let server = Server::bind(cfg)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        // A closed stdout (`peerweb serve | head -1`) must not stop the server.
        let mut out = std::io::stdout();
        let scheme = if server.is_https() { "https" } else { "http" };
        let _ = writeln!(
            out,
            "peerweb serve: listening on {scheme}://{}/",
            server.local_addr()
        );
        if let Some(r) = server.redirect_addr() {
            let _ = writeln!(out, "peerweb serve: redirecting http://{r}/ to HTTPS");
        }
        if let Some(turn) = server.turn_addr() {
            let _ = writeln!(out, "peerweb serve: STUN/TURN on udp and tcp {turn}");
        }
        if let Some(tls) = server.turn_tls_addr() {
            let _ = writeln!(out, "peerweb serve: TURN over TLS on {tls}");
        }
        let _ = out.flush();
        // SIGHUP (`systemctl reload`) re-reads certificate files, where there are any; it
        // must never end the server, whose default action for it would.
        #[cfg(unix)]
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: certificate files are read again, if any");
                }
            });
        }
        server.run(shutdown_signal()).await.context("server failed")
    })
}

/// Each connection is a file descriptor: raise the soft limit to the hard one (as most
/// servers do) and say so when even that is below `max_conns`.
fn raise_open_file_limit(max_conns: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < max_conns as u64 + 64 => eprintln!(
            "peerweb: warning: the open-file limit is {limit}, so fewer than max_conns = \
             {max_conns} connections can be accepted"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
