//! Media files for a native call member, as pure logic: a raw H.264 stream (Annex B) split
//! into access units — the frames str0m's writer takes — and checked for what browsers
//! decode; Ogg Opus read into packets with their durations, and written back.

use std::borrow::Cow;
use std::io::{Cursor, Write};

/// Largest media file read whole (it is looped from memory).
pub const MAX_FILE: usize = 256 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("not an H.264 stream (Annex B): {0}")]
    NotH264(String),
    #[error("H.264 that browsers do not decode in a call: {0}")]
    Unsupported(String),
    #[error("not an Ogg Opus file: {0}")]
    NotOpus(String),
    #[error("the file is larger than {} MiB", MAX_FILE >> 20)]
    TooLarge,
}

/// The NAL units of an Annex B stream (start codes removed), in order.
fn nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
        // A four-byte start code leaves a zero at the end of the previous unit.
        while end > s && data[end - 1] == 0 && k + 1 < starts.len() {
            end -= 1;
        }
        if end > s {
            out.push(&data[s..end]);
        }
    }
    out
}

/// Reads Exp-Golomb values from a NAL unit's payload (emulation prevention removed).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let b = *self.data.get(self.pos / 8)?;
        let v = (b >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(v))
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let mut v = 0u32;
        for _ in 0..zeros {
            v = (v << 1) | self.bit()?;
        }
        Some((1u32 << zeros) - 1 + v)
    }
}

/// The first bytes of a NAL payload with emulation prevention (00 00 03) removed.
fn rbsp(nal: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(max);
    let mut zeros = 0;
    for &b in nal.iter().skip(1) {
        if out.len() >= max {
            break;
        }
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// `first_mb_in_slice` and `slice_type` of a slice NAL unit.
fn slice_header(nal: &[u8]) -> Option<(u32, u32)> {
    let payload = rbsp(nal, 16);
    let mut b = Bits {
        data: &payload,
        pos: 0,
    };
    Some((b.ue()?, b.ue()?))
}

/// A raw H.264 stream split into access units (each Annex B, with its start codes), ready to
/// be written frame by frame. Refused: no SPS/PPS/IDR, B-frames (WebRTC does not reorder
/// them) and profiles browsers do not decode in a call.
#[derive(Debug)]
pub struct H264 {
    pub frames: Vec<Vec<u8>>,
    /// `profile_idc`, `constraint flags` and `level_idc` of the first SPS.
    pub profile: (u8, u8, u8),
}

impl H264 {
    pub fn parse(data: &[u8]) -> Result<H264, MediaError> {
        if data.len() > MAX_FILE {
            return Err(MediaError::TooLarge);
        }
        let nals = nal_units(data);
        if nals.is_empty() {
            return Err(MediaError::NotH264("no start codes".into()));
        }
        let mut frames: Vec<Vec<u8>> = Vec::new();
        let mut current: Vec<u8> = Vec::new();
        let mut has_vcl = false;
        let (mut sps, mut pps, mut idr) = (None, false, false);
        for nal in nals {
            let header = nal[0];
            if header & 0x80 != 0 {
                return Err(MediaError::NotH264(
                    "a NAL unit with its forbidden bit set".into(),
                ));
            }
            let kind = header & 0x1f;
            let vcl = matches!(kind, 1 | 5);
            let starts_au = match kind {
                9 => true,
                6..=8 => has_vcl,
                1 | 5 => has_vcl && slice_header(nal).is_some_and(|(first_mb, _)| first_mb == 0),
                _ => false,
            };
            if starts_au && !current.is_empty() {
                frames.push(std::mem::take(&mut current));
                has_vcl = false;
            }
            match kind {
                7 if nal.len() >= 4 => sps = sps.or(Some((nal[1], nal[2], nal[3]))),
                8 => pps = true,
                5 => idr = true,
                _ => {}
            }
            if vcl
                && let Some((_, slice_type)) = slice_header(nal)
                && slice_type % 5 == 1
            {
                return Err(MediaError::Unsupported(
                    "it has B-frames (encode with -bf 0)".into(),
                ));
            }
            has_vcl |= vcl;
            current.extend_from_slice(&[0, 0, 0, 1]);
            current.extend_from_slice(nal);
        }
        if !current.is_empty() {
            frames.push(current);
        }
        let Some(profile) = sps else {
            return Err(MediaError::NotH264("no sequence parameter set".into()));
        };
        if !pps || !idr {
            return Err(MediaError::NotH264(
                "no picture parameter set or no keyframe".into(),
            ));
        }
        // Baseline (66, constrained or not), Main (77) and High (100): what browsers offer.
        if !matches!(profile.0, 66 | 77 | 100) {
            return Err(MediaError::Unsupported(format!(
                "profile_idc {} (browsers take Baseline, Main or High)",
                profile.0
            )));
        }
        Ok(H264 { frames, profile })
    }
}

/// Samples at 48 kHz in one Opus packet, from its TOC byte (RFC 6716, 3.1), or `None`.
pub fn opus_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame size in 48 kHz samples by configuration (SILK, hybrid, CELT).
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let count = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let total = frame * count;
    (count > 0 && total <= 5760).then_some(total)
}

/// An Ogg Opus file's audio packets with their durations (48 kHz samples).
#[derive(Debug)]
pub struct Opus {
    pub channels: u8,
    pub packets: Vec<(Vec<u8>, u32)>,
}

impl Opus {
    pub fn parse(data: &[u8]) -> Result<Opus, MediaError> {
        if data.len() > MAX_FILE {
            return Err(MediaError::TooLarge);
        }
        let mut r = ogg::PacketReader::new(Cursor::new(data));
        let mut next = || {
            r.read_packet()
                .map_err(|e| MediaError::NotOpus(e.to_string()))
        };
        let head = next()?.ok_or_else(|| MediaError::NotOpus("no packets".into()))?;
        if head.data.len() < 19 || &head.data[..8] != b"OpusHead" {
            return Err(MediaError::NotOpus(
                "the first packet is not OpusHead".into(),
            ));
        }
        let channels = head.data[9];
        if !(1..=2).contains(&channels) {
            return Err(MediaError::NotOpus(format!("{channels} channels")));
        }
        let tags = next()?.ok_or_else(|| MediaError::NotOpus("no OpusTags".into()))?;
        if !tags.data.starts_with(b"OpusTags") {
            return Err(MediaError::NotOpus(
                "the second packet is not OpusTags".into(),
            ));
        }
        let mut packets = Vec::new();
        while let Some(p) = next()? {
            if p.data.is_empty() {
                continue; // some writers end the stream with an empty packet
            }
            let samples = opus_samples(&p.data)
                .ok_or_else(|| MediaError::NotOpus("a malformed audio packet".into()))?;
            packets.push((p.data, samples));
        }
        if packets.is_empty() {
            return Err(MediaError::NotOpus("no audio packets".into()));
        }
        Ok(Opus { channels, packets })
    }
}

/// Writes Opus packets as an Ogg Opus file (RFC 7845): head and tags, then the packets with
/// the granule position advanced by their samples. Each packet is written when the next comes
/// (or at [`OpusWriter::finish`]), so that the last one can end the stream.
pub struct OpusWriter<W: Write> {
    w: ogg::PacketWriter<'static, W>,
    serial: u32,
    granule: u64,
    count: u64,
    held: Option<Vec<u8>>,
}

impl<W: Write> std::fmt::Debug for OpusWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusWriter")
            .field("serial", &self.serial)
            .field("granule", &self.granule)
            .finish_non_exhaustive()
    }
}

