//! `report`: what a client saw of one peer connection, for the server's connectivity
//! metrics. Aggregates only — the message names no peer, room or address, and every field
//! is one of a few fixed values, so the server's label sets cannot grow.
//!
//! ```json
//! {"type":"report","what":"connect","ok":true,"ms":412,"path":"relay","relay":"udp","client":"firefox"}
//! {"type":"report","what":"connect","ok":false,"ms":30000,"client":"native"}
//! {"type":"report","what":"restart","ok":true,"ms":2100,"path":"srflx","client":"chromium"}
//! ```

use serde::Deserialize;

use crate::{DecodeError, ErrorCode};

/// Longest `report` frame accepted, in bytes: a report is a few short fields.
pub const MAX_REPORT_BYTES: usize = 512;
/// Longest time a report may give, in milliseconds (ten minutes).
pub const MAX_REPORT_MS: u32 = 600_000;

/// How every error about a report's fields begins.
pub(crate) const ERROR_PREFIX: &str = "report: ";

/// Declares a closed set of wire names with its index (for counter arrays).
macro_rules! names {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v,)* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            pub const COUNT: usize = [$($s,)*].len();

            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s,)* }
            }

            /// Position in [`Self::ALL`].
            pub fn index(self) -> usize {
                self as usize
            }

            fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$v),)* _ => None }
            }
        }
    };
}

names!(
    /// What a report is about.
    ReportKind {
        /// A new peer connection: it connected (`ok`) or did not.
        Connect = "connect",
        /// An ICE restart of a connection whose path went down: it recovered or not.
        Restart = "restart",
    }
);

names!(
    /// The selected candidate pair: `host` both ends host, `relay` either end relayed,
    /// otherwise `srflx` or `prflx` (what the SDK's `peer.path.type` says).
    PathKind {
        Host = "host",
        Srflx = "srflx",
        Prflx = "prflx",
        Relay = "relay",
    }
);

names!(
    /// How a relayed path reaches its TURN server (`unknown` when the client cannot tell).
    RelayTransport {
        Udp = "udp",
        Tcp = "tcp",
        Tls = "tls",
        Unknown = "unknown",
    }
);

names!(
    /// What kind of client reports (its own word for itself; anything else is `other`).
    ClientKind {
        Chromium = "chromium",
        Firefox = "firefox",
        Safari = "safari",
        Native = "native",
        Other = "other",
    }
);

/// One `report` message, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub what: ReportKind,
    pub ok: bool,
    /// Connect: from creating the connection to connected (or to giving up). Restart: from
    /// the path going down to it being back (or to giving up).
    pub ms: u32,
    /// The selected pair's kind; present exactly when `ok`.
    pub path: Option<PathKind>,
    /// For a relayed path, the transport to the TURN server.
    pub relay: Option<RelayTransport>,
    pub client: ClientKind,
}

#[derive(Deserialize)]
struct Wire<'a> {
    what: Option<&'a str>,
    ok: Option<bool>,
    ms: Option<u64>,
    path: Option<&'a str>,
    relay: Option<&'a str>,
    client: Option<&'a str>,
}

impl Report {
    /// Parses and validates the fields of a `report` frame (its `type` already read).
    pub(crate) fn decode(text: &str) -> Result<Report, DecodeError> {
        let bad =
            |why: String| DecodeError::new(ErrorCode::BadMessage, format!("{ERROR_PREFIX}{why}"));
        if text.len() > MAX_REPORT_BYTES {
            return Err(bad(format!("longer than {MAX_REPORT_BYTES} bytes")));
        }
        let w: Wire<'_> = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let what = w.what.ok_or_else(|| bad("needs a \"what\" field".into()))?;
        let what = ReportKind::parse(what)
            .ok_or_else(|| bad(format!("unknown \"what\" {:?}", short(what))))?;
        let ok = w.ok.ok_or_else(|| bad("needs an \"ok\" field".into()))?;
        let ms = w.ms.ok_or_else(|| bad("needs an \"ms\" field".into()))?;
        let ms = u32::try_from(ms)
            .ok()
            .filter(|ms| *ms <= MAX_REPORT_MS)
            .ok_or_else(|| bad(format!("\"ms\" is above {MAX_REPORT_MS}")))?;
        let path = match w.path {
            None => None,
            Some(p) => Some(
                PathKind::parse(p).ok_or_else(|| bad(format!("unknown path {:?}", short(p))))?,
            ),
        };
        if ok != path.is_some() {
            return Err(bad("\"path\" is given exactly when \"ok\" is true".into()));
        }
        let relay = match (path, w.relay) {
            (Some(PathKind::Relay), None) => Some(RelayTransport::Unknown),
            (Some(PathKind::Relay), Some(r)) => Some(
                RelayTransport::parse(r)
                    .ok_or_else(|| bad(format!("unknown relay {:?}", short(r))))?,
            ),
            (_, None) => None,
            (_, Some(_)) => return Err(bad("\"relay\" only goes with path \"relay\"".into())),
        };
        let client = w
            .client
            .and_then(ClientKind::parse)
            .unwrap_or(ClientKind::Other);
        Ok(Report {
            what,
            ok,
            ms,
            path,
            relay,
            client,
        })
    }

