//! Perfect negotiation: who offers, offers and answers taken (glare, rollback, restarts, stale
//! answers), candidates from signaling, and a first attempt that failed.

use super::sdp::{description_json, first_mid, ice_ufrag, mids};
use super::*;

impl Peer {
    /// Starts negotiation from our side (we joined after the remote): offer the default channel.
    pub fn initiate(&mut self, now: Instant) {
        self.negotiate(now);
    }

    /// Makes an offer if there is something to negotiate and no offer is outstanding.
    pub(super) fn negotiate(&mut self, now: Instant) {
        if self.pending.is_some() || self.closed {
            return;
        }
        if !self.negotiated && self.dirty {
            self.fresh_rtc(now);
        }
        let missing = if self.media_offered {
            Vec::new()
        } else {
            self.missing_media()
        };
        let restart = self.restart_wanted && self.negotiated;
        let offered_sdp = match &mut self.rtc {
            Engine::Rtc(rtc) => {
                let mut api = rtc.sdp_api();
                if !self.negotiated {
                    // The first offer: the default channel brings the m=application line.
                    self.pending_default =
                        Some(Chan::Rtc(api.add_channel_with_config(default_channel())));
                    self.dirty = true;
                }
                let mut offered = Vec::new();
                for (kind, label) in &missing {
                    let mid = api.add_media(
                        *kind,
                        Direction::SendRecv,
                        Some("peerweb".into()),
                        Some((*label).into()),
                        None,
                    );
                    offered.push((*kind, mid));
                }
                self.media_offered |= !missing.is_empty();
                self.offered_mids.extend(offered);
                if restart {
                    api.ice_restart(true);
                }
                api.apply()
                    .map(|(offer, pending)| (Pending::Rtc(pending), offer.to_sdp_string()))
            }
            Engine::Data(d) => {
                if !self.negotiated && self.pending_default.is_none() {
                    // The default channel is negotiated (stream 0): it opens with SCTP.
                    self.pending_default = d
                        .conn()
                        .open_channel(now, engine::data_config(&default_channel()))
                        .ok()
                        .map(Chan::Data);
                    self.dirty = true;
                }
                Some((Pending::Data, d.offer(restart)))
            }
        };
        if let Some((pending, sdp)) = offered_sdp {
            self.mid = self.mid.take().or_else(|| first_mid(&sdp));
            self.signal(description_json("offer", &sdp));
            self.pending = Some((pending, sdp));
        } else {
            self.pending_default = None;
        }
        self.drain(now);
    }

    /// A signal payload from the remote (`{description}` or `{candidate}`).
    pub fn handle_signal(&mut self, now: Instant, data: &str) -> Result<(), Error> {
        let v: Value =
            serde_json::from_str(data).map_err(|e| Error::BadSignal(format!("not JSON: {e}")))?;
        if let Some(d) = v.get("description") {
            let ty = d.get("type").and_then(Value::as_str).unwrap_or_default();
            let sdp = d.get("sdp").and_then(Value::as_str).unwrap_or_default();
            match ty {
                "offer" => self.on_offer(now, sdp)?,
                "answer" => self.on_answer(now, sdp)?,
                other => {
                    return Err(Error::BadSignal(format!(
                        "description type {other:?} is not offer or answer"
                    )));
                }
            }
        } else if let Some(c) = v.get("candidate") {
            // `null` (or an empty candidate) is end-of-candidates: nothing to do, since str0m
            // keeps checking whatever it has.
            let line = c
                .get("candidate")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !line.is_empty() {
                self.on_candidate(now, line)?;
            }
        }
        Ok(())
    }

