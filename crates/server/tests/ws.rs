//! The server over real loopback sockets: the WebSocket driver, limits and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
mod common;

use peerweb_server::ServerConfig;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn start(cfg: ServerConfig) -> SocketAddr {
    let server = common::bind(cfg).await;
    let addr = server.local_addr();
    tokio::spawn(server.run(std::future::pending()));
    addr
}

async fn connect(addr: SocketAddr) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap()
        .0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// Next text frame as JSON, skipping pings; panics on close or after 5 s.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("timed out")
            .unwrap()
            .unwrap();
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Reads until the server closes; returns the close code.
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no close in time")
        {
            Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("error before close frame: {e}"),
            None => panic!("stream ended without close frame"),
        }
    }
}

async fn hello(ws: &mut Ws) -> String {
    send(ws, json!({"type":"hello","v":1})).await;
    let w = recv(ws).await;
    assert_eq!(w["type"], "welcome");
    w["id"].as_str().unwrap().to_string()
}

async fn joined(addr: SocketAddr, room: &str) -> (Ws, String) {
    let mut ws = connect(addr).await;
    let id = hello(&mut ws).await;
    send(&mut ws, json!({"type":"join","room":room})).await;
    assert_eq!(recv(&mut ws).await["type"], "joined");
    (ws, id)
}

#[tokio::test]
async fn relay_between_two_clients() {
    let addr = start(ServerConfig::default()).await;
    let (mut a, a_id) = joined(addr, "r").await;
    let (mut b, b_id) = joined(addr, "r").await;
    assert_eq!(
        recv(&mut a).await,
        json!({"type":"peer-joined","room":"r","peer":{"id":b_id}})
    );
    send(
        &mut b,
        json!({"type":"signal","to":a_id,"data":{"sdp":{"type":"offer","sdp":"v=0\r\n"}}}),
    )
    .await;
    let mut got = recv(&mut a).await;
    assert!(got["n"].as_u64().is_some(), "{got}");
    got.as_object_mut().unwrap().remove("n");
    assert_eq!(
        got,
        json!({"type":"signal","from":b_id,"data":{"sdp":{"type":"offer","sdp":"v=0\r\n"}}})
    );
    drop(b);
    // Past the resume grace (default 20 s) b would leave; here we only check a still works.
    send(&mut a, json!({"type":"ping"})).await;
    assert_eq!(recv(&mut a).await, json!({"type":"pong"}));
}

/// A WebSocket whose URL carries `frames`; whether the server says it took them.
async fn connect_with_frames(addr: SocketAddr, frames: &Value) -> (Ws, bool) {
    let q: String = form_urlencoded::byte_serialize(frames.to_string().as_bytes()).collect();
    let (ws, response) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?frames={q}"))
        .await
        .unwrap();
    let taken = response
        .headers()
        .get("peerweb-frames")
        .is_some_and(|v| v == "taken");
    (ws, taken)
}

#[tokio::test]
async fn a_hello_and_a_join_in_the_url_are_answered_without_a_frame_from_the_client() {
    let addr = start(ServerConfig::default()).await;
    let (mut a, a_id) = joined(addr, "r").await;
    let (mut b, taken) = connect_with_frames(
        addr,
        &json!([{"type":"hello","v":1,"acks":true},{"type":"join","room":"r"}]),
    )
    .await;
    assert!(taken);
    let w = recv(&mut b).await;
    assert_eq!(w["type"], "welcome");
    let b_id = w["id"].as_str().unwrap().to_owned();
    let j = recv(&mut b).await;
    assert_eq!(
        (&j["type"], &j["peers"][0]["id"]),
        (&json!("joined"), &json!(a_id))
    );
    assert_eq!(recv(&mut a).await["peer"]["id"], json!(b_id));
    // The frames are checked as any other: a bad room in the URL gets its error frame.
    let (mut c, taken) = connect_with_frames(
        addr,
        &json!([{"type":"hello","v":1},{"type":"join","room":""}]),
    )
    .await;
    assert!(taken);
    assert_eq!(recv(&mut c).await["type"], "welcome");
    assert_eq!(recv(&mut c).await["code"], "invalid-room");
    // A resume token is not taken from a URL (nor anything but a hello first): the server
    // says nothing of them and waits for the socket's hello, as without frames.
    for frames in [
        json!([{"type":"hello","v":1,"token":"AAAA"}]),
        json!([{"type":"join","room":"r"}]),
        json!({"type":"hello","v":1}),
    ] {
        let (mut d, taken) = connect_with_frames(addr, &frames).await;
        assert!(!taken, "{frames}");
        hello(&mut d).await;
    }
}

