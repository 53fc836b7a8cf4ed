//! The built-in STUN/TURN server over real UDP sockets on loopback: credentials from
//! `/api/ice`, allocation, permissions, channels, data both ways, refusals, live metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

mod common;

use peerweb_server::ServerConfig;
use peerweb_turn::stun::{Builder, Class, Message, attr, channel_data, method};
use peerweb_turn::{long_term_key, rest_password};
use tokio::net::{TcpStream, UdpSocket};

struct Running {
    http: SocketAddr,
    turn: SocketAddr,
}

async fn start(cfg: ServerConfig) -> Running {
    let server = common::bind(cfg).await;
    let r = Running {
        http: server.local_addr(),
        turn: server.turn_addr().unwrap(),
    };
    tokio::spawn(server.run(std::future::pending()));
    r
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    common::http_get(addr, "turn.test:8080", path).await
}

/// (username, password) of the TURN entry `/api/ice` hands out, after checking its URLs.
async fn ice_credentials(r: &Running) -> (String, String) {
    let body = http_get(r.http, "/api/ice").await;
    let json = &body[body.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let servers = v["iceServers"].as_array().unwrap();
    let port = r.turn.port();
    assert_eq!(servers[0]["urls"][0], format!("stun:turn.test:{port}"));
    assert_eq!(
        servers[1]["urls"][0],
        format!("turn:turn.test:{port}?transport=udp")
    );
    let user = servers[1]["username"].as_str().unwrap().to_owned();
    // `ttl` says how long the credentials last: the username's expiry is that far ahead.
    let ttl = v["ttl"].as_u64().expect("ttl in /api/ice");
    let expiry: u64 = user.split(':').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        ttl > 0 && expiry.abs_diff(now + ttl) <= 5,
        "ttl {ttl}, {user}"
    );
    (user, servers[1]["credential"].as_str().unwrap().to_owned())
}

struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    user: String,
    pass: String,
    realm: String,
    nonce: String,
    tid: u8,
}

impl Client {
    async fn new(server: SocketAddr, user: String, pass: String) -> Self {
        Self {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
            user,
            pass,
            realm: String::new(),
            nonce: String::new(),
            tid: 0,
        }
    }

    async fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let (n, _) = tokio::time::timeout(Duration::from_secs(3), self.sock.recv_from(&mut buf))
            .await
            .expect("no answer from the TURN server")
            .unwrap();
        buf.truncate(n);
        buf
    }

    /// Sends a request (authenticated once realm and nonce are known); returns the answer.
    async fn ask(&mut self, m: u16, extra: impl FnOnce(&mut Builder)) -> Vec<u8> {
        self.tid += 1;
        let mut b = Builder::new(Class::Request, m, &[self.tid; 12]);
        extra(&mut b);
        if !self.nonce.is_empty() {
            b.attr(attr::USERNAME, self.user.as_bytes())
                .attr(attr::REALM, self.realm.as_bytes())
                .attr(attr::NONCE, self.nonce.as_bytes())
                .integrity(&long_term_key(&self.user, &self.realm, &self.pass));
        }
        self.sock
            .send_to(&b.fingerprint(), self.server)
            .await
            .unwrap();
        self.recv().await
    }

    /// The 401 dance, then Allocate; the relayed address or the error code.
    async fn allocate(&mut self) -> Result<SocketAddr, u16> {
        let transport = |b: &mut Builder| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        };
        let r = self.ask(method::ALLOCATE, transport).await;
        assert_eq!(code(&r), Some(401));
        let m = Message::parse(&r).unwrap();
        self.realm = m.text(attr::REALM).unwrap().to_owned();
        self.nonce = m.text(attr::NONCE).unwrap().to_owned();
        let r = self.ask(method::ALLOCATE, transport).await;
        match code(&r) {
            Some(c) => Err(c),
            None => Ok(Message::parse(&r)
                .unwrap()
                .xor_address(attr::XOR_RELAYED_ADDRESS)
                .unwrap()),
        }
    }
}

fn code(raw: &[u8]) -> Option<u16> {
    let v = Message::parse(raw).unwrap().get(attr::ERROR_CODE)?;
    Some(u16::from(v[2]) * 100 + u16::from(v[3]))
}

