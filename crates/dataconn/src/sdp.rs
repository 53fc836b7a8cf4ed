//! The SDP of a data-only connection (RFC 8866, 8839, 8841, 8842): one bundled
//! `m=application … UDP/DTLS/SCTP webrtc-datachannel` section with the ICE credentials, the
//! DTLS fingerprint and role, the SCTP port and the largest message taken. Written here for
//! our side; read from any browser's or library's description (session-level attributes
//! count for every section, as Firefox writes them; other sections are noted, so that an
//! answer can refuse them).

use std::fmt::Write as _;

use crate::Error;

/// Bytes of SDP read at most.
pub const MAX_SDP: usize = 64 * 1024;
/// Candidates read from one description at most.
pub const MAX_CANDIDATES: usize = 64;
/// `a=max-message-size` when a description does not say (RFC 8841 §6).
pub const DEFAULT_MAX_MESSAGE: usize = 65_536;

/// The DTLS role a side takes (`a=setup`, RFC 8842).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// Offerer: either; the answerer chooses.
    ActPass,
    /// DTLS client.
    Active,
    /// DTLS server.
    Passive,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::ActPass => "actpass",
            Setup::Active => "active",
            Setup::Passive => "passive",
        }
    }
}

/// One m-section of a description that is not our data section (media, or a second data
/// section): an answer refuses it with port 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Other {
    /// The `m=` line's media, port and protocol fields, and its format list.
    pub media: String,
    pub proto: String,
    pub formats: String,
    pub mid: Option<String>,
}

/// What a description says for the data section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub ufrag: String,
    pub pwd: String,
    /// The SHA-256 fingerprint of the sender's certificate.
    pub fingerprint: [u8; 32],
    pub setup: Setup,
    pub mid: String,
    pub sctp_port: u16,
    pub max_message_size: usize,
    pub ice_lite: bool,
    /// `candidate:…` lines (without `a=`).
    pub candidates: Vec<String>,
    /// Whether the section's port is 0 (refused, in an answer).
    pub rejected: bool,
    /// The m-sections before and after the data section, in order (the data section sits at
    /// index `data_index`).
    pub others: Vec<Other>,
    pub data_index: usize,
}

