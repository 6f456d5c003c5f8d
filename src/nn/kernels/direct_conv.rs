//! Direct 2-D convolution for AVX-512, without im2col: the input is repacked once per image
//! into a zero-padded, channel-blocked layout `[C/16][H+2p][W+2p][16]`, the weights into
//! `[O/16][C/16][kh][kw][16 in][16 out]`, and a register tile of up to 16 output pixels × 16
//! output channels accumulates `Σ_{c,ky,kx} x · w` with one broadcast FMA per input value.
//! This is the layout oneDNN uses for PyTorch's CPU convolutions; it reads the input once per
//! output block instead of writing and re-reading a 9× larger im2col matrix, and packs the
//! weights once per call instead of once per image (BENCHMARKS.md, issue 6).
//!
//! Only stride-1 convolutions with input and output channels divisible by 16 take this path;
//! [`available`] says whether the CPU has AVX-512. The result equals im2col + GEMM up to the
//! order of the f32 sums. x86-64 only (the module is compiled there alone).

use super::simd::{isa, Isa};

/// Channels per block: one AVX-512 register of f32.
const BLOCK: usize = 16;

/// Whether this CPU can run the direct convolution.
pub(crate) fn available() -> bool {
    isa() == Isa::Avx512
}

/// Whether a convolution of these shapes can take the direct path.
pub(crate) fn supports(ci: usize, co: usize, stride: usize) -> bool {
    stride == 1 && ci.is_multiple_of(BLOCK) && co.is_multiple_of(BLOCK)
}

/// Shapes of one stride-1 convolution.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    /// Input channels, height, width.
    pub ci: usize,
    pub h: usize,
    pub w: usize,
    /// Output channels.
    pub co: usize,
    /// Kernel height and width.
    pub kh: usize,
    pub kw: usize,
    /// Zero padding on every side.
    pub pad: usize,
}

impl Shape {
    fn hp(&self) -> usize {
        self.h + 2 * self.pad
    }
    fn wp(&self) -> usize {
        self.w + 2 * self.pad
    }
    /// Output height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        (self.hp() + 1 - self.kh, self.wp() + 1 - self.kw)
    }
    /// Length of the packed input of one image.
    pub fn packed_input_len(&self) -> usize {
        self.ci * self.hp() * self.wp()
    }
}

/// Weights `[O, I, kh, kw]` repacked as `[O/16][I/16][kh][kw][16 in][16 out]`, so that the
/// 16 output channels of one input channel and tap are one contiguous vector.
pub(crate) fn pack_weights(w: &[f32], s: &Shape) -> Vec<f32> {
    let (ci, co, kh, kw) = (s.ci, s.co, s.kh, s.kw);
    assert_eq!(w.len(), co * ci * kh * kw);
    let mut out = vec![0f32; w.len()];
    let (nib, taps) = (ci / BLOCK, kh * kw);
    for o in 0..co {
        let (ob, ol) = (o / BLOCK, o % BLOCK);
        for i in 0..ci {
            let (ib, il) = (i / BLOCK, i % BLOCK);
            for t in 0..taps {
                let dst = (((ob * nib + ib) * taps + t) * BLOCK + il) * BLOCK + ol;
                out[dst] = w[(o * ci + i) * taps + t];
            }
        }
    }
    out
}

/// One image `x [I, H, W]` repacked as `[I/16][H+2p][W+2p][16]` with zero borders, into `dst`
/// (`s.packed_input_len()` values).
pub(crate) fn pack_input(x: &[f32], s: &Shape, dst: &mut [f32]) {
    let (h, w, p, hp, wp) = (s.h, s.w, s.pad, s.hp(), s.wp());
    assert!(x.len() >= s.ci * h * w && dst.len() >= s.packed_input_len());
    for (cb, plane) in dst[..s.packed_input_len()].chunks_exact_mut(hp * wp * BLOCK).enumerate() {
        plane[..p * wp * BLOCK].fill(0.0);
        plane[(p + h) * wp * BLOCK..].fill(0.0);
        for y in 0..h {
            let row = &mut plane[(y + p) * wp * BLOCK..(y + p + 1) * wp * BLOCK];
            row[..p * BLOCK].fill(0.0);
            row[(p + w) * BLOCK..].fill(0.0);
            for l in 0..BLOCK {
                let src = &x[((cb * BLOCK + l) * h + y) * w..][..w];
                for (xx, &v) in src.iter().enumerate() {
                    row[(xx + p) * BLOCK + l] = v;
                }
            }
        }
    }
}

