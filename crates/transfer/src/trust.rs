//! The trust handshake: both DTLS fingerprints bound to a secret the server never sees,
//! before any file byte (or file name) moves.
//!
//! 1. Each side sends `hello`. The sender does not know which of its two secrets the receiver
//!    holds, so its hello always carries a SPAKE2 message (side A, password = the code); the
//!    receiver's says `auth: "link"` or `auth: "code"` with its SPAKE2 message (side B).
//! 2. Both derive a key: from the link secret, or from SPAKE2. A wrong code gives different
//!    keys on the two sides; a guesser learns whether one guess was right per run, and the
//!    sender ends after one failed run, so a code falls to at most one try in 65,536.
//! 3. Each sends `confirm`: a BLAKE3 keyed hash (MAC) under that key over its role and both fingerprints
//!    *as it sees them* (sender's, then receiver's). A signaling server that substituted its own
//!    fingerprints (a full man in the middle) makes the two views differ, so neither MAC
//!    verifies, and without the secret it cannot forge one.
//!
//! The short authentication string is a function of the two fingerprints only, so people can
//! compare it even when a secret leaked.

use spake2::{Ed25519Group, Identity, Password, Spake2};

use crate::code::{Code, SECRET_BYTES};
use crate::wire::{AuthKind, Control, Role, VERSION};

const ID_SEND: &[u8] = b"peerweb-transfer-v1 sender";
const ID_RECEIVE: &[u8] = b"peerweb-transfer-v1 receiver";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustError {
    /// The other side broke the handshake's rules.
    #[error("peer broke the handshake: {0}")]
    Protocol(&'static str),
    /// The other side speaks another version of the transfer protocol.
    #[error("peer speaks transfer protocol v{0}, this is v{VERSION}")]
    Version(u32),
    /// The MAC over the fingerprints did not verify: a wrong code or link, or someone in the
    /// middle who substituted fingerprints.
    #[error(
        "the other side could not prove it holds the secret for these DTLS fingerprints: \
         a wrong code or link, or a man in the middle (e.g. the signaling server) swapped \
         the fingerprints"
    )]
    Mismatch,
}

/// What the receiver holds.
#[derive(Debug, Clone)]
pub enum Secret {
    Link([u8; SECRET_BYTES]),
    Code(Code),
}

/// One side's handshake state.
#[derive(Debug)]
pub struct Handshake {
    role: Role,
    link: Option<[u8; SECRET_BYTES]>,
    pake: Option<Spake2<Ed25519Group>>,
    pake_msg: Option<Vec<u8>>,
    key: Option<[u8; 32]>,
    /// The peer's SPAKE2 message was not a valid point.
    failed: bool,
}

impl Handshake {
    /// The sender accepts its link secret or its code, whichever the receiver has.
    pub fn sender(link: [u8; SECRET_BYTES], code: Code) -> Handshake {
        let (pake, msg) = Spake2::<Ed25519Group>::start_a(
            &Password::new(code.to_string()),
            &Identity::new(ID_SEND),
            &Identity::new(ID_RECEIVE),
        );
        Handshake {
            role: Role::Send,
            link: Some(link),
            pake: Some(pake),
            pake_msg: Some(msg),
            key: None,
            failed: false,
        }
    }

    /// A sender that takes only its link secret (a camera proving a paired viewer's key):
    /// a receiver that offers a code is refused.
    pub fn sender_link(link: [u8; SECRET_BYTES]) -> Handshake {
        Handshake {
            role: Role::Send,
            link: Some(link),
            pake: None,
            pake_msg: None,
            key: None,
            failed: false,
        }
    }

    pub fn receiver(secret: &Secret) -> Handshake {
        match secret {
            Secret::Link(s) => Handshake {
                role: Role::Receive,
                link: Some(*s),
                pake: None,
                pake_msg: None,
                key: Some(link_key(s)),
                failed: false,
            },
            Secret::Code(code) => {
                let (pake, msg) = Spake2::<Ed25519Group>::start_b(
                    &Password::new(code.to_string()),
                    &Identity::new(ID_SEND),
                    &Identity::new(ID_RECEIVE),
                );
                Handshake {
                    role: Role::Receive,
                    link: None,
                    pake: Some(pake),
                    pake_msg: Some(msg),
                    key: None,
                    failed: false,
                }
            }
        }
    }

