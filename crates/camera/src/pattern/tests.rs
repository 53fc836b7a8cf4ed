use std::io::Write;
use std::process::{Command, Stdio};

use super::*;

fn bits(f: impl FnOnce(&mut BitWriter)) -> Vec<u8> {
    let mut b = BitWriter::default();
    f(&mut b);
    b.bytes
}

#[test]
fn exp_golomb_known_codes() {
    // ue: 0 → 1, 1 → 010, 2 → 011, 3 → 00100; se: 1 → 010, -1 → 011.
    assert_eq!(bits(|b| b.ue(0)), [0b1000_0000]);
    assert_eq!(bits(|b| b.ue(1)), [0b0100_0000]);
    assert_eq!(bits(|b| b.ue(2)), [0b0110_0000]);
    assert_eq!(bits(|b| b.ue(3)), [0b0010_0000]);
    assert_eq!(bits(|b| b.se(1)), [0b0100_0000]);
    assert_eq!(bits(|b| b.se(-1)), [0b0110_0000]);
    assert_eq!(bits(|b| b.ue(30)), [0b0000_1111, 0b1000_0000]);
    assert_eq!(bits(|b| b.u(32, 0xdead_beef)), [0xde, 0xad, 0xbe, 0xef]);
}

#[test]
fn emulation_prevention_is_inserted() {
    let mut out = Vec::new();
    nal(&mut out, 3, 5, &[0, 0, 1, 0, 0, 0, 0, 0, 3, 7]);
    // 00 00 01 → 00 00 03 01; five zeros → 00 00 03 00 00 03 00; a 03 after one zero stays.
    assert_eq!(
        out,
        [0, 0, 0, 1, 0x65, 0, 0, 3, 1, 0, 0, 3, 0, 0, 3, 0, 3, 7]
    );
}

#[test]
fn sizes_outside_the_range_or_not_macroblocks_are_refused() {
    for (w, h) in [(330, 240), (320, 250), (160, 120), (3840, 2160), (0, 0)] {
        let e = Pattern::new(w, h, 30).unwrap_err();
        assert_eq!(e, PatternError::Size(w, h));
        assert!(e.to_string().contains("multiples of 16"), "{e}");
    }
    assert!(Pattern::new(640, 480, 30).is_ok());
}

/// A few seconds of the pattern: keyframes where due or asked for, P frames carrying only
/// what changed, and a stream the call's H.264 reader takes as browsers would.
#[test]
fn keyframes_and_small_frames_in_a_stream_the_call_reader_takes() {
    let mut p = Pattern::new(320, 240, 30).unwrap();
    let mut stream = Vec::new();
    let mut keys = Vec::new();
    let mut sizes = Vec::new();
    for n in 0..100u32 {
        if n == 45 {
            p.request_keyframe();
        }
        let (au, key) = p.frame(n, 1_000 + u64::from(n) * 33);
        if key {
            keys.push(n);
        }
        sizes.push(au.len());
        stream.extend_from_slice(&au);
    }
    // The first frame, every 60 (two seconds at 30 fps) counted from the last one, and 45.
    assert_eq!(keys, [0, 45]);
    assert!(
        sizes[0] > 300 * 384,
        "a keyframe carries every macroblock: {}",
        sizes[0]
    );
    let p_max = sizes
        .iter()
        .enumerate()
        .filter(|(n, _)| !keys.contains(&(*n as u32)))
        .map(|(_, s)| *s)
        .max()
        .unwrap();
    assert!(
        p_max < 45 * 400,
        "a P frame carries only changed macroblocks: {p_max} bytes"
    );
    let h264 = peerweb_call::media::H264::parse(&stream).unwrap();
    assert_eq!(h264.frames.len(), 100);
    assert_eq!(h264.profile, (66, 0xe0, 31));
    let mut p = Pattern::new(320, 240, 30).unwrap();
    let keys: Vec<u32> = (0..130).filter(|&n| p.frame(n, 0).1).collect();
    assert_eq!(keys, [0, 60, 120]);
}

/// Decoded by Debian's ffmpeg (libavcodec's H.264 decoder, as in Chromium), every frame
/// reads back as the number and time it was drawn with, at two sizes.
#[test]
fn ffmpeg_decodes_every_frame_to_what_was_drawn() {
    for (w, h) in [(320, 240), (640, 480)] {
        let mut p = Pattern::new(w, h, 25).unwrap();
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for n in 0..90u32 {
            if n == 70 {
                p.request_keyframe();
            }
            // A clock that wraps past 2^24 ms on the way.
            let t = (1 << TIME_BITS) - 1_000 + u64::from(n) * 40;
            stream.extend_from_slice(&p.frame(n, t).0);
            want.push((n, (t % (1 << TIME_BITS)) as u32));
        }
        let mut child = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-f",
                "h264",
                "-i",
                "-",
            ])
            .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ffmpeg (scripts/test installs it)");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&stream));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "",
            "ffmpeg complained"
        );
        // Each frame's luma plane (its chroma follows, a quarter of it twice).
        let frames: Vec<&[u8]> = out
            .stdout
            .chunks(w * h * 3 / 2)
            .map(|f| &f[..w * h])
            .collect();
        assert_eq!(frames.len(), want.len());
        for (k, (frame, want)) in frames.iter().zip(&want).enumerate() {
            assert_eq!(read(frame, w, h, (w, h)), *want, "{w}×{h} frame {k}");
            // The picture is exactly what was drawn (I_PCM and skipped macroblocks only).
            let drawn = Pattern::new(w, h, 25)
                .unwrap()
                .draw(want.0, u64::from(want.1));
            assert!(
                *frame == &drawn[..],
                "{w}×{h} frame {k} differs from the drawing"
            );
        }
    }
}

#[test]
fn read_works_on_a_scaled_picture() {
    let p = Pattern::new(640, 480, 30).unwrap();
    let full = p.draw(12345, 9_876_543);
    // Half size, by taking every other pixel.
    let half: Vec<u8> = (0..240)
        .flat_map(|y| (0..320).map(move |x| (x, y)))
        .map(|(x, y)| full[(2 * y) * 640 + 2 * x])
        .collect();
    assert_eq!(read(&half, 320, 240, (640, 480)), (12345, 9_876_543));
}
