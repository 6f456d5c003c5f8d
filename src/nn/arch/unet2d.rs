//! diffusers `UNet2DModel` (the google/ddpm-* checkpoints), built from its `config.json`.
//!
//! Supported: `DownBlock2D`/`AttnDownBlock2D`, `UpBlock2D`/`AttnUpBlock2D`, `UNetMidBlock2D`,
//! positional time embedding (`flip_sin_to_cos`, `freq_shift`), `resnet_time_scale_shift`
//! `default` and `scale_shift`, single-head (`attention_head_dim: null`) and multi-head
//! attention, `downsample_padding` 0 (right/bottom pad) and 1, `norm_num_groups`/`norm_eps`,
//! `add_attention`, `attn_norm_num_groups`, `center_input_sample`. Anything else in the config
//! that changes the forward pass is rejected with [`LoadError::Config`]. The forward pass
//! follows the notes in `fixtures/unet2d_ddpm_cifar10_small.json` (`config_notes`).
//!
//! Attention weights are accepted under both the current names (`to_q/to_k/to_v/to_out.0`)
//! and the legacy ones of the released google/ddpm-* files (`query/key/value/proj_attn`)
//! (tests/fixtures/README.md, "Real weight files").

use std::path::Path;

use candle_core::{DType, Device, Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::family::Network;
use crate::nn::layers::{Conv2d, GroupNorm, Linear, SelfAttention};
use crate::nn::load::weights::{LoadError, LoadResult, TensorStore, VarPath, WeightSource, WithFile};

fn d_true() -> bool {
    true
}
fn d_3() -> usize {
    3
}
fn d_2() -> usize {
    2
}
fn d_1f() -> f64 {
    1.0
}
fn d_32() -> usize {
    32
}
fn d_eps() -> f64 {
    1e-5
}
fn d_head() -> Option<usize> {
    Some(8)
}
fn d_positional() -> String {
    "positional".into()
}
fn d_silu() -> String {
    "silu".into()
}
fn d_default() -> String {
    "default".into()
}
fn d_conv() -> String {
    "conv".into()
}
fn d_mid() -> Option<String> {
    Some("UNetMidBlock2D".into())
}
fn d_down() -> Vec<String> {
    ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"].map(String::from).to_vec()
}
fn d_up() -> Vec<String> {
    ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"].map(String::from).to_vec()
}
fn d_channels() -> Vec<usize> {
    vec![224, 448, 672, 896]
}

/// The `config.json` of a diffusers `UNet2DModel`. Missing fields take diffusers' defaults
/// (diffusers 0.42 `UNet2DModel.__init__`); unknown fields are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UNet2DConfig {
    /// Image size (informational).
    #[serde(default)]
    pub sample_size: Option<usize>,
    /// Input channels.
    #[serde(default = "d_3")]
    pub in_channels: usize,
    /// Output channels.
    #[serde(default = "d_3")]
    pub out_channels: usize,
    /// Whether the input is mapped by `2x − 1` first.
    #[serde(default)]
    pub center_input_sample: bool,
    /// Only `positional` is supported.
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    /// Width of the time embedding; `None` = 4 × `block_out_channels[0]`.
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    /// Sinusoid frequency shift (`half − freq_shift` in the exponent's denominator).
    #[serde(default)]
    pub freq_shift: f64,
    /// `[cos | sin]` instead of `[sin | cos]`.
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    /// Down block types.
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    /// Mid block type (`UNetMidBlock2D` or `null`).
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<String>,
    /// Up block types.
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    /// Channels of each level.
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<usize>,
    /// Resnets per down block (up blocks have one more).
    #[serde(default = "d_2")]
    pub layers_per_block: usize,
    /// Output scale factor of the mid block's resnets and attention.
    #[serde(default = "d_1f")]
    pub mid_block_scale_factor: f64,
    /// 0: pad right/bottom by one then conv with padding 0; 1: symmetric padding 1.
    #[serde(default = "d_1")]
    pub downsample_padding: usize,
    /// Only `conv`.
    #[serde(default = "d_conv")]
    pub downsample_type: String,
    /// Only `conv`.
    #[serde(default = "d_conv")]
    pub upsample_type: String,
    /// Training only.
    #[serde(default)]
    pub dropout: f64,
    /// Only `silu`/`swish`.
    #[serde(default = "d_silu")]
    pub act_fn: String,
    /// Channels per attention head; `null` = one head over all channels.
    #[serde(default = "d_head")]
    pub attention_head_dim: Option<usize>,
    /// GroupNorm groups.
    #[serde(default = "d_32")]
    pub norm_num_groups: usize,
    /// Mid-block attention GroupNorm groups; `None` = `norm_num_groups` when
    /// `resnet_time_scale_shift` is `default`, no norm otherwise.
    #[serde(default)]
    pub attn_norm_num_groups: Option<usize>,
    /// GroupNorm epsilon.
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    /// `default` (add the time embedding) or `scale_shift`.
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    /// Whether the mid block has attention.
    #[serde(default = "d_true")]
    pub add_attention: bool,
    /// Must be `null` (class conditioning is not supported).
    #[serde(default)]
    pub class_embed_type: Option<String>,
    /// Must be `null`.
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
}

