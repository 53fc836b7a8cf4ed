//! What a camera checks in the H.264 it passes through untouched (no transcoding): from the
//! stream's SPS, the profile to declare to browsers (the nearest one they offer), the picture
//! size, and whether it may carry B-frames; from each access unit, its slices' types.
//! WebRTC receivers do not reorder frames, so B-frames are refused, as are profiles browsers
//! cannot decode (High 10, 4:2:2, 4:4:4…), each with a message saying what to change.
//!
//! Input is an Annex B access unit (start codes between NAL units), as a file or an RTSP
//! depacketizer gives it. Nothing here panics on any bytes (a fuzz target drives it).

use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::rbsp::{BitRead, BitReader, decode_nal};

/// Largest access unit accepted (a 4K keyframe is a few hundred KiB; more is a broken or
/// hostile source).
pub const MAX_ACCESS_UNIT: usize = 4 << 20;
/// NAL units in one access unit, at most.
pub const MAX_NALS: usize = 1024;
/// Largest picture side accepted, in pixels.
pub const MAX_SIDE: u32 = 8192;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum H264Error {
    #[error("an access unit of {0} bytes is over the limit of {MAX_ACCESS_UNIT}")]
    TooLarge(usize),
    #[error("an access unit with more than {MAX_NALS} NAL units")]
    TooManyNals,
    #[error("the stream's SPS cannot be read: {0}")]
    BadSps(String),
    #[error(
        "the stream is H.264 {0}, which browsers do not decode: set the camera to \
         Baseline, Main or High profile (8-bit 4:2:0)"
    )]
    Profile(String),
    #[error("the picture size {0}x{1} is out of range (at most {MAX_SIDE} a side)")]
    Size(u32, u32),
    #[error(
        "the stream has B-frames, which WebRTC players show out of order: turn B-frames off \
         on the camera (or encode with -bf 0)"
    )]
    BFrames,
}

/// What the SPS says, for declaring and showing the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    /// `profile_idc` and constraint flags as browsers name the profile (the first two bytes
    /// of an SDP `profile-level-id`): 0x42e0 Constrained Baseline, 0x4200 Baseline, 0x4d00
    /// Main, 0x6400 High.
    pub profile: u16,
    /// `level_idc`.
    pub level: u8,
    pub width: u32,
    pub height: u32,
}

impl StreamInfo {
    pub fn profile_name(&self) -> &'static str {
        match self.profile {
            0x42e0 => "Constrained Baseline",
            0x4200 => "Baseline",
            0x4d00 => "Main",
            _ => "High",
        }
    }
}

/// The NAL units of an Annex B buffer (without start codes; empty ones skipped).
pub fn nal_units(au: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = au;
    std::iter::from_fn(move || {
        loop {
            // Skip to the byte after the next start code (00 00 01).
            let start = find_start(rest)?;
            rest = &rest[start..];
            let end = find_start(rest).map_or(rest.len(), |next| {
                // The next start code begins 3 bytes before `next` (4 with a leading zero).
                let mut e = next - 3;
                while e > 0 && rest[e - 1] == 0 {
                    e -= 1;
                }
                e
            });
            let nal = &rest[..end];
            rest = &rest[end..];
            if !nal.is_empty() {
                return Some(nal);
            }
        }
    })
}

/// Whether an access unit holds an IDR slice (a decoder can start there).
pub fn is_keyframe(au: &[u8]) -> bool {
    nal_units(au).any(|n| n[0] & 0x1f == 5)
}

/// Index just past the first `00 00 01`.
fn find_start(b: &[u8]) -> Option<usize> {
    b.windows(3).position(|w| w == [0, 0, 1]).map(|i| i + 3)
}

/// Reads an SPS NAL unit (header included).
pub fn sps_info(nal: &[u8]) -> Result<(StreamInfo, bool), H264Error> {
    let rbsp = decode_nal(nal).map_err(|e| H264Error::BadSps(e.to_string()))?;
    // profile_idc and the constraint flags are the first two bytes: judged before the rest.
    let (Some(&idc), Some(&flags)) = (rbsp.first(), rbsp.get(1)) else {
        return Err(H264Error::BadSps("too short".into()));
    };
    let set1 = flags & 0x40 != 0;
    let profile = match idc {
        66 if set1 => 0x42e0,
        66 => 0x4200,
        // Main, and Extended streams that keep to its constrained subset.
        77 => 0x4d00,
        100 => 0x6400,
        110 => return Err(H264Error::Profile("High 10".into())),
        122 => return Err(H264Error::Profile("High 4:2:2".into())),
        244 => return Err(H264Error::Profile("High 4:4:4".into())),
        88 => return Err(H264Error::Profile("Extended".into())),
        other => return Err(H264Error::Profile(format!("profile_idc {other}"))),
    };
    let sps = SeqParameterSet::from_bits(BitReader::new(&rbsp[..]))
        .map_err(|e| H264Error::BadSps(format!("{e:?}")))?;
    let (width, height) = sps
        .pixel_dimensions()
        .map_err(|e| H264Error::BadSps(format!("{e:?}")))?;
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(H264Error::Size(width, height));
    }
    // Reordering declared in the VUI, where the encoder says; Baseline has none by design.
    let reorders = sps
        .vui_parameters
        .as_ref()
        .and_then(|v| v.bitstream_restrictions.as_ref())
        .is_some_and(|r| r.max_num_reorder_frames > 0);
    Ok((
        StreamInfo {
            profile,
            level: sps.level_idc,
            width,
            height,
        },
        reorders,
    ))
}

