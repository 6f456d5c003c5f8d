//! Images ↔ token files with a loaded model: the glue between [`crate::tokenizer`] (numbers),
//! [`crate::format`] (bytes) and [`crate::data`] (pixels). The CLI and the evaluation use it.

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use indicatif::ProgressBar;

use crate::data::Image;
use crate::family::{Family, Precond};
use crate::format as fmt;
use crate::marginal::Mixing;
use crate::schedule::Interval;
use crate::tokenizer::{Algorithm, Config, Init, Reference, Sampler, SamplerKind, ScoreRegion, Tokenizer, Tokens};
use crate::zoo::{LoadedModel, ModelEntry, Parameterization};

/// Background value used to pad images up to the network's size (−1: black, as trained).
pub const PAD_VALUE: f32 = -1.0;

/// Padding that centres an `h × w` image in the model's square input, if it fits evenly.
pub fn padding_for(model: &LoadedModel, h: usize, w: usize) -> Result<usize> {
    let size = model.entry.size;
    ensure!(h == w, "model '{}' takes square images; this one is {w}×{h}", model.entry.name);
    ensure!(
        h <= size && (size - h).is_multiple_of(2),
        "model '{}' takes {size}×{size} images (or smaller by an even margin, padded); this one is {w}×{h}",
        model.entry.name
    );
    Ok((size - h) / 2)
}

/// The format's tag of a family.
pub fn family_tag(f: Family) -> fmt::Family {
    match f {
        Family::Ddpm => fmt::Family::Ddpm,
        Family::Edm => fmt::Family::Edm,
        Family::Cm => fmt::Family::Cm,
        Family::Rf => fmt::Family::Rf,
    }
}

/// The model identity a token file records.
pub fn identity(model: &LoadedModel) -> fmt::ModelIdentity {
    identity_of(&model.entry, model.weights_sha256)
}

/// The model identity a token file records, for a model entry and its weights' SHA-256.
pub fn identity_of(entry: &ModelEntry, weights_sha256: [u8; 32]) -> fmt::ModelIdentity {
    let (parameterization, schedule) = format_parameterization(entry.parameterization);
    fmt::ModelIdentity {
        name: entry.name.to_string(),
        weights_sha256,
        family: family_tag(entry.family),
        parameterization,
        schedule,
    }
}

/// The parameterisation and marginal schedule a token file records for a model's.
pub fn format_parameterization(p: Parameterization) -> (fmt::Parameterization, fmt::MarginalSchedule) {
    match p {
        Parameterization::DdpmEpsilon => (fmt::Parameterization::Eps, fmt::MarginalSchedule::DdpmLinear { t: 1000 }),
        Parameterization::Velocity => (fmt::Parameterization::Velocity, fmt::MarginalSchedule::RfTau),
        Parameterization::Preconditioned(p) => (
            match p {
                Precond::Edm { .. } => fmt::Parameterization::EdmPrecond,
                Precond::Vp { .. } => fmt::Parameterization::VpPrecond,
                Precond::Ve => fmt::Parameterization::VePrecond,
                Precond::Consistency { .. } => fmt::Parameterization::Consistency,
            },
            fmt::MarginalSchedule::EdmSigma,
        ),
    }
}

/// Checks, before any model is loaded, that the model each token file names can run its
/// procedure and that it takes at most `max_nfe` network evaluations per image
/// ([`crate::validate::check`]), including that the model provides the reference image a file
/// names (looked for where `weights`, or the search path, finds the model); `paths` name the
/// files in errors.
pub fn check_files(
    paths: &[std::path::PathBuf],
    files: &[fmt::TokenFile],
    max_nfe: u64,
    weights: Option<&std::path::Path>,
) -> Result<()> {
    for (path, file) in paths.iter().zip(files) {
        let cannot = || format!("{} cannot be decoded", path.display());
        let entry = crate::zoo::entry(&file.model.name).with_context(cannot)?;
        if let Some(w) = weights {
            // Given weights come first: a missing folder or another model's weights is the
            // cause to report, not the reference image that is then missing too.
            if let crate::zoo::Source::Folder(dir) = entry.find(Some(w)).with_context(cannot)? {
                let file_weights = entry.weights_file(&dir);
                // Remembered per path: many files decoded together hash the weights once.
                let sha = crate::ladder::weights_sha256(&file_weights).with_context(cannot)?;
                file.check_model(entry.name, &sha)
                    .map_err(anyhow::Error::new)
                    .with_context(|| expects_weights_from(&entry, &file_weights.display().to_string()))
                    .with_context(cannot)?;
            }
        }
        let description = entry.description_with_references(weights).with_context(cannot)?;
        crate::validate::check(&description, file, Some(max_nfe)).with_context(cannot)?;
    }
    Ok(())
}

