//! The State Cookie (RFC 9260 §5.1.3): a server answers an INIT with what it needs to set up the
//! association sealed in the cookie — and keeps nothing — so a flood of INITs costs it no state.
//! The cookie comes back in COOKIE ECHO; it is accepted only if its MAC (HMAC-SHA256 with a
//! secret of the endpoint's, truncated to 16 bytes, compared in constant time) is right and it
//! is not older than its lifetime. Times are milliseconds passed in by the caller. A cookie made
//! for an INIT that arrived on an established association carries that association's tags
//! (the Tie-Tags of §5.2.2): its COOKIE ECHO is a restart of that association only (§5.2.4).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::chunk::u32_at;

/// Cookie format version (the first byte).
const VERSION: u8 = 2;
const BODY: usize = 1 + 8 + 4 + 4 + 4 + 4 + 2 + 2 + 4 + 1 + 8;
const MAC: usize = 16;
/// A sealed cookie's length.
pub const LEN: usize = BODY + MAC;

/// What the peer's INIT said, as far as the association needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInit {
    pub tag: u32,
    pub a_rwnd: u32,
    pub outbound_streams: u16,
    pub inbound_streams: u16,
    pub initial_tsn: u32,
    pub forward_tsn: bool,
    pub reconfig: bool,
}

/// The association's parameters, as sealed in the cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cookie {
    /// When the INIT ACK carrying it was made.
    pub created_ms: u64,
    pub local_tag: u32,
    pub local_initial_tsn: u32,
    pub peer: PeerInit,
    /// (our tag, the peer's tag) of the association that was established when the INIT came:
    /// only that association may be restarted with this cookie.
    pub tie_tags: Option<(u32, u32)>,
}

/// Why a cookie is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    #[error("a State Cookie of the wrong size or version")]
    Malformed,
    #[error("a State Cookie this endpoint did not make")]
    Forged,
    #[error("a stale State Cookie ({0} ms past its lifetime)")]
    Stale(u64),
}

/// The endpoint's secret for cookies.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// `bytes`: 32 random bytes (the caller's randomness: this crate has no I/O).
    pub fn new(bytes: [u8; 32]) -> Secret {
        Secret(bytes)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // Any key length is accepted: this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }

    /// 32 bytes nobody without the secret can foresee, from `input` (fresh tags for a
    /// restart: this crate has no randomness of its own).
    pub(crate) fn derive(&self, input: &[u8]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(b"peerweb-sctp derive");
        mac.update(input);
        mac.finalize().into_bytes().into()
    }
}

impl Cookie {
    /// The cookie's bytes, sealed with `secret`.
    pub fn seal(&self, secret: &Secret) -> Vec<u8> {
        let mut b = Vec::with_capacity(LEN);
        b.push(VERSION);
        b.extend_from_slice(&self.created_ms.to_be_bytes());
        b.extend_from_slice(&self.local_tag.to_be_bytes());
        b.extend_from_slice(&self.local_initial_tsn.to_be_bytes());
        let p = &self.peer;
        b.extend_from_slice(&p.tag.to_be_bytes());
        b.extend_from_slice(&p.a_rwnd.to_be_bytes());
        b.extend_from_slice(&p.outbound_streams.to_be_bytes());
        b.extend_from_slice(&p.inbound_streams.to_be_bytes());
        b.extend_from_slice(&p.initial_tsn.to_be_bytes());
        b.push(u8::from(p.forward_tsn) | u8::from(p.reconfig) << 1);
        // Tags are never zero: zeros say there are none.
        let (tie_local, tie_peer) = self.tie_tags.unwrap_or((0, 0));
        b.extend_from_slice(&tie_local.to_be_bytes());
        b.extend_from_slice(&tie_peer.to_be_bytes());
        let mut mac = secret.mac();
        mac.update(&b);
        b.extend_from_slice(&mac.finalize().into_bytes()[..MAC]);
        b
    }