async fn recv_from(sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .expect("nothing arrived")
        .unwrap();
    buf.truncate(n);
    (buf, from)
}

async fn metric(r: &Running, name: &str) -> u64 {
    let body = http_get(r.http, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

#[tokio::test]
async fn relays_both_ways_with_credentials_from_api_ice() {
    let r = start(ServerConfig {
        turn_allow_loopback_peers: true,
        ..Default::default()
    })
    .await;
    let (user, pass) = ice_credentials(&r).await;
    let mut c = Client::new(r.turn, user, pass).await;
    let relay = c.allocate().await.unwrap();
    assert_eq!(relay.ip(), r.turn.ip());

    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let permit = c
        .ask(method::CREATE_PERMISSION, |b| {
            b.xor_address(attr::XOR_PEER_ADDRESS, peer_addr);
        })
        .await;
    assert_eq!(code(&permit), None);

    // Send indication out, Data indication back.
    let mut b = Builder::new(Class::Indication, method::SEND, &[99; 12]);
    b.xor_address(attr::XOR_PEER_ADDRESS, peer_addr)
        .attr(attr::DATA, b"out through the relay");
    c.sock.send_to(&b.fingerprint(), r.turn).await.unwrap();
    let (data, from) = recv_from(&peer).await;
    assert_eq!((&data[..], from), (&b"out through the relay"[..], relay));
    peer.send_to(b"and back", relay).await.unwrap();
    let back = c.recv().await;
    let m = Message::parse(&back).unwrap();
    assert_eq!((m.class, m.method), (Class::Indication, method::DATA));
    assert_eq!(m.get(attr::DATA), Some(&b"and back"[..]));
    assert_eq!(m.xor_address(attr::XOR_PEER_ADDRESS), Some(peer_addr));

    // A channel: ChannelData both ways.
    let bind = c
        .ask(method::CHANNEL_BIND, |b| {
            b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0])
                .xor_address(attr::XOR_PEER_ADDRESS, peer_addr);
        })
        .await;
    assert_eq!(code(&bind), None);
    c.sock
        .send_to(&channel_data::encode(0x4000, b"channel out", false), r.turn)
        .await
        .unwrap();
    assert_eq!(recv_from(&peer).await.0, b"channel out");
    peer.send_to(b"channel back", relay).await.unwrap();
    let back = c.recv().await;
    assert_eq!(
        channel_data::parse(&back),
        Some((0x4000, &b"channel back"[..]))
    );

    // Metrics are live while the allocation is.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(metric(&r, "peerweb_turn_allocations").await, 1);
    assert_eq!(metric(&r, "peerweb_turn_channels").await, 1);
    assert_eq!(
        metric(
            &r,
            "peerweb_turn_relayed_packets_total{direction=\"to_peer\"}"
        )
        .await,
        2
    );
    assert_eq!(
        metric(
            &r,
            "peerweb_turn_relayed_bytes_total{direction=\"to_client\"}"
        )
        .await,
        20
    );

    // Refresh with lifetime 0 ends it: the relay no longer forwards.
    let gone = c
        .ask(method::REFRESH, |b| {
            b.u32(attr::LIFETIME, 0);
        })
        .await;
    assert_eq!(code(&gone), None);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(metric(&r, "peerweb_turn_allocations").await, 0);
}

#[tokio::test]
async fn loopback_peers_are_refused_by_default() {
    let r = start(ServerConfig::default()).await;
    let (user, pass) = ice_credentials(&r).await;
    let mut c = Client::new(r.turn, user, pass).await;
    c.allocate().await.unwrap();
    let permit = c
        .ask(method::CREATE_PERMISSION, |b| {
            b.xor_address(attr::XOR_PEER_ADDRESS, "127.0.0.1:9".parse().unwrap());
        })
        .await;
    assert_eq!(code(&permit), Some(403));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        metric(&r, "peerweb_turn_refusals_total{reason=\"peer_address\"}").await,
        1
    );
}

