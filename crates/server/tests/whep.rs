//! The WHEP bridge over real loopback sockets: what a player's bad requests get, and the
//! bridge's part of the exchange with a camera member (here a WebSocket client that plays the
//! camera's side of the protocol; `tests/browser/whep.test.mjs` runs a real camera and player).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
mod common;

use peerweb_server::{Claims, ServerConfig, mint_token};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const CAMERA: &str = "abcdefghijklmn23";
const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";

async fn start(cfg: ServerConfig) -> SocketAddr {
    let server = common::bind(cfg).await;
    let addr = server.local_addr();
    tokio::spawn(server.run(std::future::pending()));
    addr
}

/// One HTTP request; the status and the whole response.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    // A refused upload may be cut off before it is all written.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

async fn post(addr: SocketAddr, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/sdp")];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    http(addr, "POST", path, &headers, body.as_bytes()).await
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("timed out")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// A member of `camera-<CAMERA>` with the camera's role.
async fn camera(addr: SocketAddr, query: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws{query}"))
        .await
        .unwrap();
    send(&mut ws, json!({"type": "hello", "v": 1})).await;
    assert_eq!(recv(&mut ws).await["type"], "welcome");
    let room = format!("camera-{CAMERA}");
    send(
        &mut ws,
        json!({"type": "join", "room": room, "meta": {"role": "camera"}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "joined");
    ws
}

/// The bridge's next signal to the camera: (its peer id, the data).
async fn signal(ws: &mut Ws) -> (String, Value) {
    loop {
        let f = recv(ws).await;
        if f["type"] == "signal" {
            return (f["from"].as_str().unwrap().to_owned(), f["data"].clone());
        }
    }
}

/// The camera's signal to the bridge.
async fn reply(ws: &mut Ws, bridge: &str, data: &Value) {
    send(ws, json!({"type": "signal", "to": bridge, "data": data})).await;
}

/// The next member to leave the camera's room.
async fn left(ws: &mut Ws) -> String {
    loop {
        let f = recv(ws).await;
        if f["type"] == "peer-left" {
            return f["id"].as_str().unwrap().to_owned();
        }
    }
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_drafts_statuses() {
    let addr = start(ServerConfig::default()).await;
    let path = format!("/whep/{CAMERA}");
    let (s, r) = post(addr, &path, None, OFFER).await;
    assert_eq!(s, 401, "{r}");
    assert!(
        r.to_ascii_lowercase().contains("www-authenticate: bearer"),
        "{r}"
    );
    let (s, _) = post(addr, &path, Some("has space"), OFFER).await;
    assert_eq!(s, 401);
    let (s, _) = http(
        addr,
        "POST",
        &path,
        &[
            ("Content-Type", "text/plain"),
            ("Authorization", "Bearer t"),
        ],
        OFFER.as_bytes(),
    )
    .await;
    assert_eq!(s, 415);
    let (s, _) = post(addr, &path, Some("t"), "not sdp").await;
    assert_eq!(s, 400);
    let big = format!("{OFFER}{}", "a=x\r\n".repeat(10_000));
    let (s, _) = post(addr, &path, Some("t"), &big).await;
    assert_eq!(s, 413);
    let (s, _) = post(addr, "/whep/..%2F..%2Fetc", Some("t"), OFFER).await;
    assert_eq!(s, 404);
    let (s, r) = post(addr, &path, Some("t"), OFFER).await;
    assert_eq!(s, 404);
    assert!(r.contains("not online"), "{r}");
    let (s, r) = http(addr, "PATCH", &format!("{path}/x"), &[], b"").await;
    assert_eq!(s, 405, "{r}");
    let (s, _) = http(addr, "DELETE", &format!("{path}/nosuchsession"), &[], b"").await;
    assert_eq!(s, 404);
    let (s, r) = http(
        addr,
        "OPTIONS",
        &path,
        &[("Origin", "http://elsewhere")],
        b"",
    )
    .await;
    assert_eq!(s, 204);
    let r = r.to_ascii_lowercase();
    assert!(r.contains("access-control-allow-origin: *"), "{r}");
    assert!(r.contains("authorization"), "{r}");
    // Nothing was left behind.
    let (_, m) = http(addr, "GET", "/metrics", &[], b"").await;
    assert!(m.contains("peerweb_whep_sessions 0"), "{m}");
}

#[tokio::test]
async fn the_bridge_hands_the_token_then_the_offer_and_leaves_when_told() {
    let addr = start(ServerConfig::default()).await;
    let mut cam = camera(addr, "").await;
    let path = format!("/whep/{CAMERA}");

    // Refused by the camera: 403 with its reason, and the bridge leaves.
    let player = tokio::spawn(async move { post(addr, &path, Some("v.t"), OFFER).await });
    let (bridge, data) = signal(&mut cam).await;
    assert_eq!(data, json!({"app": {"t": "whep", "v": 1, "token": "v.t"}}));
    let refused = json!({"app": {"t": "refused", "reason": "not a token of this camera"}});
    reply(&mut cam, &bridge, &refused).await;
    let (s, r) = player.await.unwrap();
    assert_eq!(s, 403, "{r}");
    assert!(r.contains("not a token of this camera"), "{r}");

    // Welcomed: the offer comes, the answer goes back as 201 with the session's address.
    let path = format!("/whep/{CAMERA}");
    let player = tokio::spawn(async move { post(addr, &path, Some("v.t"), OFFER).await });
    let (bridge, _) = signal(&mut cam).await;
    let welcome = json!({"app": {"t": "welcome", "camera": CAMERA, "name": "c", "viewer": "v"}});
    reply(&mut cam, &bridge, &welcome).await;
    let (from, data) = signal(&mut cam).await;
    assert_eq!(from, bridge);
    assert_eq!(data["description"]["type"], "offer");
    assert_eq!(data["description"]["sdp"], OFFER);
    let answer = json!({"description": {"type": "answer", "sdp": "v=0\r\nanswer\r\n"}});
    reply(&mut cam, &bridge, &answer).await;
    let (s, r) = player.await.unwrap();
    assert_eq!(s, 201, "{r}");
    assert!(r.ends_with("v=0\r\nanswer\r\n"), "{r}");
    let location = r
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .expect("a Location")
        .to_owned();
    assert!(location.starts_with(&format!("/whep/{CAMERA}/")));
    let (_, m) = http(addr, "GET", "/metrics", &[], b"").await;
    assert!(m.contains("peerweb_whep_sessions 1"), "{m}");

    // DELETE: the bridge leaves the room at once.
    let (s, _) = http(addr, "DELETE", &location, &[], b"").await;
    assert_eq!(s, 200);
    assert_eq!(left(&mut cam).await, bridge);

    // A camera that offers again (an ICE restart WHEP cannot carry) ends the session too.
    let path = format!("/whep/{CAMERA}");
    let player = tokio::spawn(async move { post(addr, &path, Some("v.t"), OFFER).await });
    let (bridge, _) = signal(&mut cam).await;
    reply(&mut cam, &bridge, &welcome).await;
    signal(&mut cam).await;
    reply(&mut cam, &bridge, &answer).await;
    assert_eq!(player.await.unwrap().0, 201);
    let offer = json!({"description": {"type": "offer", "sdp": "v=0\r\n"}});
    reply(&mut cam, &bridge, &offer).await;
    assert_eq!(left(&mut cam).await, bridge);
    let (_, m) = http(addr, "GET", "/metrics", &[], b"").await;
    assert!(m.contains("peerweb_whep_sessions 0"), "{m}");
}

#[tokio::test]
async fn on_a_server_with_access_tokens_the_whep_address_carries_one() {
    let secret = "s".repeat(32);
    let addr = start(ServerConfig {
        auth_secrets: vec![secret.clone()],
        ..ServerConfig::default()
    })
    .await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = mint_token(
        &secret,
        &Claims {
            room: format!("camera-{CAMERA}"),
            exp,
            sub: None,
            relay: false,
        },
    )
    .unwrap();
    let mut cam = camera(addr, &format!("?access_token={token}")).await;
    let (s, r) = post(addr, &format!("/whep/{CAMERA}"), Some("v.t"), OFFER).await;
    assert_eq!(s, 401, "{r}");
    assert!(r.contains("access_token"), "{r}");
    let path = format!("/whep/{CAMERA}?access_token={token}");
    let player = tokio::spawn(async move { post(addr, &path, Some("v.t"), OFFER).await });
    let (bridge, data) = signal(&mut cam).await;
    assert_eq!(data["app"]["token"], "v.t");
    let refused = json!({"app": {"t": "refused", "reason": "no"}});
    reply(&mut cam, &bridge, &refused).await;
    assert_eq!(player.await.unwrap().0, 403);
}
