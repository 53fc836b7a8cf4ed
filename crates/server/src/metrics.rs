//! `GET /metrics`: every counter of the server in Prometheus' text format — signaling,
//! what clients report of their peer connections and swarms, TURN, TLS and ACME. Label sets
//! are fixed here, or bounded (the largest swarms): nothing a client sends can grow them.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use peerweb_proto::ClientKind;
use peerweb_signal::{CONNECT_BUCKETS_MS, Connectivity, Outcome, SwarmSummary, TOP_SWARMS};

use crate::{AppState, acme, tls};

pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let s = state.hub.stats();
    let mut body = String::new();
    let out = &mut body;
    metric(
        out,
        "signal_connections",
        "gauge",
        "Open signaling WebSocket connections.",
        &[("", s.conns as u64)],
    );
    metric(
        out,
        "signal_sessions",
        "gauge",
        "Sessions connected to this node.",
        &[("", s.sessions as u64)],
    );
    metric(
        out,
        "signal_rooms",
        "gauge",
        "Rooms with a member connected to this node.",
        &[("", s.rooms as u64)],
    );
    let (nodes, sessions, rooms) = state.hub.cluster();
    metric(
        out,
        "cluster_nodes",
        "gauge",
        "Nodes alive on the cluster bus (1: this node alone).",
        &[("", nodes as u64)],
    );
    metric(
        out,
        "cluster_sessions",
        "gauge",
        "Sessions on all nodes (connected or within the resume grace).",
        &[("", sessions as u64)],
    );
    metric(
        out,
        "cluster_rooms",
        "gauge",
        "Rooms with at least one member, on all nodes.",
        &[("", rooms as u64)],
    );
    metric(
        out,
        "swarms",
        "gauge",
        "Swarms with at least one member.",
        &[("", s.swarms as u64)],
    );
    metric(
        out,
        "swarm_members",
        "gauge",
        "Members of all swarms (a peer in two swarms counts twice).",
        &[("", s.swarm_members as u64)],
    );
    metric(
        out,
        "swarm_introductions_total",
        "counter",
        "Neighbours introduced to each other in swarms.",
        &[("", s.swarm_introductions)],
    );
    metric(
        out,
        "swarm_bad_reports_total",
        "counter",
        "Swarm neighbours reported for bytes that failed verification.",
        &[("", s.swarm_bad_reports)],
    );
    let b = s.swarm_bytes;
    metric(
        out,
        "swarm_bytes_total",
        "counter",
        "Bytes of swarm content clients reported getting from the origin (http) and from peers (p2p), and uploading to peers (up).",
        &[
            ("{source=\"http\"}", b.http),
            ("{source=\"p2p\"}", b.p2p),
            ("{source=\"up\"}", b.up),
        ],
    );
    swarm_top_metrics(out, &s.top_swarms);
    metric(
        out,
        "signal_relayed_total",
        "counter",
        "Signal messages relayed between peers.",
        &[("", s.signals_relayed)],
    );
    metric(
        out,
        "signal_errors_total",
        "counter",
        "Error frames sent to clients.",
        &[("", s.errors_sent)],
    );
    metric(
        out,
        "signal_server_closes_total",
        "counter",
        "Connections closed by the server.",
        &[("", s.closes)],
    );
    metric(
        out,
        "whep_sessions",
        "gauge",
        "WHEP players bridged to cameras now.",
        &[("", state.whep.len() as u64)],
    );
    connectivity_metrics(&mut body, &s.connectivity);
    if let Some(turn) = state.turn() {
        turn_metrics(&mut body, &turn.stats());
    }
    if let Some(tls) = &state.tls {
        tls_metrics(&mut body, tls);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// The largest swarms one by one ([`TOP_SWARMS`] at most, so the series stay bounded
/// whatever swarms clients create): members, seeds and reported bytes by source.
fn swarm_top_metrics(out: &mut String, top: &[Option<SwarmSummary>; TOP_SWARMS]) {
    let top: Vec<&SwarmSummary> = top.iter().flatten().collect();
    header(
        out,
        "swarm_top_members",
        "gauge",
        &format!(
            "Members of each of the {TOP_SWARMS} largest swarms (seeds: those with all of the content)."
        ),
    );
    for t in &top {
        let id = t.id();
        let _ = writeln!(
            out,
            "peerweb_swarm_top_members{{swarm=\"{id}\",kind=\"all\"}} {}",
            t.members
        );
        let _ = writeln!(
            out,
            "peerweb_swarm_top_members{{swarm=\"{id}\",kind=\"seeds\"}} {}",
            t.seeds
        );
    }
    header(
        out,
        "swarm_top_bytes",
        "gauge",
        "Bytes the members of each of the largest swarms reported, by source, while the swarm has existed.",
    );
    for t in &top {
        let id = t.id();
        for (source, v) in [
            ("http", t.bytes.http),
            ("p2p", t.bytes.p2p),
            ("up", t.bytes.up),
        ] {
            let _ = writeln!(
                out,
                "peerweb_swarm_top_bytes{{swarm=\"{id}\",source=\"{source}\"}} {v}"
            );
        }
    }
}

/// The `# HELP` and `# TYPE` lines of metric `peerweb_{name}`.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP peerweb_{name} {help}");
    let _ = writeln!(out, "# TYPE peerweb_{name} {kind}");
}