fn d_1() -> usize {
    1
}

impl UNet2DConfig {
    /// Parses a `config.json` text.
    pub fn from_json_str(s: &str, origin: &str) -> LoadResult<Self> {
        let c: Self =
            serde_json::from_str(s).map_err(|e| LoadError::Config { file: origin.to_string(), msg: e.to_string() })?;
        c.validate(origin)?;
        Ok(c)
    }

    /// Reads a `config.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> LoadResult<Self> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let s = std::fs::read_to_string(path).map_err(|source| LoadError::Io { file: origin.clone(), source })?;
        Self::from_json_str(&s, &origin)
    }

    /// Rejects options this port does not implement.
    pub fn validate(&self, origin: &str) -> LoadResult<()> {
        let bad = |msg: String| Err(LoadError::Config { file: origin.to_string(), msg });
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return bad(format!(
                "{} block_out_channels, {} down blocks, {} up blocks",
                n,
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if self.time_embedding_type != "positional" {
            return bad(format!(
                "time_embedding_type `{}` is not supported (only `positional`)",
                self.time_embedding_type
            ));
        }
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            return bad(format!("act_fn `{}` is not supported", self.act_fn));
        }
        if !matches!(self.resnet_time_scale_shift.as_str(), "default" | "scale_shift") {
            return bad(format!("resnet_time_scale_shift `{}` is not supported", self.resnet_time_scale_shift));
        }
        if self.downsample_type != "conv" || self.upsample_type != "conv" {
            return bad("only conv down/upsampling is supported".into());
        }
        if self.downsample_padding > 1 {
            return bad(format!("downsample_padding {} is not supported", self.downsample_padding));
        }
        if self.class_embed_type.is_some() || self.num_class_embeds.is_some() {
            return bad("class-conditional UNet2DModel is not supported".into());
        }
        if let Some(m) = &self.mid_block_type {
            if m != "UNetMidBlock2D" {
                return bad(format!("mid_block_type `{m}` is not supported"));
            }
        }
        for t in &self.down_block_types {
            if !matches!(t.as_str(), "DownBlock2D" | "AttnDownBlock2D") {
                return bad(format!("down block `{t}` is not supported"));
            }
        }
        for t in &self.up_block_types {
            if !matches!(t.as_str(), "UpBlock2D" | "AttnUpBlock2D") {
                return bad(format!("up block `{t}` is not supported"));
            }
        }
        Ok(())
    }

    fn scale_shift(&self) -> bool {
        self.resnet_time_scale_shift == "scale_shift"
    }

    fn temb_dim(&self) -> usize {
        self.time_embedding_dim.unwrap_or(self.block_out_channels[0] * 4)
    }
}

/// diffusers `ResnetBlock2D`.
#[derive(Debug, Clone)]
struct Resnet {
    norm1: GroupNorm,
    conv1: Conv2d,
    temb: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
    scale_shift: bool,
    out_scale: f64,
}