/// The procedure block of a token file for `cfg`, with the I3 index `j0`.
pub fn procedure(cfg: &Config, family: Family, clip_x0: bool, j0: Option<u32>) -> Result<fmt::Procedure> {
    let algorithm = match &cfg.algorithm {
        Algorithm::Stochastic { t_start, t_end, rho, .. } => {
            fmt::Algorithm::Alg1 { t_r: *t_start, t_t: *t_end, rho: *rho }
        }
        Algorithm::Resample { t_start, schedule } => fmt::Algorithm::Alg2 {
            t_s: *t_start,
            schedule: schedule.iter().map(|i| fmt::ScheduleEntry { delta: i.delta, repeats: i.repeats }).collect(),
        },
    };
    let x_ref = |r: &Reference| match r {
        Reference::Zeros => fmt::XRef::Zeros,
        Reference::Image(img) => fmt::XRef::Image { sha256: img.sha256 },
    };
    let init = match &cfg.init {
        Init::Noise => fmt::InitStrategy::I1,
        Init::Reference(r) => fmt::InitStrategy::I2 { x_ref: x_ref(r) },
        Init::ClosestNoise { reference, candidates } => fmt::InitStrategy::I3 {
            x_ref: x_ref(reference),
            k0: *candidates,
            j0: j0.context("an I3 initial point needs its chosen index")?,
        },
    };
    let s = &cfg.sampler;
    let sampler = match (s.kind, s.steps) {
        (_, 0) => fmt::FinalSampler { kind: fmt::SamplerKind::OneStep, steps: 1, rho: s.rho },
        (SamplerKind::Heun, n) => fmt::FinalSampler { kind: fmt::SamplerKind::Heun, steps: n, rho: s.rho },
        (SamplerKind::Ddim, n) if family == Family::Rf => {
            fmt::FinalSampler { kind: fmt::SamplerKind::Euler, steps: n, rho: s.rho }
        }
        (SamplerKind::Ddim, n) => fmt::FinalSampler { kind: fmt::SamplerKind::Ddim, steps: n, rho: s.rho },
    };
    Ok(fmt::Procedure {
        codebook_generator: fmt::CodebookGenerator::Philox4x32BoxMuller,
        seed: cfg.seed,
        k: cfg.k,
        n: u32::try_from(cfg.algorithm.tokens()).context("too many tokens")?,
        p: cfg.algorithm.p(),
        mixing: match cfg.mixing {
            Mixing::BigSigma => fmt::Mixing::SigmaBig,
            Mixing::SmallSigma => fmt::Mixing::SigmaSmall,
        },
        clip_x0,
        algorithm,
        init,
        sampler,
        dtype: fmt::ComputeDtype::F32,
        atoms: cfg.atoms,
        score_region: match cfg.score_region {
            ScoreRegion::Input => fmt::ScoreRegion::Input,
            ScoreRegion::Image => fmt::ScoreRegion::Image,
        },
    })
}

