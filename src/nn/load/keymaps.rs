//! Key maps from RectifiedFlow `NCSNpp` and consistency-model flax `NCSNpp` checkpoints to
//! EDM `SongUNet` keys (NETWORKS.md §3, §4 "Equivalence with EDM NCSN++ SongUNet").
//!
//! Both are built from the SongUNet [`plan`] in forward order: ResBlocks and attention blocks
//! are numbered in the order they run, and each attention block belongs to the ResBlock before
//! it. The maps are checked against `fixtures/*.songunet_keymap.json` by the tests.

use super::weights::{KeyMap, LoadError, LoadResult, Rule};
use crate::nn::arch::songunet::{plan, BlockShape, PlanItem, SongUNetConfig};

/// One RF parameter: name in `NCSNpp.state_dict()` (no `module.` prefix) and torch shape.
pub type ParamEntry = (String, Vec<usize>);

/// The RF key map and the RF `model.parameters()` order, built in one walk over the plan.
fn rf_walk(cfg: &SongUNetConfig) -> LoadResult<(KeyMap, Vec<ParamEntry>)> {
    let mut map = KeyMap::default();
    let mut order: Vec<ParamEntry> = Vec::new();
    let nc = cfg.model_channels * cfg.channel_mult_noise;
    let ec = cfg.model_channels * cfg.channel_mult_emb;
    let mut m = 0usize;
    // Pushes `dst.{p}` <- `{src}.{p}` for weight and bias, and their parameter order.
    let lin = |map: &mut KeyMap,
               order: &mut Vec<ParamEntry>,
               dst: &str,
               src: &str,
               wshape: Vec<usize>,
               bshape: Vec<usize>| {
        map.push(format!("{dst}.weight"), Rule::Same(format!("{src}.weight")));
        map.push(format!("{dst}.bias"), Rule::Same(format!("{src}.bias")));
        order.push((format!("{src}.weight"), wshape));
        order.push((format!("{src}.bias"), bshape));
    };
    for (dst, i, o) in [("map_layer0", nc, ec), ("map_layer1", ec, ec)] {
        lin(&mut map, &mut order, dst, &format!("all_modules.{m}"), vec![o, i], vec![o]);
        m += 1;
    }
    for it in plan(cfg) {
        match it {
            PlanItem::Conv { name, cin, cout } | PlanItem::AuxConv { name, cin, cout } => {
                let src = format!("all_modules.{m}");
                lin(&mut map, &mut order, &name, &src, vec![cout, cin, 3, 3], vec![cout]);
                m += 1;
            }
            PlanItem::AuxNorm { name, c } => {
                let src = format!("all_modules.{m}");
                lin(&mut map, &mut order, &name, &src, vec![c], vec![c]);
                m += 1;
            }
            PlanItem::AuxResidual { .. } => {
                return Err(LoadError::Config {
                    file: "<rf key map>".into(),
                    msg: "RectifiedFlow with a residual input pyramid is not supported".into(),
                })
            }
            PlanItem::Block { name, shape: BlockShape { cin, cout, up, down, attn, .. } } => {
                let r = format!("all_modules.{m}");
                m += 1;
                let sub = |s: &str| format!("{r}.{s}");
                let d = |s: &str| format!("{name}.{s}");
                lin(&mut map, &mut order, &d("norm0"), &sub("GroupNorm_0"), vec![cin], vec![cin]);
                lin(&mut map, &mut order, &d("conv0"), &sub("Conv_0"), vec![cout, cin, 3, 3], vec![cout]);
                lin(&mut map, &mut order, &d("affine"), &sub("Dense_0"), vec![cout, ec], vec![cout]);
                lin(&mut map, &mut order, &d("norm1"), &sub("GroupNorm_1"), vec![cout], vec![cout]);
                lin(&mut map, &mut order, &d("conv1"), &sub("Conv_1"), vec![cout, cout, 3, 3], vec![cout]);
                if cin != cout || up || down {
                    lin(&mut map, &mut order, &d("skip"), &sub("Conv_2"), vec![cout, cin, 1, 1], vec![cout]);
                }
                if up || down {
                    map.push(d("conv0.resample_filter"), Rule::Fixed);
                    map.push(d("skip.resample_filter"), Rule::Fixed);
                }
                if attn {
                    let a = format!("all_modules.{m}");
                    m += 1;
                    push_attention(&mut map, &name, &a, ".", "GroupNorm_0.weight");
                    order.push((format!("{a}.GroupNorm_0.weight"), vec![cout]));
                    order.push((format!("{a}.GroupNorm_0.bias"), vec![cout]));
                    for j in 0..4 {
                        order.push((format!("{a}.NIN_{j}.W"), vec![cout, cout]));
                        order.push((format!("{a}.NIN_{j}.b"), vec![cout]));
                    }
                }
            }
        }
    }
    Ok((map, order))
}

