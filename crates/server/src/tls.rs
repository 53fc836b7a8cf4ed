//! TLS for the HTTPS listener and for TURN over TLS: one certificate serves both, read from
//! PEM files (again on SIGHUP and whenever the files change, without dropping connections)
//! or obtained by ACME (`acme.rs`). Handshakes run concurrently, each bounded in time, and
//! an address may hold only a few unfinished ones.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Unfinished handshakes one address may hold by default; more connections from it are
/// closed at once (`tls_handshakes_per_ip`).
pub const HANDSHAKES_PER_IP: usize = 16;
/// Unfinished handshakes in all.
const HANDSHAKES: usize = 4096;
/// The ALPN protocol of ACME's TLS-ALPN-01 challenge (RFC 8737).
const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct TlsStats {
    pub handshakes: AtomicU64,
    pub handshake_timeouts: AtomicU64,
    pub handshake_errors: AtomicU64,
    pub refused_per_ip: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_errors: AtomicU64,
    /// Unix time the certificate in use expires (0: none yet).
    pub not_after: AtomicU64,
}

/// Where the certificate comes from, and what the listeners need of it.
#[derive(Debug, Clone)]
pub struct Tls {
    /// For the HTTPS listener: ALPN `http/1.1`.
    pub http: Arc<rustls::ServerConfig>,
    /// For TURN over TLS: no ALPN.
    pub turn: Arc<rustls::ServerConfig>,
    /// For ACME's TLS-ALPN-01 challenge connections, when ACME is on.
    pub challenge: Option<Arc<rustls::ServerConfig>>,
    pub stats: Arc<TlsStats>,
}

impl Tls {
    /// TLS configurations around a certificate resolver (with the ACME challenge one when
    /// the resolver answers challenges).
    pub fn new(
        resolver: Arc<dyn ResolvesServerCert>,
        challenge: bool,
        stats: Arc<TlsStats>,
    ) -> io::Result<Self> {
        let build = |alpn: &[&[u8]]| -> io::Result<Arc<rustls::ServerConfig>> {
            let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            // Stateless resumption tickets (keys rotated every 6 h): a client that comes
            // back (a reconnecting WebSocket) skips the certificate signature.
            c.ticketer = rustls::crypto::ring::Ticketer::new().map_err(io::Error::other)?;
            Ok(Arc::new(c))
        };
        Ok(Self {
            http: build(&[b"http/1.1"])?,
            turn: build(&[])?,
            challenge: if challenge {
                Some(build(&[ACME_TLS_ALPN])?)
            } else {
                None
            },
            stats,
        })
    }
}

/// A certificate and key from PEM files, replaced in place when they change.
#[derive(Debug)]
pub struct FileCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times of the two files when last read.
    stamp: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
    stats: Arc<TlsStats>,
}

impl FileCert {
    /// Reads the files; refuses a missing, unreadable, mismatched or expired pair, naming
    /// the file at fault.
    pub fn load(cert: &Path, key: &Path, stats: Arc<TlsStats>) -> io::Result<Self> {
        let stamp = stamps(cert, key);
        let (ck, not_after) = read_pair(cert, key)?;
        stats.not_after.store(not_after, Ordering::Relaxed);
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(ck)),
            stamp: Mutex::new(stamp),
            stats,
        })
    }

    /// Reads the files again if they changed since (or always, when `force`). A pair that
    /// does not load leaves the one in use in place; the error says why.
    pub fn reload(&self, force: bool) -> io::Result<bool> {
        let now = stamps(&self.cert, &self.key);
        {
            let mut last = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if !force && *last == now {
                return Ok(false);
            }
            *last = now;
        }
        match read_pair(&self.cert, &self.key) {
            Ok((ck, not_after)) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ck);
                self.stats.not_after.store(not_after, Ordering::Relaxed);
                self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) => {
                self.stats.reload_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Re-reads the files on SIGHUP and when their modification times change (checked every
    /// `every`), for as long as the returned task runs.
    pub fn watch(self: &Arc<Self>, every: Duration) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let force = tokio::select! {
                    _ = tick.tick() => false,
                    Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
                };
                #[cfg(not(unix))]
                let force = {
                    tick.tick().await;
                    false
                };
                match me.reload(force) {
                    Ok(true) => {
                        tracing::info!(cert = %me.cert.display(), "TLS certificate reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!("TLS certificate not reloaded, the old one stays: {e}")
                    }
                }
            }
        })
    }
}

impl ResolvesServerCert for FileCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn stamps(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(cert), m(key))
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

