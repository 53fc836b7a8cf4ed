//! Access tokens: with `auth_secrets` set, a signaling connection and `/api/ice` need a
//! token signed with one of them (a JWT, HS256): which rooms it may join (`room`: a name, or a
//! prefix ending in `*`), until when (`exp`), for whom (`sub`, optional) and whether it may
//! use the relay (`relay`, default true). The token comes as `?access_token=` (browsers cannot
//! set headers on a WebSocket) or `Authorization: Bearer`. `peerweb token` mints them.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Clock skew tolerated on `exp` and `nbf`, seconds.
const LEEWAY_SECS: u64 = 5;
/// Shortest secret accepted (bytes): an HMAC key that can be guessed protects nothing.
pub const MIN_SECRET_BYTES: usize = 32;
/// `/api/ice` requests one address may make (per second, and in a burst) with auth on.
const ICE_PER_SEC: u32 = 2;
const ICE_BURST: u32 = 20;
/// Addresses the limiter remembers before it forgets the idle ones.
const LIMITER_KEYS: usize = 100_000;
/// Page-login attempts one address may make per minute (a password can be guessed).
const LOGINS_PER_MIN: u32 = 10;
/// Lifetime of the tokens the page login hands out: the pages ask again at every
/// connection, so it only needs to outlast one.
pub const PAGE_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Shortest page password accepted.
pub const MIN_PAGE_PASSWORD: usize = 8;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Room pattern: a room name, or a prefix ending in `*` (`*`: every room).
    pub room: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Who it is for (shows in logs), if anyone says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Whether `/api/ice` hands it TURN credentials.
    #[serde(default = "yes")]
    pub relay: bool,
}

fn yes() -> bool {
    true
}

/// What a verified token lets a signaling connection do, for the core.
#[derive(Debug, Clone)]
pub struct Grant {
    pub room: String,
    pub expires: Instant,
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    #[error("this server requires an access token (?access_token= or Authorization: Bearer)")]
    Missing,
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid yet")]
    NotYet,
    #[error("the access token is not signed by this server")]
    BadSignature,
    #[error("the access token is malformed: {0}")]
    Malformed(String),
    #[error("the access token does not allow the relay")]
    NoRelay,
    #[error("too many requests from this address; try again shortly")]
    RateLimited,
}

/// The server's secrets, and the per-address limit of `/api/ice`.
#[derive(Debug)]
pub struct Auth {
    keys: Vec<DecodingKey>,
    ice_limit: DefaultKeyedRateLimiter<IpAddr>,
    /// The first secret signs what the page login hands out.
    signer: String,
    page_password: Option<String>,
    login_limit: DefaultKeyedRateLimiter<IpAddr>,
}

impl Auth {
    pub fn new(secrets: &[String], page_password: Option<String>) -> Self {
        let n = |v: u32| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(n(ICE_PER_SEC)).allow_burst(n(ICE_BURST));
        Self {
            keys: secrets
                .iter()
                .filter_map(|s| DecodingKey::from_secret(s.as_bytes()).ok())
                .collect(),
            ice_limit: RateLimiter::keyed(quota),
            signer: secrets.first().cloned().unwrap_or_default(),
            page_password,
            login_limit: RateLimiter::keyed(Quota::per_minute(n(LOGINS_PER_MIN))),
        }
    }

    /// The bundled pages' login: the operator's page password buys a short-lived token for
    /// one room.
    pub fn page_login(&self, ip: IpAddr, password: &str, room: &str) -> Result<String, LoginError> {
        let Some(want) = &self.page_password else {
            return Err(LoginError::NoPageLogin);
        };
        if self.login_limit.len() > LIMITER_KEYS {
            self.login_limit.retain_recent();
        }
        if self.login_limit.check_key(&ip).is_err() {
            return Err(LoginError::RateLimited);
        }
        // Compared in time independent of where they differ.
        let same = want.len() == password.len()
            && want
                .bytes()
                .zip(password.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(LoginError::WrongPassword);
        }
        if room.is_empty() || room.len() > 64 || room.contains('*') {
            return Err(LoginError::BadRoom);
        }
        mint(
            &self.signer,
            &Claims {
                room: room.to_owned(),
                exp: unix_now() + PAGE_TOKEN_TTL.as_secs(),
                sub: Some("page".into()),
                relay: true,
            },
        )
        .map_err(|_| LoginError::WrongPassword)
    }

    /// Whether the pages can log in (a page password is set).
    pub fn has_page_login(&self) -> bool {
        self.page_password.is_some()
    }

