//! EDM's `SongUNet` (NVlabs/edm `training/networks.py`), DDPM++ and NCSN++ configurations,
//! and the key maps that load RectifiedFlow `NCSNpp` and consistency-model flax `NCSNpp`
//! checkpoints into it (NETWORKS.md §2–§4: all three are the same network).
//!
//! The architecture is described once, as a [`plan`] of modules in forward order; the model
//! builder, the RF/CM key maps ([`rf_keymap`], [`cm_keymap`]) and the RF parameter order
//! ([`rf_param_order`]) are all derived from it.

use std::f64::consts::PI;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::family::Network;
use crate::nn::layers::{Conv2d, GroupNorm, Linear, SelfAttention};
use crate::nn::load::checkpoints::{read_flax_params_ema, read_pth_tensor_list};
use crate::nn::load::keymaps::{cm_keymap, rf_keymap, rf_param_order};
use crate::nn::load::weights::{LoadError, LoadResult, TensorStore, VarPath, WeightSource, WithFile};

/// GroupNorm epsilon of all three code bases (NETWORKS.md §1).
const GN_EPS: f64 = 1e-6;

fn d_model_channels() -> usize {
    128
}
fn d_channel_mult() -> Vec<usize> {
    vec![1, 2, 2, 2]
}
fn d_4() -> usize {
    4
}
fn d_1() -> usize {
    1
}
fn d_attn() -> Vec<usize> {
    vec![16]
}
fn d_positional() -> String {
    "positional".into()
}
fn d_standard() -> String {
    "standard".into()
}
fn d_filter() -> Vec<f64> {
    vec![1.0, 1.0]
}

/// `SongUNet` constructor arguments (EDM names and defaults, networks.py:229-249). EDM's
/// `img_channels` (what `EDMPrecond` takes) sets both `in_channels` and `out_channels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SongUNetConfig {
    /// Image resolution (square).
    pub img_resolution: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Number of class labels (0 = unconditional).
    #[serde(default)]
    pub label_dim: usize,
    /// Dimension of augmentation labels (0 = none; EDM CIFAR-10 uses 9).
    #[serde(default)]
    pub augment_dim: usize,
    /// Base channel count.
    #[serde(default = "d_model_channels")]
    pub model_channels: usize,
    /// Channel multiplier per level.
    #[serde(default = "d_channel_mult")]
    pub channel_mult: Vec<usize>,
    /// Embedding width multiplier.
    #[serde(default = "d_4")]
    pub channel_mult_emb: usize,
    /// Residual blocks per level.
    #[serde(default = "d_4")]
    pub num_blocks: usize,
    /// Resolutions with self-attention.
    #[serde(default = "d_attn")]
    pub attn_resolutions: Vec<usize>,
    /// `positional` (DDPM++) or `fourier` (NCSN++).
    #[serde(default = "d_positional")]
    pub embedding_type: String,
    /// Noise-embedding width multiplier.
    #[serde(default = "d_1")]
    pub channel_mult_noise: usize,
    /// `standard` or `residual`.
    #[serde(default = "d_standard")]
    pub encoder_type: String,
    /// Only `standard`.
    #[serde(default = "d_standard")]
    pub decoder_type: String,
    /// FIR resampling filter (`[1,1]` or `[1,3,3,1]`).
    #[serde(default = "d_filter")]
    pub resample_filter: Vec<f64>,
}

fn cfg_err(file: &str, msg: impl Into<String>) -> LoadError {
    LoadError::Config { file: file.to_string(), msg: msg.into() }
}

fn get_usize(v: &serde_json::Value, k: &str, origin: &str) -> LoadResult<usize> {
    v.get(k)
        .and_then(|x| x.as_u64())
        .map(|x| x as usize)
        .ok_or_else(|| cfg_err(origin, format!("missing or invalid `{k}`")))
}

fn get_usizes(v: &serde_json::Value, k: &str, origin: &str) -> LoadResult<Vec<usize>> {
    v.get(k)
        .and_then(|x| x.as_array())
        .and_then(|a| a.iter().map(|x| x.as_u64().map(|u| u as usize)).collect::<Option<Vec<_>>>())
        .ok_or_else(|| cfg_err(origin, format!("missing or invalid `{k}`")))
}

fn get_str<'a>(v: &'a serde_json::Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(|x| x.as_str())
}