impl Resnet {
    fn load(vb: &VarPath, cfg: &UNet2DConfig, cin: usize, cout: usize, out_scale: f64) -> LoadResult<Self> {
        let g = cfg.norm_num_groups;
        let eps = cfg.norm_eps;
        let ss = cfg.scale_shift();
        let shortcut =
            if cin != cout { Some(Conv2d::load(&vb.pp("conv_shortcut"), cin, cout, 1, 0, 1)?) } else { None };
        Ok(Self {
            norm1: GroupNorm::load(&vb.pp("norm1"), cin, g, eps)?,
            conv1: Conv2d::load(&vb.pp("conv1"), cin, cout, 3, 1, 1)?,
            temb: Linear::load(&vb.pp("time_emb_proj"), cfg.temb_dim(), if ss { 2 * cout } else { cout }, true)?,
            norm2: GroupNorm::load(&vb.pp("norm2"), cout, g, eps)?,
            conv2: Conv2d::load(&vb.pp("conv2"), cout, cout, 3, 1, 1)?,
            shortcut,
            scale_shift: ss,
            out_scale,
        })
    }

    /// `emb_act` = silu(time embedding), `[B, T]`.
    fn forward(&self, x: &Tensor, emb_act: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let t = self.temb.forward(emb_act)?.unsqueeze(2)?.unsqueeze(3)?;
        let h = if self.scale_shift {
            let c = h.dim(1)?;
            let scale = (t.narrow(1, 0, c)? + 1.0)?;
            let shift = t.narrow(1, c, c)?;
            self.norm2.forward(&h)?.broadcast_mul(&scale)?.broadcast_add(&shift)?.silu()?
        } else {
            self.norm2.forward_silu(&h.broadcast_add(&t)?)?
        };
        let h = self.conv2.forward(&h)?;
        let skip = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        let y = (skip + h)?;
        if self.out_scale == 1.0 {
            Ok(y)
        } else {
            y / self.out_scale
        }
    }
}

/// Loads a diffusers attention block, accepting both key namings.
fn load_attention(
    vb: &VarPath,
    c: usize,
    head_dim: Option<usize>,
    norm_groups: Option<usize>,
    eps: f64,
    rescale: f64,
) -> LoadResult<SelfAttention> {
    let d = head_dim.unwrap_or(c);
    if d == 0 || !c.is_multiple_of(d) {
        return Err(LoadError::Config {
            file: vb.origin().to_string(),
            msg: format!("{c} channels are not divisible by attention_head_dim {d}"),
        });
    }
    let norm = match norm_groups {
        Some(g) => Some(GroupNorm::load(&vb.pp("group_norm"), c, g, eps)?),
        None => None,
    };
    let legacy = !vb.contains("to_q.weight") && vb.contains("query.weight");
    let names = if legacy { ["query", "key", "value", "proj_attn"] } else { ["to_q", "to_k", "to_v", "to_out.0"] };
    let mut ws = Vec::new();
    let mut bs = Vec::new();
    for n in names {
        ws.push(vb.pp(n).get("weight", &[c, c])?);
        bs.push(vb.pp(n).get("bias", &[c])?);
    }
    SelfAttention::new(norm, &ws[0], &ws[1], &ws[2], &bs[0], &bs[1], &bs[2], &ws[3], &bs[3], c / d, rescale)
        .with_file(vb.origin())
}

#[derive(Debug, Clone)]
struct Level {
    resnets: Vec<Resnet>,
    attentions: Vec<SelfAttention>,
    /// Down: `(conv, pad right/bottom first)`. Up: `(conv, _)` after nearest ×2.
    resample: Option<(Conv2d, bool)>,
}