/// Packets per Ogg page: a page is written out when it ends, so this bounds what a killed
/// recorder loses (about a second of 20 ms packets).
const PAGE_PACKETS: u64 = 50;

impl<W: Write> OpusWriter<W> {
    pub fn new(w: W, serial: u32, channels: u8) -> std::io::Result<Self> {
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, channels]);
        head.extend_from_slice(&312u16.to_le_bytes()); // pre-skip, as libopus encoders use
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&[0, 0, 0]); // output gain, channel mapping family 0
        let mut tags = b"OpusTags".to_vec();
        let vendor = b"peerweb";
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        let mut w = ogg::PacketWriter::new(w);
        w.write_packet(head, serial, ogg::PacketWriteEndInfo::EndPage, 0)?;
        w.write_packet(tags, serial, ogg::PacketWriteEndInfo::EndPage, 0)?;
        Ok(OpusWriter {
            w,
            serial,
            granule: 0,
            count: 0,
            held: None,
        })
    }

    /// One packet; a malformed one is skipped (it would break the granule positions).
    pub fn write(&mut self, packet: &[u8]) -> std::io::Result<()> {
        if opus_samples(packet).is_none() {
            return Ok(());
        }
        match self.held.replace(packet.to_vec()) {
            Some(previous) => self.put(previous, false),
            None => Ok(()),
        }
    }

    fn put(&mut self, packet: Vec<u8>, last: bool) -> std::io::Result<()> {
        self.granule += u64::from(opus_samples(&packet).unwrap_or(0));
        self.count += 1;
        let end = if last {
            ogg::PacketWriteEndInfo::EndStream
        } else if self.count.is_multiple_of(PAGE_PACKETS) {
            ogg::PacketWriteEndInfo::EndPage
        } else {
            ogg::PacketWriteEndInfo::NormalPacket
        };
        self.w
            .write_packet(Cow::Owned(packet), self.serial, end, self.granule)
    }

    /// Ends the stream on its last packet and gives the writer back.
    pub fn finish(mut self) -> std::io::Result<W> {
        if let Some(last) = self.held.take() {
            self.put(last, true)?;
        }
        Ok(self.w.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0xda, 0x02];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    /// Slices: the byte after the header carries first_mb_in_slice and slice_type.
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00]; // first_mb 0, I
    const IDR_2ND: &[u8] = &[0x65, 0x40, 0x88, 0x00]; // first_mb 1 (ue '010'), same picture
    const P: &[u8] = &[0x41, 0x98, 0x22, 0x00]; // first_mb 0, P (type 5)
    const B: &[u8] = &[0x01, 0xa0, 0x22, 0x00]; // first_mb 0, B (type 1)
    const AUD: &[u8] = &[0x09, 0xf0];

    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, n) in nals.iter().enumerate() {
            out.extend_from_slice(if i % 2 == 0 {
                &[0, 0, 0, 1]
            } else {
                &[0, 0, 1]
            });
            out.extend_from_slice(n);
        }
        out
    }

    #[test]
    fn access_units_split_at_new_pictures_and_delimiters() {
        let h = H264::parse(&annex_b(&[SPS, PPS, IDR, IDR_2ND, P, P, AUD, P])).unwrap();
        assert_eq!(h.frames.len(), 4, "{:?}", h.frames);
        assert_eq!(h.profile, (0x42, 0xc0, 0x1f));
        // The keyframe carries its parameter sets and both slices.
        assert_eq!(nal_units(&h.frames[0]).len(), 4);
        assert!(h.frames.iter().all(|f| f.starts_with(&[0, 0, 0, 1])));
    }

    #[test]
    fn what_browsers_cannot_play_is_refused_with_a_reason() {
        let b = H264::parse(&annex_b(&[SPS, PPS, IDR, B]));
        assert!(
            matches!(b, Err(MediaError::Unsupported(ref m)) if m.contains("B-frames")),
            "{b:?}"
        );
        assert!(matches!(
            H264::parse(&annex_b(&[PPS, IDR])),
            Err(MediaError::NotH264(_))
        ));
        assert!(matches!(
            H264::parse(&annex_b(&[SPS, PPS, P])),
            Err(MediaError::NotH264(_))
        ));
        assert!(matches!(
            H264::parse(b"OggS garbage"),
            Err(MediaError::NotH264(_))
        ));
        let mut hi444 = SPS.to_vec();
        hi444[1] = 244;
        assert!(matches!(
            H264::parse(&annex_b(&[&hi444, PPS, IDR])),
            Err(MediaError::Unsupported(_))
        ));
    }

    #[test]
    fn opus_durations_from_the_toc_byte() {
        assert_eq!(opus_samples(&[31 << 3]), Some(960)); // CELT FB 20 ms
        assert_eq!(opus_samples(&[(31 << 3) | 1]), Some(1920)); // two frames
        assert_eq!(opus_samples(&[(16 << 3) | 3, 3]), Some(360)); // three 2.5 ms frames
        assert_eq!(opus_samples(&[(1 << 3) | 3, 0]), None); // zero frames
        assert_eq!(opus_samples(&[(3 << 3) | 3, 63]), None); // longer than 120 ms
        assert_eq!(opus_samples(&[]), None);
    }

    #[test]
    fn ogg_opus_written_reads_back_the_same() {
        let packets: Vec<Vec<u8>> = (0..120u8).map(|i| vec![31 << 3, i, i, i]).collect();
        let mut w = OpusWriter::new(Vec::new(), 7, 2).unwrap();
        for p in &packets {
            w.write(p).unwrap();
        }
        let file = w.finish().unwrap();
        let o = Opus::parse(&file).unwrap();
        assert_eq!(o.channels, 2);
        assert_eq!(
            o.packets.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
            packets
        );
        assert!(o.packets.iter().all(|(_, n)| *n == 960));
        assert!(matches!(
            Opus::parse(b"not ogg at all"),
            Err(MediaError::NotOpus(_))
        ));
        assert!(matches!(
            Opus::parse(&annex_b(&[SPS])),
            Err(MediaError::NotOpus(_))
        ));
    }
}
