//! Images in and out, Fashion-MNIST, folders of images, and atomic writes.
//!
//! Pixels map as `x = u8/127.5 − 1` (SPEC 0). An image smaller than what a network accepts
//! is padded with a background value (Fashion-MNIST's 28×28 → 32×32 with −1, as the bundled
//! models were trained) and cropped back after decoding.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use crate::format::{Fit, FitMode};

/// An 8-bit image, channel-major (`[C, H, W]`), 1 (gray) or 3 (RGB) channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

impl Image {
    /// Reads a PNG/JPEG (or any format the `image` crate decodes here) and converts it to
    /// `channels` (1 = luma, 3 = RGB).
    pub fn load(path: &Path, channels: usize) -> Result<Self> {
        Ok(Self::load_noting(path, channels)?.0)
    }

    /// [`Image::load`], and what the conversion to `channels` dropped: `Some("colour")`,
    /// `Some("alpha")` or `Some("colour and alpha")`.
    pub fn load_noting(path: &Path, channels: usize) -> Result<(Self, Option<&'static str>)> {
        let img = image::ImageReader::open(path)
            .with_context(|| format!("cannot open image {}", path.display()))?
            .with_guessed_format()
            .with_context(|| format!("cannot read image {}", path.display()))?
            .decode()
            .with_context(|| format!("{} is not a readable PNG/JPEG image", path.display()))?;
        let (width, height) = (img.width() as usize, img.height() as usize);
        let color = img.color();
        let dropped = match (channels == 1 && color.has_color(), color.has_alpha()) {
            (true, true) => Some("colour and alpha"),
            (true, false) => Some("colour"),
            (false, true) => Some("alpha"),
            (false, false) => None,
        };
        let hwc = match channels {
            1 => img.into_luma8().into_raw(),
            3 => img.into_rgb8().into_raw(),
            c => bail!("a model with {c} channels is not supported (1 or 3)"),
        };
        Ok((Self::from_hwc(channels, height, width, &hwc), dropped))
    }

    /// Resized to `width × height` with the Lanczos3 filter.
    pub fn resized(&self, width: usize, height: usize) -> Image {
        use image::imageops::{resize, FilterType::Lanczos3};
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let (w, h) = (self.width as u32, self.height as u32);
        let hwc = self.to_hwc();
        let out = if self.channels == 1 {
            resize(&image::GrayImage::from_raw(w, h, hwc).expect("sized"), width as u32, height as u32, Lanczos3)
                .into_raw()
        } else {
            resize(&image::RgbImage::from_raw(w, h, hwc).expect("sized"), width as u32, height as u32, Lanczos3)
                .into_raw()
        };
        Self::from_hwc(self.channels, height, width, &out)
    }

    /// The `x, y, w, h` a `width × height` image is scaled to and placed at inside an `n × n`
    /// square: its longer side fills the square (`--fit pad`), or its shorter side does and the
    /// rest spills over (`--fit crop`, negative offsets).
    fn fit_box(mode: FitMode, width: usize, height: usize, n: usize) -> (isize, isize, usize, usize) {
        let long = width.max(height) as f64;
        let short = width.min(height) as f64;
        let scale = if mode == FitMode::Crop { n as f64 / short } else { n as f64 / long };
        let sw = ((width as f64 * scale).round() as usize).max(1);
        let sh = ((height as f64 * scale).round() as usize).max(1);
        let (sw, sh) = if mode == FitMode::Crop { (sw.max(n), sh.max(n)) } else { (sw.min(n), sh.min(n)) };
        ((n as isize - sw as isize) / 2, (n as isize - sh as isize) / 2, sw, sh)
    }

    /// This image made `n × n` (`--fit`): cut out of the centre after scaling its shorter side
    /// to `n` (crop), scaled to `n` on its longer side and centred on the background 0 (pad),
    /// or scaled to `n × n` (resize); Lanczos3 scaling throughout.
    pub fn fitted(&self, mode: FitMode, n: usize) -> Image {
        match mode {
            FitMode::Resize => self.resized(n, n),
            FitMode::Crop | FitMode::Pad => {
                let (x0, y0, sw, sh) = Self::fit_box(mode, self.width, self.height, n);
                let scaled = self.resized(sw, sh);
                let mut out =
                    Image { channels: self.channels, height: n, width: n, data: vec![0; self.channels * n * n] };
                for c in 0..self.channels {
                    for y in 0..n {
                        for x in 0..n {
                            let (sx, sy) = (x as isize - x0, y as isize - y0);
                            if (0..sw as isize).contains(&sx) && (0..sh as isize).contains(&sy) {
                                out.data[(c * n + y) * n + x] = scaled.data[(c * sh + sy as usize) * sw + sx as usize];
                            }
                        }
                    }
                }
                out
            }
        }
    }

