//! The signaling connection: the server's endpoints from the address given, TLS trust (Mozilla's roots and a private CA), the WebSocket, and the awaitables the driver selects on.

use crate::*;

/// The server's endpoints, from the address the user gave.
#[derive(Debug, Clone)]
pub(crate) struct Urls {
    pub(crate) ws: String,
    pub(crate) http: String,
    /// The access token, sent with the WebSocket (`?access_token=`) and to `/api/ice`.
    pub(crate) token: Option<String>,
}

impl Urls {
    /// The signaling URL, with the access token when there is one, and `frames` (a JSON
    /// array the server handles before the socket's first frame, when it takes them).
    pub(crate) fn ws_url(&self, frames: Option<&str>) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(t) = &self.token {
            q.append_pair("access_token", t);
        }
        if let Some(f) = frames {
            q.append_pair("frames", f);
        }
        let q = q.finish();
        if q.is_empty() {
            self.ws.clone()
        } else {
            format!("{}?{q}", self.ws)
        }
    }
}

impl Urls {
    pub(crate) fn parse(server: &str) -> Result<Urls, Error> {
        let bad = || Error::BadUrl(server.to_owned());
        let (scheme, rest) = server.split_once("://").ok_or_else(bad)?;
        let tls = match scheme {
            "http" | "ws" => false,
            "https" | "wss" => true,
            _ => return Err(bad()),
        };
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() || host.contains('@') {
            return Err(bad());
        }
        let s = if tls { "s" } else { "" };
        Ok(Urls {
            ws: format!("ws{s}://{host}/ws"),
            http: format!("http{s}://{host}"),
            token: None,
        })
    }
}

/// The certificates trusted for the server's HTTPS and for `turns:`: Mozilla's roots
/// (`webpki-root-certs`), plus those of `--ca`; and the HTTP agent for `/api/ice` that trusts
/// the same.
#[derive(Debug, Clone)]
pub(crate) struct Trust {
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) agent: ureq::Agent,
}

impl Trust {
    pub(crate) fn load(ca: Option<&std::path::Path>) -> Result<Self, Error> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots: Vec<CertificateDer<'static>> =
            webpki_root_certs::TLS_SERVER_ROOT_CERTS.to_vec();
        let mut store = rustls::RootCertStore::empty();
        store.add_parsable_certificates(roots.iter().cloned());
        if let Some(path) = ca {
            let bad = |why: &str| Error::Ca {
                path: path.display().to_string(),
                why: why.to_owned(),
            };
            let extra: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect())
                .map_err(|e| bad(&e.to_string()))?;
            let (added, _) = store.add_parsable_certificates(extra.iter().cloned());
            if added == 0 {
                return Err(bad("no usable CA certificate in it"));
            }
            roots.extend(extra);
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Io(std::io::Error::other(e)))?
        .with_root_certificates(store)
        .with_no_client_auth();
        let certs: Vec<ureq::tls::Certificate<'static>> = roots
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            )
            .build()
            .into();
        Ok(Self {
            tls: Arc::new(tls),
            agent,
        })
    }
}

/// What a failed TLS connection to the server was refused for, in words; `None` when it was
/// not a certificate problem.
pub(crate) fn certificate_problem(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    use rustls::CertificateError as C;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(rustls::Error::InvalidCertificate(c)) = err.downcast_ref::<rustls::Error>() {
            return Some(match c {
                C::UnknownIssuer => "its certificate is not signed by a trusted CA (for a private \
                                     CA, pass it with --ca FILE)"
                    .into(),
                C::Expired | C::ExpiredContext { .. } => "its certificate has expired".into(),
                C::NotValidYet | C::NotValidYetContext { .. } => {
                    "its certificate is not valid yet (check this machine's clock)".into()
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    "its certificate is not valid for this host name".into()
                }
                C::Revoked => "its certificate has been revoked".into(),
                other => format!("its certificate was refused: {other:?}"),
            });
        }
        // An io::Error's source() skips the error it wraps.
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to `url`, and whether the server took the frames in its URL (it says so in
/// the upgrade's response).
pub(crate) async fn connect_ws(url: &str, trust: &Trust) -> Result<(Ws, bool), Error> {
    let connector = tokio_tungstenite::Connector::Rustls(trust.tls.clone());
    let fut = tokio_tungstenite::connect_async_tls_with_config(url, None, true, Some(connector));
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(Ok((ws, response))) => {
            let taken = response
                .headers()
                .get("peerweb-frames")
                .is_some_and(|v| v == "taken");
            Ok((ws, taken))
        }
        Ok(Err(e)) => Err(Error::Connect {
            url: url.to_owned(),
            why: certificate_problem(&e).unwrap_or_else(|| e.to_string()),
        }),
        Err(_) => Err(Error::Connect {
            url: url.to_owned(),
            why: "timed out".into(),
        }),
    }
}

pub(crate) async fn next_frame(
    ws: &mut Option<Ws>,
) -> Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>> {
    match ws {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

pub(crate) async fn wait_ice(
    rx: &mut Option<oneshot::Receiver<Result<IceConfig, String>>>,
) -> Result<Result<IceConfig, String>, oneshot::error::RecvError> {
    match rx {
        Some(rx) => rx.await,
        None => std::future::pending().await,
    }
}

pub(crate) async fn wait_conn(
    c: &mut Option<oneshot::Receiver<Result<(Ws, bool), Error>>>,
) -> Result<(Ws, bool), Error> {
    match c {
        Some(rx) => rx.await.unwrap_or(Err(Error::Stopped)),
        None => std::future::pending().await,
    }
}

/// The host of a `turn:`/`turns:` URL (the TLS server name).
pub(crate) fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once(':')?.1.split('?').next()?;
    if let Some(v6) = rest.strip_prefix('[') {
        return v6.split(']').next();
    }
    Some(rest.rsplit_once(':').map_or(rest, |(h, _)| h))
}

/// `stun:host:port` or `turn:host:port?transport=udp` to a socket address.
pub(crate) async fn resolve(url: &str) -> Option<SocketAddr> {
    let rest = url.split_once(':')?.1;
    let hostport = rest.split('?').next()?;
    tokio::net::lookup_host(hostport).await.ok()?.next()
}