impl SongUNetConfig {
    /// From EDM constructor arguments as JSON (what `tools/export_edm.py` writes, or the
    /// fixtures' `constructor_*`): `img_resolution`, `img_channels` (or `in_channels` and
    /// `out_channels`), and the `SongUNet` keyword arguments. `model_type` must be `SongUNet`
    /// if present; other keys (`use_fp16`, `dropout`, …) are ignored.
    pub fn from_edm_json(v: &serde_json::Value, origin: &str) -> LoadResult<Self> {
        if let Some(mt) = get_str(v, "model_type") {
            if mt != "SongUNet" {
                return Err(cfg_err(origin, format!("model_type `{mt}` is not supported")));
            }
        }
        let mut v = v.clone();
        if let Some(obj) = v.as_object_mut() {
            if let Some(c) = obj.get("img_channels").cloned() {
                obj.entry("in_channels").or_insert(c.clone());
                obj.entry("out_channels").or_insert(c);
            }
        }
        let c: Self = serde_json::from_value(v).map_err(|e| cfg_err(origin, e.to_string()))?;
        c.validate(origin)?;
        Ok(c)
    }

    /// Reads a JSON file holding EDM constructor arguments (see [`Self::from_edm_json`]).
    pub fn from_edm_file(path: impl AsRef<Path>) -> LoadResult<Self> {
        let (v, origin) = read_json(path.as_ref())?;
        Self::from_edm_json(&v, &origin)
    }

    /// From a RectifiedFlow config as JSON: `{"model": {...}, "data": {...}}` with the
    /// `ml_collections` fields of `configs/rectified_flow/*.py` (NETWORKS.md §3). Options that
    /// change the network beyond SongUNet's (progressive outputs, non-biggan blocks,
    /// `scale_by_sigma`, `centered: false`, …) are rejected.
    pub fn from_rf_json(v: &serde_json::Value, origin: &str) -> LoadResult<Self> {
        let m = v.get("model").ok_or_else(|| cfg_err(origin, "missing `model`"))?;
        let data = v.get("data").ok_or_else(|| cfg_err(origin, "missing `data`"))?;
        if data.get("centered").and_then(|c| c.as_bool()) == Some(false) {
            return Err(cfg_err(origin, "data.centered=false (2x-1 input) is not supported"));
        }
        if m.get("scale_by_sigma").and_then(|c| c.as_bool()) == Some(true) {
            return Err(cfg_err(origin, "scale_by_sigma=true is not supported"));
        }
        if get_str(m, "embedding_type").unwrap_or("positional") != "positional" {
            return Err(cfg_err(origin, "RF: only positional embedding is supported"));
        }
        let res = get_usize(data, "image_size", origin)?;
        let ch = get_usize(data, "num_channels", origin)?;
        Self::from_ncsnpp_model(m, res, ch, true, origin)
    }

    /// From a consistency-model (`jcm`) model config as JSON (`configs/cifar10_ve_cd.py`'s
    /// `config.model`, NETWORKS.md §4). The image is 32×32×3 unless `image_size` /
    /// `num_channels` are given in the same object.
    pub fn from_cm_json(v: &serde_json::Value, origin: &str) -> LoadResult<Self> {
        if v.get("double_heads").and_then(|c| c.as_bool()) == Some(true) {
            return Err(cfg_err(origin, "double_heads=true is not supported"));
        }
        let res = get_usize(v, "image_size", origin).unwrap_or(32);
        let ch = get_usize(v, "num_channels", origin).unwrap_or(3);
        Self::from_ncsnpp_model(v, res, ch, false, origin)
    }

    fn from_ncsnpp_model(m: &serde_json::Value, res: usize, ch: usize, rf: bool, origin: &str) -> LoadResult<Self> {
        let expect = |k: &str, want: &str| -> LoadResult<()> {
            match get_str(m, k) {
                Some(s) if s != want => Err(cfg_err(origin, format!("`{k}` = `{s}` is not supported (only `{want}`)"))),
                _ => Ok(()),
            }
        };
        expect("resblock_type", "biggan")?;
        expect("progressive", "none")?;
        expect("attention_type", "ddpm")?;
        expect("nonlinearity", "swish")?;
        expect("normalization", "GroupNorm")?;
        if m.get("skip_rescale").and_then(|c| c.as_bool()) == Some(false) {
            return Err(cfg_err(origin, "skip_rescale=false is not supported"));
        }
        if m.get("conditional").and_then(|c| c.as_bool()) == Some(false) {
            return Err(cfg_err(origin, "conditional=false is not supported"));
        }
        let nf = get_usize(m, "nf", origin)?;
        let pin = get_str(m, "progressive_input").unwrap_or("none");
        if rf && pin != "none" {
            return Err(cfg_err(origin, "RF: progressive_input must be `none`"));
        }
        let encoder_type = match pin {
            "none" => "standard",
            "residual" => "residual",
            o => return Err(cfg_err(origin, format!("progressive_input `{o}` is not supported"))),
        };
        if get_str(m, "progressive_combine").unwrap_or("sum") != "sum" {
            return Err(cfg_err(origin, "only progressive_combine=sum is supported"));
        }
        let emb = get_str(m, "embedding_type").unwrap_or("positional");
        let channel_mult_noise = match emb {
            "positional" => 1,
            "fourier" => 2,
            o => return Err(cfg_err(origin, format!("embedding_type `{o}`"))),
        };
        let fir = m.get("fir").and_then(|c| c.as_bool()).unwrap_or(false);
        let resample_filter = if fir {
            m.get("fir_kernel")
                .and_then(|k| k.as_array())
                .and_then(|a| a.iter().map(|x| x.as_f64()).collect::<Option<Vec<_>>>())
                .ok_or_else(|| cfg_err(origin, "missing `fir_kernel`"))?
        } else {
            vec![1.0, 1.0]
        };
        let c = Self {
            img_resolution: res,
            in_channels: ch,
            out_channels: ch,
            label_dim: 0,
            augment_dim: 0,
            model_channels: nf,
            channel_mult: get_usizes(m, "ch_mult", origin)?,
            channel_mult_emb: 4,
            num_blocks: get_usize(m, "num_res_blocks", origin)?,
            attn_resolutions: get_usizes(m, "attn_resolutions", origin)?,
            embedding_type: emb.to_string(),
            channel_mult_noise,
            encoder_type: encoder_type.to_string(),
            decoder_type: "standard".into(),
            resample_filter,
        };
        c.validate(origin)?;
        Ok(c)
    }