#[tokio::test]
async fn malformed_and_unknown_frames_get_error_frames() {
    let addr = start(ServerConfig::default()).await;
    let (mut a, _) = joined(addr, "r").await;
    for (frame, code) in [
        ("{", "bad-json"),
        ("null", "bad-message"),
        (r#"{"type":"warp"}"#, "unknown-type"),
        (
            r#"{"type":"signal","to":"nobody00000000","data":{}}"#,
            "unknown-peer",
        ),
        (r#"{"type":"join","room":""}"#, "invalid-room"),
    ] {
        a.send(Message::text(frame)).await.unwrap();
        let e = recv(&mut a).await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{frame}"
        );
    }
    a.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(recv(&mut a).await["code"], "binary-unsupported");
    // Still served.
    send(&mut a, json!({"type":"ping"})).await;
    assert_eq!(recv(&mut a).await["type"], "pong");
}

#[tokio::test]
async fn signal_to_a_peer_in_another_room_is_refused() {
    let addr = start(ServerConfig::default()).await;
    let (mut a, _) = joined(addr, "one").await;
    let (mut b, b_id) = joined(addr, "two").await;
    send(&mut a, json!({"type":"signal","to":b_id,"data":{"x":1}})).await;
    assert_eq!(recv(&mut a).await["code"], "unknown-peer");
    send(&mut b, json!({"type":"ping"})).await;
    assert_eq!(recv(&mut b).await["type"], "pong", "b received the signal");
}

#[tokio::test]
async fn oversize_frame_closes_with_1009_and_others_are_served() {
    let addr = start(ServerConfig {
        max_frame_bytes: 4096,
        max_send_queue_bytes: 1 << 20,
        ..Default::default()
    })
    .await;
    let (mut a, _) = joined(addr, "r").await;
    let (mut b, _) = joined(addr, "r").await;
    let big = format!(r#"{{"type":"ping","data":{{"x":"{}"}}}}"#, "y".repeat(5000));
    b.send(Message::text(big)).await.unwrap();
    assert_eq!(close_code(&mut b).await, 1009);
    send(&mut a, json!({"type":"ping"})).await;
    let mut got = recv(&mut a).await;
    if got["type"] == "peer-joined" {
        got = recv(&mut a).await;
    }
    assert_eq!(got["type"], "pong");
    // Beyond the hard cap (4x) the frame is not read at all; the connection still ends.
    let mut c = connect(addr).await;
    hello(&mut c).await;
    let huge = format!(
        r#"{{"type":"ping","data":{{"x":"{}"}}}}"#,
        "y".repeat(40_000)
    );
    let _ = c.send(Message::text(huge)).await;
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match c.next().await {
                Some(Ok(Message::Close(f))) => {
                    return format!("close {:?}", f.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return format!("error {e}"),
                None => return "eof".to_string(),
            }
        }
    })
    .await
    .unwrap();
    assert!(
        end == "close Some(1009)" || end.starts_with("error"),
        "{end}"
    );
    send(&mut a, json!({"type":"ping"})).await;
    assert_eq!(recv(&mut a).await["type"], "pong");
}

#[tokio::test]
async fn join_flood_from_one_connection_is_rate_limited_then_closed() {
    let addr = start(ServerConfig {
        max_msgs_per_sec: 20,
        msg_burst: 20,
        ..Default::default()
    })
    .await;
    let mut a = connect(addr).await;
    hello(&mut a).await;
    for i in 0..200 {
        let frame = json!({"type":"join","room":format!("room{i}")}).to_string();
        if a.send(Message::text(frame)).await.is_err() {
            break;
        }
    }
    let mut codes = vec![];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), a.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                codes.push(
                    v["code"]
                        .as_str()
                        .unwrap_or(v["type"].as_str().unwrap())
                        .to_string(),
                );
            }
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(f.code, CloseCode::from(4429));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // (The joins wait for each other's answer from the bus while the flood goes on, so the
    // connection is closed before most are answered: the room limit is the core's tests'.)
    assert_eq!(
        codes.first().map(String::as_str),
        Some("joined"),
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| *c == "rate-limited").count(),
        1,
        "{codes:?}"
    );
}