    /// Our first message.
    pub fn hello(&self) -> Control {
        let auth = match self.role {
            Role::Send => None,
            Role::Receive if self.pake.is_some() => Some(AuthKind::Code),
            Role::Receive => Some(AuthKind::Link),
        };
        Control::Hello {
            v: VERSION,
            role: self.role,
            auth,
            pake: self
                .pake_msg
                .as_ref()
                .map(|m| data_encoding::BASE64URL_NOPAD.encode(m)),
            ready: false,
        }
    }

    /// Takes the other side's hello; afterwards [`confirm`](Self::confirm) can be sent.
    pub fn on_hello(&mut self, hello: &Control) -> Result<(), TrustError> {
        let Control::Hello {
            v,
            role,
            auth,
            pake,
            ..
        } = hello
        else {
            return Err(TrustError::Protocol("expected hello"));
        };
        if *v != VERSION {
            return Err(TrustError::Version(*v));
        }
        if *role == self.role {
            return Err(TrustError::Protocol("both sides have the same role"));
        }
        if self.key.is_some() && self.pake.is_none() {
            // A link receiver: the sender's SPAKE2 message is not used.
            return Ok(());
        }
        let use_pake = match self.role {
            Role::Send => match auth {
                Some(AuthKind::Link) => false,
                Some(AuthKind::Code) if self.pake.is_none() => {
                    return Err(TrustError::Protocol("this side takes only its link secret"));
                }
                Some(AuthKind::Code) => true,
                None => return Err(TrustError::Protocol("receiver named no secret")),
            },
            Role::Receive => true,
        };
        if !use_pake {
            let link = self.link.as_ref().ok_or(TrustError::Protocol("no link"))?;
            self.key = Some(link_key(link));
            self.pake = None;
            return Ok(());
        }
        let msg = pake
            .as_deref()
            .and_then(|m| data_encoding::BASE64URL_NOPAD.decode(m.as_bytes()).ok())
            .ok_or(TrustError::Protocol("missing or malformed SPAKE2 message"))?;
        let state = self
            .pake
            .take()
            .ok_or(TrustError::Protocol("second hello"))?;
        match state.finish(&msg) {
            Ok(shared) => {
                self.key = Some(blake3::derive_key("peerweb-transfer-v1 code key", &shared))
            }
            // A malformed point is a failed guess like any other: it ends in Mismatch, and
            // our confirm carries nothing derived from the code.
            Err(_) => self.failed = true,
        }
        Ok(())
    }

    /// Our MAC over both fingerprints as we see them (ours and the peer's).
    pub fn confirm(&self, local_fp: &str, remote_fp: &str) -> Result<Control, TrustError> {
        let mac = if self.failed {
            vec![0; 32]
        } else {
            self.mac(self.role, local_fp, remote_fp)?
        };
        Ok(Control::Confirm {
            mac: data_encoding::HEXLOWER.encode(&mac),
        })
    }

    /// Checks the peer's `confirm` against the fingerprints as we see them.
    pub fn verify(&self, local_fp: &str, remote_fp: &str, msg: &Control) -> Result<(), TrustError> {
        let Control::Confirm { mac } = msg else {
            return Err(TrustError::Protocol("expected confirm"));
        };
        if self.failed {
            return Err(TrustError::Mismatch);
        }
        let theirs = match self.role {
            Role::Send => Role::Receive,
            Role::Receive => Role::Send,
        };
        let key = self
            .key
            .as_ref()
            .ok_or(TrustError::Protocol("confirm before hello"))?;
        let got = blake3::Hash::from_hex(mac.as_bytes()).map_err(|_| TrustError::Mismatch)?;
        let (send_fp, recv_fp) = self.order(local_fp, remote_fp);
        // `blake3::Hash` compares in constant time.
        if got == confirm_mac(key, theirs, send_fp, recv_fp) {
            Ok(())
        } else {
            Err(TrustError::Mismatch)
        }
    }

    fn mac(&self, role: Role, local_fp: &str, remote_fp: &str) -> Result<Vec<u8>, TrustError> {
        let key = self
            .key
            .as_ref()
            .ok_or(TrustError::Protocol("confirm before hello"))?;
        let (send_fp, recv_fp) = self.order(local_fp, remote_fp);
        Ok(confirm_mac(key, role, send_fp, recv_fp).as_bytes().to_vec())
    }

