//! Call media: which of our lines send, frames written to them, and lines that carry nothing.

use super::sdp::mids;
use super::*;

impl Peer {
    /// In a call, media lines of a just-accepted offer or answer (`sdp`) that carry nothing
    /// either way are reported, once per kind ([`Event::NoCodec`]): one the remote offered in
    /// codecs we do not take, or (`answer`) one of ours it refused. A line the remote offers
    /// already stopped is its own choice, not reported.
    pub(super) fn report_no_codec(&mut self, sdp: &str, answer: bool) {
        if self.media.is_none() {
            return;
        }
        for mid in mids(sdp) {
            let mid = Mid::from(mid);
            let Some(m) = self.rtc.rtc().and_then(|r| r.media(mid)) else {
                continue;
            };
            let dead = m.disabled() && (answer || !m.stopped());
            let kind = m.kind();
            if !dead || self.no_codec.iter().any(|(k, x)| *x == mid || *k == kind) {
                continue;
            }
            let video = kind == MediaKind::Video;
            self.no_codec.push((kind, mid));
            self.event(Event::NoCodec {
                peer: self.id.clone(),
                mid: mid.to_string(),
                video,
            });
        }
    }

    /// Media kinds we send and have no negotiated line for, with their labels. None for a
    /// remote that offered no data channel: not a peerweb client but a player (WHEP) that
    /// takes no offers — it gets what it asked for, on the lines it offered.
    pub(super) fn missing_media(&self) -> Vec<(MediaKind, &'static str)> {
        let Some(m) = self.media else {
            return Vec::new();
        };
        if self.media_only {
            return Vec::new();
        }
        [(MediaKind::Audio, m.audio), (MediaKind::Video, m.video)]
            .into_iter()
            .filter(|(k, want)| {
                *want
                    && !self.send_mids.iter().any(|(s, _)| s == k)
                    && !self.no_codec.iter().any(|(s, _)| s == k)
            })
            .map(|(k, _)| (k, media_label(k)))
            .collect()
    }

    /// Our sending lines: (mid, label).
    pub fn sending(&self) -> Vec<(String, &'static str)> {
        self.send_mids
            .iter()
            .map(|(k, mid)| (mid.to_string(), media_label(*k)))
            .collect()
    }

    /// One frame to this peer on our line of its kind, if negotiated and connected.
    /// `h264_profile`: the stream's profile as the first two bytes of a `profile-level-id`.
    pub fn write_media(
        &mut self,
        now: Instant,
        video: bool,
        rtp_time: u64,
        data: &std::sync::Arc<[u8]>,
        h264_profile: Option<u16>,
        audio: AudioCodec,
    ) -> bool {
        if !self.media_allowed {
            return false;
        }
        self.write_media_to(now, video, rtp_time, data, h264_profile, audio)
    }

    /// As [`Peer::write_media`], whether or not media is allowed to this peer (the caller
    /// decided: a viewer being primed before it is allowed).
    pub fn write_media_to(
        &mut self,
        now: Instant,
        video: bool,
        rtp_time: u64,
        data: &std::sync::Arc<[u8]>,
        h264_profile: Option<u16>,
        audio: AudioCodec,
    ) -> bool {
        let kind = if video {
            MediaKind::Video
        } else {
            MediaKind::Audio
        };
        let Some(&(_, mid)) = self.send_mids.iter().find(|(k, _)| *k == kind) else {
            return false;
        };
        if self.state() != PeerState::Connected {
            return false;
        }
        let Some(writer) = self.rtc.rtc().and_then(|r| r.writer(mid)) else {
            return false;
        };
        // H.264 in packetization mode 1 (what the reader gives: whole access units), or Opus;
        // for H.264 the line whose profile is the stream's, where there is one.
        let pt = writer
            .payload_params()
            .filter(|p| {
                let spec = p.spec();
                match spec.codec {
                    Codec::H264 => video && spec.format.packetization_mode == Some(1),
                    Codec::Opus => !video && audio == AudioCodec::Opus,
                    Codec::PCMU => !video && audio == AudioCodec::Pcmu,
                    Codec::PCMA => !video && audio == AudioCodec::Pcma,
                    _ => false,
                }
            })
            .enumerate()
            .max_by_key(|(i, p)| {
                let same = h264_profile.is_some_and(|want| {
                    p.spec()
                        .format
                        .profile_level_id
                        .is_some_and(|l| (l >> 8) as u16 == want)
                });
                (same, std::cmp::Reverse(*i))
            })
            .map(|(_, p)| p.pt());
        let Some(pt) = pt else {
            return false;
        };
        let rate = match (video, audio) {
            (true, _) => Frequency::NINETY_KHZ,
            (false, AudioCodec::Opus) => Frequency::FORTY_EIGHT_KHZ,
            (false, _) => Frequency::new(8_000).unwrap_or(Frequency::FORTY_EIGHT_KHZ),
        };
        let ok = writer
            .write(pt, now, MediaTime::new(rtp_time, rate), data.clone())
            .is_ok();
        self.drain(now);
        ok
    }
}

impl Peer {
    /// See [`crate::Client::set_bitrate`].
    pub fn set_bitrate(&mut self, min: u64, desired: u64) {
        if self.bwe.is_some()
            && let Some(rtc) = self.rtc.rtc()
        {
            rtc.bwe()
                .set_bitrate(Bitrate::from(min), Bitrate::from(desired));
        }
    }
}

/// The label a kind of our media carries in the call state.
pub(super) fn media_label(kind: MediaKind) -> &'static str {
    if kind == MediaKind::Video {
        "camera"
    } else {
        "audio"
    }
}