#[tokio::test]
async fn wrong_or_expired_credentials_get_no_relay() {
    let r = start(ServerConfig {
        turn_secrets: vec!["s3cret".into()],
        ..Default::default()
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = format!("{}:old", now - 10);
    let mut c = Client::new(r.turn, expired.clone(), rest_password(b"s3cret", &expired)).await;
    assert_eq!(c.allocate().await, Err(401));
    let fresh = format!("{}:x", now + 600);
    let mut c = Client::new(r.turn, fresh.clone(), rest_password(b"other", &fresh)).await;
    assert_eq!(c.allocate().await, Err(401));
    // The right secret works: the refusals were about the credentials.
    let mut c = Client::new(r.turn, fresh.clone(), rest_password(b"s3cret", &fresh)).await;
    assert!(c.allocate().await.is_ok());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(metric(&r, "peerweb_turn_auth_failures_total").await, 2);
    assert_eq!(metric(&r, "peerweb_turn_allocations").await, 1);
}

/// The URLs of each entry of `GET path`'s `iceServers`, and whether any has credentials.
async fn ice_urls(r: &Running, path: &str) -> (Vec<Vec<String>>, bool) {
    let body = http_get(r.http, path).await;
    let v: serde_json::Value =
        serde_json::from_str(&body[body.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    let servers = v["iceServers"].as_array().unwrap();
    let urls = servers
        .iter()
        .map(|s| serde_json::from_value(s["urls"].clone()).unwrap())
        .collect();
    (urls, servers.iter().any(|s| s.get("credential").is_some()))
}

#[tokio::test]
async fn swarms_get_relays_only_where_the_operator_allows_them() {
    let extra = peerweb_server::IceServer {
        urls: vec![
            "stun:stun.example:3478".into(),
            "turn:relay.example:3478".into(),
        ],
        username: Some("u".into()),
        credential: Some("p".into()),
    };
    let r = start(ServerConfig {
        ice_servers: vec![extra.clone()],
        ..Default::default()
    })
    .await;
    let port = r.turn.port();
    // Rooms get everything; swarms STUN only, the configured relay's too.
    let (all, creds) = ice_urls(&r, "/api/ice").await;
    assert_eq!(all.len(), 3);
    assert!(creds);
    let (swarm, creds) = ice_urls(&r, "/api/ice?for=swarm").await;
    assert_eq!(
        swarm,
        [
            vec!["stun:stun.example:3478".to_owned()],
            vec![format!("stun:turn.test:{port}")]
        ]
    );
    assert!(!creds, "no credentials with STUN alone");
    // With --swarm-relay, swarms get what rooms get.
    let r = start(ServerConfig {
        ice_servers: vec![extra],
        swarm_relay: true,
        ..Default::default()
    })
    .await;
    let (swarm, creds) = ice_urls(&r, "/api/ice?for=swarm").await;
    assert_eq!(swarm.len(), 3);
    assert!(creds);
}

#[tokio::test]
async fn stun_binding_answers_the_mapped_address() {
    let r = start(ServerConfig::default()).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let req = Builder::new(Class::Request, method::BINDING, &[4; 12]).fingerprint();
    sock.send_to(&req, r.turn).await.unwrap();
    let (resp, _) = recv_from(&sock).await;
    let m = Message::parse(&resp).unwrap();
    assert_eq!(
        m.xor_address(attr::XOR_MAPPED_ADDRESS),
        Some(sock.local_addr().unwrap())
    );
    // Garbage gets no answer and does not stop the server.
    sock.send_to(b"\x00\x01garbage", r.turn).await.unwrap();
    sock.send_to(&req, r.turn).await.unwrap();
    assert!(Message::parse(&recv_from(&sock).await.0).is_ok());
}

/// One STUN message or (padded) ChannelData frame from a TCP/TLS stream.
async fn read_frame<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut head))
        .await
        .expect("no frame")
        .unwrap();
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let rest = if channel_data::is_channel_data(&head) {
        len.div_ceil(4) * 4
    } else {
        16 + len
    };
    let mut frame = head.to_vec();
    frame.resize(4 + rest, 0);
    s.read_exact(&mut frame[4..]).await.unwrap();
    frame
}

/// Allocates over a stream, binds a channel to a UDP peer and relays both ways.
async fn relay_over_stream<S>(mut s: S, user: &str, pass: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let mut plain = Builder::new(Class::Request, method::ALLOCATE, &[1; 12]);
    plain.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    s.write_all(&plain.fingerprint()).await.unwrap();
    let r = read_frame(&mut s).await;
    assert_eq!(code(&r), Some(401));
    let m = Message::parse(&r).unwrap();
    let (realm, nonce) = (
        m.text(attr::REALM).unwrap().to_owned(),
        m.text(attr::NONCE).unwrap().to_owned(),
    );
    let key = long_term_key(user, &realm, pass);
    let mut tid = 1u8;
    let mut ask = |m: u16, extra: &dyn Fn(&mut Builder)| {
        tid += 1;
        let mut b = Builder::new(Class::Request, m, &[tid; 12]);
        extra(&mut b);
        b.attr(attr::USERNAME, user.as_bytes())
            .attr(attr::REALM, realm.as_bytes())
            .attr(attr::NONCE, nonce.as_bytes())
            .integrity(&key);
        b.fingerprint()
    };
    let alloc = ask(method::ALLOCATE, &|b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    s.write_all(&alloc).await.unwrap();
    let r = read_frame(&mut s).await;
    assert_eq!(code(&r), None);
    let relay = Message::parse(&r)
        .unwrap()
        .xor_address(attr::XOR_RELAYED_ADDRESS)
        .unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let bind = ask(method::CHANNEL_BIND, &|b| {
        b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x01, 0, 0])
            .xor_address(attr::XOR_PEER_ADDRESS, peer_addr);
    });
    s.write_all(&bind).await.unwrap();
    assert_eq!(code(&read_frame(&mut s).await), None);
    // Five bytes: ChannelData is padded to eight on a stream.
    s.write_all(&channel_data::encode(0x4001, b"12345", true))
        .await
        .unwrap();
    let (data, from) = recv_from(&peer).await;
    assert_eq!((&data[..], from), (&b"12345"[..], relay));
    peer.send_to(b"abc", relay).await.unwrap();
    let back = read_frame(&mut s).await;
    assert_eq!(back.len(), 8);
    assert_eq!(channel_data::parse(&back), Some((0x4001, &b"abc"[..])));
}