/// Attention entries: `norm2` from `GroupNorm_0`, interleaved `qkv` from `NIN_0..2`, `proj`
/// from `NIN_3` (NETWORKS.md §4 mapping rules). `sep` joins module and parameter names.
fn push_attention(map: &mut KeyMap, dst: &str, src: &str, sep: &str, gn_weight: &str) {
    let s = |p: &str| format!("{src}{sep}{p}");
    map.push(format!("{dst}.norm2.weight"), Rule::Same(s(gn_weight)));
    map.push(format!("{dst}.norm2.bias"), Rule::Same(s(&format!("GroupNorm_0{sep}bias"))));
    let nin = |j: usize, p: &str| s(&format!("NIN_{j}{sep}{p}"));
    map.push(format!("{dst}.qkv.weight"), Rule::InterleaveQkvWeight([nin(0, "W"), nin(1, "W"), nin(2, "W")]));
    map.push(format!("{dst}.qkv.bias"), Rule::InterleaveQkvBias([nin(0, "b"), nin(1, "b"), nin(2, "b")]));
    map.push(format!("{dst}.proj.weight"), Rule::NinToConv(nin(3, "W")));
    map.push(format!("{dst}.proj.bias"), Rule::Same(nin(3, "b")));
}

/// SongUNet key → RectifiedFlow `NCSNpp.state_dict()` key (torch layouts; NIN `W` is
/// `[in, out]`). NETWORKS.md §3.
pub fn rf_keymap(cfg: &SongUNetConfig) -> LoadResult<KeyMap> {
    Ok(rf_walk(cfg)?.0)
}

/// RectifiedFlow `model.parameters()` order (= `ema.shadow_params` order) with torch shapes,
/// derived from the architecture (NETWORKS.md §3 "Checkpoint").
pub fn rf_param_order(cfg: &SongUNetConfig) -> LoadResult<Vec<ParamEntry>> {
    Ok(rf_walk(cfg)?.1)
}

/// SongUNet key → consistency-model flax param path (`/`-joined, root `params` removed;
/// flax layouts: conv HWIO, Dense `[in, out]`, NIN `W [in, out]`). NETWORKS.md §4.
pub fn cm_keymap(cfg: &SongUNetConfig) -> KeyMap {
    let mut map = KeyMap::default();
    let (mut r, mut a, mut dn) = (0usize, 0usize, 0usize);
    fn conv(map: &mut KeyMap, dst: &str, src: &str, kernel: &str) {
        map.push(format!("{dst}.weight"), Rule::HwioToOihw(format!("{src}/{kernel}")));
        map.push(format!("{dst}.bias"), Rule::Same(format!("{src}/bias")));
    }
    fn dense(map: &mut KeyMap, dst: &str, src: &str) {
        map.push(format!("{dst}.weight"), Rule::Transpose(format!("{src}/kernel")));
        map.push(format!("{dst}.bias"), Rule::Same(format!("{src}/bias")));
    }
    fn gn(map: &mut KeyMap, dst: &str, src: &str) {
        map.push(format!("{dst}.weight"), Rule::Same(format!("{src}/scale")));
        map.push(format!("{dst}.bias"), Rule::Same(format!("{src}/bias")));
    }
    if cfg.embedding_type == "fourier" {
        map.push("map_noise.freqs", Rule::Same("GaussianFourierProjection_0/W".into()));
    }
    dense(&mut map, "map_layer0", "Dense_0");
    dense(&mut map, "map_layer1", "Dense_1");
    for it in plan(cfg) {
        match it {
            PlanItem::Conv { name, .. } => conv(&mut map, &name, "Conv_0", "kernel"),
            PlanItem::AuxNorm { name, .. } => gn(&mut map, &name, "GroupNorm_0"),
            PlanItem::AuxConv { name, .. } => conv(&mut map, &name, "Conv_1", "kernel"),
            PlanItem::AuxResidual { name, .. } => {
                conv(&mut map, &name, &format!("Downsample_{dn}/Conv2d_0"), "weight");
                map.push(format!("{name}.resample_filter"), Rule::Fixed);
                dn += 1;
            }
            PlanItem::Block { name, shape: BlockShape { cin, cout, up, down, attn, .. } } => {
                let src = format!("ResnetBlockBigGANpp_{r}");
                r += 1;
                gn(&mut map, &format!("{name}.norm0"), &format!("{src}/GroupNorm_0"));
                gn(&mut map, &format!("{name}.norm1"), &format!("{src}/GroupNorm_1"));
                conv(&mut map, &format!("{name}.conv0"), &format!("{src}/Conv_0"), "kernel");
                conv(&mut map, &format!("{name}.conv1"), &format!("{src}/Conv_1"), "kernel");
                if cin != cout || up || down {
                    conv(&mut map, &format!("{name}.skip"), &format!("{src}/Conv_2"), "kernel");
                }
                dense(&mut map, &format!("{name}.affine"), &format!("{src}/Dense_0"));
                if up || down {
                    map.push(format!("{name}.conv0.resample_filter"), Rule::Fixed);
                    map.push(format!("{name}.skip.resample_filter"), Rule::Fixed);
                }
                if attn {
                    let s = format!("AttnBlockpp_{a}");
                    a += 1;
                    push_attention(&mut map, &name, &s, "/", "GroupNorm_0/scale");
                }
            }
        }
    }
    map
}