/// The tokenizer configuration a token file's procedure describes, and its I3 index. A
/// reference image named by its hash must be `x_ref` (the model's, [`crate::zoo::RefLookup`]);
/// the error names the hash and where the model's was looked for.
pub fn config_from(
    pr: &fmt::Procedure,
    family: Family,
    x_ref: &crate::zoo::RefLookup,
) -> Result<(Config, Option<u32>)> {
    let algorithm = match &pr.algorithm {
        fmt::Algorithm::Alg1 { t_r, t_t, rho } => {
            Algorithm::Stochastic { p: pr.p, n: pr.n, t_start: *t_r, t_end: *t_t, rho: *rho }
        }
        fmt::Algorithm::Alg2 { t_s, schedule } => Algorithm::Resample {
            t_start: *t_s,
            schedule: schedule.iter().map(|e| Interval { delta: e.delta, repeats: e.repeats }).collect(),
        },
    };
    let reference = |x: &fmt::XRef| match x {
        fmt::XRef::Zeros => Ok(Reference::Zeros),
        fmt::XRef::DatasetMean => {
            bail!(
                "this file starts from an unnamed \"dataset mean\" reference image (x_ref tag 1), which does not say \
                 which values it means; no decoder can reproduce it"
            )
        }
        fmt::XRef::Image { sha256 } => match &x_ref.image {
            Some(img) if &img.sha256 == sha256 => Ok(Reference::Image(img.clone())),
            found => bail!(
                "this file starts from the reference image with values SHA-256 {}, which this model does not \
                 provide: looked in {}{}",
                crate::reference::hex(sha256),
                x_ref.places,
                match found {
                    Some(img) => format!(" (found {} there)", img.sha256_hex()),
                    None => " (no reference image there)".to_string(),
                }
            ),
        },
    };
    let (init, j0) = match &pr.init {
        fmt::InitStrategy::I1 => (Init::Noise, None),
        fmt::InitStrategy::I2 { x_ref } => (Init::Reference(reference(x_ref)?), None),
        fmt::InitStrategy::I3 { x_ref, k0, j0 } => {
            (Init::ClosestNoise { reference: reference(x_ref)?, candidates: *k0 }, Some(*j0))
        }
    };
    // The sampler's last grid point before the clean time is fixed per family (SPEC 2.7).
    let t_end = Sampler::default_for(family).t_end;
    let f = &pr.sampler;
    let sampler = match f.kind {
        fmt::SamplerKind::OneStep => Sampler { kind: SamplerKind::Ddim, steps: 0, rho: f.rho, t_end },
        fmt::SamplerKind::Heun => Sampler { kind: SamplerKind::Heun, steps: f.steps, rho: f.rho, t_end },
        fmt::SamplerKind::Ddim | fmt::SamplerKind::Euler => {
            Sampler { kind: SamplerKind::Ddim, steps: f.steps, rho: f.rho, t_end }
        }
    };
    let mixing = match pr.mixing {
        fmt::Mixing::SigmaBig => Mixing::BigSigma,
        fmt::Mixing::SigmaSmall => Mixing::SmallSigma,
    };
    if pr.dtype != fmt::ComputeDtype::F32 {
        bail!("this file was made with {:?} compute; this decoder runs f32 only", pr.dtype);
    }
    let score_region = match pr.score_region {
        fmt::ScoreRegion::Input => ScoreRegion::Input,
        fmt::ScoreRegion::Image => ScoreRegion::Image,
    };
    Ok((Config { k: pr.k, seed: pr.seed, algorithm, mixing, init, sampler, score_region, atoms: pr.atoms }, j0))
}

fn clip_of(model: &LoadedModel) -> bool {
    clip_of_entry(&model.entry)
}

/// Whether the model's x0 estimates are clipped (DDPM, SPEC 10 item 9).
pub fn clip_of_entry(entry: &ModelEntry) -> bool {
    matches!(entry.parameterization, Parameterization::DdpmEpsilon)
}

/// Images of one size → a model-input batch tensor.
fn batch_tensor(model: &LoadedModel, images: &[&Image], device: &Device) -> Result<(Tensor, usize)> {
    let (h, w) = (images[0].height, images[0].width);
    ensure!(images.iter().all(|i| (i.height, i.width) == (h, w)), "a batch must hold images of one size");
    let pad = padding_for(model, h, w)?;
    let (c, s) = (model.entry.channels, model.entry.size);
    let data: Vec<f32> = images.iter().flat_map(|i| i.to_model(pad, PAD_VALUE)).collect();
    Ok((Tensor::from_vec(data, (images.len(), c, s, s), device)?, pad))
}

fn tensor_images(x: &Tensor, channels: usize, h: usize, w: usize, pad: usize) -> Result<Vec<Image>> {
    let rows = x.flatten_from(1)?.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
    Ok(rows.iter().map(|r| Image::from_model(r, channels, h, w, pad)).collect())
}

