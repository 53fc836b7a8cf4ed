//! The built-in test pattern: an H.264 stream (Constrained Baseline, CAVLC) written without an
//! encoder. Every macroblock it sends is `I_PCM` — its pixels as they are, so what a viewer
//! decodes is exactly what was drawn — and a frame after a keyframe sends only the macroblocks
//! that changed (a P slice whose other macroblocks are skipped: zero motion, a copy of the
//! previous picture; with the deblocking filter off, nothing else touches them).
//!
//! The picture: mid-grey, a row of 16 blocks (one macroblock each, white for 1, black for 0)
//! with the frame number, two rows of 12 with the time in milliseconds (mod 2^24), and a bar
//! along the bottom that moves one macroblock a frame so people see it is live. [`read`]
//! reads the numbers back from a decoded luma plane.

/// Macroblock size in pixels.
const MB: usize = 16;
/// Luma of a 1 bit, a 0 bit, the background and the bar.
const WHITE: u8 = 235;
const BLACK: u8 = 16;
const GREY: u8 = 128;
const BAR: u8 = 200;
/// Bits of the frame number and of the time (ms, mod 2^24).
pub const FRAME_BITS: usize = 16;
pub const TIME_BITS: usize = 24;
/// Where the bits start, in macroblocks (16 frame-number bits in a row, then rows of 12).
const ORIGIN: (usize, usize) = (2, 2);
/// `log2_max_frame_num`: frame_num counts modulo 2^16 between keyframes.
const LOG2_MAX_FRAME_NUM: u32 = 16;

/// Smallest and largest picture, in pixels (each a multiple of 16).
pub const MIN_SIZE: (usize, usize) = (320, 240);
pub const MAX_SIZE: (usize, usize) = (1920, 1088);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternError {
    /// The size is not a multiple of 16 or outside [`MIN_SIZE`]–[`MAX_SIZE`].
    Size(usize, usize),
}

impl std::fmt::Display for PatternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PatternError::Size(w, h) => write!(
                f,
                "a test pattern of {w}×{h}: width and height must be multiples of 16, from {}×{} to {}×{}",
                MIN_SIZE.0, MIN_SIZE.1, MAX_SIZE.0, MAX_SIZE.1
            ),
        }
    }
}

impl std::error::Error for PatternError {}

/// The test source. [`Pattern::frame`] gives one access unit (Annex B: start codes, then the
/// NAL units; a keyframe starts with the SPS and PPS).
#[derive(Debug)]
pub struct Pattern {
    width: usize,
    height: usize,
    fps: u32,
    /// Frames between keyframes (a keyframe also when asked for).
    gop: u32,
    /// Luma of the last picture sent, to find what changed.
    shown: Vec<u8>,
    since_key: u32,
    frame_num: u32,
    idr_id: u32,
    key_wanted: bool,
}

impl Pattern {
    /// A pattern of `width`×`height` at `fps` (1–60), a keyframe every two seconds.
    pub fn new(width: usize, height: usize, fps: u32) -> Result<Pattern, PatternError> {
        if !width.is_multiple_of(MB)
            || !height.is_multiple_of(MB)
            || width < MIN_SIZE.0
            || height < MIN_SIZE.1
            || width > MAX_SIZE.0
            || height > MAX_SIZE.1
        {
            return Err(PatternError::Size(width, height));
        }
        let fps = fps.clamp(1, 60);
        Ok(Pattern {
            width,
            height,
            fps,
            gop: fps * 2,
            shown: Vec::new(),
            since_key: 0,
            frame_num: 0,
            idr_id: 0,
            key_wanted: true,
        })
    }

    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// The next frame is a keyframe (a viewer joined, or lost one).
    pub fn request_keyframe(&mut self) {
        self.key_wanted = true;
    }

    /// Frame number `n` showing `time_ms` (the sender's clock, milliseconds), as one access
    /// unit, and whether it is a keyframe.
    pub fn frame(&mut self, n: u32, time_ms: u64) -> (Vec<u8>, bool) {
        let luma = self.draw(n, time_ms);
        let key = self.key_wanted || self.since_key >= self.gop || self.shown.is_empty();
        let mut out = Vec::new();
        if key {
            self.key_wanted = false;
            self.since_key = 0;
            self.frame_num = 0;
            nal(&mut out, 3, 7, &self.sps());
            nal(&mut out, 3, 8, &pps());
            let slice = self.slice(&luma, None);
            nal(&mut out, 3, 5, &slice);
            self.idr_id = (self.idr_id + 1) % 2;
        } else {
            let slice = self.slice(&luma, Some(&self.shown));
            nal(&mut out, 2, 1, &slice);
        }
        self.since_key += 1;
        self.frame_num = (self.frame_num + 1) % (1 << LOG2_MAX_FRAME_NUM);
        self.shown = luma;
        (out, key)
    }

