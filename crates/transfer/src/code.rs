//! What a sender hands out: a short code for people (`7-crimson-otter`) and a link for
//! browsers (`http://host:8080/receive#7-<secret>`). Both name the same room (from the
//! nameplate, the only part the server sees); the words are a PAKE password, the link's
//! fragment a 128-bit secret that browsers never send to the server.

use std::fmt;

pub use crate::words::WORDS;

/// Nameplates are drawn from `1..=MAX_NAMEPLATE`.
pub const MAX_NAMEPLATE: u16 = 999;
/// Bytes of a link secret.
pub const SECRET_BYTES: usize = 16;
/// The browser page a link opens.
pub const RECEIVE_PATH: &str = "/receive";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodeError {
    #[error("a code looks like 7-crimson-otter: a number and two words")]
    Shape,
    #[error("{0:?} is not a code word")]
    UnknownWord(String),
    #[error("the number of a code is 1 to {MAX_NAMEPLATE}")]
    Nameplate,
    #[error("a link looks like http://host:port{RECEIVE_PATH}#7-…")]
    LinkShape,
    #[error("the secret in the link is damaged")]
    LinkSecret,
}

/// A short human code: a nameplate (which room) and two words (the password, 16 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub nameplate: u16,
    pub words: [u8; 2],
}

impl Code {
    /// A code from four random bytes (the caller's random source).
    pub fn from_random(bytes: [u8; 4]) -> Code {
        let n = u16::from_le_bytes([bytes[0], bytes[1]]);
        Code {
            nameplate: n % MAX_NAMEPLATE + 1,
            words: [bytes[2], bytes[3]],
        }
    }

    /// The same words under another nameplate (when the first room was taken).
    pub fn with_nameplate(self, nameplate: u16) -> Code {
        Code { nameplate, ..self }
    }

    /// Reads `7-crimson-otter` (also with spaces, any case).
    pub fn parse(s: &str) -> Result<Code, CodeError> {
        let lower = s.trim().to_ascii_lowercase();
        let mut parts = lower.split(['-', ' ']).filter(|p| !p.is_empty());
        let (Some(n), Some(a), Some(b), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CodeError::Shape);
        };
        let nameplate = parse_nameplate(n)?;
        Ok(Code {
            nameplate,
            words: [word_index(a)?, word_index(b)?],
        })
    }

    /// The room both sides join: the server learns the nameplate and nothing else.
    pub fn room(&self) -> String {
        room(self.nameplate)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}-{}",
            self.nameplate,
            WORDS[usize::from(self.words[0])],
            WORDS[usize::from(self.words[1])]
        )
    }
}

/// The room of a nameplate.
pub fn room(nameplate: u16) -> String {
    format!("transfer-{nameplate}")
}

fn parse_nameplate(n: &str) -> Result<u16, CodeError> {
    if !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CodeError::Shape);
    }
    match n.parse::<u16>() {
        Ok(v) if (1..=MAX_NAMEPLATE).contains(&v) => Ok(v),
        _ => Err(CodeError::Nameplate),
    }
}

fn word_index(w: &str) -> Result<u8, CodeError> {
    WORDS
        .binary_search(&w)
        .ok()
        .and_then(|i| u8::try_from(i).ok())
        .ok_or_else(|| CodeError::UnknownWord(w.chars().take(32).collect()))
}

/// A link for browsers (and `peerweb receive LINK`): server, nameplate, 128-bit secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// `http://host:port` (no trailing slash).
    pub server: String,
    pub nameplate: u16,
    pub secret: [u8; SECRET_BYTES],
}