/// A certificate chain and its key, checked: they belong together and the leaf is within
/// its validity period. Returns the leaf's expiry (Unix time).
fn read_pair(cert: &Path, key: &Path) -> io::Result<(CertifiedKey, u64)> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect())
        .map_err(|e| {
            invalid(format!(
                "cannot read certificates from {}: {e}",
                cert.display()
            ))
        })?;
    let Some(leaf) = certs.first() else {
        return Err(invalid(format!("no certificate in {}", cert.display())));
    };
    let (not_before, not_after) = validity(leaf).map_err(|e| {
        invalid(format!(
            "cannot parse the certificate in {}: {e}",
            cert.display()
        ))
    })?;
    let now = unix_now();
    if now > not_after {
        return Err(invalid(format!(
            "the certificate in {} expired {} s ago",
            cert.display(),
            now - not_after
        )));
    }
    if now < not_before {
        return Err(invalid(format!(
            "the certificate in {} is not valid for another {} s",
            cert.display(),
            not_before - now
        )));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        invalid(format!(
            "cannot read a private key from {}: {e}",
            key.display()
        ))
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| invalid(format!("unusable private key in {}: {e}", key.display())))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|_| {
        invalid(format!(
            "the key in {} does not belong to the certificate in {}",
            key.display(),
            cert.display()
        ))
    })?;
    Ok((ck, not_after))
}

/// The validity period of a DER certificate, as Unix times.
pub fn validity(der: &[u8]) -> Result<(u64, u64), String> {
    let (_, c) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let v = c.validity();
    let t = |x: i64| u64::try_from(x).unwrap_or(0);
    Ok((t(v.not_before.timestamp()), t(v.not_after.timestamp())))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An HTTPS listener for `axum::serve`: TCP connections are accepted and their handshakes
/// run in tasks of their own (a slow client holds up nobody), bounded in time and per
/// address; finished ones come out of [`axum::serve::Listener::accept`].
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    task: JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsListener {
    pub fn new(listener: TcpListener, tls: Tls, per_ip: usize) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(256);
        let task = tokio::spawn(accept_loop(listener, tls, tx, per_ip.max(1)));
        Ok(Self { local, ready, task })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task is gone (it never ends by itself): serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Tls,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    per_ip: usize,
) {
    let pending: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let all = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES));
    loop {
        let (tcp, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::debug!("HTTPS accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = Pending::take(&pending, from.ip(), per_ip) else {
            tls.stats.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Ok(permit) = all.clone().try_acquire_owned() else {
            tls.stats.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (tls, ready) = (tls.clone(), ready.clone());
        tokio::spawn(async move {
            let _held = (slot, permit);
            let stats = tls.stats.clone();
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(tcp, &tls)).await {
                Ok(Ok(Some(stream))) => {
                    stats.handshakes.fetch_add(1, Ordering::Relaxed);
                    drop(_held);
                    let _ = ready.send((stream, from)).await;
                }
                // An ACME validation connection: done once the handshake is.
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    stats.handshake_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("TLS handshake with {from}: {e}");
                }
                Err(_) => {
                    stats.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("TLS handshake with {from} timed out");
                }
            }
        });
    }
}

/// One handshake; `None` for an ACME TLS-ALPN-01 validation, which needs nothing more.
async fn handshake(tcp: TcpStream, tls: &Tls) -> io::Result<Option<TlsStream<TcpStream>>> {
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
    let hello = start.client_hello();
    let challenge = tls.challenge.clone().filter(|_| {
        hello
            .alpn()
            .is_some_and(|mut a| a.next() == Some(ACME_TLS_ALPN))
    });
    if let Some(config) = challenge {
        let mut s = start.into_stream(config).await?;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut s).await;
        return Ok(None);
    }
    Ok(Some(start.into_stream(tls.http.clone()).await?))
}

/// An address's slot among the unfinished handshakes, given back on drop.
struct Pending {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Pending {
    fn take(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, limit: usize) -> Option<Self> {
        let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Self {
            map: map.clone(),
            ip,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// The server's TLS, and what keeps its certificate current (a file watcher, or ACME).
#[derive(Debug)]
pub struct TlsSetup {
    pub tls: Tls,
    pub acme: Option<crate::acme::Acme>,
    watcher: Option<JoinHandle<()>>,
}

impl Drop for TlsSetup {
    fn drop(&mut self) {
        if let Some(w) = &self.watcher {
            w.abort();
        }
    }
}

impl TlsSetup {
    /// Certificate files (checked now: a bad pair refuses to start) or ACME, per `cfg`.
    pub fn from_config(cfg: &crate::ServerConfig) -> io::Result<Option<Self>> {
        let stats = Arc::new(TlsStats::default());
        if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
            return Ok(Some(Self::files(
                cert,
                key,
                Duration::from_secs(cfg.tls_reload_secs),
                stats,
            )?));
        }
        let Some(settings) = cfg.acme() else {
            return Ok(None);
        };
        let acme = crate::acme::Acme::start(&settings, stats.clone())?;
        let tls = Tls::new(
            acme.resolver.clone(),
            settings.challenge == crate::acme::Challenge::TlsAlpn01,
            stats,
        )?;
        Ok(Some(Self {
            tls,
            acme: Some(acme),
            watcher: None,
        }))
    }

    /// A certificate from files, watched for changes.
    pub fn files(
        cert: &Path,
        key: &Path,
        every: Duration,
        stats: Arc<TlsStats>,
    ) -> io::Result<Self> {
        let file = Arc::new(FileCert::load(cert, key, stats.clone())?);
        let watcher = file.watch(every);
        Ok(Self {
            tls: Tls::new(file, false, stats)?,
            acme: None,
            watcher: Some(watcher),
        })
    }
}