/// Metric `peerweb_{name}`: its header, then one line per (labels, value) row.
fn metric(out: &mut String, name: &str, kind: &str, help: &str, rows: &[(&str, u64)]) {
    header(out, name, kind, help);
    for (labels, v) in rows {
        let _ = writeln!(out, "peerweb_{name}{labels} {v}");
    }
}

fn tls_metrics(out: &mut String, setup: &tls::TlsSetup) {
    use std::sync::atomic::Ordering::Relaxed;
    let t = &setup.tls.stats;
    let mut metric = |name: &str, kind: &str, help: &str, rows: &[(&str, u64)]| {
        metric(out, name, kind, help, rows)
    };
    metric(
        "tls_certificate_expiry_seconds",
        "gauge",
        "Unix time the certificate in use expires (0: none yet).",
        &[("", t.not_after.load(Relaxed))],
    );
    metric(
        "tls_handshakes_total",
        "counter",
        "HTTPS handshakes, by outcome.",
        &[
            ("{result=\"ok\"}", t.handshakes.load(Relaxed)),
            ("{result=\"error\"}", t.handshake_errors.load(Relaxed)),
            ("{result=\"timeout\"}", t.handshake_timeouts.load(Relaxed)),
            ("{result=\"refused\"}", t.refused_per_ip.load(Relaxed)),
        ],
    );
    metric(
        "tls_reloads_total",
        "counter",
        "Certificate files read again, by outcome (a failed one leaves the old in use).",
        &[
            ("{result=\"ok\"}", t.reloads.load(Relaxed)),
            ("{result=\"error\"}", t.reload_errors.load(Relaxed)),
        ],
    );
    if let Some(acme) = &setup.acme {
        let a = &acme.stats;
        metric(
            "acme_certificates_total",
            "counter",
            "Certificates put in use by ACME: newly issued, or loaded from the cache.",
            &[
                ("{source=\"issued\"}", a.issued.load(Relaxed)),
                ("{source=\"cache\"}", a.loaded.load(Relaxed)),
            ],
        );
        let errors: Vec<(String, u64)> = acme::ERROR_KINDS
            .iter()
            .zip(&a.errors)
            .map(|(k, n)| (format!("{{kind=\"{k}\"}}"), n.load(Relaxed)))
            .collect();
        let rows: Vec<(&str, u64)> = errors.iter().map(|(l, n)| (l.as_str(), *n)).collect();
        metric(
            "acme_errors_total",
            "counter",
            "ACME failures, by kind; the certificate in use stays (the log says why).",
            &rows,
        );
        metric(
            "acme_last_error_seconds",
            "gauge",
            "Unix time of the last ACME failure (0: none).",
            &[("", a.last_error_at.load(Relaxed))],
        );
    }
}