#[tokio::test]
async fn connection_flood_from_one_address_is_refused_with_4503() {
    let addr = start(ServerConfig {
        max_conns_per_ip: 5,
        ..Default::default()
    })
    .await;
    let mut held = vec![];
    for _ in 0..5 {
        let mut ws = connect(addr).await;
        hello(&mut ws).await;
        held.push(ws);
    }
    let mut extra = connect(addr).await;
    assert_eq!(close_code(&mut extra).await, 4503);
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect(addr).await;
    hello(&mut again).await;
}

#[tokio::test]
async fn a_client_that_does_not_read_is_dropped_and_others_are_served() {
    let addr = start(ServerConfig {
        max_send_queue_bytes: 64 * 1024,
        max_msgs_per_sec: 100_000,
        msg_burst: 100_000,
        ..Default::default()
    })
    .await;
    // The slow reader: a raw WebSocket whose TCP receive buffer is tiny and never drained.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(addr).await.unwrap();
    let (mut slow, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/ws"), MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    let slow_id = hello(&mut slow).await;
    send(&mut slow, json!({"type":"join","room":"r"})).await;
    let (fast, _) = joined(addr, "r").await;
    let (mut other, _) = joined(addr, "r").await;
    let (mut fast_tx, mut fast_rx) = fast.split();
    let frame = json!({"type":"signal","to":slow_id,"data":{"p":"z".repeat(8000)}}).to_string();
    // Bounded: 2000 frames of 8 kB, far more than the 64 kB queue and the socket buffers.
    let sender = tokio::spawn(async move {
        for _ in 0..2000 {
            if fast_tx.send(Message::text(frame.clone())).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        fast_tx
    });
    // Once the slow reader is gone, signals to it wait in its inbox for it to resume, until
    // that is full: then they come back refused (nothing is dropped unsaid).
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(msg)) = fast_rx.next().await {
            if let Message::Text(t) = msg
                && t.contains("inbox-full")
            {
                return true;
            }
        }
        false
    })
    .await;
    sender.abort();
    assert_eq!(refused, Ok(true), "the slow reader was never dropped");
    send(&mut other, json!({"type":"ping"})).await;
    loop {
        let v = recv(&mut other).await;
        if v["type"] == "pong" {
            break;
        }
    }
    // Reading now, the slow client finds the end of its connection after what was queued:
    // the 4430 close frame if it fitted in the socket buffers, a reset otherwise.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the slow client's connection never ended");
    assert!(matches!(end, Some(4430) | None), "{end:?}");
}

#[tokio::test]
async fn resume_token_keeps_identity_across_connections() {
    let addr = start(ServerConfig::default()).await;
    let mut a = connect(addr).await;
    send(&mut a, json!({"type":"hello","v":1})).await;
    let w = recv(&mut a).await;
    send(&mut a, json!({"type":"join","room":"r"})).await;
    recv(&mut a).await;
    let (mut b, _) = joined(addr, "r").await;
    drop(a);
    let mut a2 = connect(addr).await;
    send(&mut a2, json!({"type":"hello","v":1,"token":w["token"]})).await;
    let w2 = recv(&mut a2).await;
    assert_eq!(
        (&w2["id"], &w2["resumed"], &w2["rooms"]),
        (&w["id"], &json!(true), &json!(["r"]))
    );
    send(&mut b, json!({"type":"signal","to":w["id"],"data":{"k":1}})).await;
    assert_eq!(recv(&mut a2).await["data"], json!({"k":1}));
}