    /// The luma plane of frame `n` at `time_ms`.
    fn draw(&self, n: u32, time_ms: u64) -> Vec<u8> {
        let (w, h) = (self.width, self.height);
        let mut y = vec![GREY; w * h];
        let mut block = |mx: usize, my: usize, v: u8| {
            for row in 0..MB {
                let start = (my * MB + row) * w + mx * MB;
                y[start..start + MB].fill(v);
            }
        };
        let time = (time_ms % (1 << TIME_BITS)) as u32;
        let bits = (0..FRAME_BITS)
            .map(|i| (n >> i) & 1)
            .chain((0..TIME_BITS).map(|i| (time >> i) & 1));
        for (k, bit) in bits.enumerate() {
            let (mx, my) = position(k);
            block(mx, my, if bit == 1 { WHITE } else { BLACK });
        }
        // The bar: the bottom row, one macroblock moving along it.
        let cols = w / MB;
        block(n as usize % cols, h / MB - 1, BAR);
        y
    }

    fn sps(&self) -> Vec<u8> {
        let mut b = BitWriter::default();
        b.u(8, 66); // profile_idc: Baseline
        b.u(8, 0xe0); // constraint_set0..2: Constrained Baseline (as browsers offer 42e0xx)
        b.u(8, 31); // level_idc 3.1
        b.ue(0); // seq_parameter_set_id
        b.ue(LOG2_MAX_FRAME_NUM - 4);
        b.ue(2); // pic_order_cnt_type 2: output in decoding order
        b.ue(1); // max_num_ref_frames
        b.u(1, 0); // gaps_in_frame_num_value_allowed_flag
        b.ue((self.width / MB - 1) as u32);
        b.ue((self.height / MB - 1) as u32);
        b.u(1, 1); // frame_mbs_only_flag
        b.u(1, 1); // direct_8x8_inference_flag
        b.u(1, 0); // frame_cropping_flag
        b.u(1, 1); // vui_parameters_present_flag
        {
            b.u(1, 0); // aspect_ratio_info_present_flag
            b.u(1, 0); // overscan_info_present_flag
            b.u(1, 0); // video_signal_type_present_flag
            b.u(1, 0); // chroma_loc_info_present_flag
            b.u(1, 1); // timing_info_present_flag
            b.u(32, 1); // num_units_in_tick
            b.u(32, 2 * self.fps); // time_scale (two ticks a frame)
            b.u(1, 1); // fixed_frame_rate_flag
            b.u(1, 0); // nal_hrd_parameters_present_flag
            b.u(1, 0); // vcl_hrd_parameters_present_flag
            b.u(1, 0); // pic_struct_present_flag
            b.u(1, 1); // bitstream_restriction_flag: no reordering, one frame buffered
            b.u(1, 1); // motion_vectors_over_pic_boundaries_flag
            b.ue(0); // max_bytes_per_pic_denom
            b.ue(0); // max_bits_per_mb_denom
            b.ue(16); // log2_max_mv_length_horizontal
            b.ue(16); // log2_max_mv_length_vertical
            b.ue(0); // max_num_reorder_frames
            b.ue(1); // max_dec_frame_buffering
        }
        b.trailing();
        b.bytes
    }

    /// One slice with every macroblock: all of them (`previous` None, an IDR I slice) or
    /// those that differ from `previous` (a P slice, the rest skipped).
    fn slice(&self, luma: &[u8], previous: Option<&[u8]>) -> Vec<u8> {
        let mut b = BitWriter::default();
        b.ue(0); // first_mb_in_slice
        b.ue(if previous.is_none() { 7 } else { 5 }); // slice_type: all I / all P
        b.ue(0); // pic_parameter_set_id
        b.u(LOG2_MAX_FRAME_NUM, self.frame_num);
        if previous.is_none() {
            b.ue(self.idr_id);
        } else {
            b.u(1, 0); // num_ref_idx_active_override_flag
            b.u(1, 0); // ref_pic_list_modification_flag_l0
        }
        // dec_ref_pic_marking
        if previous.is_none() {
            b.u(1, 0); // no_output_of_prior_pics_flag
            b.u(1, 0); // long_term_reference_flag
        } else {
            b.u(1, 0); // adaptive_ref_pic_marking_mode_flag
        }
        b.se(0); // slice_qp_delta
        b.ue(1); // disable_deblocking_filter_idc: off
        let (cols, rows) = (self.width / MB, self.height / MB);
        let mut skipped = 0u32;
        for my in 0..rows {
            for mx in 0..cols {
                let changed = previous.is_none_or(|p| !same_mb(p, luma, self.width, mx, my));
                if !changed {
                    skipped += 1;
                    continue;
                }
                if previous.is_some() {
                    b.ue(skipped); // mb_skip_run
                    skipped = 0;
                    b.ue(5 + 25); // mb_type: I_PCM in a P slice
                } else {
                    b.ue(25); // mb_type: I_PCM
                }
                b.align(); // pcm_alignment_zero_bit
                for row in 0..MB {
                    let start = (my * MB + row) * self.width + mx * MB;
                    b.bytes.extend_from_slice(&luma[start..start + MB]);
                }
                // Chroma (4:2:0, 8×8 each): neutral.
                b.bytes.extend(std::iter::repeat_n(128u8, 128));
            }
        }
        if previous.is_some() && skipped > 0 {
            b.ue(skipped);
        }
        b.trailing();
        b.bytes
    }
}