    /// Opens a cookie that came back in COOKIE ECHO at `now_ms`, made at most `lifetime_ms`
    /// before.
    pub fn open(
        b: &[u8],
        secret: &Secret,
        now_ms: u64,
        lifetime_ms: u64,
    ) -> Result<Cookie, CookieError> {
        if b.len() != LEN || b[0] != VERSION {
            return Err(CookieError::Malformed);
        }
        let mut mac = secret.mac();
        mac.update(&b[..BODY]);
        mac.verify_truncated_left(&b[BODY..])
            .map_err(|_| CookieError::Forged)?;
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let mut created = [0; 8];
        created.copy_from_slice(&b[1..9]);
        let created_ms = u64::from_be_bytes(created);
        let age = now_ms.saturating_sub(created_ms);
        if age > lifetime_ms {
            return Err(CookieError::Stale(age - lifetime_ms));
        }
        Ok(Cookie {
            created_ms,
            local_tag: u32_at(b, 9),
            local_initial_tsn: u32_at(b, 13),
            peer: PeerInit {
                tag: u32_at(b, 17),
                a_rwnd: u32_at(b, 21),
                outbound_streams: u16_at(25),
                inbound_streams: u16_at(27),
                initial_tsn: u32_at(b, 29),
                forward_tsn: b[33] & 1 != 0,
                reconfig: b[33] & 2 != 0,
            },
            tie_tags: match (u32_at(b, 34), u32_at(b, 38)) {
                (0, 0) => None,
                tags => Some(tags),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie() -> Cookie {
        Cookie {
            created_ms: 1_000_000,
            local_tag: 0x1234_5678,
            local_initial_tsn: 42,
            peer: PeerInit {
                tag: 0xdead_beef,
                a_rwnd: 5 << 20,
                outbound_streams: 65535,
                inbound_streams: 1024,
                initial_tsn: u32::MAX,
                forward_tsn: true,
                reconfig: false,
            },
            tie_tags: Some((7, 9)),
        }
    }

    #[test]
    fn a_cookie_opens_with_its_secret_within_its_lifetime() {
        let s = Secret::new([7; 32]);
        let b = cookie().seal(&s);
        assert_eq!(b.len(), LEN);
        assert_eq!(Cookie::open(&b, &s, 1_060_000, 60_000), Ok(cookie()));
        // A clock that went back does not make it stale.
        assert_eq!(Cookie::open(&b, &s, 0, 60_000), Ok(cookie()));
        // Without Tie-Tags (a first setup).
        let first = Cookie {
            tie_tags: None,
            ..cookie()
        };
        assert_eq!(
            Cookie::open(&first.seal(&s), &s, 1_000_000, 60_000),
            Ok(first)
        );
    }

    #[test]
    fn forged_stale_and_malformed_cookies_are_refused() {
        let s = Secret::new([7; 32]);
        let b = cookie().seal(&s);
        assert_eq!(
            Cookie::open(&b, &s, 1_060_001, 60_000),
            Err(CookieError::Stale(1))
        );
        assert_eq!(
            Cookie::open(&b, &Secret::new([8; 32]), 1_000_000, 60_000),
            Err(CookieError::Forged)
        );
        // Any bit changed, in the body or the MAC.
        for i in 0..LEN {
            let mut x = b.clone();
            x[i] ^= 0x10;
            let r = Cookie::open(&x, &s, 1_000_000, 60_000);
            let want = if i == 0 {
                CookieError::Malformed
            } else {
                CookieError::Forged
            };
            assert_eq!(r, Err(want), "byte {i}");
        }
        assert_eq!(
            Cookie::open(&b[..LEN - 1], &s, 1_000_000, 60_000),
            Err(CookieError::Malformed)
        );
        assert_eq!(Cookie::open(&[], &s, 0, 1), Err(CookieError::Malformed));
    }
}
