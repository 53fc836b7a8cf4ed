//! `peerweb serve` over HTTPS with certificate files: pages, signaling and TURN over TLS on
//! one certificate; a new certificate taken on SIGHUP or when the files change, without
//! dropping connections; bad files refused by name; the plain-HTTP redirect; handshakes
//! bounded per address. A throwaway CA signs everything, trusted by these clients only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use peerweb_server::ServerConfig;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A certificate authority for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "peerweb test CA");
        Self {
            cert: p.self_signed(&key).unwrap(),
            key,
        }
    }

    /// A leaf for `names`, valid from `from` to `to` (years).
    fn leaf(&self, names: &[&str], years: (i32, i32)) -> (String, String, CertificateDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        p.not_before = rcgen::date_time_ymd(years.0, 1, 1);
        p.not_after = rcgen::date_time_ymd(years.1, 1, 1);
        let c = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (
            format!("{}{}", c.pem(), self.cert.pem()),
            key.serialize_pem(),
            c.der().clone(),
        )
    }

    fn client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    }
}

/// A temporary folder, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("peerweb-https-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }

    /// Writes the pair as cert.pem/key.pem, replacing (by rename, as certbot does) what is
    /// there.
    fn write(&self, cert: &str, key: &str) -> (PathBuf, PathBuf) {
        for (name, text) in [("cert.pem", cert), ("key.pem", key)] {
            let tmp = self.0.join(format!(".{name}"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, self.0.join(name)).unwrap();
        }
        (self.0.join("cert.pem"), self.0.join("key.pem"))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const YEARS: (i32, i32) = (2020, 2060);

struct Running {
    https: SocketAddr,
    turn_tls: Option<SocketAddr>,
    redirect: Option<SocketAddr>,
}

async fn start(cfg: ServerConfig) -> Running {
    let server = common::bind(cfg).await;
    let r = Running {
        https: server.local_addr(),
        turn_tls: server.turn_tls_addr(),
        redirect: server.redirect_addr(),
    };
    assert!(server.is_https());
    tokio::spawn(server.run(std::future::pending()));
    r
}

fn tls_cfg(cert: &Path, key: &Path) -> ServerConfig {
    ServerConfig {
        tls_cert: Some(cert.to_owned()),
        tls_key: Some(key.to_owned()),
        ..Default::default()
    }
}

/// A running server on a new CA's certificate for `localhost`, its files in a new folder;
/// `dir` is removed when this is dropped.
struct Tls {
    ca: Ca,
    dir: Dir,
    r: Running,
    leaf: CertificateDer<'static>,
}

/// Starts a server on a fresh certificate for `localhost` (files in folder `name`), with
/// `cfg` applied on top of the certificate's configuration.
async fn serve_localhost(name: &str, cfg: impl FnOnce(ServerConfig) -> ServerConfig) -> Tls {
    let ca = Ca::new();
    let dir = Dir::new(name);
    let (cert, key, leaf) = ca.leaf(&["localhost"], YEARS);
    let (c, k) = dir.write(&cert, &key);
    let r = start(cfg(tls_cfg(&c, &k))).await;
    Tls { ca, dir, r, leaf }
}

/// A TLS connection to `addr` as `name`; the certificate it was shown.
async fn handshake(
    client: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    name: &str,
) -> std::io::Result<(
    tokio_rustls::client::TlsStream<TcpStream>,
    CertificateDer<'static>,
)> {
    let tcp = TcpStream::connect(addr).await?;
    let s = tokio_rustls::TlsConnector::from(client.clone())
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await?;
    let leaf = s.get_ref().1.peer_certificates().unwrap()[0].clone();
    Ok((s, leaf))
}

/// `GET path` over HTTPS; the whole response.
async fn https_get(client: &Arc<rustls::ClientConfig>, addr: SocketAddr, path: &str) -> String {
    let (mut s, _) = handshake(client, addr, "localhost").await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

type Wss = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A signaling connection over `wss://`, welcomed.
async fn signaling(client: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> Wss {
    let url = format!("wss://localhost:{}/ws", addr.port());
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        true,
        Some(tokio_tungstenite::Connector::Rustls(client.clone())),
    )
    .await
    .unwrap();
    ws.send(Message::text(r#"{"type":"hello","v":1}"#))
        .await
        .unwrap();
    let welcome = next_text(&mut ws).await;
    assert!(welcome.contains(r#""type":"welcome""#), "{welcome}");
    ws
}

async fn next_text(ws: &mut Wss) -> String {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .unwrap();
        if let Message::Text(t) = m {
            return t.to_string();
        }
    }
}

/// The connection still answers: ping, pong.
async fn still_open(ws: &mut Wss) {
    ws.send(Message::text(r#"{"type":"ping","data":7}"#))
        .await
        .unwrap();
    let pong = next_text(ws).await;
    assert!(pong.contains(r#""type":"pong""#), "{pong}");
}

/// Waits (bounded) until new handshakes are shown `want`.
async fn await_served(
    client: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    want: &CertificateDer<'_>,
) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, got) = handshake(client, addr, "localhost").await.unwrap();
        if &got == want {
            return;
        }
        assert!(Instant::now() < end, "the new certificate was not served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pages_signaling_and_turn_over_tls_share_one_certificate() {
    let t = serve_localhost("one", |c| ServerConfig {
        turn_tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..c
    })
    .await;
    let client = t.ca.client();
    let health = https_get(&client, t.r.https, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let page = https_get(&client, t.r.https, "/sdk/peerweb.js").await;
    assert!(
        page.contains("export async function join"),
        "{}",
        &page[..200]
    );
    let metrics = https_get(&client, t.r.https, "/metrics").await;
    assert!(
        metrics.contains("peerweb_tls_certificate_expiry_seconds 2840140800"),
        "{metrics}"
    );
    let mut ws = signaling(&client, t.r.https).await;
    still_open(&mut ws).await;
    let (_, turn_leaf) = handshake(&client, t.r.turn_tls.unwrap(), "localhost")
        .await
        .unwrap();
    assert_eq!(turn_leaf, t.leaf);
    // Plain HTTP on the HTTPS port gets nothing.
    let mut tcp = TcpStream::connect(t.r.https).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
}

#[tokio::test]
async fn a_new_certificate_is_served_after_sighup_and_live_connections_stay() {
    let t = serve_localhost("hup", |c| ServerConfig {
        // Only the signal can make it reload within this test.
        tls_reload_secs: 3600,
        ..c
    })
    .await;
    let client = t.ca.client();
    let mut ws = signaling(&client, t.r.https).await;
    let (cert2, key2, leaf2) = t.ca.leaf(&["localhost"], (2021, 2061));
    t.dir.write(&cert2, &key2);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    await_served(&client, t.r.https, &leaf2).await;
    still_open(&mut ws).await;
    let metrics = https_get(&client, t.r.https, "/metrics").await;
    assert!(
        metrics.contains("peerweb_tls_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn changed_files_are_taken_without_a_signal_and_a_broken_pair_keeps_the_old_one() {
    let t = serve_localhost("watch", |c| ServerConfig {
        tls_reload_secs: 1,
        ..c
    })
    .await;
    let client = t.ca.client();
    let mut ws = signaling(&client, t.r.https).await;
    let (cert2, key2, leaf2) = t.ca.leaf(&["localhost"], (2021, 2061));
    t.dir.write(&cert2, &key2);
    await_served(&client, t.r.https, &leaf2).await;
    // A key that does not belong to the certificate: refused, the last good pair stays.
    let (cert3, _, _) = t.ca.leaf(&["localhost"], (2022, 2062));
    t.dir.write(&cert3, &key2);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let m = https_get(&client, t.r.https, "/metrics").await;
        if m.contains("peerweb_tls_reloads_total{result=\"error\"} 1") {
            break;
        }
        assert!(Instant::now() < end, "the broken pair was not noticed: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, served) = handshake(&client, t.r.https, "localhost").await.unwrap();
    assert_eq!(served, leaf2);
    still_open(&mut ws).await;
}

#[tokio::test]
async fn bad_certificate_files_are_refused_at_start_by_name() {
    let ca = Ca::new();
    let dir = Dir::new("bad");
    let refused = |cfg: ServerConfig| async move {
        match peerweb_server::Server::bind(ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            turn: false,
            ..cfg
        })
        .await
        {
            Ok(_) => panic!("a bad pair was accepted"),
            Err(e) => e.to_string(),
        }
    };
    let (cert, key, _) = ca.leaf(&["localhost"], YEARS);
    let (c, k) = dir.write(&cert, &key);
    let missing = dir.0.join("missing.pem");
    let e = refused(tls_cfg(&missing, &k)).await;
    assert!(e.contains("missing.pem"), "{e}");
    let e = refused(tls_cfg(&c, &missing)).await;
    assert!(e.contains("missing.pem"), "{e}");
    let (expired, expired_key, _) = ca.leaf(&["localhost"], (2019, 2020));
    let (ce, ke) = (dir.0.join("old.pem"), dir.0.join("old.key"));
    std::fs::write(&ce, expired).unwrap();
    std::fs::write(&ke, &expired_key).unwrap();
    let e = refused(tls_cfg(&ce, &ke)).await;
    assert!(e.contains("old.pem") && e.contains("expired"), "{e}");
    let e = refused(tls_cfg(&c, &ke)).await;
    assert!(e.contains("does not belong"), "{e}");
    std::fs::write(&ke, "not a key").unwrap();
    let e = refused(tls_cfg(&c, &ke)).await;
    assert!(e.contains("old.key"), "{e}");
}

#[tokio::test]
async fn plain_http_redirects_to_https() {
    let t = serve_localhost("redirect", |c| ServerConfig {
        http_redirect_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..c
    })
    .await;
    let resp = common::http_get(t.r.redirect.unwrap(), "peerweb.test", "/receive?x=1").await;
    assert!(resp.starts_with("HTTP/1.1 308"), "{resp}");
    let location = format!(
        "location: https://peerweb.test:{}/receive?x=1",
        t.r.https.port()
    );
    assert!(resp.to_ascii_lowercase().contains(&location), "{resp}");
    // No ACME here: no challenge answers.
    let resp = common::http_get(
        t.r.redirect.unwrap(),
        "peerweb.test",
        "/.well-known/acme-challenge/x",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
}

#[tokio::test]
async fn stalled_handshakes_are_bounded_per_address() {
    let t = serve_localhost("stall", |c| c).await;
    // Connections that never say hello hold their address's slots...
    let mut stalled = Vec::new();
    for _ in 0..peerweb_server::HANDSHAKES_PER_IP {
        stalled.push(TcpStream::connect(t.r.https).await.unwrap());
    }
    // ...so the next one from it is closed at once.
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let mut extra = TcpStream::connect(t.r.https).await.unwrap();
        let mut b = [0u8; 1];
        let closed = matches!(
            tokio::time::timeout(Duration::from_millis(500), extra.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        );
        if closed {
            break;
        }
        assert!(
            Instant::now() < end,
            "an address held more unfinished handshakes than allowed"
        );
    }
    drop(stalled);
    // Once they are gone, the address is served again.
    let client = t.ca.client();
    let end = Instant::now() + Duration::from_secs(5);
    while handshake(&client, t.r.https, "localhost").await.is_err() {
        assert!(Instant::now() < end, "the address stayed refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = https_get(&client, t.r.https, "/metrics").await;
    assert!(
        !metrics.contains("peerweb_tls_handshakes_total{result=\"refused\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_handshake_that_stalls_is_given_up_after_its_time() {
    let t = serve_localhost("timeout", |c| c).await;
    let mut tcp = TcpStream::connect(t.r.https).await.unwrap();
    let t0 = Instant::now();
    let mut b = [0u8; 1];
    let limit = peerweb_server::HANDSHAKE_TIMEOUT + Duration::from_secs(5);
    let read = tokio::time::timeout(limit, tcp.read(&mut b)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "still open after {limit:?}: {read:?}"
    );
    let waited = t0.elapsed();
    assert!(
        waited + Duration::from_millis(500) >= peerweb_server::HANDSHAKE_TIMEOUT,
        "closed after {waited:?}, before the handshake's time was up"
    );
    let metrics = https_get(&t.ca.client(), t.r.https, "/metrics").await;
    assert!(
        metrics.contains("peerweb_tls_handshakes_total{result=\"timeout\"} 1"),
        "{metrics}"
    );
}