#[tokio::test]
async fn relays_for_a_client_over_tcp() {
    let r = start(ServerConfig {
        turn_allow_loopback_peers: true,
        ..Default::default()
    })
    .await;
    let (user, pass) = ice_credentials(&r).await;
    let tcp = TcpStream::connect(r.turn).await.unwrap();
    relay_over_stream(tcp, &user, &pass).await;
    // The allocation lives as long as the connection: it is gone with it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(metric(&r, "peerweb_turn_allocations").await, 0);
}

#[tokio::test]
async fn relays_for_a_client_over_tls() {
    let dir = std::env::temp_dir().join(format!("peerweb-turn-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["tls.turn.test".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let r = start(ServerConfig {
        turn_allow_loopback_peers: true,
        turn_tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        turn_tls_cert: Some(cert_path),
        turn_tls_key: Some(key_path),
        // The certificate names another host than the one browsers reach HTTP on.
        turn_tls_host: Some("tls.turn.test".into()),
        ..Default::default()
    })
    .await;
    std::fs::remove_dir_all(&dir).unwrap();
    let body = http_get(r.http, "/api/ice").await;
    let tls_port = body
        .split("turns:tls.turn.test:")
        .nth(1)
        .and_then(|s| s.split('?').next())
        .unwrap()
        .to_owned();
    let (user, pass) = ice_credentials(&r).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(format!("127.0.0.1:{tls_port}"))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("tls.turn.test").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    relay_over_stream(tls, &user, &pass).await;
}

#[tokio::test]
async fn a_stream_frame_over_the_limit_closes_the_connection() {
    // (and the server keeps serving others: see the STUN binding afterwards)
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let r = start(ServerConfig::default()).await;
    let mut tcp = TcpStream::connect(r.turn).await.unwrap();
    // A header announcing more than any STUN message can hold: the server closes rather
    // than buffer it.
    tcp.write_all(&[0xff; 64]).await.unwrap();
    let mut one = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut one))
        .await
        .expect("the server should close, not hang");
    assert!(matches!(n, Ok(0) | Err(_)));
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let req = Builder::new(Class::Request, method::BINDING, &[4; 12]).fingerprint();
    sock.send_to(&req, r.turn).await.unwrap();
    assert!(Message::parse(&recv_from(&sock).await.0).is_ok());
}