#[tokio::test]
async fn swarm_neighbours_meet_and_signal_over_real_websockets() {
    let addr = start(ServerConfig::default()).await;
    let w = "ab".repeat(32);
    let mut seed = connect(addr).await;
    let seed_id = hello(&mut seed).await;
    send(
        &mut seed,
        json!({"type":"swarm-join","swarm":w,"seed":true}),
    )
    .await;
    assert_eq!(
        recv(&mut seed).await,
        json!({"type":"swarm-joined","swarm":w,"peers":[]})
    );
    let mut leech = connect(addr).await;
    let leech_id = hello(&mut leech).await;
    send(&mut leech, json!({"type":"swarm-join","swarm":w})).await;
    assert_eq!(
        recv(&mut leech).await,
        json!({"type":"swarm-joined","swarm":w,"peers":[{"id":seed_id,"seed":true}]})
    );
    assert_eq!(
        recv(&mut seed).await,
        json!({"type":"swarm-peer","swarm":w,"peer":{"id":leech_id,"seed":false}})
    );
    send(
        &mut leech,
        json!({"type":"signal","to":seed_id,"data":{"sdp":"x"}}),
    )
    .await;
    let mut got = recv(&mut seed).await;
    got.as_object_mut().unwrap().remove("n");
    assert_eq!(
        got,
        json!({"type":"signal","from":leech_id,"data":{"sdp":"x"}})
    );
    // Bytes moved, as the members report them (no answer).
    send(
        &mut leech,
        json!({"type":"swarm-bytes","swarm":w,"http":1000,"p2p":9000,"up":0}),
    )
    .await;
    send(
        &mut seed,
        json!({"type":"swarm-bytes","swarm":w,"http":0,"p2p":0,"up":9000}),
    )
    .await;
    // The gauges, published by the hub twice a second.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = http_get(addr, "/metrics").await;
        if metrics.contains("peerweb_swarm_members 2")
            && metrics.contains("peerweb_swarm_bytes_total{source=\"up\"} 9000")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(metrics.contains("peerweb_swarms 1"), "{metrics}");
    assert!(metrics.contains("peerweb_swarm_members 2"));
    assert!(metrics.contains("peerweb_swarm_introductions_total 1"));
    for line in [
        "peerweb_swarm_bytes_total{source=\"http\"} 1000".to_owned(),
        "peerweb_swarm_bytes_total{source=\"p2p\"} 9000".to_owned(),
        format!("peerweb_swarm_top_members{{swarm=\"{w}\",kind=\"all\"}} 2"),
        format!("peerweb_swarm_top_members{{swarm=\"{w}\",kind=\"seeds\"}} 1"),
        format!("peerweb_swarm_top_bytes{{swarm=\"{w}\",source=\"p2p\"}} 9000"),
    ] {
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    // And on /status: the swarm, its bytes and the server's totals.
    let status: Value = serde_json::from_str(
        http_get(addr, "/api/status")
            .await
            .split("\r\n\r\n")
            .nth(1)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        status["swarms"]["top"],
        json!([{"id":w,"members":2,"seeds":1,"http":1000,"p2p":9000,"up":9000}])
    );
    assert_eq!(status["swarms"]["bytes"]["p2p"], 9000);
    assert_eq!(status["totals"]["swarm_p2p"], 9000);
    send(&mut leech, json!({"type":"swarm-leave","swarm":w})).await;
    assert_eq!(
        recv(&mut leech).await,
        json!({"type":"swarm-left","swarm":w})
    );
    assert_eq!(
        recv(&mut seed).await,
        json!({"type":"swarm-peer-left","swarm":w,"id":leech_id})
    );
}

#[tokio::test]
async fn http_endpoints() {
    let addr = start(ServerConfig::default()).await;
    for (path, needle) in [
        ("/api/ice", "iceServers"),
        ("/healthz", "ok"),
        ("/metrics", "peerweb_signal_connections"),
        ("/sdk/peerweb.js", "export"),
        ("/", "<html"),
        ("/receive", "importmap"),
        ("/transfer/words.js", r#""crimson","#),
        ("/transfer/spake2.js", "@noble/curves/ed25519.js"),
        ("/sdk/swarm-tree.js", "export class Tree"),
        ("/sdk/swarm-manifest.js", "export function parseManifest"),
        // The pages' libraries, fetched from web/package-lock.json at build time.
        ("/vendor/@noble/curves/ed25519.js", "export"),
        ("/vendor/@noble/hashes/sha2.js", "export"),
    ] {
        let body = http_get(addr, path).await;
        assert!(body.starts_with("HTTP/1.1 200"), "{path}: {body}");
        assert!(body.contains(needle), "{path} lacks {needle}");
    }
    for path in [
        "/nope",
        "/vendor/@noble/curves/src/ed25519.ts",
        "/vendor/@noble/curves/package.json",
        "/vendor/../Cargo.toml",
        "/vendor/",
    ] {
        let body = http_get(addr, path).await;
        assert!(body.starts_with("HTTP/1.1 404"), "{path}: {body}");
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    common::http_get(addr, "x", path).await
}