/// Writes a description: `version` is the session version (one more per description sent).
pub fn write(d: &Description, session_id: u64, version: u64) -> String {
    let mut s = String::with_capacity(1024);
    let _ = write!(
        s,
        "v=0\r\no=- {session_id} {version} IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    );
    if d.ice_lite {
        s.push_str("a=ice-lite\r\n");
    }
    let mids: Vec<&str> = sections(d)
        .filter(|(port_zero, _)| !port_zero)
        .map(|(_, mid)| mid)
        .collect();
    let _ = write!(s, "a=group:BUNDLE {}\r\n", mids.join(" "));
    s.push_str("a=msid-semantic: WMS\r\n");
    for (i, other) in d.others.iter().enumerate() {
        if i == d.data_index {
            data_section(&mut s, d);
        }
        // An RTP section is refused with a static payload type (no rtpmap needed), as
        // browsers do; anything else keeps its formats.
        let formats = if other.proto.contains("RTP") {
            "0"
        } else {
            other.formats.as_str()
        };
        let _ = write!(
            s,
            "m={} 0 {} {formats}\r\nc=IN IP4 0.0.0.0\r\n",
            other.media, other.proto
        );
        if let Some(mid) = &other.mid {
            let _ = write!(s, "a=mid:{mid}\r\n");
        }
        s.push_str("a=inactive\r\n");
    }
    if d.data_index >= d.others.len() {
        data_section(&mut s, d);
    }
    s
}

/// Each section in order: (refused, mid).
fn sections(d: &Description) -> impl Iterator<Item = (bool, &str)> {
    let data = std::iter::once((d.rejected, d.mid.as_str()));
    let others = |r: std::ops::Range<usize>| {
        d.others[r]
            .iter()
            .map(|o| (true, o.mid.as_deref().unwrap_or("")))
    };
    let split = d.data_index.min(d.others.len());
    others(0..split)
        .chain(data)
        .chain(others(split..d.others.len()))
}

fn data_section(s: &mut String, d: &Description) {
    let port = if d.rejected { 0 } else { 9 };
    let _ = write!(
        s,
        "m=application {port} UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
    );
    let _ = write!(
        s,
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=ice-options:trickle\r\n",
        d.ufrag, d.pwd
    );
    let hex: Vec<String> = d.fingerprint.iter().map(|b| format!("{b:02X}")).collect();
    let _ = write!(s, "a=fingerprint:sha-256 {}\r\n", hex.join(":"));
    let _ = write!(s, "a=setup:{}\r\na=mid:{}\r\n", d.setup.name(), d.mid);
    for c in &d.candidates {
        let _ = write!(s, "a={c}\r\n");
    }
    let _ = write!(
        s,
        "a=sctp-port:{}\r\na=max-message-size:{}\r\n",
        d.sctp_port, d.max_message_size
    );
}

/// Reads a description's data section. An error for a description without one, or whose
/// data section lacks what a connection needs (credentials, a SHA-256 fingerprint).
pub fn parse(sdp: &str) -> Result<Description, Error> {
    if sdp.len() > MAX_SDP {
        return Err(Error::Sdp("description too large"));
    }
    // Session level first, then each section; a section's own attribute wins.
    #[derive(Default, Clone)]
    struct Attrs {
        ufrag: Option<String>,
        pwd: Option<String>,
        fingerprint: Option<[u8; 32]>,
        setup: Option<Setup>,
    }
    let mut session = Attrs::default();
    let mut ice_lite = false;
    let mut data: Option<(Attrs, Description)> = None;
    let mut others: Vec<Other> = Vec::new();
    // Which section the lines belong to: None for the session, Some(true) for the data one.
    let mut in_data: Option<bool> = None;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            let mut f = m.split_whitespace();
            let (media, port, proto) = (f.next(), f.next(), f.next());
            let formats: Vec<&str> = f.collect();
            let is_data = media == Some("application")
                && proto.is_some_and(|p| p.ends_with("DTLS/SCTP"))
                && formats.first() == Some(&"webrtc-datachannel")
                && data.is_none();
            if is_data {
                let d = Description {
                    ufrag: String::new(),
                    pwd: String::new(),
                    fingerprint: [0; 32],
                    setup: Setup::ActPass,
                    mid: String::new(),
                    sctp_port: 5000,
                    max_message_size: DEFAULT_MAX_MESSAGE,
                    ice_lite: false,
                    candidates: Vec::new(),
                    rejected: port == Some("0"),
                    others: Vec::new(),
                    data_index: others.len(),
                };
                data = Some((session.clone(), d));
                in_data = Some(true);
            } else {
                if others.len() >= 64 {
                    return Err(Error::Sdp("too many m-sections"));
                }
                others.push(Other {
                    media: media.unwrap_or("application").to_owned(),
                    proto: proto.unwrap_or("UDP/DTLS/SCTP").to_owned(),
                    formats: formats.join(" "),
                    mid: None,
                });
                in_data = Some(false);
            }
            continue;
        }
        let Some(attr) = line.strip_prefix("a=") else {
            continue;
        };
        let (name, value) = attr.split_once(':').unwrap_or((attr, ""));
        let attrs = match in_data {
            None => {
                if name == "ice-lite" {
                    ice_lite = true;
                }
                &mut session
            }
            Some(true) => match data.as_mut() {
                Some((a, d)) => {
                    match name {
                        "mid" => d.mid = value.to_owned(),
                        "sctp-port" => {
                            d.sctp_port =
                                value.parse().map_err(|_| Error::Sdp("bad a=sctp-port"))?
                        }
                        "max-message-size" => {
                            // 0 means no limit (RFC 8841 §6): ours is what we can hold.
                            let n: usize = value
                                .parse()
                                .map_err(|_| Error::Sdp("bad a=max-message-size"))?;
                            d.max_message_size = if n == 0 { usize::MAX } else { n };
                        }
                        "candidate" if d.candidates.len() < MAX_CANDIDATES => {
                            d.candidates.push(attr.to_owned());
                        }
                        _ => {}
                    }
                    a
                }
                None => continue,
            },
            Some(false) => {
                if name == "mid"
                    && let Some(o) = others.last_mut()
                {
                    o.mid = Some(value.to_owned());
                }
                continue;
            }
        };
        match name {
            "ice-ufrag" => attrs.ufrag = Some(value.to_owned()),
            "ice-pwd" => attrs.pwd = Some(value.to_owned()),
            "fingerprint" => {
                let (hash, hex) = value.split_once(' ').unwrap_or((value, ""));
                if hash.eq_ignore_ascii_case("sha-256") {
                    attrs.fingerprint = Some(parse_fingerprint(hex)?);
                }
            }
            "setup" => {
                attrs.setup = Some(match value {
                    "actpass" => Setup::ActPass,
                    "active" => Setup::Active,
                    "passive" => Setup::Passive,
                    _ => return Err(Error::Sdp("bad a=setup")),
                })
            }
            _ => {}
        }
    }
    let (attrs, mut d) = data.ok_or(Error::Sdp("no data channel section"))?;
    d.ice_lite = ice_lite;
    d.others = others;
    if d.rejected {
        return Ok(d);
    }
    d.ufrag = attrs.ufrag.ok_or(Error::Sdp("no a=ice-ufrag"))?;
    d.pwd = attrs.pwd.ok_or(Error::Sdp("no a=ice-pwd"))?;
    d.fingerprint = attrs
        .fingerprint
        .ok_or(Error::Sdp("no sha-256 a=fingerprint"))?;
    d.setup = attrs.setup.unwrap_or(Setup::ActPass);
    if d.ufrag.len() > 256 || d.pwd.len() > 256 || d.mid.len() > 32 {
        return Err(Error::Sdp("ICE credentials or mid too long"));
    }
    Ok(d)
}

fn parse_fingerprint(hex: &str) -> Result<[u8; 32], Error> {
    let mut out = [0u8; 32];
    let mut n = 0;
    for part in hex.trim().split(':') {
        if n == 32 || part.len() != 2 {
            return Err(Error::Sdp("bad a=fingerprint"));
        }
        out[n] = u8::from_str_radix(part, 16).map_err(|_| Error::Sdp("bad a=fingerprint"))?;
        n += 1;
    }
    if n != 32 {
        return Err(Error::Sdp("bad a=fingerprint"));
    }
    Ok(out)
}