    /// Rejects options this port does not implement.
    pub fn validate(&self, origin: &str) -> LoadResult<()> {
        if !matches!(self.embedding_type.as_str(), "positional" | "fourier") {
            return Err(cfg_err(origin, format!("embedding_type `{}`", self.embedding_type)));
        }
        if !matches!(self.encoder_type.as_str(), "standard" | "residual") {
            return Err(cfg_err(origin, format!("encoder_type `{}` is not supported", self.encoder_type)));
        }
        if self.decoder_type != "standard" {
            return Err(cfg_err(origin, format!("decoder_type `{}` is not supported", self.decoder_type)));
        }
        if self.channel_mult.is_empty() || self.resample_filter.is_empty() {
            return Err(cfg_err(origin, "empty channel_mult or resample_filter"));
        }
        if self.img_resolution >> (self.channel_mult.len() - 1) == 0 {
            return Err(cfg_err(origin, "too many levels for img_resolution"));
        }
        Ok(())
    }

    fn noise_channels(&self) -> usize {
        self.model_channels * self.channel_mult_noise
    }

    fn emb_channels(&self) -> usize {
        self.model_channels * self.channel_mult_emb
    }
}

fn read_json(path: &Path) -> LoadResult<(serde_json::Value, String)> {
    let origin = path.display().to_string();
    let s = std::fs::read_to_string(path).map_err(|source| LoadError::Io { file: origin.clone(), source })?;
    let v = serde_json::from_str(&s).map_err(|e| cfg_err(&origin, e.to_string()))?;
    Ok((v, origin))
}

/// Channels and kind of one `UNetBlock` of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockShape {
    /// Input channels (after the skip concatenation in the decoder).
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// FIR upsampling block.
    pub up: bool,
    /// FIR downsampling block.
    pub down: bool,
    /// Has self-attention.
    pub attn: bool,
    /// Decoder block that first concatenates a skip.
    pub concat: bool,
}

impl BlockShape {
    /// A plain block (no resampling, attention or skip concatenation).
    pub fn new(cin: usize, cout: usize) -> Self {
        Self { cin, cout, up: false, down: false, attn: false, concat: false }
    }
}

/// One module of a SongUNet in forward order (EDM's `enc`/`dec` ModuleDicts, networks.py:275-318).
#[derive(Debug, Clone, PartialEq)]
pub enum PlanItem {
    /// `enc.{res}x{res}_conv`: the 3×3 input conv.
    Conv {
        /// Full key prefix, e.g. `enc.32x32_conv`.
        name: String,
        /// Input channels.
        cin: usize,
        /// Output channels.
        cout: usize,
    },
    /// A `UNetBlock`.
    Block {
        /// Full key prefix, e.g. `enc.16x16_block0`.
        name: String,
        /// Its channels and kind.
        shape: BlockShape,
    },
    /// `enc.{res}x{res}_aux_residual`: 3×3 conv with fused FIR down (residual encoder).
    AuxResidual {
        /// Full key prefix.
        name: String,
        /// Input channels.
        cin: usize,
        /// Output channels.
        cout: usize,
    },
    /// `dec.{res}x{res}_aux_norm`.
    AuxNorm {
        /// Full key prefix.
        name: String,
        /// Channels.
        c: usize,
    },
    /// `dec.{res}x{res}_aux_conv`.
    AuxConv {
        /// Full key prefix.
        name: String,
        /// Input channels.
        cin: usize,
        /// Output channels.
        cout: usize,
    },
}

