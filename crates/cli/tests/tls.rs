//! Native clients and `peerweb serve` over TLS: a transfer through an HTTPS server whose
//! certificate a private CA signed (`--ca`), and each refusal — an untrusted CA, a certificate
//! for another name, an expired one — said in words. All on loopback; the CA is made here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, Ca, Dir, Running};

/// `peerweb serve` over HTTPS with this pair; its port.
fn serve_tls(cert: &Path, key: &Path) -> (Running, u16) {
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let (server, url) = common::serve(
        &[
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--turn-allow-loopback-peers",
        ],
        &[],
    );
    let port = url
        .strip_prefix("https://127.0.0.1:")
        .unwrap_or_else(|| panic!("not an https URL: {url}"))
        .parse()
        .unwrap();
    (server, port)
}

/// `peerweb ping URL` (one round, a short wait) expecting it to fail; its stderr.
fn ping_refused(url: &str, extra: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["ping", url, "tls-room", "--count", "1", "--wait", "1"])
        .args(["--allow-loopback", "--no-stun", "--no-turn"])
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn send_and_receive_through_an_https_server_signed_by_a_private_ca() {
    let ca = Ca::new();
    let dir = Dir::new("transfer");
    let (cert, key) = ca.leaf(&["localhost"], (2020, 2060));
    let (c, k) = (dir.file("cert.pem", &cert), dir.file("key.pem", &key));
    let ca_file = dir.file("ca.pem", &ca.cert.pem());
    let (_server, port) = serve_tls(&c, &k);
    let url = format!("https://localhost:{port}");
    let payload = dir.file("hello.txt", "over TLS, end to end\n");
    let out_dir = dir.0.join("in");
    let net = ["--allow-loopback", "--no-stun", "--ca"];
    let mut sender = Running(
        Command::new(BIN)
            .args(["send", "--server", &url, "--json"])
            .args(net)
            .arg(&ca_file)
            .arg(&payload)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(sender.0.stdout.take().unwrap()).lines();
    let code = loop {
        let line = lines.next().expect("the sender's code").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if let Some(code) = v["code"].as_str() {
            break code.to_owned();
        }
    };
    let received = Command::new(BIN)
        .args([
            "receive", &code, "--server", &url, "--yes", "--json", "--out",
        ])
        .arg(&out_dir)
        .args(net)
        .arg(&ca_file)
        .output()
        .unwrap();
    assert!(received.status.success(), "{received:?}");
    assert_eq!(
        std::fs::read_to_string(out_dir.join("hello.txt")).unwrap(),
        "over TLS, end to end\n"
    );
    let status = sender.0.wait().unwrap();
    assert!(status.success(), "sender: {status:?}");
}

#[test]
fn an_untrusted_misnamed_or_expired_certificate_is_refused_in_words() {
    let ca = Ca::new();
    let dir = Dir::new("refusals");
    let ca_file = dir.file("ca.pem", &ca.cert.pem());
    let ca_arg = ca_file.to_str().unwrap();

    let (cert, key) = ca.leaf(&["localhost"], (2020, 2060));
    let (c, k) = (dir.file("cert.pem", &cert), dir.file("key.pem", &key));
    let (_server, port) = serve_tls(&c, &k);
    let e = ping_refused(&format!("https://localhost:{port}"), &[]);
    assert!(
        e.contains("not signed by a trusted CA") && e.contains("--ca"),
        "{e}"
    );

    let (cert, key) = ca.leaf(&["peerweb.test"], (2020, 2060));
    let (c, k) = (dir.file("other.pem", &cert), dir.file("other.key", &key));
    let (_other, port) = serve_tls(&c, &k);
    let e = ping_refused(&format!("https://localhost:{port}"), &["--ca", ca_arg]);
    assert!(e.contains("not valid for this host name"), "{e}");

    // peerweb serve refuses to start with an expired certificate; this listener serves one.
    let (cert, key) = ca.leaf(&["localhost"], (2019, 2020));
    let port = expired_server(&cert, &key);
    let e = ping_refused(&format!("https://localhost:{port}"), &["--ca", ca_arg]);
    assert!(e.contains("has expired"), "{e}");

    let e = ping_refused(
        &format!("https://localhost:{port}"),
        &["--ca", dir.0.join("none.pem").to_str().unwrap()],
    );
    assert!(e.contains("none.pem"), "{e}");
    let junk = dir.file("junk.pem", "not a certificate\n");
    let e = ping_refused(
        &format!("https://localhost:{port}"),
        &["--ca", junk.to_str().unwrap()],
    );
    assert!(
        e.contains("junk.pem") && e.contains("no usable CA certificate"),
        "{e}"
    );
}

/// A TLS listener on a free loopback port that shows this (expired) pair to whoever comes,
/// on a thread of its own for the rest of the test.
fn expired_server(cert: &str, key: &str) -> u16 {
    let config = common::tls_server(cert, key);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().take(8) {
            let Ok(mut tcp) = tcp else { continue };
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
            let mut conn = rustls::ServerConnection::new(config.clone()).unwrap();
            // The client aborts the handshake once it sees the certificate.
            while conn.is_handshaking() {
                if conn.complete_io(&mut tcp).is_err() {
                    break;
                }
            }
        }
    });
    port
}

#[test]
fn check_config_reads_the_certificate_files_and_says_what_is_wrong() {
    let ca = Ca::new();
    let dir = Dir::new("check");
    let check = |cert: &Path, key: &Path| {
        Command::new(BIN)
            .args(["serve", "--check-config", "--tls-cert"])
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .output()
            .unwrap()
    };
    let (cert, key) = ca.leaf(&["localhost"], (2020, 2060));
    let (c, k) = (dir.file("cert.pem", &cert), dir.file("key.pem", &key));
    let out = check(&c, &k);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
    let (old, old_key) = ca.leaf(&["localhost"], (2019, 2020));
    let (oc, ok) = (dir.file("old.pem", &old), dir.file("old.key", &old_key));
    let out = check(&oc, &ok);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("old.pem") && err.contains("expired"), "{err}");
}