/// Checks before any work that token files of `cfg` for `height × width` images can be
/// written: the header's limits (K ≤ 2^24, N ≤ 2^20, the payload size, the times), so a setting
/// out of range fails at once rather than after the encode.
pub fn check_header(model: &LoadedModel, cfg: &Config, height: usize, width: usize) -> Result<()> {
    let j0 = matches!(cfg.init, Init::ClosestNoise { .. }).then_some(0);
    let procedure = procedure(cfg, model.entry.family, clip_of(model), j0)?;
    let (k, n) = (procedure.k, procedure.n);
    let why = || format!("a token file cannot hold these settings (K = {k}, N = {n})");
    ensure!(n <= fmt::MAX_N, "{}: N must be at most {}", why(), fmt::MAX_N);
    let file = fmt::TokenFile {
        model: identity(model),
        procedure,
        image: fmt::ImageSpec {
            channels: model.entry.channels as u8,
            height: height as u32,
            width: width as u32,
            lo: -1.0,
            hi: 1.0,
        },
        tokens: (0..n).flat_map(|_| cfg.atoms.first_step()).collect(),
        fit: None,
    };
    file.validate().with_context(why)
}

/// The result of encoding a batch: one token file per image, its bytes as stored (compact when
/// the settings are one of the model's shipped operating points, else the full header; see
/// [`crate::ladder`]) and the encoder's own reconstruction (identical to what a decoder on this
/// machine produces).
pub struct EncodedBatch {
    pub files: Vec<fmt::TokenFile>,
    pub bytes: Vec<Vec<u8>>,
    pub reconstructions: Vec<Image>,
}

/// Encodes same-sized images with `cfg` (images must have the model's channel count).
pub fn encode(
    model: &LoadedModel,
    cfg: &Config,
    images: &[&Image],
    device: &Device,
    progress: Option<ProgressBar>,
) -> Result<EncodedBatch> {
    ensure!(!images.is_empty(), "nothing to encode");
    let (x, pad) = batch_tensor(model, images, device)?;
    let mut tok = Tokenizer::new(model.denoiser.as_ref(), cfg, model.shape());
    tok.progress = progress;
    tok.margin = pad;
    let enc = tok.encode(&x)?;
    let (h, w) = (images[0].height, images[0].width);
    let files = enc
        .tokens
        .indices
        .iter()
        .zip(&enc.tokens.init_index)
        .map(|(t, j0)| {
            let file = fmt::TokenFile {
                model: identity(model),
                procedure: procedure(cfg, model.entry.family, clip_of(model), *j0)?,
                image: fmt::ImageSpec {
                    channels: model.entry.channels as u8,
                    height: h as u32,
                    width: w as u32,
                    lo: -1.0,
                    hi: 1.0,
                },
                tokens: t.clone(),
                fit: None,
            };
            file.validate()?;
            Ok(file)
        })
        .collect::<Result<Vec<_>>>()?;
    let points = crate::ladder::operating_points(&model.entry, &model.dir, model.weights_sha256)?;
    let bytes = files.iter().map(|f| crate::ladder::store(f, &points)).collect::<Result<Vec<_>>>()?;
    Ok(EncodedBatch {
        files,
        bytes,
        reconstructions: tensor_images(&enc.reconstruction, model.entry.channels, h, w, pad)?,
    })
}

/// Why a file does not match the weights at `origin`: where a file of `entry` expects them.
fn expects_weights_from(entry: &crate::zoo::ModelEntry, origin: &str) -> String {
    let expected = match entry.find(None) {
        Ok(source) => format!("{source}"),
        Err(_) => format!("$GDDCM_HOME/{} (not present here; {})", entry.name, entry.download),
    };
    format!(
        "the loaded weights are {origin}; a file made with model '{}' expects its weights from {expected} (or the --weights it was made with)",
        entry.name
    )
}