    /// The frame a client sends.
    pub fn encode(&self) -> String {
        let mut out = format!(
            r#"{{"type":"report","what":"{}","ok":{},"ms":{}"#,
            self.what.as_str(),
            self.ok,
            self.ms
        );
        if let Some(p) = self.path {
            out.push_str(&format!(r#","path":"{}""#, p.as_str()));
        }
        if let Some(r) = self.relay {
            out.push_str(&format!(r#","relay":"{}""#, r.as_str()));
        }
        out.push_str(&format!(r#","client":"{}"}}"#, self.client.as_str()));
        out
    }
}

/// At most 16 characters of a client's word, for an error message.
fn short(s: &str) -> String {
    s.chars().take(16).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientMsg;

    fn report(text: &str) -> Result<Report, DecodeError> {
        match ClientMsg::decode(text)? {
            ClientMsg::Report(r) => Ok(r),
            other => panic!("not a report: {other:?}"),
        }
    }

    #[test]
    fn the_documented_examples_decode_and_encode_back() {
        for text in [
            r#"{"type":"report","what":"connect","ok":true,"ms":412,"path":"relay","relay":"udp","client":"firefox"}"#,
            r#"{"type":"report","what":"connect","ok":false,"ms":30000,"client":"native"}"#,
            r#"{"type":"report","what":"restart","ok":true,"ms":2100,"path":"srflx","client":"chromium"}"#,
        ] {
            let r = report(text).unwrap();
            assert_eq!(r.encode(), text);
            assert_eq!(ClientMsg::Report(r).encode(), text);
        }
        let r = report(r#"{"type":"report","what":"connect","ok":true,"ms":0,"path":"relay"}"#)
            .unwrap();
        assert_eq!(r.relay, Some(RelayTransport::Unknown));
        assert_eq!(r.client, ClientKind::Other, "no client word: other");
        let r = report(
            r#"{"type":"report","what":"connect","ok":true,"ms":5,"path":"host","client":"lynx","extra":[1]}"#,
        )
        .unwrap();
        assert_eq!(
            (r.path, r.client),
            (Some(PathKind::Host), ClientKind::Other)
        );
    }

    #[test]
    fn malformed_reports_are_bad_messages_that_say_why() {
        let long = format!(
            r#"{{"type":"report","what":"connect","ok":false,"ms":1,"pad":"{}"}}"#,
            "x".repeat(MAX_REPORT_BYTES)
        );
        for (text, why) in [
            (r#"{"type":"report"}"#, "needs a \"what\""),
            (
                r#"{"type":"report","what":"dance","ok":true,"ms":1}"#,
                "unknown \"what\"",
            ),
            (r#"{"type":"report","what":"connect","ms":1}"#, "\"ok\""),
            (r#"{"type":"report","what":"connect","ok":false}"#, "\"ms\""),
            (
                r#"{"type":"report","what":"connect","ok":false,"ms":-1}"#,
                "report:",
            ),
            (
                r#"{"type":"report","what":"connect","ok":false,"ms":600001}"#,
                "above",
            ),
            (
                r#"{"type":"report","what":"connect","ok":false,"ms":1e3}"#,
                "report:",
            ),
            (
                r#"{"type":"report","what":"connect","ok":"yes","ms":1}"#,
                "report:",
            ),
            (
                r#"{"type":"report","what":"connect","ok":true,"ms":1}"#,
                "exactly when",
            ),
            (
                r#"{"type":"report","what":"connect","ok":false,"ms":1,"path":"host"}"#,
                "exactly when",
            ),
            (
                r#"{"type":"report","what":"connect","ok":true,"ms":1,"path":"moon"}"#,
                "unknown path",
            ),
            (
                r#"{"type":"report","what":"connect","ok":true,"ms":1,"path":"host","relay":"udp"}"#,
                "only goes with",
            ),
            (
                r#"{"type":"report","what":"connect","ok":true,"ms":1,"path":"relay","relay":"carrier-pigeon"}"#,
                "unknown relay",
            ),
            (long.as_str(), "longer than"),
        ] {
            let e = report(text).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadMessage, "{text}");
            assert!(e.message.contains(why), "{text}: {}", e.message);
            assert!(
                e.message.len() < 200,
                "an error names at most a short word: {}",
                e.message
            );
        }
    }

    #[test]
    fn every_name_set_is_closed_and_indexed_in_order() {
        for (i, k) in ClientKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
            assert_eq!(ClientKind::parse(k.as_str()), Some(*k));
        }
        assert_eq!(PathKind::COUNT, 4);
        assert_eq!(RelayTransport::COUNT, 4);
        assert_eq!(ReportKind::COUNT, 2);
    }
}
