//! Access tokens over real loopback sockets: without `auth_secrets` the server is open; with
//! them, signaling and `/api/ice` need a token signed by one of them, and missing, forged,
//! expired, wrong-room and relay-less tokens are each refused with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use peerweb_server::{Claims, ServerConfig, mint_token};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "0123456789abcdef0123456789abcdef-secret";
const OLD_SECRET: &str = "the previous secret, still accepted while tokens live";

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn start() -> SocketAddr {
    let server = common::bind(ServerConfig {
        auth_secrets: vec![SECRET.into(), OLD_SECRET.into()],
        ..Default::default()
    })
    .await;
    let addr = server.local_addr();
    tokio::spawn(server.run(std::future::pending()));
    addr
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(secret: &str, room: &str, ttl: i64, relay: bool) -> String {
    mint_token(
        secret,
        &Claims {
            room: room.into(),
            exp: now().saturating_add_signed(ttl),
            sub: Some("test".into()),
            relay,
        },
    )
    .unwrap()
}

async fn connect(addr: SocketAddr, token: Option<&str>) -> Ws {
    let q = token
        .map(|t| format!("?access_token={t}"))
        .unwrap_or_default();
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws{q}"))
        .await
        .unwrap()
        .0
}

async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a frame in time")
        .expect("open")
        .unwrap()
}

async fn json_frame(ws: &mut Ws) -> Value {
    match next(ws).await {
        Message::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// A connection refused: an `unauthorized` error saying why, then close 4401.
async fn refused(addr: SocketAddr, token: Option<&str>) -> String {
    let mut ws = connect(addr, token).await;
    let e = json_frame(&mut ws).await;
    assert_eq!(e["code"], "unauthorized", "{e}");
    match next(&mut ws).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 4401),
        other => panic!("expected close 4401, got {other:?}"),
    }
    e["message"].as_str().unwrap().to_owned()
}

/// One HTTP/1.1 request (`head` holds the request line and any headers); the status and
/// the JSON body.
async fn request(addr: SocketAddr, head: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{head}\r\nHost: peerweb.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = &out[out.find("\r\n\r\n").unwrap() + 4..];
    (status, serde_json::from_str(body).unwrap())
}

async fn ice(addr: SocketAddr, token: Option<&str>) -> (u16, Value) {
    let auth = token
        .map(|t| format!("\r\nAuthorization: Bearer {t}"))
        .unwrap_or_default();
    request(addr, &format!("GET /api/ice HTTP/1.1{auth}"), "").await
}

#[tokio::test]
async fn signaling_needs_a_good_token_and_it_says_why_when_not() {
    let addr = start().await;
    assert!(
        refused(addr, None)
            .await
            .contains("requires an access token")
    );
    let forged = token("a forged secret that is long enough to pass", "*", 60, true);
    assert!(refused(addr, Some(&forged)).await.contains("not signed"));
    let expired = token(SECRET, "*", -60, true);
    assert!(refused(addr, Some(&expired)).await.contains("expired"));
    assert!(refused(addr, Some("garbage")).await.contains("malformed"));

    // A good one (the old secret signs too): its rooms only.
    let good = token(OLD_SECRET, "team-*", 60, true);
    let mut ws = connect(addr, Some(&good)).await;
    ws.send(Message::text(r#"{"type":"hello","v":1}"#))
        .await
        .unwrap();
    assert_eq!(json_frame(&mut ws).await["type"], "welcome");
    ws.send(Message::text(r#"{"type":"join","room":"team-a"}"#))
        .await
        .unwrap();
    assert_eq!(json_frame(&mut ws).await["type"], "joined");
    ws.send(Message::text(r#"{"type":"join","room":"lobby"}"#))
        .await
        .unwrap();
    let e = json_frame(&mut ws).await;
    assert_eq!(e["code"], "forbidden", "{e}");
}

#[tokio::test]
async fn turn_credentials_go_only_to_tokens_that_allow_the_relay_and_not_in_a_flood() {
    let addr = start().await;
    let (status, body) = ice(addr, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthorized");
    let (status, _) = ice(addr, Some(&token("x".repeat(40).as_str(), "*", 60, true))).await;
    assert_eq!(status, 401);
    let (status, body) = ice(addr, Some(&token(SECRET, "*", 60, false))).await;
    assert_eq!(status, 403, "{body}");
    let good = token(SECRET, "*", 60, true);
    let (status, body) = ice(addr, Some(&good)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["iceServers"][1]["credential"].is_string(), "{body}");
    // One address asking again and again is held back.
    let mut limited = false;
    for _ in 0..60 {
        if ice(addr, Some(&good)).await.0 == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "no 429 after 60 requests in a row");
}

#[test]
fn a_weak_secret_is_refused_at_start() {
    let cfg = ServerConfig {
        auth_secrets: vec!["short".into()],
        ..Default::default()
    };
    assert!(
        cfg.validate()
            .unwrap_err()
            .to_string()
            .contains("at least 32 bytes")
    );
}

async fn post_login(addr: SocketAddr, body: &str) -> (u16, Value) {
    let head = "POST /api/auth HTTP/1.1\r\nContent-Type: application/json";
    request(addr, head, body).await
}

#[tokio::test]
async fn the_page_password_buys_a_token_for_one_room_only() {
    let server = common::bind(ServerConfig {
        auth_secrets: vec![SECRET.into()],
        page_password: Some("open sesame".into()),
        ..Default::default()
    })
    .await;
    let addr = server.local_addr();
    tokio::spawn(server.run(std::future::pending()));
    let (status, body) = post_login(addr, r#"{"password":"open sesame","room":"staff"}"#).await;
    assert_eq!(status, 200, "{body}");
    let t = body["token"].as_str().unwrap().to_owned();
    let mut ws = connect(addr, Some(&t)).await;
    ws.send(Message::text(r#"{"type":"hello","v":1}"#))
        .await
        .unwrap();
    assert_eq!(json_frame(&mut ws).await["type"], "welcome");
    ws.send(Message::text(r#"{"type":"join","room":"other"}"#))
        .await
        .unwrap();
    assert_eq!(json_frame(&mut ws).await["code"], "forbidden");
    assert_eq!(ice(addr, Some(&t)).await.0, 200);

    let (status, _) = post_login(addr, r#"{"password":"open sesame!","room":"staff"}"#).await;
    assert_eq!(status, 401);
    let (status, _) = post_login(addr, r#"{"password":"open sesame","room":"*"}"#).await;
    assert_eq!(status, 400, "a pattern is not a room");
    let (status, _) = post_login(addr, "not json").await;
    assert_eq!(status, 400);

    // A server with tokens but no page password: the pages are told to ask the operator.
    let other = start().await;
    let (status, body) = post_login(other, r#"{"password":"x","room":"staff"}"#).await;
    assert_eq!(status, 403, "{body}");
}
