//! Automatic certificates (ACME, RFC 8555) with `rustls-acme`: the order, the TLS-ALPN-01 or
//! HTTP-01 challenge, renewal a third of the validity before expiry, back-off after a failure.
//! Whatever fails, the certificate in use stays; the log and `/metrics` say why.

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls_acme::caches::DirCache;
use rustls_acme::{AccountCache, AcmeConfig, CertCache, EventError, ResolvesServerCertAcme};
use tokio::task::JoinHandle;

use crate::tls::{TlsStats, unix_now, validity};

/// Let's Encrypt's directories.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// The challenge the ACME server is asked to validate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Challenge {
    /// On the HTTPS port itself (RFC 8737): nothing else to open.
    TlsAlpn01,
    /// `GET /.well-known/acme-challenge/…` on port 80 (`http_redirect_listen`).
    Http01,
}

/// What the ACME client needs.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    pub domains: Vec<String>,
    pub contact: Vec<String>,
    pub directory: String,
    pub cache: PathBuf,
    /// Trust only this CA (PEM) for the ACME server's HTTPS API, instead of the public roots.
    pub directory_ca: Option<PathBuf>,
    pub challenge: Challenge,
}

/// The reason labels of `peerweb_acme_errors_total`.
pub const ERROR_KINDS: [&str; 4] = ["order", "cache", "certificate", "account"];

/// ACME's part of `/metrics`, and its last error for people.
#[derive(Debug, Default)]
pub struct AcmeStats {
    pub issued: std::sync::atomic::AtomicU64,
    pub loaded: std::sync::atomic::AtomicU64,
    pub errors: [std::sync::atomic::AtomicU64; ERROR_KINDS.len()],
    /// Unix time of the last failure (0: none).
    pub last_error_at: std::sync::atomic::AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// The running ACME client.
#[derive(Debug)]
pub struct Acme {
    pub resolver: Arc<ResolvesServerCertAcme>,
    pub stats: Arc<AcmeStats>,
    task: JoinHandle<()>,
}

impl Drop for Acme {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Acme {
    /// Starts ordering (or loads the cached certificate) in the background.
    pub fn start(s: &AcmeSettings, tls: Arc<TlsStats>) -> io::Result<Self> {
        create_private_dir(&s.cache)?;
        let mut roots = rustls::RootCertStore::empty();
        match &s.directory_ca {
            Some(ca) => {
                for c in CertificateDer::pem_file_iter(ca)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!(
                                "cannot read the ACME directory's CA from {}: {e}",
                                ca.display()
                            ),
                        )
                    })?
                {
                    roots.add(c).map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("{}: {e}", ca.display()),
                        )
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let stats = Arc::new(AcmeStats::default());
        let cache = Observed {
            dir: DirCache::new(s.cache.clone()),
            tls: tls.clone(),
        };
        let mut state = AcmeConfig::new_with_client_config(&s.domains, Arc::new(client))
            .directory(&s.directory)
            .contact(s.contact.iter().map(|c| format!("mailto:{c}")))
            .challenge_type(match s.challenge {
                Challenge::TlsAlpn01 => rustls_acme::UseChallenge::TlsAlpn01,
                Challenge::Http01 => rustls_acme::UseChallenge::Http01,
            })
            .cache(cache)
            .state();
        let resolver = state.resolver();
        let st = stats.clone();
        let domains = s.domains.join(", ");
        let task = tokio::spawn(async move {
            while let Some(event) = state.next().await {
                match event {
                    Ok(rustls_acme::EventOk::DeployedNewCert) => {
                        st.issued.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(%domains, "ACME: new certificate in use");
                    }
                    Ok(rustls_acme::EventOk::DeployedCachedCert) => {
                        st.loaded.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(%domains, "ACME: cached certificate in use");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let kind = match &e {
                            EventError::Order(_) => 0,
                            EventError::CertCacheLoad(_) | EventError::CertCacheStore(_) => 1,
                            EventError::CachedCertParse(_) | EventError::NewCertParse(_) => 2,
                            EventError::AccountCacheLoad(_) | EventError::AccountCacheStore(_) => 3,
                        };
                        st.errors[kind].fetch_add(1, Ordering::Relaxed);
                        st.last_error_at.store(unix_now(), Ordering::Relaxed);
                        let why = e.to_string();
                        tracing::warn!(%domains, "ACME failed, the certificate in use stays: {why}");
                        *st.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                    }
                }
            }
        });
        Ok(Self {
            resolver,
            stats,
            task,
        })
    }
}

/// The cache directory holds the account key and certificate keys: only the server's user
/// may read it.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot create the ACME cache {}: {e}", dir.display()),
        )
    })
}

/// `DirCache`, noting the expiry of every certificate that passes through it.
struct Observed {
    dir: DirCache<PathBuf>,
    tls: Arc<TlsStats>,
}

impl Observed {
    fn note(&self, pem: &[u8]) {
        if let Some(Ok(leaf)) = CertificateDer::pem_slice_iter(pem).next()
            && let Ok((_, not_after)) = validity(&leaf)
        {
            self.tls.not_after.store(not_after, Ordering::Relaxed);
        }
    }
}

#[async_trait::async_trait]
impl CertCache for Observed {
    type EC = io::Error;
    async fn load_cert(&self, domains: &[String], url: &str) -> Result<Option<Vec<u8>>, io::Error> {
        let pem = self.dir.load_cert(domains, url).await?;
        if let Some(p) = &pem {
            self.note(p);
        }
        Ok(pem)
    }
    async fn store_cert(
        &self,
        domains: &[String],
        url: &str,
        cert: &[u8],
    ) -> Result<(), io::Error> {
        self.note(cert);
        self.dir.store_cert(domains, url, cert).await
    }
}

#[async_trait::async_trait]
impl AccountCache for Observed {
    type EA = io::Error;
    async fn load_account(
        &self,
        contact: &[String],
        url: &str,
    ) -> Result<Option<Vec<u8>>, io::Error> {
        self.dir.load_account(contact, url).await
    }
    async fn store_account(
        &self,
        contact: &[String],
        url: &str,
        account: &[u8],
    ) -> Result<(), io::Error> {
        self.dir.store_account(contact, url, account).await
    }
}
