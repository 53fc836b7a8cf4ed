//! Our connection against an independent WebRTC stack, str0m (its own SDP, ICE, DTLS,
//! sctp-proto and DCEP), wired in memory in virtual time: both offer directions, channels
//! opened from each side, messages of every kind both ways.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use peerweb_dataconn::{Candidate, ChannelConfig, Config, Connection, Event, certificate};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::channel::ChannelId as StrId;
use str0m::net::{Protocol, Receive};
use str0m::{Event as StrEvent, Input, Output, Rtc};

struct Wire {
    now: Instant,
    ours: Connection,
    ours_addr: SocketAddr,
    theirs: Rtc,
    theirs_addr: SocketAddr,
    our_events: Vec<Event>,
    their_events: Vec<StrEvent>,
    their_timeout: Instant,
}

impl Wire {
    fn new() -> Wire {
        let now = Instant::now();
        let ours_addr: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let theirs_addr: SocketAddr = "10.0.0.2:6000".parse().unwrap();
        let mut ours = Connection::new(now, Config::default(), certificate().unwrap(), [3; 48]);
        ours.add_local_candidate(Candidate::host(ours_addr, "udp").unwrap());
        let mut theirs = Rtc::builder()
            .clear_codecs()
            .set_sctp_max_buffered_amount(1 << 20)
            .build(now);
        theirs.add_local_candidate(str0m::Candidate::host(theirs_addr, "udp").unwrap());
        Wire {
            now,
            ours,
            ours_addr,
            theirs,
            theirs_addr,
            our_events: Vec::new(),
            their_events: Vec::new(),
            their_timeout: now,
        }
    }

    fn drain_theirs(&mut self) -> bool {
        let mut moved = false;
        loop {
            match self.theirs.poll_output().unwrap() {
                Output::Timeout(t) => {
                    self.their_timeout = t;
                    return moved;
                }
                Output::Transmit(t) => {
                    moved = true;
                    if t.destination == self.ours_addr {
                        self.ours.handle_receive(
                            self.now,
                            peerweb_dataconn::Protocol::Udp,
                            t.source,
                            t.destination,
                            &t.contents,
                        );
                    }
                }
                Output::Event(e) => self.their_events.push(e),
            }
        }
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Wire) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            let mut moved = self.drain_theirs();
            while let Some(t) = self.ours.poll_transmit(self.now) {
                moved = true;
                if t.destination == self.theirs_addr {
                    let r = Receive {
                        proto: Protocol::Udp,
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.as_slice().try_into().unwrap(),
                    };
                    self.theirs
                        .handle_input(Input::Receive(self.now, r))
                        .unwrap();
                    self.drain_theirs();
                }
            }
            while let Some(e) = self.ours.poll_event() {
                self.our_events.push(e);
            }
            if !moved {
                let next = [self.ours.poll_timeout(), Some(self.their_timeout)]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap();
                self.now = next.max(self.now + Duration::from_micros(1));
                self.ours.handle_timeout(self.now);
                self.theirs.handle_input(Input::Timeout(self.now)).unwrap();
            }
        }
        done(self)
    }

    fn their_data(&self, id: StrId) -> Vec<(bool, Vec<u8>)> {
        self.their_events
            .iter()
            .filter_map(|e| match e {
                StrEvent::ChannelData(d) if d.id == id => Some((d.binary, d.data.clone())),
                _ => None,
            })
            .collect()
    }

    fn our_data(&self) -> Vec<(bool, Vec<u8>)> {
        self.our_events
            .iter()
            .filter_map(|e| match e {
                Event::ChannelData { binary, data, .. } => Some((*binary, data.clone())),
                _ => None,
            })
            .collect()
    }
}

fn messages() -> Vec<(bool, Vec<u8>)> {
    vec![
        (true, b"bin".to_vec()),
        (false, b"text".to_vec()),
        (true, (0..200_000u32).map(|i| (i % 253) as u8).collect()),
        (false, b"last".to_vec()),
    ]
}

#[test]
fn we_offer_and_str0m_answers() {
    let mut w = Wire::new();
    let chat = w
        .ours
        .open_channel(w.now, ChannelConfig::reliable("chat"))
        .unwrap();
    let offer = w.ours.create_offer();
    let answer = w
        .theirs
        .sdp_api()
        .accept_offer(SdpOffer::from_sdp_string(&offer).unwrap())
        .unwrap();
    w.ours
        .accept_answer(w.now, &answer.to_sdp_string())
        .unwrap();
    assert!(w.run_until(Duration::from_secs(20), |w| {
        w.ours.is_channel_open(chat)
            && w.their_events
                .iter()
                .any(|e| matches!(e, StrEvent::ChannelOpen(_, l) if l == "chat"))
    }));
    let their_chat = w
        .their_events
        .iter()
        .find_map(|e| match e {
            StrEvent::ChannelOpen(id, _) => Some(*id),
            _ => None,
        })
        .unwrap();
    let now = w.now;
    for (binary, m) in messages() {
        w.ours.send(now, chat, binary, &m).unwrap();
    }
    assert!(
        w.run_until(Duration::from_secs(20), |w| w.their_data(their_chat).len()
            == 4)
    );
    assert!(w.their_data(their_chat) == messages(), "str0m read ours");
    for (binary, m) in messages() {
        let mut ch = w.theirs.channel(their_chat).unwrap();
        assert!(ch.write(binary, &m).unwrap(), "str0m took the message");
        w.drain_theirs();
    }
    let done = w.run_until(Duration::from_secs(20), |w| w.our_data().len() == 4);
    assert!(
        done,
        "{} of 4: {:?}",
        w.our_data().len(),
        w.our_events.last()
    );
    assert!(w.our_data() == messages(), "we read str0m's");
}

#[test]
fn str0m_offers_and_we_answer() {
    let mut w = Wire::new();
    let mut api = w.theirs.sdp_api();
    let their_chat = api.add_channel("from-str0m".into());
    let (offer, pending) = api.apply().unwrap();
    let answer = w.ours.accept_offer(w.now, &offer.to_sdp_string()).unwrap();
    w.theirs
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    assert!(w.run_until(Duration::from_secs(20), |w| {
        w.our_events
            .iter()
            .any(|e| matches!(e, Event::ChannelOpen(_, l) if l == "from-str0m"))
    }));
    let ours = w
        .our_events
        .iter()
        .find_map(|e| match e {
            Event::ChannelOpen(id, _) => Some(*id),
            _ => None,
        })
        .unwrap();
    // A channel of ours as well, on the other parity of stream ids.
    let mine = w
        .ours
        .open_channel(w.now, ChannelConfig::reliable("from-us"))
        .unwrap();
    assert!(w.run_until(Duration::from_secs(20), |w| {
        w.ours.is_channel_open(mine)
            && w.their_events
                .iter()
                .any(|e| matches!(e, StrEvent::ChannelOpen(_, l) if l == "from-us"))
    }));
    assert!(w.run_until(Duration::from_secs(5), |w| {
        w.their_events
            .iter()
            .any(|e| matches!(e, StrEvent::ChannelOpen(id, _) if *id == their_chat))
    }));
    let now = w.now;
    for (binary, m) in messages() {
        w.ours.send(now, ours, binary, &m).unwrap();
    }
    assert!(
        w.run_until(Duration::from_secs(20), |w| w.their_data(their_chat).len()
            == 4)
    );
    assert!(w.their_data(their_chat) == messages());
}