/// A diffusers `UNet2DModel` (inference only). Implements [`Network`] with
/// `noise_labels` = timesteps (any float).
#[derive(Debug, Clone)]
pub struct UNet2DModel {
    cfg: UNet2DConfig,
    conv_in: Conv2d,
    lin1: Linear,
    lin2: Linear,
    down: Vec<Level>,
    mid: Option<(Resnet, Option<SelfAttention>, Resnet)>,
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet2DModel {
    /// Builds the model from `cfg`, taking every tensor from `src` (diffusers state-dict keys).
    /// Does not check for unused tensors: see [`UNet2DModel::load`] or
    /// [`TensorStore::finish`].
    pub fn new(cfg: &UNet2DConfig, src: &dyn WeightSource) -> LoadResult<Self> {
        cfg.validate(src.origin())?;
        let vb = VarPath::new(src);
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let c0 = ch[0];
        let td = cfg.temb_dim();
        let g = cfg.norm_num_groups;
        let eps = cfg.norm_eps;
        let conv_in = Conv2d::load(&vb.pp("conv_in"), cfg.in_channels, c0, 3, 1, 1)?;
        let lin1 = Linear::load(&vb.pp("time_embedding.linear_1"), c0, td, true)?;
        let lin2 = Linear::load(&vb.pp("time_embedding.linear_2"), td, td, true)?;
        // The attention of `Attn{Down,Up}Block2D` layer `j`, on `c` channels.
        let block_attention = |bvb: &VarPath, j: usize, c: usize| {
            load_attention(&bvb.pp("attentions").pp(j), c, cfg.attention_head_dim, Some(g), eps, 1.0)
        };

        let mut down = Vec::new();
        let mut cout = c0;
        for (i, ty) in cfg.down_block_types.iter().enumerate() {
            let cin = cout;
            cout = ch[i];
            let bvb = vb.pp("down_blocks").pp(i);
            let attn = ty == "AttnDownBlock2D";
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..cfg.layers_per_block {
                let ci = if j == 0 { cin } else { cout };
                resnets.push(Resnet::load(&bvb.pp("resnets").pp(j), cfg, ci, cout, 1.0)?);
                if attn {
                    attentions.push(block_attention(&bvb, j, cout)?);
                }
            }
            let resample = if i + 1 < n {
                let p = cfg.downsample_padding;
                Some((Conv2d::load(&bvb.pp("downsamplers.0.conv"), cout, cout, 3, p, 2)?, p == 0))
            } else {
                None
            };
            down.push(Level { resnets, attentions, resample });
        }

        let mid = match cfg.mid_block_type {
            Some(_) => {
                let c = ch[n - 1];
                let s = cfg.mid_block_scale_factor;
                let mvb = vb.pp("mid_block");
                let r0 = Resnet::load(&mvb.pp("resnets.0"), cfg, c, c, s)?;
                let att = if cfg.add_attention {
                    let groups = cfg.attn_norm_num_groups.or((!cfg.scale_shift()).then_some(g));
                    Some(load_attention(
                        &mvb.pp("attentions.0"),
                        c,
                        Some(cfg.attention_head_dim.unwrap_or(c)),
                        groups,
                        eps,
                        s,
                    )?)
                } else {
                    None
                };
                let r1 = Resnet::load(&mvb.pp("resnets.1"), cfg, c, c, s)?;
                Some((r0, att, r1))
            }
            None => None,
        };

        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up = Vec::new();
        let mut out_c = rev[0];
        for (i, ty) in cfg.up_block_types.iter().enumerate() {
            let prev = out_c;
            out_c = rev[i];
            let in_c = rev[(i + 1).min(n - 1)];
            let bvb = vb.pp("up_blocks").pp(i);
            let attn = ty == "AttnUpBlock2D";
            let layers = cfg.layers_per_block + 1;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers {
                let skip = if j == layers - 1 { in_c } else { out_c };
                let rin = if j == 0 { prev } else { out_c };
                resnets.push(Resnet::load(&bvb.pp("resnets").pp(j), cfg, rin + skip, out_c, 1.0)?);
                if attn {
                    attentions.push(block_attention(&bvb, j, out_c)?);
                }
            }
            let resample = if i + 1 < n {
                Some((Conv2d::load(&bvb.pp("upsamplers.0.conv"), out_c, out_c, 3, 1, 1)?, false))
            } else {
                None
            };
            up.push(Level { resnets, attentions, resample });
        }
        let norm_out = GroupNorm::load(&vb.pp("conv_norm_out"), c0, g, eps)?;
        let conv_out = Conv2d::load(&vb.pp("conv_out"), c0, cfg.out_channels, 3, 1, 1)?;
        Ok(Self { cfg: cfg.clone(), conv_in, lin1, lin2, down, mid, up, norm_out, conv_out })
    }

    /// Builds the model from `store` and checks that every tensor of the file was used.
    pub fn from_store(cfg: &UNet2DConfig, store: &TensorStore) -> LoadResult<Self> {
        let m = Self::new(cfg, store)?;
        store.finish()?;
        Ok(m)
    }

    /// Loads a diffusers model directory: `config.json` plus
    /// `diffusion_pytorch_model.safetensors` (preferred) or `diffusion_pytorch_model.bin`.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> LoadResult<Self> {
        let dir = dir.as_ref();
        let cfg = UNet2DConfig::from_file(dir.join("config.json"))?;
        let st = dir.join("diffusion_pytorch_model.safetensors");
        let weights = if st.exists() { st } else { dir.join("diffusion_pytorch_model.bin") };
        Self::load_files(&cfg, weights, device)
    }