    /// If `data` is a description (`"offer"` or `"answer"`, returned) under another DTLS
    /// certificate than the one this connection knows: the remote is a new session (it left
    /// and joined again unseen).
    pub fn new_session(&self, data: &str) -> Option<&'static str> {
        let known = self.remote_cert.as_ref()?;
        let v = serde_json::from_str::<Value>(data).ok()?;
        let d = &v["description"];
        let kind = match d["type"].as_str()? {
            "offer" => "offer",
            "answer" => "answer",
            _ => return None,
        };
        let cert = fingerprint(d["sdp"].as_str()?)?;
        (&cert != known).then_some(kind)
    }

    /// Candidates written inside a remote SDP: remembered for naming the path.
    pub(super) fn note_sdp_candidates(&mut self, sdp: &str) {
        for line in sdp.lines() {
            if let Some(c) = line.trim_end().strip_prefix("a=")
                && c.starts_with("candidate:")
                && let Ok(c) = Candidate::from_sdp_string(c)
                && self.remote_kinds.len() < MAX_REMOTE_CANDIDATES
            {
                self.remote_kinds.insert(c.addr(), c.kind());
            }
        }
    }

    pub(super) fn on_offer(&mut self, now: Instant, sdp: &str) -> Result<(), Error> {
        if let Some((_, answer)) = self.answered.as_ref().filter(|(o, _)| o == sdp) {
            let json = description_json("answer", answer);
            self.signal(json);
            return Ok(());
        }
        if let Err(e) = self.rtc.check_offer(sdp) {
            // A first offer that cannot be read leaves nothing to connect: we offer later.
            self.first_attempt_failed(now);
            return Err(Error::BadSignal(e));
        }
        // Perfect negotiation: on a collision the impolite side ignores the remote offer and
        // re-sends its own (the polite side may never have seen it); the polite side drops its
        // own offer (str0m rolls it back inside accept_offer) and answers.
        if self.pending.is_some() && !self.polite {
            self.resend_offer();
            return Ok(());
        }
        self.pending = None;
        self.pending_default = None;
        // Media lines of a rolled-back offer of ours are offered again after this answer.
        self.media_offered = false;
        self.offered_mids.clear();
        if !self.negotiated && self.dirty {
            // Our first offer is rolled back (or an earlier first attempt failed): answer
            // from a fresh Rtc. The remote accepted nothing of the old one.
            self.fresh_rtc(now);
        }
        let ufrag = ice_ufrag(sdp);
        let restarts = self.remote_ufrag.is_some() && ufrag != self.remote_ufrag;
        self.remote_ufrag = ufrag;
        self.note_sdp_candidates(sdp);
        if !self.negotiated {
            self.media_only = !sdp.contains("m=application");
        }
        self.dirty |= !self.negotiated;
        let answer = self.rtc.accept_offer(now, sdp);
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                self.drain(now);
                self.first_attempt_failed(now);
                return Err(Error::Negotiation(e));
            }
        };
        self.remote_cert = fingerprint(sdp);
        let offer = sdp;
        let sdp = answer;
        self.mid = first_mid(&sdp).or(self.mid.take());
        self.signal(description_json("answer", &sdp));
        // Lines the remote offered to receive (a viewer's recvonly video) are ours to send on
        // now, before the next offer is decided — str0m announces them only later.
        let remote_lines: Vec<Mid> = mids(offer).map(Mid::from).collect();
        self.adopt_send_lines(remote_lines, false);
        self.report_no_codec(offer, false);
        self.answered = Some((offer.to_owned(), sdp));
        self.drain(now);
        if !self.negotiated {
            if let Some(id) = self.rtc.create_channel(now, default_channel()) {
                self.session_ready(now, id);
            }
            self.drain(now);
        }
        if restarts {
            // The remote restarted ICE, which restarts ours too: a restart of our own is
            // no longer needed, and this one gets its time before we try again.
            self.restart_wanted = false;
            if self.restart_at.is_some() {
                self.restart_at = Some(now + self.restart_delay);
            }
        }
        // An offer of ours that was rolled back carried something we still want, or the
        // remote's offer had no media line of a kind we send.
        if self.restart_wanted || !self.missing_media().is_empty() {
            self.negotiate(now);
        }
        Ok(())
    }

    /// Of these negotiated lines, the first that sends each kind we send becomes our line of
    /// that kind; `announce`: reported as a `Track` here (lines the remote added are reported
    /// when str0m announces them).
    pub(super) fn adopt_send_lines(&mut self, lines: Vec<Mid>, announce: bool) {
        for mid in lines {
            let Some((kind, sends)) = self.rtc.rtc().and_then(|r| r.media(mid)).map(|m| {
                let sends = !m.disabled()
                    && matches!(m.direction(), Direction::SendRecv | Direction::SendOnly);
                (m.kind(), sends)
            }) else {
                continue;
            };
            let wanted = self.media.is_some_and(|w| match kind {
                MediaKind::Audio => w.audio,
                MediaKind::Video => w.video,
            });
            if sends && wanted && !self.send_mids.iter().any(|(k, _)| *k == kind) {
                self.send_mids.push((kind, mid));
                if !announce {
                    continue;
                }
                self.event(Event::Track {
                    peer: self.id.clone(),
                    mid: mid.to_string(),
                    video: kind == MediaKind::Video,
                });
            }
        }
    }

    pub(super) fn on_answer(&mut self, now: Instant, sdp: &str) -> Result<(), Error> {
        let stale = match &self.pending {
            // An answer to an offer of another Rtc of ours (rolled back, or re-sent by a
            // connection since replaced) names m-lines ours does not have.
            Some((_, offer)) => !mids(sdp).all(|m| mids(offer).any(|o| o == m)),
            None => true,
        };
        if stale {
            // An answer to an offer already rolled back, answered or replaced: ignore it.
            return Ok(());
        }
        let Some((pending, _)) = self.pending.take() else {
            return Ok(());
        };
        let res = self.rtc.accept_answer(now, pending, sdp);
        self.media_offered = false;
        let offered = std::mem::take(&mut self.offered_mids);
        if res.is_ok() {
            self.adopt_send_lines(offered.into_iter().map(|(_, mid)| mid).collect(), true);
        }
        self.drain(now);
        if let Err(e) = res {
            self.pending_default = None;
            // The remote restarted ICE for an offer of ours that we then rolled back (a
            // restart crossing an offer of theirs): its answers now carry credentials we never
            // took. Offering again with a restart of our own takes them.
            if self.negotiated && ice_ufrag(sdp) != self.remote_ufrag {
                self.restart_wanted = true;
                self.negotiate(now);
                return Ok(());
            }
            self.first_attempt_failed(now);
            return Err(Error::Negotiation(e));
        }
        self.remote_ufrag = ice_ufrag(sdp);
        self.remote_cert = fingerprint(sdp);
        self.report_no_codec(sdp, true);
        if self.restart_wanted && self.restart_at.is_some() {
            // Our restart is negotiated: it gets its time before we try again.
            self.restart_at = Some(now + self.restart_delay);
        }
        self.note_sdp_candidates(sdp);
        self.restart_wanted = false;
        if let Some(id) = self.pending_default.take() {
            self.session_ready(now, id);
            self.drain(now);
        }
        Ok(())
    }

    /// The first negotiation completed with the default channel `id`: the channels opened
    /// before it are created now, after the default.
    pub(super) fn session_ready(&mut self, now: Instant, id: Chan) {
        self.negotiated = true;
        self.dirty = false;
        self.default = Some(id);
        self.channels.insert(id, (DEFAULT_LABEL.into(), false));
        for config in std::mem::take(&mut self.early) {
            let label = config.label.clone();
            if let Some(id) = self.rtc.create_channel(now, config) {
                self.channels.insert(id, (label, false));
            }
        }
    }

    /// A first offer or answer was refused: nothing connects until someone offers again, so
    /// we do, after [`RESTART_AFTER`] and then backing off like a restart (from a fresh Rtc).
    pub(super) fn first_attempt_failed(&mut self, now: Instant) {
        if !self.negotiated {
            self.restart_at.get_or_insert(now + RESTART_AFTER);
        }
    }

    /// Replaces the `Rtc`, whose first negotiation did not complete, with a fresh one that
    /// has our candidates.
    pub(super) fn fresh_rtc(&mut self, now: Instant) {
        self.rtc = new_engine(
            now,
            self.window_range.1,
            self.media,
            self.bwe,
            self.data_path,
            self.hold_messages,
        );
        self.send_mids.clear();
        self.offered_mids.clear();
        self.no_codec.clear();
        self.media_offered = false;
        for c in &self.local {
            self.rtc.add_local_candidate(c.clone());
        }
        self.channels.clear();
        self.default = None;
        self.pending = None;
        self.pending_default = None;
        self.mid = None;
        self.dirty = false;
        self.answered = None;
        self.timeout = now;
    }

    pub(super) fn on_candidate(&mut self, now: Instant, line: &str) -> Result<(), Error> {
        let line = line.strip_prefix("a=").unwrap_or(line);
        if self.remote_count >= MAX_REMOTE_CANDIDATES {
            return Err(Error::BadSignal(format!(
                "more than {MAX_REMOTE_CANDIDATES} remote candidates"
            )));
        }
        match Candidate::from_sdp_string(line) {
            Ok(c) => {
                self.remote_count += 1;
                self.remote_kinds.insert(c.addr(), c.kind());
                self.rtc.add_remote_candidate(now, c);
                self.drain(now);
                Ok(())
            }
            // A browser that hides its host address sends `<uuid>.local`: skip it; its
            // checks reach us anyway and become peer-reflexive candidates.
            Err(_) if is_mdns(line) => Ok(()),
            Err(e) => Err(Error::BadSignal(format!("bad candidate: {e}"))),
        }
    }

    /// Sends our unanswered offer again, if there is one (it, or its answer, may have been
    /// lost).
    pub(super) fn resend_offer(&mut self) -> bool {
        let Some((_, sdp)) = &self.pending else {
            return false;
        };
        let json = description_json("offer", sdp);
        self.signal(json);
        true
    }
}
