//! Which peer addresses a relay may send to.
//!
//! By default a TURN relay must not become a way into the server's own network: loopback,
//! private (RFC 1918, RFC 4193), shared (RFC 6598), link-local, multicast, broadcast and
//! unspecified addresses are refused, and so are the server's own addresses except on its
//! relay ports (another allocation). Explicit allow entries win over everything; explicit
//! deny entries over the built-in rules.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;

/// An address block, `a.b.c.d/n` or `x::/n` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A malformed CIDR string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address block {0:?} (want e.g. 10.0.0.0/8 or fd00::/8)")]
pub struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.to_owned());
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse().map_err(|_| err())?,
            None => max,
        };
        Cidr::new(addr, prefix).ok_or_else(err)
    }
}

/// The relay's peer address policy.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// Permit loopback peers, every port (tests on one machine; coturn's
    /// `--allow-loopback-peers`).
    pub allow_loopback: bool,
    /// Always permitted.
    pub allow: Vec<Cidr>,
    /// Always refused (unless in `allow`).
    pub deny: Vec<Cidr>,
    /// The server's own addresses: reachable only on `relay_ports`.
    pub own: Vec<IpAddr>,
    pub relay_ports: Option<RangeInclusive<u16>>,
}

/// Treats IPv4-mapped IPv6 addresses as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn special_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xC0) == 64) // 100.64.0.0/10, shared address space
        || o[0] >= 240 // reserved
}

fn special_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xFE00) == 0xFC00 // unique local
        || (s[0] & 0xFFC0) == 0xFE80 // link local
}

impl PeerPolicy {
    /// Whether a permission may be installed for this IP (ports unknown yet).
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.verdict(ip, None)
    }

    /// Whether a packet may be relayed to this peer.
    pub fn allows(&self, peer: SocketAddr) -> bool {
        self.verdict(peer.ip(), Some(peer.port()))
    }

    fn verdict(&self, ip: IpAddr, port: Option<u16>) -> bool {
        let ip = canonical(ip);
        if self.allow.iter().any(|c| c.contains(ip)) {
            return true;
        }
        if self.deny.iter().any(|c| c.contains(ip)) {
            return false;
        }
        if ip.is_loopback() {
            // Loopback is all one host: allowing it (for tests) allows all of it.
            return self.allow_loopback;
        }
        let special = match ip {
            IpAddr::V4(v4) => special_v4(v4),
            IpAddr::V6(v6) => special_v6(v6),
        };
        !special && self.own_port_ok(ip, port)
    }

    fn own_port_ok(&self, ip: IpAddr, port: Option<u16>) -> bool {
        if !self.own.iter().any(|o| canonical(*o) == ip) {
            return true;
        }
        match (port, &self.relay_ports) {
            (None, _) => true,
            (Some(p), Some(r)) => r.contains(&p),
            (Some(_), None) => false,
        }
    }
}
