//! `peerweb serve --auth-secret` with the CLI on the other side: `peerweb token` mints, native
//! peers with a good token meet and talk, and a missing, forged, expired or wrong-room token
//! is refused with its reason and exit code 1. Loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};

use common::{BIN, Running};

const SECRET: &str = "a secret for these tests that is long enough to sign";

fn serve() -> (Running, String) {
    common::serve(
        &["--auth-secret", SECRET, "--turn-allow-loopback-peers"],
        &[],
    )
}

fn token(secret: &str, room: &str, ttl: &str) -> String {
    let out = Command::new(BIN)
        .args(["token", "--secret", secret, "--room", room, "--ttl", ttl])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn ping(url: &str, room: &str, token: Option<&str>, wait: &str) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.args(["ping", url, room, "--count", "1", "--wait", wait])
        .args(["--allow-loopback", "--no-stun"]);
    if let Some(t) = token {
        c.args(["--token", t]);
    }
    c.output().unwrap()
}

fn refused(url: &str, room: &str, token: Option<&str>) -> String {
    let out = ping(url, room, token, "1");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn native_peers_with_tokens_meet_and_the_others_are_refused_with_a_reason() {
    let (_server, url) = serve();
    let good = token(SECRET, "team-*", "10m");

    // Two natives with good tokens meet: ping sees the other and exits 0.
    let member = Running(
        Command::new(BIN)
            .args([
                "join",
                &url,
                "team-a",
                "--json",
                "--allow-loopback",
                "--no-stun",
            ])
            .args(["--token", &good])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = ping(&url, "team-a", Some(&good), "20");
    assert!(out.status.success(), "{out:?}");
    drop(member);

    let e = refused(&url, "team-a", None);
    assert!(e.contains("requires an access token"), "{e}");
    let forged = token(
        "another secret that is as long as a real one",
        "team-*",
        "10m",
    );
    let e = refused(&url, "team-a", Some(&forged));
    assert!(e.contains("not signed by this server"), "{e}");
    let e = refused(&url, "lobby", Some(&good));
    assert!(
        e.contains("forbidden") && e.contains("does not allow this room"),
        "{e}"
    );
    let expired = peerweb_server::mint_token(
        SECRET,
        &peerweb_server::Claims {
            room: "*".into(),
            exp: 1_000_000_000,
            sub: None,
            relay: true,
        },
    )
    .unwrap();
    let e = refused(&url, "team-a", Some(&expired));
    assert!(e.contains("expired"), "{e}");
}

#[test]
fn token_refuses_a_short_secret_and_a_bad_lifetime() {
    for (secret, ttl, want) in [
        ("short", "1h", "at least 32 bytes"),
        (SECRET, "1y", "the unit is s, m, h or d"),
        (SECRET, "0", "not a usable lifetime"),
    ] {
        let out = Command::new(BIN)
            .args(["token", "--secret", secret, "--room", "r", "--ttl", ttl])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
    }
}