/// Whether a coded slice NAL unit (type 1 or 5) is a B slice.
fn is_b_slice(nal: &[u8]) -> bool {
    // first_mb_in_slice and slice_type are the first two syntax elements; 32 bytes hold
    // them with room for emulation prevention.
    let head = &nal[..nal.len().min(32)];
    let Ok(rbsp) = decode_nal(head) else {
        return false;
    };
    let mut r = BitReader::new(&rbsp[..]);
    let first = r.read_ue("first_mb_in_slice");
    let kind = r.read_ue("slice_type");
    matches!((first, kind), (Ok(_), Ok(t)) if t % 5 == 1)
}

/// Follows a stream access unit by access unit.
#[derive(Debug, Default)]
pub struct Checker {
    info: Option<StreamInfo>,
}

impl Checker {
    pub fn new() -> Checker {
        Checker::default()
    }

    /// The stream as its latest SPS described it.
    pub fn info(&self) -> Option<StreamInfo> {
        self.info
    }

    /// Checks one access unit; `Ok(Some(info))` when it carried an SPS that changed what the
    /// stream is (the first one, or new parameters), `Ok(None)` otherwise. An error means the
    /// stream cannot be passed through as it is.
    pub fn check(&mut self, au: &[u8]) -> Result<Option<StreamInfo>, H264Error> {
        if au.len() > MAX_ACCESS_UNIT {
            return Err(H264Error::TooLarge(au.len()));
        }
        let mut changed = None;
        for (i, nal) in nal_units(au).enumerate() {
            if i >= MAX_NALS {
                return Err(H264Error::TooManyNals);
            }
            match nal[0] & 0x1f {
                7 => {
                    let (info, reorders) = sps_info(nal)?;
                    if reorders {
                        return Err(H264Error::BFrames);
                    }
                    if self.info != Some(info) {
                        self.info = Some(info);
                        changed = Some(info);
                    }
                }
                1 | 5 if is_b_slice(nal) => return Err(H264Error::BFrames),
                _ => {}
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::Pattern;

    #[test]
    fn nal_units_split_on_three_and_four_byte_start_codes() {
        let au = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
        ];
        let nals: Vec<&[u8]> = nal_units(&au).collect();
        assert_eq!(nals, [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4, 5]]);
        assert_eq!(nal_units(&[1, 2, 3]).count(), 0);
        assert_eq!(nal_units(&[0, 0, 1]).count(), 0);
    }

    #[test]
    fn the_test_pattern_reads_as_constrained_baseline_of_its_size() {
        let mut p = Pattern::new(320, 240, 30).unwrap();
        let mut c = Checker::new();
        let (key, _) = p.frame(0, 0);
        let info = c.check(&key).unwrap().expect("an SPS");
        assert_eq!((info.width, info.height), (320, 240));
        assert_eq!(info.profile_name(), "Constrained Baseline");
        let (next, _) = p.frame(1, 33);
        assert_eq!(c.check(&next), Ok(None));
        assert_eq!(c.info(), Some(info));
    }

    #[test]
    fn high_ten_and_b_frames_and_oversize_are_refused() {
        // An SPS with profile_idc 110 (High 10).
        let sps = [0x67, 110, 0, 0x1f, 0xff];
        assert!(matches!(sps_info(&sps), Err(H264Error::Profile(p)) if p == "High 10"));
        // A B slice: first_mb_in_slice 0 (ue "1"), slice_type 1 (ue "010") → 1010_0000.
        let mut au = vec![0, 0, 0, 1, 0x01, 0b1010_0000, 0];
        assert_eq!(Checker::new().check(&au), Err(H264Error::BFrames));
        // A P slice (slice_type 0: ue "1") passes.
        au[5] = 0b1100_0000;
        assert_eq!(Checker::new().check(&au), Ok(None));
        let big = vec![0; MAX_ACCESS_UNIT + 1];
        assert!(matches!(
            Checker::new().check(&big),
            Err(H264Error::TooLarge(_))
        ));
        let many: Vec<u8> = std::iter::repeat_n([0u8, 0, 1, 9, 0x10], MAX_NALS + 1)
            .flatten()
            .collect();
        assert_eq!(Checker::new().check(&many), Err(H264Error::TooManyNals));
    }

    #[test]
    fn truncated_and_garbage_input_is_an_error_or_nothing_never_a_panic() {
        let mut p = Pattern::new(320, 240, 30).unwrap();
        let (key, _) = p.frame(0, 0);
        for cut in 0..key.len().min(200) {
            let _ = Checker::new().check(&key[..cut]);
        }
        let mut x = 0x1234_5678u32;
        for _ in 0..2000 {
            let n = (x % 64) as usize;
            let junk: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    if x.is_multiple_of(7) { 0 } else { x as u8 }
                })
                .chain([0, 0, 1, 0x67, 66, 0xc0, 0x1e])
                .collect();
            let _ = Checker::new().check(&junk);
        }
    }
}