/// The modules of a SongUNet in forward order (networks.py:275-318).
pub fn plan(cfg: &SongUNetConfig) -> Vec<PlanItem> {
    let mut items = Vec::new();
    let mc = cfg.model_channels;
    let mut cout = cfg.in_channels;
    let mut caux = cfg.in_channels;
    let mut skips = Vec::new();
    for (level, &mult) in cfg.channel_mult.iter().enumerate() {
        let res = cfg.img_resolution >> level;
        if level == 0 {
            let cin = cout;
            cout = mc;
            items.push(PlanItem::Conv { name: format!("enc.{res}x{res}_conv"), cin, cout });
            skips.push(cout);
        } else {
            let shape = BlockShape { down: true, ..BlockShape::new(cout, cout) };
            items.push(PlanItem::Block { name: format!("enc.{res}x{res}_down"), shape });
            skips.push(cout);
            if cfg.encoder_type == "residual" {
                items.push(PlanItem::AuxResidual { name: format!("enc.{res}x{res}_aux_residual"), cin: caux, cout });
                caux = cout;
            }
        }
        for idx in 0..cfg.num_blocks {
            let cin = cout;
            cout = mc * mult;
            let shape = BlockShape { attn: cfg.attn_resolutions.contains(&res), ..BlockShape::new(cin, cout) };
            items.push(PlanItem::Block { name: format!("enc.{res}x{res}_block{idx}"), shape });
            skips.push(cout);
        }
    }
    let n = cfg.channel_mult.len();
    for (level, &mult) in cfg.channel_mult.iter().enumerate().rev() {
        let res = cfg.img_resolution >> level;
        if level == n - 1 {
            for (i, attn) in [(0, true), (1, false)] {
                let shape = BlockShape { attn, ..BlockShape::new(cout, cout) };
                items.push(PlanItem::Block { name: format!("dec.{res}x{res}_in{i}"), shape });
            }
        } else {
            let shape = BlockShape { up: true, ..BlockShape::new(cout, cout) };
            items.push(PlanItem::Block { name: format!("dec.{res}x{res}_up"), shape });
        }
        for idx in 0..=cfg.num_blocks {
            let cin = cout + skips.pop().unwrap_or(0);
            cout = mc * mult;
            let attn = idx == cfg.num_blocks && cfg.attn_resolutions.contains(&res);
            let shape = BlockShape { attn, concat: true, ..BlockShape::new(cin, cout) };
            items.push(PlanItem::Block { name: format!("dec.{res}x{res}_block{idx}"), shape });
        }
        if level == 0 {
            items.push(PlanItem::AuxNorm { name: format!("dec.{res}x{res}_aux_norm"), c: cout });
            items.push(PlanItem::AuxConv {
                name: format!("dec.{res}x{res}_aux_conv"),
                cin: cout,
                cout: cfg.out_channels,
            });
        }
    }
    items
}

fn groups(c: usize) -> usize {
    // EDM GroupNorm: min(32, C / 4) (networks.py:125).
    32.min(c / 4).max(1)
}

/// The normalised 2-D FIR filter `outer(k, k) / Σ(k)²` (networks.py:71-72), row-major.
fn fir_2d(k: &[f64]) -> Vec<f32> {
    let s: f64 = k.iter().sum();
    let mut v = Vec::with_capacity(k.len() * k.len());
    for a in k {
        for b in k {
            v.push((a * b / (s * s)) as f32);
        }
    }
    v
}

/// FIR resampling of `[B, C, H, W]` by 2 with a normalised separable filter (NETWORKS.md §1.2).
#[derive(Debug, Clone)]
struct Fir {
    k: usize,
    /// `[1, 1, k, k]` normalised filter.
    f: Tensor,
    /// `4·f`, for the transposed conv of the upsampler.
    f4: Tensor,
    /// `[1,1]`: use exact mean-pool / nearest-neighbour fast paths.
    box2: bool,
}

impl Fir {
    fn new(taps: &[f64], dev: &candle_core::Device) -> Result<Self> {
        let k = taps.len();
        let v = fir_2d(taps);
        let f = Tensor::from_vec(v, (1, 1, k, k), dev)?;
        let f4 = (&f * 4.0)?;
        let box2 = k == 2 && taps[0] == taps[1];
        Ok(Self { k, f, f4, box2 })
    }

    fn pad(&self) -> usize {
        (self.k - 1) / 2
    }