/// Output channel blocks `blocks` of one image: `out` holds those blocks' channels of the
/// NCHW output (`blocks.len()·16·ho·wo` values) = `bias + w ⊛ x`, from the packed input `xp`
/// ([`pack_input`]) and packed weights `wp` ([`pack_weights`]). Every value of `out` is
/// written (the tiles cover each plane) and none is read, so it may start uninitialised.
pub(crate) fn conv_blocks(
    xp: &[f32],
    wp: &[f32],
    bias: &[f32],
    s: &Shape,
    blocks: std::ops::Range<usize>,
    out: &mut [std::mem::MaybeUninit<f32>],
) {
    let (ho, wo) = s.out_hw();
    let nib = s.ci / BLOCK;
    let per_block_w = nib * s.kh * s.kw * BLOCK * BLOCK;
    assert!(available() && supports(s.ci, s.co, 1));
    assert!(xp.len() >= s.packed_input_len() && wp.len() >= s.co / BLOCK * per_block_w && bias.len() >= s.co);
    assert!(blocks.end <= s.co / BLOCK && out.len() >= blocks.len() * BLOCK * ho * wo);
    let tiles = Tiling::new(ho, wo);
    let geo = Geometry {
        row: s.wp() * BLOCK,
        plane: s.hp() * s.wp() * BLOCK,
        nib,
        kh: s.kh,
        kw: s.kw,
        out_plane: ho * wo,
        out_row: wo,
    };
    for (k, ob) in blocks.enumerate() {
        let wts = &wp[ob * per_block_w..(ob + 1) * per_block_w];
        let b = &bias[ob * BLOCK..(ob + 1) * BLOCK];
        let o = &mut out[k * BLOCK * ho * wo..(k + 1) * BLOCK * ho * wo];
        for (y0, ry) in tiles.rows() {
            for (x0, rx) in tiles.cols() {
                let f = avx512::tile_fn(ry, rx);
                // SAFETY: AVX-512 is present (asserted above); the tile reads input rows
                // y0..y0+ry+kh-1 and columns x0..x0+rx+kw-1 of every block of the padded input
                // (inside it, since y0+ry <= ho = hp-kh+1 and likewise for x), all weights of
                // block `ob`, 16 biases, and writes the tile's 16 channels inside `o`.
                unsafe {
                    f(
                        xp.as_ptr().add(y0 * geo.row + x0 * BLOCK),
                        wts.as_ptr(),
                        b.as_ptr(),
                        o.as_mut_ptr().cast::<f32>().add(y0 * wo + x0),
                        &geo,
                    )
                }
            }
        }
    }
}

/// Strides of the packed input and the NCHW output, in f32 values.
pub(crate) struct Geometry {
    /// Between input rows and between input channel blocks.
    row: usize,
    plane: usize,
    /// Input channel blocks and kernel size.
    nib: usize,
    kh: usize,
    kw: usize,
    /// Between output channels and between output rows.
    out_plane: usize,
    out_row: usize,
}

/// How an `ho × wo` output plane is cut into register tiles of `ry × rx ≤ 16` pixels: rows of
/// up to 16 pixels (split evenly), and for narrow maps two or four rows per tile so that the
/// tile still holds 12–16 accumulators.
struct Tiling {
    ho: usize,
    wo: usize,
    rx: usize,
    ry: usize,
}

impl Tiling {
    fn new(ho: usize, wo: usize) -> Self {
        let chunks = wo.div_ceil(16);
        let rx = wo.div_ceil(chunks);
        // The largest tile height of {1, 2, 4} that keeps ry·rx ≤ 16 and fits the plane.
        let ry = match (16 / rx).min(ho) {
            0 | 1 => 1,
            2 | 3 => 2,
            _ => 4,
        };
        Self { ho, wo, rx, ry }
    }