    /// (sender's fingerprint, receiver's fingerprint) from ours and the peer's.
    fn order<'a>(&self, local: &'a str, remote: &'a str) -> (&'a str, &'a str) {
        match self.role {
            Role::Send => (local, remote),
            Role::Receive => (remote, local),
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }
}

fn link_key(secret: &[u8; SECRET_BYTES]) -> [u8; 32] {
    blake3::derive_key("peerweb-transfer-v1 link key", secret)
}

/// BLAKE3 keyed hash (a MAC) of the role and both fingerprints.
fn confirm_mac(key: &[u8; 32], role: Role, send_fp: &str, recv_fp: &str) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(b"peerweb-transfer-v1 confirm\n");
    h.update(role.as_str().as_bytes());
    h.update(b"\n");
    h.update(normalize_fingerprint(send_fp).as_bytes());
    h.update(b"\n");
    h.update(normalize_fingerprint(recv_fp).as_bytes());
    h.finalize()
}

/// `sha-256 AB:CD:…` with the hash name in lower case and the hex in upper case, as both
/// str0m and browsers print it but without relying on that.
pub fn normalize_fingerprint(fp: &str) -> String {
    let fp = fp.trim();
    match fp.split_once(' ') {
        Some((alg, hex)) => format!(
            "{} {}",
            alg.to_ascii_lowercase(),
            hex.trim().to_ascii_uppercase()
        ),
        None => fp.to_ascii_uppercase(),
    }
}