    /// The inverse of [`Image::fitted`] as far as it goes: back to the original size (pad,
    /// resize), or to the cut-out square at the original scale (crop).
    pub fn unfitted(&self, fit: &Fit) -> Image {
        let (w, h, n) = (fit.width as usize, fit.height as usize, self.width);
        match fit.mode {
            FitMode::Resize => self.resized(w, h),
            FitMode::Crop => self.resized(w.min(h), w.min(h)),
            FitMode::Pad => {
                let (x0, y0, sw, sh) = Self::fit_box(FitMode::Pad, w, h, n);
                let (x0, y0) = (x0.max(0) as usize, y0.max(0) as usize);
                let mut inner =
                    Image { channels: self.channels, height: sh, width: sw, data: vec![0; self.channels * sh * sw] };
                for c in 0..self.channels {
                    for y in 0..sh {
                        for x in 0..sw {
                            inner.data[(c * sh + y) * sw + x] = self.data[(c * self.height + y + y0) * n + x + x0];
                        }
                    }
                }
                inner.resized(w, h)
            }
        }
    }

    /// From interleaved `[H, W, C]` bytes.
    pub fn from_hwc(channels: usize, height: usize, width: usize, hwc: &[u8]) -> Self {
        let mut data = vec![0u8; hwc.len()];
        for (p, px) in hwc.chunks(channels).enumerate() {
            for (c, &v) in px.iter().enumerate() {
                data[c * height * width + p] = v;
            }
        }
        Self { channels, height, width, data }
    }

    /// Interleaved `[H, W, C]` bytes.
    pub fn to_hwc(&self) -> Vec<u8> {
        let hw = self.height * self.width;
        (0..hw).flat_map(|p| (0..self.channels).map(move |c| (c, p))).map(|(c, p)| self.data[c * hw + p]).collect()
    }

    /// `x = u8/127.5 − 1`, padded by `pad` pixels of `pad_value` on every side.
    pub fn to_model(&self, pad: usize, pad_value: f32) -> Vec<f32> {
        let (h, w) = (self.height + 2 * pad, self.width + 2 * pad);
        let mut out = vec![pad_value; self.channels * h * w];
        for c in 0..self.channels {
            for y in 0..self.height {
                for x in 0..self.width {
                    let v = self.data[(c * self.height + y) * self.width + x];
                    out[(c * h + y + pad) * w + x + pad] = v as f32 / 127.5 - 1.0;
                }
            }
        }
        out
    }

    /// The inverse of [`Image::to_model`]: crop `pad`, clamp to [−1, 1] and quantise
    /// (`round((x+1)·127.5)`).
    pub fn from_model(values: &[f32], channels: usize, height: usize, width: usize, pad: usize) -> Self {
        let (ph, pw) = (height + 2 * pad, width + 2 * pad);
        let mut data = vec![0u8; channels * height * width];
        for c in 0..channels {
            for y in 0..height {
                for x in 0..width {
                    let v = values[(c * ph + y + pad) * pw + x + pad];
                    data[(c * height + y) * width + x] = ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
                }
            }
        }
        Self { channels, height, width, data }
    }

    /// Writes a PNG atomically (temporary file in the same folder, then rename).
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        let color = if self.channels == 1 { image::ExtendedColorType::L8 } else { image::ExtendedColorType::Rgb8 };
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new(&mut bytes),
            &self.to_hwc(),
            self.width as u32,
            self.height as u32,
            color,
        )
        .with_context(|| format!("cannot encode PNG for {}", path.display()))?;
        write_atomic(path, &bytes)
    }

    /// Places images side by side with a `gap`-pixel black border between them.
    pub fn side_by_side(images: &[&Image], gap: usize) -> Result<Image> {
        ensure!(!images.is_empty(), "no images to place side by side");
        let (c, h) = (images[0].channels, images.iter().map(|i| i.height).max().unwrap());
        ensure!(images.iter().all(|i| i.channels == c), "images with different channel counts");
        let w = images.iter().map(|i| i.width).sum::<usize>() + gap * (images.len() - 1);
        let mut out = Image { channels: c, height: h, width: w, data: vec![0; c * h * w] };
        let mut x0 = 0;
        for img in images {
            for ch in 0..c {
                for y in 0..img.height {
                    let src = &img.data[(ch * img.height + y) * img.width..][..img.width];
                    out.data[(ch * h + y) * w + x0..][..img.width].copy_from_slice(src);
                }
            }
            x0 += img.width + gap;
        }
        Ok(out)
    }

    /// Tiles equally sized images into a grid of `cols` columns.
    pub fn grid(images: &[Image], cols: usize) -> Result<Image> {
        ensure!(!images.is_empty() && cols > 0, "an image grid needs images and columns");
        let (c, h, w) = (images[0].channels, images[0].height, images[0].width);
        ensure!(images.iter().all(|i| (i.channels, i.height, i.width) == (c, h, w)), "grid images differ in size");
        let rows = images.len().div_ceil(cols);
        let (gh, gw) = (rows * h, cols * w);
        let mut out = Image { channels: c, height: gh, width: gw, data: vec![0; c * gh * gw] };
        for (k, img) in images.iter().enumerate() {
            let (r, col) = (k / cols, k % cols);
            for ch in 0..c {
                for y in 0..h {
                    let src = &img.data[(ch * h + y) * w..][..w];
                    out.data[(ch * gh + r * h + y) * gw + col * w..][..w].copy_from_slice(src);
                }
            }
        }
        Ok(out)
    }
}

