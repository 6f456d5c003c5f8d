//! [`ImageU8`]: an 8-bit image in planar (CHW) layout, the input type of the pixel metrics.

use super::{invalid, Result};
use candle_core::{Device, Tensor};

/// An 8-bit image stored planar, channel-major: `data[(ch * h + y) * w + x]`.
///
/// `c` is 1 (gray) or 3 (RGB); other channel counts are accepted by the pixel metrics
/// (they average over channels) but not by the networks, which need RGB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageU8 {
    /// Number of channels.
    pub c: usize,
    /// Height in pixels.
    pub h: usize,
    /// Width in pixels.
    pub w: usize,
    /// `c * h * w` bytes, CHW order.
    pub data: Vec<u8>,
}

impl ImageU8 {
    /// Builds an image from planar CHW bytes. Fails if `data.len() != c * h * w` or a size
    /// is zero.
    pub fn from_chw(c: usize, h: usize, w: usize, data: Vec<u8>) -> Result<Self> {
        if c == 0 || h == 0 || w == 0 {
            return invalid(format!("image size must be non-zero, got c={c} h={h} w={w}"));
        }
        if data.len() != c * h * w {
            return invalid(format!(
                "image data has {} bytes, expected c*h*w = {}*{}*{} = {}",
                data.len(),
                c,
                h,
                w,
                c * h * w
            ));
        }
        Ok(Self { c, h, w, data })
    }

    /// Builds an image from interleaved HWC bytes (the layout of PNG decoders and numpy
    /// `[H,W,C]` arrays).
    pub fn from_hwc(h: usize, w: usize, c: usize, data: &[u8]) -> Result<Self> {
        if c == 0 || h == 0 || w == 0 {
            return invalid(format!("image size must be non-zero, got h={h} w={w} c={c}"));
        }
        if data.len() != c * h * w {
            return invalid(format!("image data has {} bytes, expected h*w*c = {}", data.len(), c * h * w));
        }
        let mut out = vec![0u8; data.len()];
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    out[(ch * h + y) * w + x] = data[(y * w + x) * c + ch];
                }
            }
        }
        Ok(Self { c, h, w, data: out })
    }

    /// Builds a one-channel image from `h * w` bytes.
    pub fn gray(h: usize, w: usize, data: Vec<u8>) -> Result<Self> {
        Self::from_chw(1, h, w, data)
    }

    /// The bytes of channel `ch` (row-major `h * w`).
    pub fn plane(&self, ch: usize) -> &[u8] {
        &self.data[ch * self.h * self.w..(ch + 1) * self.h * self.w]
    }

    /// Interleaved HWC copy of the pixels.
    pub fn to_hwc(&self) -> Vec<u8> {
        let (c, h, w) = (self.c, self.h, self.w);
        let mut out = vec![0u8; self.data.len()];
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out[(y * w + x) * c + ch] = self.data[(ch * h + y) * w + x];
                }
            }
        }
        out
    }
}

/// Stacks equally sized images into an `f32` tensor `[B, C, H, W]` with values
/// `pixel / 255 * (hi - lo) + lo` (e.g. `lo = 0, hi = 1` for the Inception input,
/// `lo = -1, hi = 1` for LPIPS and the classifier stand-in).
pub fn images_to_tensor(images: &[ImageU8], lo: f32, hi: f32, device: &Device) -> Result<Tensor> {
    let Some(first) = images.first() else {
        return invalid("no images given");
    };
    let (c, h, w) = (first.c, first.h, first.w);
    let mut buf = Vec::with_capacity(images.len() * c * h * w);
    for (i, im) in images.iter().enumerate() {
        if (im.c, im.h, im.w) != (c, h, w) {
            return invalid(format!("image {i} is {}x{}x{} (CxHxW) but image 0 is {c}x{h}x{w}", im.c, im.h, im.w));
        }
        buf.extend(im.data.iter().map(|&p| p as f32 / 255.0 * (hi - lo) + lo));
    }
    Ok(Tensor::from_vec(buf, (images.len(), c, h, w), device)?)
}