impl Link {
    /// Reads `http://host:port/receive#7-<base32 secret>`.
    pub fn parse(s: &str) -> Result<Link, CodeError> {
        let (base, fragment) = s.trim().split_once('#').ok_or(CodeError::LinkShape)?;
        let server = base
            .strip_suffix(RECEIVE_PATH)
            .or_else(|| base.strip_suffix(&format!("{RECEIVE_PATH}/")))
            .ok_or(CodeError::LinkShape)?;
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(CodeError::LinkShape);
        }
        let (n, secret) = fragment.split_once('-').ok_or(CodeError::LinkShape)?;
        let nameplate = parse_nameplate(n)?;
        let bytes = data_encoding::BASE32_NOPAD
            .decode(secret.to_ascii_uppercase().as_bytes())
            .map_err(|_| CodeError::LinkSecret)?;
        let secret = <[u8; SECRET_BYTES]>::try_from(bytes).map_err(|_| CodeError::LinkSecret)?;
        Ok(Link {
            server: server.to_owned(),
            nameplate,
            secret,
        })
    }

    pub fn room(&self) -> String {
        room(self.nameplate)
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = data_encoding::BASE32_NOPAD
            .encode(&self.secret)
            .to_ascii_lowercase();
        write!(
            f,
            "{}{RECEIVE_PATH}#{}-{secret}",
            self.server.trim_end_matches('/'),
            self.nameplate
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_sorted_and_distinct() {
        assert!(WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn code_round_trips_and_tolerates_case_and_spaces() {
        for seed in [[0, 0, 0, 0], [255, 255, 255, 255], [7, 3, 42, 200]] {
            let c = Code::from_random(seed);
            assert!((1..=MAX_NAMEPLATE).contains(&c.nameplate));
            assert_eq!(Code::parse(&c.to_string()), Ok(c));
        }
        let c = Code::parse(" 7 Crimson OTTER ").unwrap();
        assert_eq!(c.to_string(), "7-crimson-otter");
        assert_eq!(c.room(), "transfer-7");
    }

    #[test]
    fn bad_codes_say_why() {
        assert_eq!(Code::parse("crimson-otter"), Err(CodeError::Shape));
        assert_eq!(Code::parse("7-crimson"), Err(CodeError::Shape));
        assert_eq!(Code::parse("7-crimson-otter-x"), Err(CodeError::Shape));
        assert_eq!(Code::parse("0-crimson-otter"), Err(CodeError::Nameplate));
        assert_eq!(Code::parse("1000-crimson-otter"), Err(CodeError::Nameplate));
        assert_eq!(
            Code::parse("99999999-crimson-otter"),
            Err(CodeError::Nameplate)
        );
        assert_eq!(Code::parse("+7-crimson-otter"), Err(CodeError::Shape));
        assert_eq!(
            Code::parse("7-crimson-ottr"),
            Err(CodeError::UnknownWord("ottr".into()))
        );
    }

    #[test]
    fn link_round_trips() {
        let l = Link {
            server: "http://127.0.0.1:8080".into(),
            nameplate: 42,
            secret: [9; SECRET_BYTES],
        };
        let s = l.to_string();
        assert!(s.starts_with("http://127.0.0.1:8080/receive#42-"), "{s}");
        assert_eq!(Link::parse(&s), Ok(l.clone()));
        let (base, fragment) = s.split_once('#').unwrap();
        let upper = format!("{base}#{}", fragment.to_ascii_uppercase());
        assert_eq!(Link::parse(&upper), Ok(l));
    }

    #[test]
    fn bad_links_say_why() {
        assert_eq!(Link::parse("http://h/receive"), Err(CodeError::LinkShape));
        assert_eq!(
            Link::parse("http://h/other#1-aaaa"),
            Err(CodeError::LinkShape)
        );
        assert_eq!(
            Link::parse("ftp://h/receive#1-aaaa"),
            Err(CodeError::LinkShape)
        );
        assert_eq!(
            Link::parse("http://h/receive#1-aaaa"),
            Err(CodeError::LinkSecret)
        );
        assert_eq!(
            Link::parse("http://h/receive#1-!!"),
            Err(CodeError::LinkSecret)
        );
        assert_eq!(
            Link::parse("http://h/receive#x-aaaa"),
            Err(CodeError::Shape)
        );
    }
}