/// Writes `bytes` to `path` atomically ([`crate::atomic::write`]), creating its folder first.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
    crate::atomic::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Where Debian's `dataset-fashion-mnist` package installs the IDX files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// A labelled image set.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub images: Vec<Image>,
    pub labels: Vec<Option<u8>>,
    /// A name per image for output files.
    pub names: Vec<String>,
}

/// Which part of a dataset (SPEC 8: parameters are searched on a validation set taken from
/// the training split, never on the test set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Split {
    /// The test split.
    Test,
    /// The validation split: the first images of the training split.
    Val,
}

fn read_gz(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| {
        format!(
            "cannot open {} — install Fashion-MNIST with `apt-get install dataset-fashion-mnist` or pass a folder of images",
            path.display()
        )
    })?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut out)
        .with_context(|| format!("{} is not a valid gzip file", path.display()))?;
    Ok(out)
}

fn be_u32(b: &[u8], at: usize, path: &Path) -> Result<usize> {
    let s = b.get(at..at + 4).with_context(|| format!("{}: truncated IDX header", path.display()))?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
}

/// Reads Fashion-MNIST from IDX files (`{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`);
/// `Split::Val` is training images `0..limit` (SPEC 8 \[D\]).
pub fn fashion_mnist(dir: &Path, split: Split, limit: usize) -> Result<Dataset> {
    let prefix = match split {
        Split::Test => "t10k",
        Split::Val => "train",
    };
    let ipath = dir.join(format!("{prefix}-images-idx3-ubyte.gz"));
    let lpath = dir.join(format!("{prefix}-labels-idx1-ubyte.gz"));
    let images = read_gz(&ipath)?;
    let labels = read_gz(&lpath)?;
    ensure!(be_u32(&images, 0, &ipath)? == 0x0803, "{}: not an IDX image file (magic)", ipath.display());
    ensure!(be_u32(&labels, 0, &lpath)? == 0x0801, "{}: not an IDX label file (magic)", lpath.display());
    let (n, h, w) = (be_u32(&images, 4, &ipath)?, be_u32(&images, 8, &ipath)?, be_u32(&images, 12, &ipath)?);
    ensure!(
        images.len() >= 16 + n * h * w,
        "{}: truncated: {n} images of {h}×{w} need {} bytes, found {}",
        ipath.display(),
        16 + n * h * w,
        images.len()
    );
    ensure!(labels.len() >= 8 + n, "{}: truncated: {n} labels", lpath.display());
    let take = n.min(limit);
    Ok(Dataset {
        images: (0..take)
            .map(|i| Image { channels: 1, height: h, width: w, data: images[16 + i * h * w..][..h * w].to_vec() })
            .collect(),
        labels: (0..take).map(|i| Some(labels[8 + i])).collect(),
        names: (0..take).map(|i| format!("fmnist_{prefix}_{i:05}")).collect(),
    })
}

/// All PNG/JPEG images of a folder, sorted by name, at most `limit`.
pub fn image_folder(dir: &Path, channels: usize, limit: usize) -> Result<Dataset> {
    Ok(image_folder_noting(dir, channels, limit)?.0)
}

/// [`image_folder`], and which images lost what in the conversion to `channels` (see
/// [`Image::load_noting`]), so that the caller can say it.
pub fn image_folder_noting(
    dir: &Path,
    channels: usize,
    limit: usize,
) -> Result<(Dataset, Vec<(PathBuf, &'static str)>)> {
    let paths = image_paths(dir, limit)?;
    let mut images = Vec::with_capacity(paths.len());
    let mut dropped = Vec::new();
    for p in &paths {
        let (image, lost) = Image::load_noting(p, channels)?;
        if let Some(lost) = lost {
            dropped.push((p.clone(), lost));
        }
        images.push(image);
    }
    let names = paths.iter().map(|p| p.file_stem().unwrap_or_default().to_string_lossy().into_owned()).collect();
    Ok((Dataset { labels: vec![None; images.len()], names, images }, dropped))
}

/// The paths [`image_folder`] reads: the folder's PNG/JPEG files, sorted by name, at most `limit`.
pub fn image_paths(dir: &Path, limit: usize) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    paths.sort();
    paths.truncate(limit);
    ensure!(!paths.is_empty(), "no PNG/JPEG images in {}", dir.display());
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_round_trip_is_lossless() {
        let img = Image { channels: 3, height: 2, width: 3, data: (0..18).map(|v| v * 14).collect() };
        let v = img.to_model(2, -1.0);
        assert_eq!(v.len(), 3 * 6 * 7);
        assert_eq!(Image::from_model(&v, 3, 2, 3, 2), img);
        assert_eq!(Image::from_hwc(3, 2, 3, &img.to_hwc()), img);
    }
}