/// The short authentication string: six digits from both fingerprints (sender's first).
pub fn sas(send_fp: &str, recv_fp: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"peerweb-transfer-v1 sas\n");
    h.update(normalize_fingerprint(send_fp).as_bytes());
    h.update(b"\n");
    h.update(normalize_fingerprint(recv_fp).as_bytes());
    let d = h.finalize();
    let d = d.as_bytes();
    let n = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % 1_000_000;
    format!("{:03} {:03}", n / 1000, n % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP_S: &str = "sha-256 AA:BB";
    const FP_R: &str = "sha-256 CC:DD";
    const FP_M: &str = "sha-256 EE:FF";

    fn run(
        mut s: Handshake,
        mut r: Handshake,
        s_view: (&str, &str),
        r_view: (&str, &str),
    ) -> (Result<(), TrustError>, Result<(), TrustError>) {
        let sh = s.hello();
        let rh = r.hello();
        s.on_hello(&rh).unwrap();
        r.on_hello(&sh).unwrap();
        let sc = s.confirm(s_view.0, s_view.1).unwrap();
        let rc = r.confirm(r_view.0, r_view.1).unwrap();
        (
            s.verify(s_view.0, s_view.1, &rc),
            r.verify(r_view.0, r_view.1, &sc),
        )
    }

    fn code() -> Code {
        Code::parse("7-crimson-otter").unwrap()
    }

    #[test]
    fn code_and_link_both_verify_the_same_fingerprints() {
        let link = [5; SECRET_BYTES];
        for secret in [Secret::Code(code()), Secret::Link(link)] {
            let (a, b) = run(
                Handshake::sender(link, code()),
                Handshake::receiver(&secret),
                (FP_S, FP_R),
                (FP_R, FP_S),
            );
            assert_eq!((a, b), (Ok(()), Ok(())), "{secret:?}");
        }
    }

    #[test]
    fn fingerprint_case_does_not_matter() {
        let (a, b) = run(
            Handshake::sender([1; 16], code()),
            Handshake::receiver(&Secret::Code(code())),
            (FP_S, FP_R),
            ("SHA-256 cc:dd", "sha-256 aa:bb "),
        );
        assert_eq!((a, b), (Ok(()), Ok(())));
    }

    #[test]
    fn wrong_code_or_link_fails_on_both_sides() {
        let other = Code::parse("7-crimson-owl").unwrap();
        for secret in [Secret::Code(other), Secret::Link([6; SECRET_BYTES])] {
            let (a, b) = run(
                Handshake::sender([5; SECRET_BYTES], code()),
                Handshake::receiver(&secret),
                (FP_S, FP_R),
                (FP_R, FP_S),
            );
            assert_eq!(
                (a, b),
                (Err(TrustError::Mismatch), Err(TrustError::Mismatch))
            );
        }
    }

    #[test]
    fn substituted_fingerprints_fail_on_both_sides() {
        // The man in the middle holds its own certificate towards each side.
        let (a, b) = run(
            Handshake::sender([5; SECRET_BYTES], code()),
            Handshake::receiver(&Secret::Code(code())),
            (FP_S, FP_M),
            (FP_R, FP_M),
        );
        assert_eq!(
            (a, b),
            (Err(TrustError::Mismatch), Err(TrustError::Mismatch))
        );
    }

    #[test]
    fn a_reflected_confirm_does_not_verify() {
        let mut s = Handshake::sender([5; SECRET_BYTES], code());
        let r = Handshake::receiver(&Secret::Link([5; SECRET_BYTES]));
        s.on_hello(&r.hello()).unwrap();
        let mine = s.confirm(FP_S, FP_R).unwrap();
        assert_eq!(s.verify(FP_S, FP_R, &mine), Err(TrustError::Mismatch));
    }

    #[test]
    fn bad_hellos_are_refused() {
        let mut s = Handshake::sender([5; SECRET_BYTES], code());
        let other_sender = Handshake::sender([5; SECRET_BYTES], code()).hello();
        assert!(matches!(
            s.on_hello(&other_sender),
            Err(TrustError::Protocol(_))
        ));
        let bad_version = Control::Hello {
            v: 9,
            role: Role::Receive,
            auth: Some(AuthKind::Link),
            pake: None,
            ready: false,
        };
        assert_eq!(s.on_hello(&bad_version), Err(TrustError::Version(9)));
        let no_pake = Control::Hello {
            v: VERSION,
            role: Role::Receive,
            auth: Some(AuthKind::Code),
            pake: None,
            ready: false,
        };
        assert!(matches!(s.on_hello(&no_pake), Err(TrustError::Protocol(_))));
        // A garbage point is not an error the attacker can tell apart: the MAC just fails.
        let junk = Control::Hello {
            v: VERSION,
            role: Role::Receive,
            auth: Some(AuthKind::Code),
            pake: Some("AAAA".into()),
            ready: false,
        };
        let mut s = Handshake::sender([5; SECRET_BYTES], code());
        s.on_hello(&junk).unwrap();
        let r = Handshake::receiver(&Secret::Code(code()));
        let forged = Control::Confirm {
            mac: "00".repeat(32),
        };
        assert_eq!(s.verify(FP_S, FP_R, &forged), Err(TrustError::Mismatch));
        assert_eq!(
            s.confirm(FP_S, FP_R).unwrap(),
            forged,
            "nothing derived from the code"
        );
        assert!(r.confirm(FP_R, FP_S).is_err(), "no key before hello");
    }

    #[test]
    fn a_link_only_sender_verifies_its_link_and_refuses_a_code() {
        let key = [9; SECRET_BYTES];
        let (a, b) = run(
            Handshake::sender_link(key),
            Handshake::receiver(&Secret::Link(key)),
            (FP_S, FP_R),
            (FP_R, FP_S),
        );
        assert_eq!((a, b), (Ok(()), Ok(())));
        let (a, b) = run(
            Handshake::sender_link(key),
            Handshake::receiver(&Secret::Link([8; SECRET_BYTES])),
            (FP_S, FP_R),
            (FP_R, FP_S),
        );
        assert_eq!(
            (a, b),
            (Err(TrustError::Mismatch), Err(TrustError::Mismatch))
        );
        let mut s = Handshake::sender_link(key);
        let r = Handshake::receiver(&Secret::Code(code()));
        assert!(matches!(
            s.on_hello(&r.hello()),
            Err(TrustError::Protocol(_))
        ));
        assert!(
            s.confirm(FP_S, FP_R).is_err(),
            "no key from a refused hello"
        );
    }

    #[test]
    fn sas_depends_on_both_fingerprints_in_order() {
        let a = sas(FP_S, FP_R);
        assert_eq!(a.len(), 7);
        assert_eq!(a, sas("SHA-256 aa:bb", FP_R));
        assert_ne!(a, sas(FP_R, FP_S));
        assert_ne!(a, sas(FP_S, FP_M));
    }
}
