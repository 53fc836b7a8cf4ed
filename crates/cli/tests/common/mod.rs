//! Shared by the CLI's integration tests: the binary under test, `peerweb serve` on free
//! loopback ports, temporary folders, and a throwaway certificate authority.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

pub const BIN: &str = env!("CARGO_BIN_EXE_peerweb");

/// A child process, killed on drop.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `peerweb serve` on free loopback ports with these extra arguments and environment, its
/// stdout piped (for [`announced_url`]) and its stderr dropped.
pub fn serve_cmd(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--turn-listen",
        "127.0.0.1:0",
    ])
    .args(args)
    .envs(env.iter().copied())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    c
}

/// The URL `peerweb serve` announced on its first line (`http://…` or `https://…`, no
/// trailing slash).
pub fn announced_url(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix("peerweb serve: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .trim_end_matches('/')
        .to_owned()
}

/// `peerweb serve` as [`serve_cmd`] makes it, running; it and its URL.
pub fn serve(args: &[&str], env: &[(&str, &str)]) -> (Running, String) {
    let mut child = serve_cmd(args, env).spawn().unwrap();
    let url = announced_url(&mut child);
    (Running(child), url)
}

/// A temporary folder, removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("peerweb-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }

    /// Writes `text` to `name` in the folder; its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate authority for one test.
pub struct Ca {
    pub cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new() -> Self {
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

    /// (chain PEM, key PEM) for `names` (DNS names or IP addresses), valid between the two
    /// years.
    pub fn leaf(&self, names: &[&str], years: (i32, i32)) -> (String, String) {
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
        )
    }
}

/// A TLS server configuration showing this pair (chain PEM, key PEM), for test listeners
/// that play a server peerweb meets.
pub fn tls_server(chain: &str, key: &str) -> std::sync::Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    )
}