    /// Checks a token against every secret (rotation: any may have signed it).
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp"]);
        let mut last = AuthError::BadSignature;
        for key in &self.keys {
            match jsonwebtoken::decode::<Claims>(token, key, &v) {
                Ok(data) => {
                    if data.claims.room.is_empty() {
                        return Err(AuthError::Malformed("no room".into()));
                    }
                    return Ok(data.claims);
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::InvalidSignature => AuthError::BadSignature,
                        K::ExpiredSignature => AuthError::Expired,
                        K::ImmatureSignature => AuthError::NotYet,
                        _ => AuthError::Malformed(e.to_string()),
                    };
                    // Only a wrong signature may mean another secret signed it.
                    if last != AuthError::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    /// The token of a request: `?access_token=`, else `Authorization: Bearer`.
    pub fn token<'a>(query: Option<&'a str>, headers: &'a HeaderMap) -> Option<&'a str> {
        let from_query = query.and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("access_token="))
                .filter(|t| !t.is_empty())
        });
        from_query.or_else(|| {
            headers
                .get(header::AUTHORIZATION)?
                .to_str()
                .ok()?
                .strip_prefix("Bearer ")
                .map(str::trim)
        })
    }

    /// What a signaling connection with this token may do.
    pub fn grant(&self, token: Option<&str>) -> Result<(Grant, Claims), AuthError> {
        let claims = self.verify(token.ok_or(AuthError::Missing)?)?;
        let left = claims.exp.saturating_sub(unix_now());
        let grant = Grant {
            room: claims.room.clone(),
            expires: Instant::now() + Duration::from_secs(left),
        };
        Ok((grant, claims))
    }

    /// Whether `/api/ice` may hand TURN credentials to this request.
    pub fn relay(&self, ip: IpAddr, token: Option<&str>) -> Result<Claims, AuthError> {
        if self.ice_limit.len() > LIMITER_KEYS {
            self.ice_limit.retain_recent();
        }
        if self.ice_limit.check_key(&ip).is_err() {
            return Err(AuthError::RateLimited);
        }
        let claims = self.verify(token.ok_or(AuthError::Missing)?)?;
        if !claims.relay {
            return Err(AuthError::NoRelay);
        }
        Ok(claims)
    }
}

/// Why the page login refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoginError {
    #[error("this server's pages have no password: ask its operator for an access token")]
    NoPageLogin,
    #[error("wrong password")]
    WrongPassword,
    #[error("too many attempts from this address; wait a minute")]
    RateLimited,
    #[error("not a room name")]
    BadRoom,
}

/// Signs a token (for `peerweb token` and tests).
pub fn mint(secret: &str, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes())?,
    )
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            room: "team-*".into(),
            exp,
            sub: Some("ada".into()),
            relay: true,
        }
    }

    #[test]
    fn tokens_verify_under_any_secret_and_fail_by_reason() {
        let (old, new) = ("o".repeat(32), "n".repeat(32));
        let auth = Auth::new(&[new.clone(), old.clone()], None);
        let c = claims(unix_now() + 60);
        assert_eq!(auth.verify(&mint(&old, &c).unwrap()), Ok(c.clone()));
        assert_eq!(auth.verify(&mint(&new, &c).unwrap()), Ok(c.clone()));
        let forged = mint(&"x".repeat(32), &c).unwrap();
        assert_eq!(auth.verify(&forged), Err(AuthError::BadSignature));
        let expired = mint(&new, &claims(unix_now() - 60)).unwrap();
        assert_eq!(auth.verify(&expired), Err(AuthError::Expired));
        assert!(matches!(
            auth.verify("not.a.jwt"),
            Err(AuthError::Malformed(_))
        ));
        // A token signed with "none" (no signature) is refused.
        let none = format!(
            "{}.{}.",
            data_encoding::BASE64URL_NOPAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            data_encoding::BASE64URL_NOPAD.encode(serde_json::to_string(&c).unwrap().as_bytes())
        );
        assert!(auth.verify(&none).is_err());
    }

    #[test]
    fn the_token_comes_from_the_query_or_the_bearer_header() {
        let mut h = HeaderMap::new();
        assert_eq!(Auth::token(Some("a=1&access_token=xyz"), &h), Some("xyz"));
        assert_eq!(Auth::token(None, &h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(Auth::token(None, &h), Some("abc"));
        assert_eq!(Auth::token(Some("access_token="), &h), Some("abc"));
    }
}