    /// `(first row, rows)` of each band of tiles; the last band may be shorter (1–3 rows are
    /// cut into bands of 2 and 1).
    fn rows(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let full = self.ho / self.ry * self.ry;
        let bands = (0..full).step_by(self.ry).map(|y| (y, self.ry));
        let rest = self.ho - full;
        let tail = [(full, rest.min(2) & !1), (full + (rest & !1), rest & 1)];
        bands.chain(tail.into_iter().filter(|&(_, n)| n > 0))
    }

    /// `(first column, columns)` of each tile of a band.
    fn cols(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.wo).step_by(self.rx).map(|x| (x, self.rx.min(self.wo - x)))
    }
}

mod avx512 {
    use super::{Geometry, BLOCK};
    use std::arch::x86_64::*;

    type TileFn = unsafe fn(*const f32, *const f32, *const f32, *mut f32, &Geometry);

    /// A tile of `RY × RX` output pixels of one 16-channel output block: starts from the bias,
    /// adds every input block, tap and input channel with one broadcast FMA per pixel, then
    /// stores the 16 channels of each pixel to their NCHW planes.
    ///
    /// `x`: packed input at the tile's first pixel (block 0); `w`: the output block's packed
    /// weights; `out`: NCHW output at (first channel of the block, tile's first pixel).
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const RY: usize, const RX: usize>(
        x: *const f32,
        w: *const f32,
        bias: *const f32,
        out: *mut f32,
        g: &Geometry,
    ) {
        let b = _mm512_loadu_ps(bias);
        let mut acc = [[b; RX]; RY];
        let mut ws = w;
        for ib in 0..g.nib {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let xs = x.add(ib * g.plane + ky * g.row + kx * BLOCK);
                    for i in 0..BLOCK {
                        let wv = _mm512_loadu_ps(ws.add(i * BLOCK));
                        for (yy, acc_row) in acc.iter_mut().enumerate() {
                            for (xx, a) in acc_row.iter_mut().enumerate() {
                                let v = _mm512_set1_ps(*xs.add(yy * g.row + xx * BLOCK + i));
                                *a = _mm512_fmadd_ps(v, wv, *a);
                            }
                        }
                    }
                    ws = ws.add(BLOCK * BLOCK);
                }
            }
        }
        // Pixel-major registers to channel-major planes, through memory: indexing `acc`
        // with run-time indices here would keep it in memory during the loop above.
        let mut lanes = [[[0f32; BLOCK]; RX]; RY];
        for yy in 0..RY {
            for xx in 0..RX {
                _mm512_storeu_ps(lanes[yy][xx].as_mut_ptr(), acc[yy][xx]);
            }
        }
        for (yy, lane_row) in lanes.iter().enumerate() {
            for (xx, px) in lane_row.iter().enumerate() {
                let o = out.add(yy * g.out_row + xx);
                for (l, &v) in px.iter().enumerate() {
                    *o.add(l * g.out_plane) = v;
                }
            }
        }
    }

    macro_rules! tiles_of_height {
        ($ry:literal) => {
            [
                tile::<$ry, 1> as TileFn,
                tile::<$ry, 2>,
                tile::<$ry, 3>,
                tile::<$ry, 4>,
                tile::<$ry, 5>,
                tile::<$ry, 6>,
                tile::<$ry, 7>,
                tile::<$ry, 8>,
                tile::<$ry, 9>,
                tile::<$ry, 10>,
                tile::<$ry, 11>,
                tile::<$ry, 12>,
                tile::<$ry, 13>,
                tile::<$ry, 14>,
                tile::<$ry, 15>,
                tile::<$ry, 16>,
            ]
        };
    }

    /// The tile kernel for `ry ∈ {1, 2, 4}` rows of `rx ∈ 1..=16` pixels.
    pub(super) fn tile_fn(ry: usize, rx: usize) -> TileFn {
        static TABLE: [[TileFn; 16]; 3] = [tiles_of_height!(1), tiles_of_height!(2), tiles_of_height!(4)];
        let row = match ry {
            1 => 0,
            2 => 1,
            4 => 2,
            _ => unreachable!("tile height {ry}"),
        };
        TABLE[row][rx - 1]
    }
}