    /// Depthwise `f` with stride 2 and zero padding `pad` on every side.
    fn down_with_pad(&self, x: &Tensor, pad: usize) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        if self.box2 && pad == 0 {
            return x.avg_pool2d(2);
        }
        let y = x.reshape((b * c, 1, h, w))?.conv2d(&self.f, pad, 2, 1, 1)?;
        let (_, _, ho, wo) = y.dims4()?;
        y.reshape((b, c, ho, wo))
    }

    fn down(&self, x: &Tensor) -> Result<Tensor> {
        self.down_with_pad(x, self.pad())
    }

    /// Depthwise transposed conv with `4f`, stride 2, padding `(k−1)/2` (networks.py:82-85).
    fn up(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        if self.box2 {
            return x.upsample_nearest2d(2 * h, 2 * w);
        }
        let y = x.reshape((b * c, 1, h, w))?.conv_transpose2d(&self.f4, self.pad(), 0, 2, 1)?;
        let (_, _, ho, wo) = y.dims4()?;
        y.reshape((b, c, ho, wo))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Resample {
    None,
    Up,
    Down,
}

/// EDM `UNetBlock` with SongUNet's settings (NETWORKS.md §1 ResBlock): adaptive_scale off,
/// resample_proj on, skip_scale √½, one attention head.
#[derive(Debug, Clone)]
struct UNetBlock {
    norm0: GroupNorm,
    conv0: Conv2d,
    affine: Linear,
    norm1: GroupNorm,
    conv1: Conv2d,
    skip: Option<Conv2d>,
    resample: Resample,
    attn: Option<SelfAttention>,
    concat: bool,
}

const SKIP_SCALE: f64 = std::f64::consts::FRAC_1_SQRT_2;

impl UNetBlock {
    fn load(vb: &VarPath, cfg: &SongUNetConfig, shape: BlockShape) -> LoadResult<Self> {
        let BlockShape { cin, cout, up, down, attn, concat } = shape;
        let k = cfg.resample_filter.len();
        let resample = if up {
            Resample::Up
        } else if down {
            Resample::Down
        } else {
            Resample::None
        };
        if resample != Resample::None {
            vb.pp("conv0").fixed_buffer("resample_filter", &[1, 1, k, k])?;
        }
        let skip = if cin != cout || up || down {
            if resample != Resample::None {
                vb.pp("skip").fixed_buffer("resample_filter", &[1, 1, k, k])?;
            }
            Some(Conv2d::load(&vb.pp("skip"), cin, cout, 1, 0, 1)?)
        } else {
            None
        };
        let attn = if attn {
            let norm = GroupNorm::load(&vb.pp("norm2"), cout, groups(cout), GN_EPS)?;
            let f = vb.origin().to_string();
            // De-interleave EDM's qkv: row 3c+j holds channel c of (q,k,v)[j].
            let w = vb.pp("qkv").get("weight", &[3 * cout, cout, 1, 1])?.reshape((cout, 3, cout)).with_file(&f)?;
            let b = vb.pp("qkv").get("bias", &[3 * cout])?.reshape((cout, 3)).with_file(&f)?;
            let part = |t: &Tensor, j: usize| t.narrow(1, j, 1).and_then(|t| t.squeeze(1));
            let pw = vb.pp("proj").get("weight", &[cout, cout, 1, 1])?.reshape((cout, cout)).with_file(&f)?;
            let pb = vb.pp("proj").get("bias", &[cout])?;
            Some(
                (|| {
                    SelfAttention::new(
                        Some(norm),
                        &part(&w, 0)?,
                        &part(&w, 1)?,
                        &part(&w, 2)?,
                        &part(&b, 0)?,
                        &part(&b, 1)?,
                        &part(&b, 2)?,
                        &pw,
                        &pb,
                        1,
                        std::f64::consts::SQRT_2,
                    )
                })()
                .with_file(&f)?,
            )
        } else {
            None
        };
        Ok(Self {
            norm0: GroupNorm::load(&vb.pp("norm0"), cin, groups(cin), GN_EPS)?,
            conv0: Conv2d::load(&vb.pp("conv0"), cin, cout, 3, 1, 1)?,
            affine: Linear::load(&vb.pp("affine"), cfg.emb_channels(), cout, true)?,
            norm1: GroupNorm::load(&vb.pp("norm1"), cout, groups(cout), GN_EPS)?,
            conv1: Conv2d::load(&vb.pp("conv1"), cout, cout, 3, 1, 1)?,
            skip,
            resample,
            attn,
            concat,
        })
    }

    fn resample(&self, x: &Tensor, fir: &Fir) -> Result<Tensor> {
        match self.resample {
            Resample::None => Ok(x.clone()),
            Resample::Up => fir.up(x),
            Resample::Down => fir.down(x),
        }
    }

    fn forward(&self, x: &Tensor, emb: &Tensor, fir: &Fir) -> Result<Tensor> {
        let h = self.norm0.forward_silu(x)?;
        let h = self.conv0.forward(&self.resample(&h, fir)?)?;
        let p = self.affine.forward(emb)?.unsqueeze(2)?.unsqueeze(3)?;
        let h = self.norm1.forward_silu(&h.broadcast_add(&p)?)?;
        let h = self.conv1.forward(&h)?;
        let s = match &self.skip {
            Some(s) => s.forward(&self.resample(x, fir)?)?,
            None => x.clone(),
        };
        let y = ((h + s)? * SKIP_SCALE)?;
        match &self.attn {
            Some(a) => a.forward(&y),
            None => Ok(y),
        }
    }
}

#[derive(Debug, Clone)]
enum Item {
    Conv(Conv2d),
    /// A block and whether it belongs to the encoder (its output is pushed as a skip).
    Block(Box<UNetBlock>, bool),
    AuxResidual(Conv2d),
    AuxNorm(GroupNorm),
    AuxConv(Conv2d),
}

#[derive(Debug, Clone)]
enum NoiseEmbedding {
    /// EDM PositionalEmbedding, endpoint=True (networks.py:193-206).
    Positional,
    /// EDM FourierEmbedding with its `freqs` buffer (networks.py:212-220).
    Fourier(Vec<f32>),
}

/// EDM `SongUNet` (inference). Implements [`Network`] with `noise_labels` = `c_noise`.
#[derive(Debug, Clone)]
pub struct SongUNet {
    cfg: SongUNetConfig,
    map_noise: NoiseEmbedding,
    map_label: Option<Linear>,
    map_augment: Option<Linear>,
    map_layer0: Linear,
    map_layer1: Linear,
    items: Vec<Item>,
    fir: Fir,
}

impl SongUNet {
    /// Builds the network from `src`, asking for EDM `SongUNet.state_dict()` keys. Does not
    /// check for unused tensors (see the `load_*` functions or [`TensorStore::finish`]).
    pub fn new(cfg: &SongUNetConfig, src: &dyn WeightSource) -> LoadResult<Self> {
        let f = src.origin().to_string();
        cfg.validate(&f)?;
        let vb = VarPath::new(src);
        let nc = cfg.noise_channels();
        let ec = cfg.emb_channels();
        let map_noise = if cfg.embedding_type == "fourier" {
            let v = vb.pp("map_noise").get("freqs", &[nc / 2])?.to_vec1::<f32>().with_file(&f)?;
            NoiseEmbedding::Fourier(v)
        } else {
            NoiseEmbedding::Positional
        };
        let map_label =
            if cfg.label_dim > 0 { Some(Linear::load(&vb.pp("map_label"), cfg.label_dim, nc, true)?) } else { None };
        let map_augment = if cfg.augment_dim > 0 {
            Some(Linear::load(&vb.pp("map_augment"), cfg.augment_dim, nc, false)?)
        } else {
            None
        };
        let map_layer0 = Linear::load(&vb.pp("map_layer0"), nc, ec, true)?;
        let map_layer1 = Linear::load(&vb.pp("map_layer1"), ec, ec, true)?;
        let k = cfg.resample_filter.len();
        let mut items = Vec::new();
        for it in plan(cfg) {
            items.push(match it {
                PlanItem::Conv { name, cin, cout } => Item::Conv(Conv2d::load(&vb.pp(name), cin, cout, 3, 1, 1)?),
                PlanItem::Block { name, shape } => {
                    Item::Block(Box::new(UNetBlock::load(&vb.pp(&name), cfg, shape)?), name.starts_with("enc."))
                }
                PlanItem::AuxResidual { name, cin, cout } => {
                    let p = vb.pp(name);
                    p.fixed_buffer("resample_filter", &[1, 1, k, k])?;
                    // Fused conv-then-FIR-down: conv padding = 1 + (k−1)/2 (networks.py:78-80).
                    Item::AuxResidual(Conv2d::load(&p, cin, cout, 3, 1 + (k - 1) / 2, 1)?)
                }
                PlanItem::AuxNorm { name, c } => Item::AuxNorm(GroupNorm::load(&vb.pp(name), c, groups(c), GN_EPS)?),
                PlanItem::AuxConv { name, cin, cout } => Item::AuxConv(Conv2d::load(&vb.pp(name), cin, cout, 3, 1, 1)?),
            });
        }
        let fir = Fir::new(&cfg.resample_filter, &vb.device()).with_file(&f)?;
        Ok(Self { cfg: cfg.clone(), map_noise, map_label, map_augment, map_layer0, map_layer1, items, fir })
    }

    /// The configuration.
    pub fn config(&self) -> &SongUNetConfig {
        &self.cfg
    }

    /// The noise embedding after EDM's swap, `[sin | cos]` (networks.py:322-323), computed in
    /// f64 and rounded to f32.
    fn noise_embedding(&self, labels: &Tensor) -> Result<Tensor> {
        let c = labels.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let nc = self.cfg.noise_channels();
        let half = nc / 2;
        let freqs: Vec<f64> = match &self.map_noise {
            NoiseEmbedding::Positional => (0..half)
                .map(|i| {
                    let e = i as f64 / (half as f64 - 1.0).max(1.0);
                    (1.0f64 / 10000.0).powf(e)
                })
                .collect(),
            NoiseEmbedding::Fourier(f) => f.iter().map(|&v| 2.0 * PI * v as f64).collect(),
        };
        let mut out = Vec::with_capacity(c.len() * nc);
        for &cv in &c {
            let args: Vec<f64> = freqs.iter().map(|f| cv as f64 * f).collect();
            out.extend(args.iter().map(|a| a.sin() as f32));
            out.extend(args.iter().map(|a| a.cos() as f32));
        }
        Tensor::from_vec(out, (c.len(), nc), labels.device())
    }

    /// The full forward pass (networks.py:320-363): `x` `[B, C, H, W]`, `noise_labels` `[B]`
    /// (= `c_noise`), optional one-hot `class_labels` `[B, label_dim]` (required when
    /// `label_dim > 0`) and optional `augment_labels` `[B, augment_dim]`.
    pub fn forward_with(
        &self,
        x: &Tensor,
        noise_labels: &Tensor,
        class_labels: Option<&Tensor>,
        augment_labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        let b = x.dim(0)?;
        let labels = if noise_labels.elem_count() == 1 && b != 1 {
            noise_labels.flatten_all()?.broadcast_as(b)?.contiguous()?
        } else {
            noise_labels.flatten_all()?
        };
        let mut emb = self.noise_embedding(&labels)?;
        if let Some(ml) = &self.map_label {
            let cl = class_labels
                .ok_or_else(|| candle_core::Error::Msg("SongUNet: class-conditional net needs class labels".into()))?;
            let s = (self.cfg.label_dim as f64).sqrt();
            emb = (emb + ml.forward(&(cl.to_dtype(DType::F32)? * s)?)?)?;
        }
        if let (Some(ma), Some(al)) = (&self.map_augment, augment_labels) {
            emb = (emb + ma.forward(&al.to_dtype(DType::F32)?)?)?;
        }
        let emb = self.map_layer0.forward(&emb)?.silu()?;
        let emb = self.map_layer1.forward(&emb)?.silu()?;

        let mut skips: Vec<Tensor> = Vec::new();
        let mut aux = x.clone();
        let mut h = x.clone();
        let mut tmp: Option<Tensor> = None;
        let mut out: Option<Tensor> = None;
        for it in &self.items {
            match it {
                Item::Conv(c) => {
                    h = c.forward(&h)?;
                    skips.push(h.clone());
                }
                Item::AuxResidual(c) => {
                    let a = self.fir.down_with_pad(&c.forward(&aux)?, 0)?;
                    h = ((h + a)? * SKIP_SCALE)?;
                    if let Some(last) = skips.last_mut() {
                        *last = h.clone();
                    }
                    aux = h.clone();
                }
                Item::Block(blk, enc) => {
                    if blk.concat {
                        let s =
                            skips.pop().ok_or_else(|| candle_core::Error::Msg("SongUNet: skip stack empty".into()))?;
                        h = Tensor::cat(&[&h, &s], 1)?;
                    }
                    h = blk.forward(&h, &emb, &self.fir)?;
                    if *enc {
                        skips.push(h.clone());
                    }
                }
                Item::AuxNorm(n) => tmp = Some(n.forward_silu(&h)?),
                Item::AuxConv(c) => {
                    let t = tmp
                        .take()
                        .ok_or_else(|| candle_core::Error::Msg("SongUNet: aux_conv without aux_norm".into()))?;
                    out = Some(c.forward(&t)?);
                }
            }
        }
        out.ok_or_else(|| candle_core::Error::Msg("SongUNet: no output".into()))
    }
}

/// Which weights of a RectifiedFlow `checkpoint_*.pth` to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RfWeights {
    /// `ckpt['ema']['shadow_params']` by position (what RF's evaluation samples with).
    Ema,
    /// `ckpt['model']` (the raw training weights, `module.`-prefixed).
    Model,
}