    /// Loads the weights file (`.safetensors`, or a PyTorch `.bin`/`.pth` pickle) for `cfg`.
    pub fn load_files(cfg: &UNet2DConfig, weights: impl AsRef<Path>, device: &Device) -> LoadResult<Self> {
        let store = TensorStore::from_file(weights)?.on_device(device);
        Self::from_store(cfg, &store)
    }

    /// The configuration.
    pub fn config(&self) -> &UNet2DConfig {
        &self.cfg
    }

    /// diffusers `Timesteps`: `exponent_i = −ln(10000)·i/(half − freq_shift)`,
    /// `[sin | cos]` of `t·exp(exponent)` (flipped to `[cos | sin]` with `flip_sin_to_cos`),
    /// computed in f32 like diffusers.
    fn time_proj(&self, t: &Tensor) -> Result<Tensor> {
        let dim = self.cfg.block_out_channels[0];
        let half = dim / 2;
        let ts = t.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let denom = (half as f64 - self.cfg.freq_shift) as f32;
        let ln = -(10000f64.ln() as f32);
        let freqs: Vec<f32> = (0..half).map(|i| (ln * i as f32 / denom).exp()).collect();
        let mut out = Vec::with_capacity(ts.len() * dim);
        for &tv in &ts {
            let args: Vec<f32> = freqs.iter().map(|f| tv * f).collect();
            let sin = args.iter().map(|a| a.sin());
            let cos = args.iter().map(|a| a.cos());
            if self.cfg.flip_sin_to_cos {
                out.extend(cos);
                out.extend(sin);
            } else {
                out.extend(sin);
                out.extend(cos);
            }
            if dim % 2 == 1 {
                out.push(0.0);
            }
        }
        Tensor::from_vec(out, (ts.len(), dim), t.device())
    }

    /// Runs the network: `x` `[B, C, H, W]`, `timesteps` `[B]` (or one value for all).
    pub fn forward_t(&self, x: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        let t = if timesteps.elem_count() == 1 && b != 1 {
            timesteps.flatten_all()?.broadcast_as(b)?.contiguous()?
        } else {
            timesteps.flatten_all()?
        };
        let emb = self.time_proj(&t)?;
        let emb = self.lin2.forward(&self.lin1.forward(&emb)?.silu()?)?;
        let emb_act = emb.silu()?;
        let x = if self.cfg.center_input_sample { ((x * 2.0)? - 1.0)? } else { x.clone() };
        let mut h = self.conv_in.forward(&x)?;
        let mut skips = vec![h.clone()];
        for lvl in &self.down {
            for (j, r) in lvl.resnets.iter().enumerate() {
                h = r.forward(&h, &emb_act)?;
                if let Some(a) = lvl.attentions.get(j) {
                    h = a.forward(&h)?;
                }
                skips.push(h.clone());
            }
            if let Some((conv, pad_rb)) = &lvl.resample {
                if *pad_rb {
                    h = h.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
                }
                h = conv.forward(&h)?;
                skips.push(h.clone());
            }
        }
        if let Some((r0, att, r1)) = &self.mid {
            h = r0.forward(&h, &emb_act)?;
            if let Some(a) = att {
                h = a.forward(&h)?;
            }
            h = r1.forward(&h, &emb_act)?;
        }
        for lvl in &self.up {
            for (j, r) in lvl.resnets.iter().enumerate() {
                let s = skips.pop().ok_or_else(|| candle_core::Error::Msg("unet2d: skip stack empty".into()))?;
                h = Tensor::cat(&[&h, &s], 1)?;
                h = r.forward(&h, &emb_act)?;
                if let Some(a) = lvl.attentions.get(j) {
                    h = a.forward(&h)?;
                }
            }
            if let Some((conv, _)) = &lvl.resample {
                let (_, _, hh, ww) = h.dims4()?;
                h = conv.forward(&h.upsample_nearest2d(2 * hh, 2 * ww)?)?;
            }
        }
        let h = self.norm_out.forward_silu(&h)?;
        self.conv_out.forward(&h)
    }
}

impl Network for UNet2DModel {
    fn forward(&self, x: &Tensor, noise_labels: &Tensor) -> Result<Tensor> {
        self.forward_t(x, noise_labels)
    }
}