/// Decodes token files made with `model` and one procedure and image size (a batch).
pub fn decode(
    model: &LoadedModel,
    files: &[&fmt::TokenFile],
    device: &Device,
    progress: Option<ProgressBar>,
) -> Result<Vec<Image>> {
    ensure!(!files.is_empty(), "nothing to decode");
    let first = files[0];
    let description = model.description();
    for f in files {
        f.check_model(model.entry.name, &model.weights_sha256)
            .map_err(anyhow::Error::new)
            .with_context(|| expects_weights_from(&model.entry, &model.weights_origin()))?;
        crate::validate::check(&description, f, None)?;
        ensure!(
            f.procedure == first.procedure || same_but_j0(&f.procedure, &first.procedure),
            "files decoded together must share one procedure"
        );
        ensure!(f.image == first.image, "files decoded together must share one image size");
    }
    ensure!(
        first.image.channels as usize == model.entry.channels,
        "the file holds a {}-channel image; model '{}' has {} channels",
        first.image.channels,
        model.entry.name,
        model.entry.channels
    );
    ensure!(first.procedure.clip_x0 == clip_of(model), "the file's x0 clipping setting does not match this model's");
    let (cfg, _) = config_from(&first.procedure, model.entry.family, &model.x_ref)?;
    let init_index: Vec<Option<u32>> = files
        .iter()
        .map(|f| config_from(&f.procedure, model.entry.family, &model.x_ref).map(|(_, j0)| j0))
        .collect::<Result<_>>()?;
    let tokens = Tokens { indices: files.iter().map(|f| f.tokens.clone()).collect(), init_index };
    let (h, w) = (first.image.height as usize, first.image.width as usize);
    let pad = padding_for(model, h, w)?;
    let mut tok = Tokenizer::new(model.denoiser.as_ref(), &cfg, model.shape());
    tok.progress = progress;
    tok.margin = pad;
    let x = tok.decode(&tokens, device)?;
    tensor_images(&x, model.entry.channels, h, w, pad)
}

/// Whether `file` was encoded with `model` and `cfg` (the I3 index aside, which is per image):
/// lets an interrupted evaluation reuse its token files.
pub fn made_with(file: &fmt::TokenFile, model: &LoadedModel, cfg: &Config) -> Result<bool> {
    // The file's own I3 index (if any) stands in for the per-image choice.
    let j0 = match file.procedure.init {
        fmt::InitStrategy::I3 { j0, .. } => Some(j0),
        _ => None,
    };
    let expected = match procedure(cfg, model.entry.family, clip_of(model), j0) {
        Ok(p) => p,
        Err(_) => return Ok(false), // e.g. the file has no I3 index where cfg needs one
    };
    Ok(file.model == identity(model) && file.procedure == expected)
}

fn same_but_j0(a: &fmt::Procedure, b: &fmt::Procedure) -> bool {
    match (&a.init, &b.init) {
        (fmt::InitStrategy::I3 { x_ref: xa, k0: ka, .. }, fmt::InitStrategy::I3 { x_ref: xb, k0: kb, .. })
            if xa == xb && ka == kb =>
        {
            let mut a2 = a.clone();
            a2.init = b.init;
            &a2 == b
        }
        _ => false,
    }
}

/// Draws `n` images with the model's ordinary deterministic sampler from its largest time
/// (DDIM-50 for DDPM, EDM's Heun for EDM, one step for CM, Euler for RF); `steps` overrides
/// the number of sampler steps. Noise comes from stream 2 of the codebook generator.
pub fn generate(
    model: &LoadedModel,
    n: usize,
    seed: u64,
    steps: Option<u32>,
    device: &Device,
    progress: Option<ProgressBar>,
) -> Result<Vec<Image>> {
    let family = model.entry.family;
    let m = model.denoiser.marginal();
    let t_max = m.max_time();
    let mut sampler = Sampler::default_for(family);
    if let Some(s) = steps {
        sampler.steps = s;
    } else if family == Family::Rf {
        sampler.steps = 20;
    }
    let cfg = Config {
        k: 2,
        seed,
        algorithm: Algorithm::Resample { t_start: t_max, schedule: vec![] },
        mixing: Mixing::BigSigma,
        init: Init::Noise,
        sampler,
        atoms: crate::atoms::AtomRule::Single,
        score_region: ScoreRegion::Input,
    };
    let (c, s, _) = model.shape();
    let cb = crate::codebook::Codebooks::new(seed, c * s * s);
    let data: Vec<f32> = (0..n as u32).flat_map(|j| cb.entry(2, 0, j)).collect();
    let z = Tensor::from_vec(data, (n, c, s, s), device)?;
    let x = (z * (m.s(t_max).powi(2) * 0.25 + m.big_sigma(t_max).powi(2)).sqrt())?;
    let mut tok = Tokenizer::new(model.denoiser.as_ref(), &cfg, model.shape());
    tok.progress = progress;
    let out = tok.sample(x, t_max)?;
    tensor_images(&out, c, s, s, 0)
}