impl SongUNet {
    /// Builds from an EDM `SongUNet.state_dict()` store (keys without `model.`) and checks
    /// that every tensor was used.
    pub fn from_edm_store(cfg: &SongUNetConfig, store: &TensorStore) -> LoadResult<Self> {
        let m = Self::new(cfg, store)?;
        store.finish()?;
        Ok(m)
    }

    /// Loads an EDM network: `config` is the JSON of EDM constructor arguments and `weights`
    /// the safetensors file written by `tools/export_edm.py` (keys `model.*`, as in
    /// `EDMPrecond.state_dict()`; unprefixed keys are accepted too).
    pub fn load_edm(config: impl AsRef<Path>, weights: impl AsRef<Path>, device: &Device) -> LoadResult<Self> {
        let cfg = SongUNetConfig::from_edm_file(config)?;
        let store = TensorStore::from_file(weights)?.strip_prefix("model.").on_device(device);
        Self::from_edm_store(&cfg, &store)
    }

    /// Builds from a RectifiedFlow `NCSNpp.state_dict()` store (keys `all_modules.*`, no
    /// `module.`) through [`rf_keymap`]; the unused `sigmas` buffer is accepted and ignored.
    pub fn from_rf_store(cfg: &SongUNetConfig, store: &TensorStore) -> LoadResult<Self> {
        let map = rf_keymap(cfg)?;
        let m = Self::new(cfg, &map.over(store))?;
        store.mark_used("sigmas");
        store.finish()?;
        Ok(m)
    }