/// The macroblock of bit `k` (frame-number bits first, then time bits).
fn position(k: usize) -> (usize, usize) {
    let row = if k < FRAME_BITS {
        0
    } else {
        1 + (k - FRAME_BITS) / 12
    };
    let col = if k < FRAME_BITS {
        k
    } else {
        (k - FRAME_BITS) % 12
    };
    (ORIGIN.0 + col, ORIGIN.1 + row)
}

fn same_mb(a: &[u8], b: &[u8], width: usize, mx: usize, my: usize) -> bool {
    (0..MB).all(|row| {
        let start = (my * MB + row) * width + mx * MB;
        a[start..start + MB] == b[start..start + MB]
    })
}

fn pps() -> Vec<u8> {
    let mut b = BitWriter::default();
    b.ue(0); // pic_parameter_set_id
    b.ue(0); // seq_parameter_set_id
    b.u(1, 0); // entropy_coding_mode_flag: CAVLC
    b.u(1, 0); // bottom_field_pic_order_in_frame_present_flag
    b.ue(0); // num_slice_groups_minus1
    b.ue(0); // num_ref_idx_l0_default_active_minus1
    b.ue(0); // num_ref_idx_l1_default_active_minus1
    b.u(1, 0); // weighted_pred_flag
    b.u(2, 0); // weighted_bipred_idc
    b.se(0); // pic_init_qp_minus26
    b.se(0); // pic_init_qs_minus26
    b.se(0); // chroma_qp_index_offset
    b.u(1, 1); // deblocking_filter_control_present_flag
    b.u(1, 0); // constrained_intra_pred_flag
    b.u(1, 0); // redundant_pic_cnt_present_flag
    b.trailing();
    b.bytes
}

/// Appends one NAL unit (start code, header, payload with emulation prevention).
fn nal(out: &mut Vec<u8>, ref_idc: u8, kind: u8, rbsp: &[u8]) {
    out.extend_from_slice(&[0, 0, 0, 1, (ref_idc << 5) | kind]);
    let mut zeros = 0;
    for &byte in rbsp {
        if zeros >= 2 && byte <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(byte);
        zeros = if byte == 0 { zeros + 1 } else { 0 };
    }
}

/// Big-endian bit writer with Exp-Golomb codes.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0 = the last byte is full, or there is none).
    used: u32,
}

impl BitWriter {
    fn bit(&mut self, v: u32) {
        if self.used == 0 {
            self.bytes.push(0);
        }
        if v & 1 == 1 {
            let last = self.bytes.len() - 1;
            self.bytes[last] |= 0x80 >> self.used;
        }
        self.used = (self.used + 1) % 8;
    }

    fn u(&mut self, n: u32, v: u32) {
        for i in (0..n).rev() {
            self.bit(v >> i);
        }
    }

    fn ue(&mut self, v: u32) {
        let x = u64::from(v) + 1;
        let len = 64 - x.leading_zeros();
        for _ in 0..len - 1 {
            self.bit(0);
        }
        for i in (0..len).rev() {
            self.bit((x >> i) as u32);
        }
    }

    fn se(&mut self, v: i32) {
        let k = if v > 0 {
            2 * v.unsigned_abs() - 1
        } else {
            2 * v.unsigned_abs()
        };
        self.ue(k);
    }

    fn align(&mut self) {
        while self.used != 0 {
            self.bit(0);
        }
    }

    fn trailing(&mut self) {
        self.bit(1);
        self.align();
    }
}

/// Reads frame number and time back from a decoded luma plane of `width`×`height` pixels
/// (the picture as sent, or scaled to another size): the centre of each block, thresholded.
pub fn read(luma: &[u8], width: usize, height: usize, sent: (usize, usize)) -> (u32, u32) {
    let sample = |k: usize| {
        let (mx, my) = position(k);
        let x = (mx * MB + MB / 2) * width / sent.0;
        let y = (my * MB + MB / 2) * height / sent.1;
        u32::from(luma.get(y * width + x).is_some_and(|&v| v > GREY))
    };
    let frame = (0..FRAME_BITS).fold(0, |acc, i| acc | (sample(i) << i));
    let time = (0..TIME_BITS).fold(0, |acc, i| acc | (sample(FRAME_BITS + i) << i));
    (frame, time)
}

#[cfg(test)]
mod tests;
