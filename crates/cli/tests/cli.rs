//! The `peerweb` binary: configuration layering (file < env < flags) and clear refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

mod common;

use common::{BIN, Running};

/// A file in the temp dir, deleted on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("peerweb-cli-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `peerweb serve` with these arguments/env, expecting exit code 1; returns stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    refused_with(1, args, env)
}

fn refused_with(code: i32, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(BIN)
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(code), "{out:?}");
    String::from_utf8(out.stderr).unwrap()
}

/// Starts `peerweb serve` on a free loopback port; returns it and its address.
fn serve(args: &[&str], env: &[(&str, &str)]) -> (Running, String) {
    let (server, url) = common::serve(args, env);
    let addr = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not an http URL: {url}"))
        .to_owned();
    (server, addr)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A signaling connection that said hello; it and the server's `welcome`.
async fn welcomed(addr: &str) -> (Ws, serde_json::Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    ws.send(Message::text(r#"{"type":"hello","v":1}"#))
        .await
        .unwrap();
    loop {
        if let Message::Text(t) = ws.next().await.unwrap().unwrap() {
            return (ws, serde_json::from_str(&t).unwrap());
        }
    }
}

/// The limits the server announces in `welcome`.
async fn limits(addr: &str) -> serde_json::Value {
    welcomed(addr).await.1["limits"].clone()
}

#[tokio::test]
async fn file_then_env_then_flags() {
    let file = TempFile::new(
        "layers.toml",
        "max_peers_per_room = 3\nmax_rooms_per_conn = 5\nmax_msgs_per_sec = 7\n",
    );
    let cfg = file.path();
    let env = [
        ("PEERWEB_MAX_ROOMS_PER_CONN", "6"),
        ("PEERWEB_MAX_MSGS_PER_SEC", "8"),
    ];
    let (_s, addr) = serve(&["--config", cfg, "--max-msgs-per-sec", "9"], &env);
    let l = limits(&addr).await;
    assert_eq!(l["max_peers_per_room"], 3, "from the file");
    assert_eq!(l["max_rooms_per_conn"], 6, "env over the file");
    assert_eq!(l["max_msgs_per_sec"], 9, "flag over env");
}

#[tokio::test]
async fn embedded_defaults_need_no_file() {
    let (_s, addr) = serve(&[], &[]);
    let l = limits(&addr).await;
    assert_eq!(l["max_frame_bytes"], 65536);
    assert_eq!(l["max_peers_per_room"], 64);
}

#[test]
fn unknown_config_key_is_refused_by_name() {
    let cfg = TempFile::new("typo.toml", "max_peers_per_rom = 3\n");
    let err = refused(&["--config", cfg.path()], &[]);
    assert!(err.contains("invalid config file"), "{err}");
    assert!(err.contains("max_peers_per_rom"), "{err}");
}

#[test]
fn missing_config_file_is_refused() {
    let err = refused(&["--config", "/nonexistent/peerweb.toml"], &[]);
    assert!(err.contains("cannot read config file"), "{err}");
}

#[test]
fn unusable_values_are_refused() {
    let err = refused(&["--max-peers-per-room", "1"], &[]);
    assert!(
        err.contains("max_peers_per_room must be at least 2"),
        "{err}"
    );
    let err = refused(&[], &[("PEERWEB_MAX_FRAME_BYTES", "12")]);
    assert!(
        err.contains("max_frame_bytes must be at least 1024"),
        "{err}"
    );
    // Usage errors are clap's: exit code 2, as CLI conventions have it.
    let err = refused_with(2, &["--listen", "not-an-address"], &[]);
    assert!(err.contains("invalid value 'not-an-address'"), "{err}");
}

#[test]
fn listen_address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = refused(&["--listen", &addr], &[]);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

#[test]
fn a_panic_in_any_task_ends_the_process_with_a_clear_error() {
    // Regression: the glare panic killed the native driver's task and `peerweb join` waited
    // on it forever. The hook `peerweb` installs (shown here by an example that panics in a
    // tokio task while main waits) ends the process instead.
    let example = PathBuf::from(BIN)
        .parent()
        .unwrap()
        .join("examples")
        .join("panic_in_task");
    let mut child = Command::new(&example)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", example.display()));
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the process hangs after a panic in a task");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(101), "{err}");
    assert!(err.contains("a driver task failed"), "{err}");
    assert!(err.contains("internal error"), "{err}");
}

#[tokio::test]
async fn logs_can_be_one_json_object_per_line() {
    let mut cmd = common::serve_cmd(
        &["--log", "peerweb_server=debug", "--log-format", "json"],
        &[],
    );
    let mut child = Running(cmd.stderr(Stdio::piped()).spawn().unwrap());
    let addr = common::announced_url(&mut child.0)
        .strip_prefix("http://")
        .unwrap()
        .to_owned();
    let stderr = child.0.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for l in BufReader::new(stderr).lines().take(50) {
            let l = l.unwrap();
            let open = serde_json::from_str::<serde_json::Value>(&l)
                .is_ok_and(|v| v["fields"]["message"] == "open" && v["level"] == "DEBUG");
            seen.push(l);
            if open {
                return Ok(seen);
            }
        }
        Err(seen)
    });
    limits(&addr).await;
    let seen = lines.join().unwrap();
    assert!(seen.is_ok(), "no JSON line for the connection: {seen:?}");
}

#[tokio::test]
async fn sigterm_tells_every_websocket_to_reconnect_then_exits() {
    let (mut server, addr) = serve(&["--drain-secs", "5"], &[]);
    let (mut ws, _) = welcomed(&addr).await;
    let pid = server.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let close = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("a close in time")
        {
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close, 1001, "going away: reconnect");
    let start = std::time::Instant::now();
    let code = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(6),
            "no exit after the drain"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(code.success(), "{code:?}");
}

#[test]
fn the_packaged_configuration_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/peerweb.toml");
    let out = Command::new(BIN)
        .args(["serve", "--config", example, "--check-config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
