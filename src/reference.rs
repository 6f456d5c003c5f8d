//! Reference images `x_ref` of the I2/I3 initial points (SPEC 7): the training-set mean a model
//! ships beside its weights (`x_ref.safetensors`), how it is computed, stored and named.
//!
//! A token file names a reference image by the SHA-256 of its values ([`values_sha256`]), not by
//! a path or a model: the decoder must start from exactly the image the encoder started from, and
//! any other image (a stale file, another dataset's mean) would decode to something else without
//! an error. The hash is of the `f32` values, little-endian, in the model's `[C, H, W]` order, so
//! it does not depend on how the safetensors file was written (metadata, key order).
//!
//! The mean is computed in integers and rounded once ([`dataset_mean`]), so every machine gets
//! the same bits and the shipped file can be checked against a recomputation bit for bit.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

use crate::data::Image;

/// The file a model folder holds its reference image in.
pub const X_REF_FILE: &str = "x_ref.safetensors";
/// The tensor's name inside [`X_REF_FILE`].
pub const TENSOR_NAME: &str = "x_ref";
/// The metadata key that says what the image is.
pub const DESCRIPTION_KEY: &str = "description";

/// SHA-256 of reference values: their `f32` bit patterns, little-endian, in order (SPEC 7; the
/// token file's `x_ref` tag 2 carries it).
pub fn values_sha256(values: &[f32]) -> [u8; 32] {
    let mut h = Sha256::new();
    for v in values {
        h.update(v.to_le_bytes());
    }
    h.finalize().into()
}

/// Lower-case hex of a hash.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A reference image in a model's value range and input layout `[C, H, W]`, with its hash.
///
/// Two references are equal when their hashes are (the hash is of the values).
#[derive(Debug, Clone)]
pub struct RefImage {
    /// [`values_sha256`] of `values`.
    pub sha256: [u8; 32],
    /// `[C, H, W]` of the model's input.
    pub shape: [usize; 3],
    /// `C·H·W` values, channel-major.
    pub values: Arc<[f32]>,
    /// What the image is (the file's description), for messages.
    pub description: String,
}

impl PartialEq for RefImage {
    fn eq(&self, other: &Self) -> bool {
        self.sha256 == other.sha256
    }
}

impl serde::Serialize for RefImage {
    /// As its hash: the values are named by it (SPEC 7).
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&hex(&self.sha256))
    }
}

impl RefImage {
    /// A reference image of `shape` holding `values`.
    pub fn new(values: Vec<f32>, shape: [usize; 3], description: impl Into<String>) -> Result<Self> {
        ensure!(
            values.len() == shape.iter().product::<usize>(),
            "a reference image of shape {shape:?} needs {} values, found {}",
            shape.iter().product::<usize>(),
            values.len()
        );
        ensure!(values.iter().all(|v| v.is_finite()), "a reference image must hold finite values only");
        Ok(RefImage { sha256: values_sha256(&values), shape, values: values.into(), description: description.into() })
    }

    /// The hash as lower-case hex.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }

    /// Reads a reference from the bytes of an [`X_REF_FILE`] (`origin` names it in errors): one
    /// F32 tensor [`TENSOR_NAME`] of shape `[C, H, W]`.
    pub fn from_safetensors(bytes: &[u8], origin: &str) -> Result<Self> {
        use safetensors::{Dtype, SafeTensors};
        let st = SafeTensors::deserialize(bytes).with_context(|| format!("{origin} is not a safetensors file"))?;
        let t = st.tensor(TENSOR_NAME).with_context(|| format!("{origin} holds no tensor `{TENSOR_NAME}`"))?;
        ensure!(t.dtype() == Dtype::F32, "{origin}: tensor `{TENSOR_NAME}` is {:?}, expected F32", t.dtype());
        let shape: [usize; 3] = t.shape().try_into().map_err(|_| {
            anyhow::anyhow!("{origin}: tensor `{TENSOR_NAME}` has shape {:?}, expected [C, H, W]", t.shape())
        })?;
        let values: Vec<f32> = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let (_, meta) = SafeTensors::read_metadata(bytes).with_context(|| format!("{origin}: unreadable header"))?;
        let description = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(DESCRIPTION_KEY).cloned())
            .unwrap_or_else(|| "a reference image".to_string());
        RefImage::new(values, shape, description).with_context(|| origin.to_string())
    }

    /// Reads an [`X_REF_FILE`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_safetensors(&bytes, &path.display().to_string())
    }

    /// The bytes of an [`X_REF_FILE`] holding this image and its description.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        use safetensors::tensor::TensorView;
        let data: Vec<u8> = self.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(safetensors::Dtype::F32, self.shape.to_vec(), &data)?;
        // One metadata key, so the header (a JSON map) is written the same way every time.
        let meta = std::collections::HashMap::from([(DESCRIPTION_KEY.to_string(), self.description.clone())]);
        Ok(safetensors::tensor::serialize([(TENSOR_NAME, view)], Some(meta))?)
    }
}