fn turn_metrics(out: &mut String, t: &peerweb_turn::Stats) {
    let mut metric = |name: &str, kind: &str, help: &str, rows: &[(&str, u64)]| {
        metric(out, &format!("turn_{name}"), kind, help, rows)
    };
    metric(
        "allocations",
        "gauge",
        "Live TURN allocations.",
        &[("", t.allocations as u64)],
    );
    metric(
        "permissions",
        "gauge",
        "Live TURN permissions.",
        &[("", t.permissions as u64)],
    );
    metric(
        "channels",
        "gauge",
        "Live TURN channel bindings.",
        &[("", t.channels as u64)],
    );
    metric(
        "allocations_total",
        "counter",
        "TURN allocations made.",
        &[("", t.allocations_total)],
    );
    metric(
        "relayed_bytes_total",
        "counter",
        "Application bytes relayed.",
        &[
            ("{direction=\"to_peer\"}", t.bytes_to_peers),
            ("{direction=\"to_client\"}", t.bytes_to_clients),
        ],
    );
    metric(
        "relayed_packets_total",
        "counter",
        "Packets relayed.",
        &[
            ("{direction=\"to_peer\"}", t.packets_to_peers),
            ("{direction=\"to_client\"}", t.packets_to_clients),
        ],
    );
    metric(
        "binding_requests_total",
        "counter",
        "STUN binding requests answered.",
        &[("", t.binding_requests)],
    );
    metric(
        "auth_failures_total",
        "counter",
        "Requests with wrong or expired credentials.",
        &[("", t.auth_failures)],
    );
    metric(
        "stale_nonces_total",
        "counter",
        "Requests answered 438 Stale Nonce.",
        &[("", t.stale_nonces)],
    );
    metric(
        "refusals_total",
        "counter",
        "Requests or packets refused, by reason.",
        &[
            ("{reason=\"peer_address\"}", t.refused_peer),
            ("{reason=\"quota\"}", t.refused_quota),
            ("{reason=\"bandwidth\"}", t.refused_bandwidth),
            ("{reason=\"challenge_rate\"}", t.refused_rate),
            ("{reason=\"no_permission\"}", t.no_permission),
        ],
    );
}

/// What clients reported of their peer connections (each end reports its own view, so a
/// pair that connected counts twice).
fn connectivity_metrics(out: &mut String, c: &Connectivity) {
    let mut by_outcome = |name: &str, help: &str, table: &[[u64; peerweb_signal::OUTCOMES]]| {
        header(out, name, "counter", help);
        for client in ClientKind::ALL {
            for o in Outcome::ALL {
                let result = if o == Outcome::Failed {
                    "failed"
                } else {
                    "connected"
                };
                let _ = writeln!(
                    out,
                    "peerweb_{name}{{client=\"{}\",result=\"{result}\",path=\"{}\",relay=\"{}\"}} {}",
                    client.as_str(),
                    o.path(),
                    o.relay(),
                    table[client.index()][o.index()]
                );
            }
        }
    };
    by_outcome(
        "peer_connections_total",
        "New peer connections as clients reported them: connected (over which path) or failed.",
        &c.connects,
    );
    by_outcome(
        "ice_restarts_total",
        "ICE restarts after a path went down, as clients reported them: recovered (over which path) or not.",
        &c.restarts,
    );
    let name = "peer_connect_seconds";
    header(
        out,
        name,
        "histogram",
        "Time from creating a peer connection to connected, by path.",
    );
    for p in peerweb_proto::PathKind::ALL {
        let h = &c.connect_ms[p.index()];
        let path = p.as_str();
        let mut cumulative = 0;
        for (i, le) in CONNECT_BUCKETS_MS.iter().enumerate() {
            cumulative += h.buckets[i];
            let le = f64::from(*le) / 1000.0;
            let _ = writeln!(
                out,
                "peerweb_{name}_bucket{{path=\"{path}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "peerweb_{name}_bucket{{path=\"{path}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "peerweb_{name}_sum{{path=\"{path}\"}} {}",
            h.sum_ms as f64 / 1000.0
        );
        let _ = writeln!(out, "peerweb_{name}_count{{path=\"{path}\"}} {}", h.count);
    }
    metric(
        out,
        "reports_dropped_total",
        "counter",
        "Connectivity reports not counted: malformed, or above a connection's rate.",
        &[
            ("{reason=\"malformed\"}", c.dropped_malformed),
            ("{reason=\"flood\"}", c.dropped_flood),
        ],
    );
}
