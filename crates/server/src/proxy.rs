//! Behind a reverse proxy: the client's address comes from `Forwarded` / `X-Forwarded-For`,
//! believed only when the connection comes from a trusted proxy (`trusted_proxies`), so
//! per-address limits and logs use the real client and nobody else can pick an address.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use peerweb_turn::Cidr;

/// Most addresses read from the forwarding headers (each proxy adds one).
const MAX_HOPS: usize = 16;

/// The client's address: `peer` itself, unless `peer` is a trusted proxy, then the nearest
/// address in the forwarding chain that is not one (the proxies append, so the right end is
/// the one a trusted proxy saw; whatever is left of it the client may have made up).
pub fn client_addr(peer: SocketAddr, headers: &HeaderMap, trusted: &[Cidr]) -> SocketAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer.ip()) {
        return peer;
    }
    let chain = forwarded_chain(headers);
    match chain.iter().rev().find(|ip| !is_trusted(**ip)) {
        Some(ip) => SocketAddr::new(*ip, peer.port()),
        None => chain
            .first()
            .map_or(peer, |ip| SocketAddr::new(*ip, peer.port())),
    }
}

/// Addresses of `Forwarded: for=…` (RFC 7239), else of `X-Forwarded-For`, in order.
fn forwarded_chain(headers: &HeaderMap) -> Vec<IpAddr> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|s| s.trim().to_owned()))
            .take(MAX_HOPS)
            .collect()
    };
    let forwarded: Vec<IpAddr> = values("forwarded")
        .iter()
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                k.eq_ignore_ascii_case("for").then(|| parse_node(v))?
            })
        })
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    values("x-forwarded-for")
        .iter()
        .filter_map(|v| parse_node(v))
        .collect()
}

/// `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:4711"`, `2001:db8::1`; not `unknown` or `_hidden`.
fn parse_node(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    if let Ok(ip) = v.parse() {
        return Some(ip);
    }
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.parse::<SocketAddr>().ok().map(|s| s.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.7:5555".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(client_addr(stranger, &h, &trusted), stranger);
        assert_eq!(
            client_addr(proxy, &h, &trusted).ip(),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // A client that sends its own header cannot hide behind it: the rightmost untrusted
        // address is the one our proxy saw.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.9.9.9")]);
        assert_eq!(
            client_addr(proxy, &h, &trusted).ip().to_string(),
            "203.0.113.9"
        );
        let h = headers(&[(
            "forwarded",
            r#"for=192.0.2.60;proto=https, for="[2001:db8::1]:4711""#,
        )]);
        assert_eq!(
            client_addr(proxy, &h, &trusted).ip().to_string(),
            "2001:db8::1"
        );
        let h = headers(&[("x-forwarded-for", "unknown, garbage")]);
        assert_eq!(client_addr(proxy, &h, &trusted), proxy);
        assert_eq!(client_addr(proxy, &HeaderMap::new(), &[]), proxy);
    }
}
