//! `peerweb serve --acme-domain` against a real ACME server: Debian's `pebble` (installed by
//! scripts/test), with `pebble-challtestsrv` as its DNS so that `peerweb.test` is this
//! machine, and real TLS-ALPN-01 and HTTP-01 validation (pebble connects back to the
//! server). First issuance, the certificate cache surviving a restart, a renewal of
//! short-lived certificates, the ACME server going away (the certificate in use stays), and a
//! domain that cannot be validated. Everything listens on loopback; the pebble API's CA is
//! made here, and pebble's own root is trusted by these clients only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};

mod common;

use common::{BIN, Ca, Dir};
const DOMAIN: &str = "peerweb.test";

/// A child process, killed on drop, whose stderr is collected.
struct Proc {
    child: Child,
    err: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/test installs pebble with apt)"));
        let err = Arc::new(Mutex::new(String::new()));
        let (mut pipe, sink) = (child.stderr.take().unwrap(), err.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self { child, err }
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Waits (bounded) until stderr contains `text`.
    fn await_log(&self, text: &str, limit: Duration) {
        let end = Instant::now() + limit;
        while !self.stderr().contains(text) {
            assert!(
                Instant::now() < end,
                "no {text:?} in time; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback TCP port (bound and released: pebble's configuration needs numbers).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// pebble and its DNS, configured to validate on `tls_port` (TLS-ALPN-01) and `http_port`
/// (HTTP-01) of 127.0.0.1, issuing certificates valid for `validity` seconds.
struct Lab {
    dir: Dir,
    /// The DNS server, kept running for the lab's life.
    _dns: Proc,
    dns_admin: u16,
    pebble: Option<Proc>,
    api: u16,
    admin: u16,
    api_ca: PathBuf,
    client: Arc<rustls::ClientConfig>,
    args: Vec<String>,
}

impl Lab {
    fn start(name: &str, tls_port: u16, http_port: u16, validity: u64) -> Self {
        let dir = Dir::new(name);
        // pebble's HTTPS API needs a certificate of its own.
        let ca = Ca::new();
        let (chain, key) = ca.leaf(&["127.0.0.1", "localhost"], (2020, 2060));
        let api_ca = dir.file("api-ca.pem", &ca.cert.pem());
        dir.file("api.pem", &chain);
        dir.file("api.key", &key);
        let (api, admin) = (free_port(), free_port());
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{api}"),
            "managementListenAddress": format!("127.0.0.1:{admin}"),
            "certificate": dir.0.join("api.pem"),
            "privateKey": dir.0.join("api.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "certificateValidityPeriod": validity,
        }});
        std::fs::write(dir.0.join("pebble.json"), config.to_string()).unwrap();
        let (dns_port, dns_admin) = (free_udp_port(), free_port());
        let dns = Proc::spawn(Command::new("pebble-challtestsrv").args([
            "-dns01",
            &format!("127.0.0.1:{dns_port}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{dns_admin}"),
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
        ]));
        let args = vec![
            "-config".to_owned(),
            dir.0.join("pebble.json").display().to_string(),
            "-dnsserver".to_owned(),
            format!("127.0.0.1:{dns_port}"),
            "-strict=false".to_owned(),
        ];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert.der().clone()).unwrap();
        let mut lab = Self {
            dir,
            _dns: dns,
            dns_admin,
            pebble: None,
            api,
            admin,
            api_ca,
            client: client_config(roots),
            args,
        };
        lab.start_pebble();
        lab
    }

    fn start_pebble(&mut self) {
        let pebble = Proc::spawn(
            Command::new("pebble")
                .args(&self.args)
                // Every nonce good, no reused authorizations, no artificial delays.
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0")
                .env("PEBBLE_VA_NOSLEEP", "1"),
        );
        let end = Instant::now() + Duration::from_secs(20);
        while https_get(&self.client, self.api, "localhost", "/dir").is_err() {
            assert!(
                Instant::now() < end,
                "pebble did not come up: {}",
                pebble.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.pebble = Some(pebble);
    }

    fn stop_pebble(&mut self) {
        if let Some(mut p) = self.pebble.take() {
            p.stop();
        }
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.api)
    }

    /// The root pebble signs with (made anew at every start), as a client trust store.
    fn issuer_roots(&self) -> Arc<rustls::ClientConfig> {
        let pem = https_get(&self.client, self.admin, "localhost", "/roots/0").unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes()) {
            let c: CertificateDer<'static> = c.unwrap();
            roots.add(c).unwrap();
        }
        client_config(roots)
    }

    /// Makes the fake DNS answer `host` with `ip`.
    fn dns_a(&self, host: &str, ip: &str) {
        let body = serde_json::json!({"host": format!("{host}."), "addresses": [ip]}).to_string();
        let mut s = TcpStream::connect(("127.0.0.1", self.dns_admin)).unwrap();
        write!(
            s,
            "POST /add-a HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }

    /// `peerweb serve` with ACME against this pebble, HTTPS on `port`.
    fn serve(&self, port: u16, extra: &[&str], cache: &Path) -> Proc {
        Proc::spawn(
            Command::new(BIN)
                .args(["serve", "--log", "info", "--listen"])
                .arg(format!("127.0.0.1:{port}"))
                .args(["--turn-listen", "127.0.0.1:0", "--acme-directory"])
                .arg(self.directory())
                .arg("--acme-directory-ca")
                .arg(&self.api_ca)
                .arg("--acme-cache")
                .arg(cache)
                .args(["--acme-email", "ops@peerweb.test"])
                .args(extra),
        )
    }
}

fn client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
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

/// A verified TLS session to 127.0.0.1:`port` as `name`: the leaf shown.
fn handshake(
    client: &Arc<rustls::ClientConfig>,
    port: u16,
    name: &str,
) -> Result<
    (
        rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
        CertificateDer<'static>,
    ),
    String,
> {
    let mut tcp =
        TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut conn = rustls::ClientConnection::new(
        client.clone(),
        ServerName::try_from(name.to_owned()).unwrap(),
    )
    .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    let leaf = conn.peer_certificates().ok_or("no certificate")?[0].clone();
    Ok((rustls::StreamOwned::new(conn, tcp), leaf))
}

fn https_get(
    client: &Arc<rustls::ClientConfig>,
    port: u16,
    name: &str,
    path: &str,
) -> Result<String, String> {
    let (mut s, _) = handshake(client, port, name)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Ok(out[out.find("\r\n\r\n").map_or(0, |i| i + 4)..].to_owned())
}

/// Waits (bounded) until `port` shows a certificate for DOMAIN that `client` trusts and
/// `accept` takes; returns it.
fn await_certificate(
    client: &Arc<rustls::ClientConfig>,
    port: u16,
    limit: Duration,
    server: &Proc,
    accept: impl Fn(&CertificateDer<'_>) -> bool,
) -> CertificateDer<'static> {
    let end = Instant::now() + limit;
    loop {
        if let Ok((_, leaf)) = handshake(client, port, DOMAIN)
            && accept(&leaf)
        {
            return leaf;
        }
        assert!(
            Instant::now() < end,
            "no such certificate in time; the server said:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn acme_issues_keeps_renews_and_outlives_its_server() {
    const VALIDITY: u64 = 24;
    let port = free_port();
    let mut lab = Lab::start("tls-alpn", port, free_port(), VALIDITY);
    let cache = lab.dir.0.join("cache");
    let roots = lab.issuer_roots();

    // First issuance, validated by pebble connecting back over TLS-ALPN-01.
    let mut server = lab.serve(port, &["--acme-domain", DOMAIN], &cache);
    let first = await_certificate(&roots, port, Duration::from_secs(60), &server, |_| true);
    server.await_log("ACME: new certificate in use", Duration::from_secs(5));
    let metrics = https_get(&roots, port, DOMAIN, "/metrics").unwrap();
    assert!(
        metrics.contains("peerweb_acme_certificates_total{source=\"issued\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("peerweb_tls_certificate_expiry_seconds 0\n"),
        "{metrics}"
    );
    // The cache keeps the account and the certificate: a restart orders nothing.
    server.stop();
    let server = lab.serve(port, &["--acme-domain", DOMAIN], &cache);
    let again = await_certificate(&roots, port, Duration::from_secs(20), &server, |_| true);
    assert_eq!(again, first);
    server.await_log("ACME: cached certificate in use", Duration::from_secs(5));

    // A third of the validity before expiry, a new certificate replaces it.
    let renewed = await_certificate(
        &roots,
        port,
        Duration::from_secs(VALIDITY + 20),
        &server,
        |c| *c != first,
    );
    let metrics = https_get(&roots, port, DOMAIN, "/metrics").unwrap();
    assert!(
        metrics.contains("peerweb_acme_certificates_total{source=\"issued\"} 1"),
        "{metrics}"
    );

    // The ACME server goes away: the next renewal fails, is said, and the certificate in use
    // stays.
    lab.stop_pebble();
    server.await_log("ACME failed", Duration::from_secs(VALIDITY + 10));
    let (_, shown) = handshake(&roots, port, DOMAIN).unwrap();
    assert_eq!(shown, renewed);
    let metrics = https_get(&roots, port, DOMAIN, "/metrics").unwrap();
    assert!(
        !metrics.contains("peerweb_acme_errors_total{kind=\"order\"} 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("peerweb_acme_last_error_seconds 0\n"),
        "{metrics}"
    );
    // Once it is back, the renewal goes through.
    lab.start_pebble();
    let roots = lab.issuer_roots();
    await_certificate(&roots, port, Duration::from_secs(60), &server, |c| {
        *c != renewed
    });
}

#[test]
fn http_01_validates_on_port_80_and_a_domain_that_cannot_be_validated_is_said() {
    let (port, http) = (free_port(), free_port());
    let lab = Lab::start("http-01", port, http, 3600);
    let roots = lab.issuer_roots();
    let cache = lab.dir.0.join("cache");
    let server = lab.serve(
        port,
        &[
            "--acme-domain",
            DOMAIN,
            "--acme-challenge",
            "http-01",
            "--http-redirect-listen",
            &format!("127.0.0.1:{http}"),
        ],
        &cache,
    );
    await_certificate(&roots, port, Duration::from_secs(60), &server, |_| true);
    drop(server);

    // pebble finds nothing of ours where the name points (nobody listens on 127.0.0.2).
    lab.dns_a("nowhere.peerweb.test", "127.0.0.2");
    let port = free_port();
    let server = lab.serve(
        port,
        &["--acme-domain", "nowhere.peerweb.test"],
        &lab.dir.0.join("cache2"),
    );
    server.await_log("ACME failed", Duration::from_secs(60));
    let log = server.stderr();
    assert!(log.contains("nowhere.peerweb.test"), "{log}");

    // A name no ACME server could validate is refused before anything starts.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--no-turn"])
        .args(["--acme-domain", "localhost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"localhost\" is not a domain name"), "{err}");
}

#[test]
fn an_acme_server_that_answers_garbage_is_an_error_not_a_crash() {
    // A TLS listener that answers every request with the same nonsense.
    let ca = Ca::new();
    let dir = Dir::new("garbage");
    let (chain, key) = ca.leaf(&["127.0.0.1"], (2020, 2060));
    let ca_file = dir.file("ca.pem", &ca.cert.pem());
    let config = common::tls_server(&chain, &key);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().take(32) {
            let Ok(tcp) = tcp else { continue };
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = "{\"newNonce\": 7, \"newAccount\": [\u{1}] ÿ";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nReplay-Nonce: ???\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.flush();
        }
    });
    let port = free_port();
    let mut server = Proc::spawn(
        Command::new(BIN)
            .args(["serve", "--log", "info", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--turn-listen", "127.0.0.1:0", "--acme-domain", DOMAIN])
            .arg("--acme-directory")
            .arg(format!("https://127.0.0.1:{api}/dir"))
            .arg("--acme-directory-ca")
            .arg(&ca_file)
            .arg("--acme-cache")
            .arg(dir.0.join("cache")),
    );
    server.await_log("ACME failed", Duration::from_secs(30));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server stopped: {}",
        server.stderr()
    );
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
    server.stop();
}