    /// Loads a RectifiedFlow network. `config` is the RF config as JSON (see
    /// [`SongUNetConfig::from_rf_json`]); `checkpoint` is a `checkpoint_*.pth` (EMA or raw
    /// weights per `which`) or a state-dict `.safetensors`/`.pth` (then `which` is ignored).
    pub fn load_rf(
        config: impl AsRef<Path>,
        checkpoint: impl AsRef<Path>,
        which: RfWeights,
        device: &Device,
    ) -> LoadResult<Self> {
        let (v, origin) = read_json(config.as_ref())?;
        let cfg = SongUNetConfig::from_rf_json(&v, &origin)?;
        let path = checkpoint.as_ref();
        let store = if path.extension().and_then(|e| e.to_str()) == Some("safetensors") {
            TensorStore::from_safetensors(path)?
        } else {
            match which {
                RfWeights::Ema => rf_ema_store(&cfg, path)?,
                RfWeights::Model => TensorStore::from_pth(path, Some("model"))?,
            }
        };
        Self::from_rf_store(&cfg, &store.strip_prefix("module.").on_device(device))
    }

    /// Builds from a consistency-model flax parameter store (keys as in
    /// `fixtures/cm_ncsnpp.full.keys.json`) through [`cm_keymap`].
    pub fn from_cm_store(cfg: &SongUNetConfig, store: &TensorStore) -> LoadResult<Self> {
        let map = cm_keymap(cfg);
        let m = Self::new(cfg, &map.over(store))?;
        store.finish()?;
        Ok(m)
    }