/// The mean of `images` in a model's value range and input layout (SPEC 0, SPEC 7): each image
/// mapped as `x = u8/127.5 − 1` and centred in a `size × size` input whose margin holds
/// `background` (the bundled Fashion-MNIST models: 28×28 in 32×32, margin −1, as `data::to_model`
/// and the models' training), then averaged.
///
/// Exact: the pixel sums are integers, and each value is `(Σu8/n)/127.5 − 1` evaluated once in
/// f64 and rounded to f32, so the result does not depend on the order of the images or the
/// machine. The margin is `background` exactly.
pub fn dataset_mean(images: &[Image], size: usize, background: f32) -> Result<Vec<f32>> {
    ensure!(!images.is_empty(), "the mean of no images");
    let (c, h, w) = (images[0].channels, images[0].height, images[0].width);
    ensure!(
        images.iter().all(|i| (i.channels, i.height, i.width) == (c, h, w)),
        "the images of a mean must share one size and channel count ({c}×{h}×{w})"
    );
    ensure!(h == w && h <= size && (size - h).is_multiple_of(2), "a {w}×{h} image does not centre in {size}×{size}");
    let pad = (size - h) / 2;
    let mut sums = vec![0u64; c * h * w];
    for img in images {
        for (s, &v) in sums.iter_mut().zip(&img.data) {
            *s += u64::from(v);
        }
    }
    let n = images.len() as f64;
    let mut out = vec![background; c * size * size];
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let s = sums[(ch * h + y) * w + x] as f64;
                out[(ch * size + y + pad) * size + x + pad] = ((s / n) / 127.5 - 1.0) as f32;
            }
        }
    }
    Ok(out)
}

/// Whether `r` (read from `origin`) is the image `sha256` names; an error naming both hashes
/// otherwise.
pub fn check_hash(r: &RefImage, sha256: &[u8; 32], origin: &str) -> Result<()> {
    if &r.sha256 != sha256 {
        bail!(
            "{origin} holds the reference image with SHA-256 {}, not {} (the file is stale or another model's)",
            r.sha256_hex(),
            hex(sha256)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(data: Vec<u8>) -> Image {
        Image { channels: 1, height: 2, width: 2, data }
    }

    #[test]
    fn mean_is_exact_and_centred() {
        let imgs = [img(vec![0, 255, 10, 20]), img(vec![255, 255, 11, 20]), img(vec![0, 0, 12, 21])];
        let m = dataset_mean(&imgs, 4, -1.0).unwrap();
        assert_eq!(m.len(), 16);
        // The margin of one pixel is the background exactly.
        for (i, v) in m.iter().enumerate() {
            let (y, x) = (i / 4, i % 4);
            if !(1..3).contains(&y) || !(1..3).contains(&x) {
                assert_eq!(*v, -1.0, "margin at {y},{x}");
            }
        }
        let expect = |s: u64| ((s as f64 / 3.0) / 127.5 - 1.0) as f32;
        assert_eq!(m[5], expect(255));
        assert_eq!(m[6], expect(510));
        assert_eq!(m[9], expect(33));
        assert_eq!(m[10], expect(61));
        // Order does not matter.
        let rev = [imgs[2].clone(), imgs[0].clone(), imgs[1].clone()];
        assert_eq!(dataset_mean(&rev, 4, -1.0).unwrap(), m);
    }

    #[test]
    fn safetensors_round_trip_keeps_values_and_hash() {
        let r = RefImage::new(vec![0.5, -1.0, 0.25, 1.0], [1, 2, 2], "test image").unwrap();
        let bytes = r.to_safetensors().unwrap();
        let back = RefImage::from_safetensors(&bytes, "mem").unwrap();
        assert_eq!(back.sha256, r.sha256);
        assert_eq!(&*back.values, &*r.values);
        assert_eq!(back.shape, [1, 2, 2]);
        assert_eq!(back.description, "test image");
        // The hash is of the values: one changed bit changes it.
        let other = RefImage::new(vec![0.5, -1.0, 0.25, f32::from_bits(1.0f32.to_bits() + 1)], [1, 2, 2], "").unwrap();
        assert_ne!(other.sha256, r.sha256);
        assert!(check_hash(&back, &other.sha256, "mem").unwrap_err().to_string().contains(&other.sha256_hex()));
    }

    #[test]
    fn hash_is_sha256_of_little_endian_values() {
        // SHA-256 of the 8 bytes 00 00 80 3f 00 00 00 c0 (1.0f32, −2.0f32).
        let h = values_sha256(&[1.0, -2.0]);
        let direct: [u8; 32] = Sha256::digest([0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0]).into();
        assert_eq!(h, direct);
    }

    #[test]
    fn bad_files_are_refused_with_the_origin() {
        let e = RefImage::from_safetensors(b"nonsense", "x.safetensors").unwrap_err().to_string();
        assert!(e.contains("x.safetensors"), "{e}");
        let r = RefImage::new(vec![f32::NAN], [1, 1, 1], "");
        assert!(r.is_err());
    }
}