    /// Loads a consistency-model network: `config` is the `config.model` JSON (see
    /// [`SongUNetConfig::from_cm_json`]); `checkpoint` is the flax msgpack checkpoint
    /// (`params_ema` is used) or a safetensors file with the flat flax keys.
    pub fn load_cm(config: impl AsRef<Path>, checkpoint: impl AsRef<Path>, device: &Device) -> LoadResult<Self> {
        let (v, origin) = read_json(config.as_ref())?;
        let cfg = SongUNetConfig::from_cm_json(&v, &origin)?;
        let path = checkpoint.as_ref();
        let store = if path.extension().and_then(|e| e.to_str()) == Some("safetensors") {
            TensorStore::from_safetensors(path)?
        } else {
            read_flax_params_ema(path)?
        };
        Self::from_cm_store(&cfg, &store.on_device(device))
    }
}

/// Reads `ckpt['ema']['shadow_params']` of a RectifiedFlow checkpoint and names the tensors by
/// [`rf_param_order`] (each shape is checked against the architecture's).
pub fn rf_ema_store(cfg: &SongUNetConfig, path: &Path) -> LoadResult<TensorStore> {
    let f = path.display().to_string();
    let order = rf_param_order(cfg)?;
    let list = read_pth_tensor_list(path, &["ema", "shadow_params"])?;
    if list.len() != order.len() {
        return Err(LoadError::Format {
            file: f,
            msg: format!(
                "ema.shadow_params has {} tensors, the architecture has {} parameters",
                list.len(),
                order.len()
            ),
        });
    }
    let mut named = Vec::with_capacity(list.len());
    for (i, ((name, shape), t)) in order.into_iter().zip(list).enumerate() {
        if t.dims() != shape.as_slice() {
            return Err(LoadError::Shape {
                file: f,
                key: format!("ema.shadow_params[{i}] (= {name})"),
                expected: shape,
                found: t.dims().to_vec(),
            });
        }
        named.push((name, t));
    }
    TensorStore::new(f, named)
}

impl Network for SongUNet {
    fn forward(&self, x: &Tensor, noise_labels: &Tensor) -> Result<Tensor> {
        self.forward_with(x, noise_labels, None, None)
    }
}
