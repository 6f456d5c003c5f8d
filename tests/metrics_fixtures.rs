//! Checks the metrics against the reference fixtures in `tests/fixtures` (see its README).
//! A missing fixture is a test failure, never a skip.

mod support;

use candle_core::{DType, Device, Tensor};
use gddcm::metrics::{fid, ssim, ImageU8};
use std::collections::HashMap;
use std::path::PathBuf;
use support::{fixture_path, materialise};

fn load(name: &str) -> HashMap<String, Tensor> {
    let p = fixture_path(name);
    candle_core::safetensors::load(&p, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", p.display()))
}

fn get<'a>(m: &'a HashMap<String, Tensor>, k: &str) -> &'a Tensor {
    m.get(k).unwrap_or_else(|| panic!("fixture tensor {k} is missing"))
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// Images of a `[N,H,W,C]` or `[N,H,W]` uint8 tensor.
fn images(t: &Tensor) -> Vec<ImageU8> {
    let dims = t.dims().to_vec();
    let (n, h, w) = (dims[0], dims[1], dims[2]);
    let c = if dims.len() == 4 { dims[3] } else { 1 };
    let all: Vec<u8> = t.flatten_all().unwrap().to_vec1().unwrap();
    (0..n).map(|i| ImageU8::from_hwc(h, w, c, &all[i * h * w * c..(i + 1) * h * w * c]).unwrap()).collect()
}

fn assert_close(name: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(
        worst <= tol && got.iter().all(|v| v.is_finite()),
        "{name}: max abs diff {worst:e} > {tol:e}\n got {got:?}\nwant {want:?}"
    );
}

#[test]
fn ssim_psnr_msssim_match_reference() {
    let m = load("ssim_reference.safetensors");
    // The f32 window of pytorch_msssim.
    let win = ssim::SsimWindow::GaussianF32 { sigma: 1.5, size: 11 }.taps();
    assert_close("pytorch_msssim window", &win, &f64s(get(&m, "dbg.gauss_win_pytorch_msssim_f32")), 0.0);
    let win64 = ssim::SsimWindow::Gaussian { sigma: 1.5, radius: 5 }.taps();
    assert_close("scipy window", &win64, &f64s(get(&m, "dbg.gauss_win_scipy_f64")), 1e-16);
    for set in ["rgb32", "gray28", "rgb256"] {
        let xs = images(get(&m, &format!("in.{set}.x")));
        let ys = images(get(&m, &format!("in.{set}.y")));
        let run = |f: &dyn Fn(&ImageU8, &ImageU8) -> gddcm::metrics::Result<f64>| -> Vec<f64> {
            xs.iter().zip(&ys).map(|(x, y)| f(x, y).unwrap()).collect()
        };
        let out = |k: &str| f64s(get(&m, &format!("out.{set}.{k}")));
        assert_close(&format!("{set} skimage gaussian"), &run(&ssim::ssim), &out("skimage_ssim_gaussian"), 1e-9);
        assert_close(
            &format!("{set} skimage default"),
            &run(&ssim::ssim_skimage_default),
            &out("skimage_ssim_default"),
            1e-9,
        );
        assert_close(&format!("{set} psnr"), &run(&ssim::psnr), &out("skimage_psnr"), 1e-9);
        assert_close(
            &format!("{set} pytorch_msssim ssim"),
            &run(&ssim::ssim_pytorch_msssim),
            &out("pytorch_msssim_ssim"),
            1e-9,
        );
        assert_close(
            &format!("{set} pytorch_msssim ssim f32"),
            &run(&ssim::ssim_pytorch_msssim),
            &out("pytorch_msssim_ssim_f32"),
            1e-5,
        );
        if set == "rgb256" {
            assert_close("ms_ssim", &run(&ssim::ms_ssim), &out("pytorch_msssim_ms_ssim"), 1e-9);
            assert_close("ms_ssim f32", &run(&ssim::ms_ssim), &out("pytorch_msssim_ms_ssim_f32"), 1e-5);
            // Per-level values [5, N, C].
            let want = f64s(get(&m, "dbg.rgb256.ms_ssim_levels"));
            let mut got = vec![0.0; want.len()];
            for (i, (x, y)) in xs.iter().zip(&ys).enumerate() {
                let (_, lv) = ssim::ms_ssim_levels(x, y).unwrap();
                for (l, row) in lv.iter().enumerate() {
                    for (c, v) in row.iter().enumerate() {
                        got[(l * xs.len() + i) * 3 + c] = *v;
                    }
                }
            }
            assert_close("ms_ssim levels", &got, &want, 1e-9);
        }
    }
}

#[test]
fn frechet_distance_matches_pytorch_fid() {
    let m = load("fid_from_features.safetensors");
    let a = get(&m, "in.features_a");
    let b = get(&m, "in.features_b");
    let (na, d) = a.dims2().unwrap();
    let (nb, _) = b.dims2().unwrap();
    let sa = fid::FeatureStats::from_features(&f64s(a), na, d).unwrap();
    let sb = fid::FeatureStats::from_features(&f64s(b), nb, d).unwrap();
    assert_close("mu_a", &sa.mu, &f64s(get(&m, "out.mu_a")), 1e-12);
    assert_close("mu_b", &sb.mu, &f64s(get(&m, "out.mu_b")), 1e-12);
    assert_close("sigma_a", &sa.sigma, &f64s(get(&m, "out.sigma_a")), 1e-12);
    assert_close("sigma_b", &sb.sigma, &f64s(get(&m, "out.sigma_b")), 1e-12);
    let ab = fid::frechet_distance(&sa, &sb).unwrap();
    let ba = fid::frechet_distance(&sb, &sa).unwrap();
    let aa = fid::frechet_distance(&sa, &sa).unwrap();
    assert_close("fid_ab", &[ab], &f64s(get(&m, "out.fid_ab")), 1e-8);
    assert_close("fid_ba", &[ba], &f64s(get(&m, "out.fid_ba")), 1e-8);
    assert!(aa.abs() < 1e-8, "fid(a,a) = {aa}");
    // From f32 features: 1e-4 relative.
    let a32: Vec<f32> = f64s(a).iter().map(|&v| v as f32).collect();
    let b32: Vec<f32> = f64s(b).iter().map(|&v| v as f32).collect();
    let ab32 = fid::frechet_distance(
        &fid::FeatureStats::from_features_f32(&a32, na, d).unwrap(),
        &fid::FeatureStats::from_features_f32(&b32, nb, d).unwrap(),
    )
    .unwrap();
    assert!((ab32 - ab).abs() < 1e-4 * ab, "{ab32} vs {ab}");
}

fn assert_close_f32(name: &str, got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.dims(), want.dims(), "{name}: shape");
    assert_close(name, &f64s(got), &f64s(want), tol);
}

#[test]
fn classifier_nll_is_the_mean_cross_entropy() {
    use gddcm::metrics::standin::nll_from_logits;
    // softmax([0, ln 3]) = [1/4, 3/4]; a shift by 1000 (e^1000 overflows f64) changes nothing
    // beyond the f32 rounding of the shifted logits (log-sum-exp is shifted by the maximum).
    for (shift, tol) in [(0.0f32, 1e-6), (1000.0, 1e-4)] {
        let logits = Tensor::new(&[[shift, shift + 3f32.ln()], [shift, shift + 3f32.ln()]], &Device::Cpu).unwrap();
        let got = nll_from_logits(&logits, &[1, 0]).unwrap();
        let want = (-(0.75f64.ln()) - 0.25f64.ln()) / 2.0;
        assert!((got - want).abs() < tol, "shift {shift}: {got} vs {want}");
    }
    let logits = Tensor::zeros((2, 10), DType::F32, &Device::Cpu).unwrap();
    assert!(nll_from_logits(&logits, &[0]).is_err(), "one label for two rows");
    assert!(nll_from_logits(&logits, &[0, 10]).is_err(), "label out of range");
}

#[test]
fn classifier_standin_matches_pytorch() {
    use gddcm::metrics::standin::{accuracy_from_logits, ClassifierStandIn};
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/classifier_small.safetensors");
    assert!(path.is_file(), "missing {}: run tools/make_classifier_fixture.py", path.display());
    let net = ClassifierStandIn::load(&path).unwrap();
    let m = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let x = get(&m, "in.x");
    let feats = net.features(x).unwrap();
    assert_close_f32("features", &feats, get(&m, "out.features"), 1e-5);
    let logits = net.logits(x).unwrap();
    let want_logits = get(&m, "out.logits");
    assert_close_f32("logits", &logits, want_logits, 1e-5);
    // Accuracy against the reference argmax is 1; against shifted labels it is 0.
    let labels: Vec<u32> = want_logits.argmax(1).unwrap().to_vec1().unwrap();
    assert_eq!(accuracy_from_logits(&logits, &labels).unwrap(), 1.0);
    let wrong: Vec<u32> = labels.iter().map(|l| (l + 1) % 10).collect();
    assert_eq!(accuracy_from_logits(&logits, &wrong).unwrap(), 0.0);
    // The class likelihood is lower (better) for the argmax labels than for any other.
    let nll = |l: &[u32]| gddcm::metrics::standin::nll_from_logits(&logits, l).unwrap();
    assert!(nll(&labels) < nll(&wrong), "{} vs {}", nll(&labels), nll(&wrong));
    // Single images give the same result as the batch.
    let one = net.features(&x.narrow(0, 2, 1).unwrap()).unwrap();
    assert_close_f32("batch of 1", &one, &feats.narrow(0, 2, 1).unwrap(), 1e-6);
    // Stand-in distance of a set with itself is 0; accuracy on u8 images.
    let px: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let ims: Vec<ImageU8> = px
        .chunks(32 * 32)
        .map(|c| {
            let d = c.iter().map(|v| ((v + 1.0) * 127.5).round() as u8).collect();
            ImageU8::gray(32, 32, d).unwrap()
        })
        .collect();
    let d = gddcm::metrics::standin::classifier_frechet_distance(&net, &ims, &ims, 3).unwrap();
    assert!(d.abs() < 1e-6, "classifier FD(a, a) = {d}");
    let acc = gddcm::metrics::standin::classifier_accuracy(&net, &ims, &labels, 3).unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert!(gddcm::metrics::standin::classifier_accuracy(&net, &ims, &labels[..2], 3).is_err());
    // Bad input shape is an error, not a panic.
    assert!(net.features(&Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu).unwrap()).is_err());
}

fn check_lpips(net: gddcm::metrics::lpips::LpipsNet, file: &str) {
    use gddcm::metrics::lpips::Lpips;
    let (_dir, path) = materialise(file);
    let model = Lpips::load_combined(net, &path).unwrap();
    let m = load(&format!("{file}.safetensors"));
    for sz in ["32", "64"] {
        let x0 = get(&m, &format!("in.x0_{sz}"));
        let x1 = get(&m, &format!("in.x1_{sz}"));
        let layers = model.layer_distances(x0, x1).unwrap();
        for (k, l) in layers.iter().enumerate() {
            let got: Vec<f64> = l.iter().map(|&v| v as f64).collect();
            assert_close(&format!("{file} res{k}_{sz}"), &got, &f64s(get(&m, &format!("dbg.res{k}_{sz}"))), 1e-6);
        }
        let got: Vec<f64> = model.forward(x0, x1).unwrap().into_iter().map(|v| v as f64).collect();
        assert_close(&format!("{file} dist_{sz}"), &got, &f64s(get(&m, &format!("out.dist_{sz}"))), 1e-6);
        assert_close(&format!("{file} dist_{sz} vs f64"), &got, &f64s(get(&m, &format!("out.dist_{sz}_f64"))), 1e-6);
        // Identical pairs give exactly 0.
        let same = model.forward(x0, x0).unwrap();
        assert!(same.iter().all(|&v| v == 0.0), "{file}: LPIPS(x, x) = {same:?}");
    }
    // The identical pair of the 32x32 set is exactly 0.
    let d = model.forward(get(&m, "in.x0_32"), get(&m, "in.x1_32")).unwrap();
    assert_eq!(d[3], 0.0);
    // Wrong shapes are errors.
    let small = Tensor::zeros((1, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(model.forward(&small, &small).is_err());
}

#[test]
fn lpips_alex_matches_reference() {
    check_lpips(gddcm::metrics::lpips::LpipsNet::Alex, "lpips_alex");
}

#[test]
fn lpips_vgg_matches_reference() {
    check_lpips(gddcm::metrics::lpips::LpipsNet::Vgg, "lpips_vgg");
}

#[test]
fn fid_inception_matches_pytorch_fid() {
    use gddcm::metrics::inception::FidInception;
    let (_dir, path) = materialise("fid_inception_v3");
    let net = FidInception::load(&path).unwrap();
    let m = load("fid_inception_v3.safetensors");
    let x = get(&m, "in.images");
    // Intermediate activations: per-channel means of every named module.
    let mut worst: Vec<(String, f64)> = Vec::new();
    let out = net
        .forward_with_taps(x, &mut |name, t| {
            if name == "input" {
                let got = t.narrow(0, 0, 1).unwrap().narrow(1, 0, 1).unwrap();
                let want = get(&m, "dbg.resized_input.img0");
                let d = (got - want).unwrap().abs().unwrap().max_all().unwrap();
                worst.push((name.into(), d.to_scalar::<f32>().unwrap() as f64));
                return Ok(());
            }
            if let Some(want) = m.get(&format!("dbg.{name}.chanmean")) {
                let got = t.mean((2, 3)).unwrap();
                let d = (got - want).unwrap().abs().unwrap().max_all().unwrap();
                worst.push((name.into(), d.to_scalar::<f32>().unwrap() as f64));
            }
            Ok(())
        })
        .unwrap();
    eprintln!("per-module max abs diff: {worst:?}");
    assert!(worst[0].1 < 1e-5, "resize: {worst:?}");
    assert!(worst.len() >= 15, "{worst:?}");
    assert!(worst.iter().all(|(_, d)| *d < 1e-3), "{worst:?}");
    assert_close_f32("pool3", &out.pool3, get(&m, "out.pool3"), 1e-3);
    assert_close_f32("logits", &out.logits, get(&m, "out.logits"), 5e-4);
    assert_close_f32("logits_unbiased", &out.logits_unbiased, get(&m, "out.logits_unbiased"), 5e-4);
    // The u8 route gives the same features (images_u8 / 255 == images).
    let u8s = get(&m, "in.images_u8");
    let all: Vec<u8> = u8s.flatten_all().unwrap().to_vec1().unwrap();
    let ims: Vec<ImageU8> =
        all.chunks(3 * 32 * 32).map(|c| ImageU8::from_chw(3, 32, 32, c.to_vec()).unwrap()).collect();
    // The u8 route (images_u8 / 255 == images) in batches of 2: the FID statistics' mean
    // equals the mean of the reference pool3 rows.
    let st = net.image_set_stats(&ims, 2, 2).unwrap();
    let want_pool = f64s(get(&m, "out.pool3"));
    let want_mu: Vec<f64> = (0..2048).map(|j| (0..4).map(|i| want_pool[i * 2048 + j]).sum::<f64>() / 4.0).collect();
    assert_close("pool3 mean from u8", &st.stats.mu, &want_mu, 1e-3);
    // FID of a set with itself is ~0 (4 samples: rank-deficient covariance).
    let d = fid::frechet_distance(&st.stats, &st.stats).unwrap();
    assert!(d.abs() < 1e-8, "FID(a, a) = {d}");
    // Inception Score from the reference unbiased logits equals the one of the port.
    let want_is = fid::inception_score(&f64s(get(&m, "out.logits_unbiased")), 4, 1008, 2).unwrap();
    let (is_mean, is_std) = st.inception_score;
    assert!((is_mean - want_is.0).abs() < 1e-4 && (is_std - want_is.1).abs() < 1e-4);
    assert!(is_mean >= 1.0 && is_std.is_finite(), "{is_mean} {is_std}");
}

#[test]
fn missing_weights_name_the_file() {
    use gddcm::metrics::{inception::FidInception, lpips, MetricsError};
    let dir = tempfile::tempdir().unwrap();
    // Either the real file is installed on this machine, or the error names it.
    match FidInception::from_weight_dirs(Some(dir.path())) {
        Ok(_) => {}
        Err(MetricsError::MissingWeights(m)) => {
            let msg = m.to_string();
            assert!(msg.contains("pt_inception-2015-12-05-6726825d.pth"), "{msg}");
            assert!(msg.contains("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"), "{msg}");
        }
        Err(e) => panic!("unexpected error {e}"),
    }
    for (net, file, url) in [
        (
            lpips::LpipsNet::Alex,
            "alexnet-owt-7be5be79.pth",
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        ),
        (lpips::LpipsNet::Vgg, "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    ] {
        match lpips::Lpips::from_weight_dirs(net, Some(dir.path())) {
            Ok(_) => {}
            Err(MetricsError::MissingWeights(m)) => {
                let msg = m.to_string();
                // The trunk is looked up first; if it exists, the lpips heads are missing.
                assert!((msg.contains(file) && msg.contains(url)) || msg.contains("lpips/weights/v0.1/"), "{msg}");
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    // A file that is not a checkpoint is a clear error, not a panic.
    let bogus = dir.path().join("pt_inception-2015-12-05-6726825d.pth");
    std::fs::write(&bogus, b"not a zip").unwrap();
    let err = FidInception::load(&bogus).unwrap_err().to_string();
    assert!(err.contains("pt_inception"), "{err}");
}

/// A tiny checkpoint written by `torch.save(sd, f, _use_new_zipfile_serialization=False)`
/// (torch 2.x, legacy format) for
/// `sd = OrderedDict(a.weight=arange(6.).reshape(2,3), b=tensor([0.5,-1,2,3], float16),
/// c=sd['a.weight'][1] (a view), n=tensor(7))`.
const LEGACY_PTH_HEX: &str = concat!(
    "80028a0a6cfc9c46f9206aa850192e80024de9032e80027d710028581000000070726f746f636f6c5f76657273696f6e",
    "71014de903580d0000006c6974746c655f656e6469616e710288580a000000747970655f73697a657371037d71042858",
    "0500000073686f727471054b025803000000696e7471064b0458040000006c6f6e6771074b0475752e800263636f6c6c",
    "656374696f6e730a4f726465726564446963740a710029527101285808000000612e776569676874710263746f726368",
    "2e5f7574696c730a5f72656275696c645f74656e736f725f76320a71032828580700000073746f72616765710463746f",
    "7263680a466c6f617453746f726167650a7105580e000000393339393135383837363936363471065803000000637075",
    "71074b064e747108514b004b024b038671094b034b0186710a8968002952710b74710c52710d580100000062710e6803",
    "2828680463746f7263680a48616c6653746f726167650a710f580e000000393339393134373235303339363871106807",
    "4b044e747111514b004b048571124b018571138968002952711474711552711658010000006371176803282868046805",
    "580e0000003933393931353838373639363634711868074b064e747119514b034b0385711a4b0185711b896800295271",
    "1c74711d52711e58010000006e711f68032828680463746f7263680a4c6f6e6753746f726167650a7120580e00000039",
    "33393931343732353331323332712168074b014e747122514b00292989680029527123747124527125752e80025d7100",
    "28580e00000039333939313437323530333936387101580e00000039333939313437323533313233327102580e000000",
    "39333939313538383736393636347103652e0400000000000000003800bc004000420100000000000000070000000000",
    "00000600000000000000000000000000803f0000004000004040000080400000a040",
);

#[test]
fn legacy_torch_checkpoints_are_read() {
    use gddcm::metrics::tensors::WeightFile;
    let hex: String = LEGACY_PTH_HEX.to_string();
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("legacy.pth");
    std::fs::write(&path, &bytes).unwrap();
    let w = WeightFile::open(&path).unwrap();
    let a = w.get("a.weight", &[2, 3]).unwrap();
    assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![0., 1., 2., 3., 4., 5.]);
    let b = w.get("b", &[4]).unwrap();
    assert_eq!(b.to_vec1::<f32>().unwrap(), vec![0.5, -1.0, 2.0, 3.0]);
    let c = w.get("c", &[3]).unwrap();
    assert_eq!(c.to_vec1::<f32>().unwrap(), vec![3., 4., 5.]);
    let n = w.get("n", &[]).unwrap();
    assert_eq!(n.to_scalar::<f32>().unwrap(), 7.0);
    assert!(w.try_get("missing").unwrap().is_none());
    assert!(w.get("a.weight", &[3, 2]).is_err());
    // Truncated files are errors, not panics.
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let r = WeightFile::open(&path).and_then(|w| w.get("n", &[]));
    assert!(r.is_err());
}

#[test]
fn sample_quality_tells_noise_from_garments() {
    use gddcm::metrics::samples::{pad_to_classifier, sample_quality};
    use gddcm::metrics::standin::ClassifierStandIn;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let net = ClassifierStandIn::load(root.join("models/classifier/model.safetensors")).unwrap();
    let real: Vec<ImageU8> = gddcm::data::image_folder(&root.join("assets/examples"), 1, usize::MAX)
        .unwrap()
        .images
        .iter()
        .map(|i| pad_to_classifier(&ImageU8::from_chw(1, i.height, i.width, i.data.clone()).unwrap()).unwrap())
        .collect();
    assert_eq!(real.len(), 8);
    // The first four real images as "samples": their distance is the floor by definition,
    // nothing is noise-like, and the classifier sees real garments.
    let q = sample_quality(&net, &real[..4], &real, 4).unwrap();
    assert_eq!((q.n_samples, q.n_reference), (4, 8));
    assert_eq!(q.classifier_fd, q.floor_fd);
    assert_eq!((q.noise_like, q.noise_like_fraction_reference), (0, 0.0));
    assert_eq!(q.predicted_class_histogram.iter().sum::<usize>(), 4);
    // Uniform noise (a fixed LCG): every image is noise-like and far from the garments.
    let mut state = 12345u64;
    let noise: Vec<ImageU8> = (0..4)
        .map(|_| {
            let data = (0..32 * 32)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (state >> 56) as u8
                })
                .collect();
            ImageU8::from_chw(1, 32, 32, data).unwrap()
        })
        .collect();
    let n = sample_quality(&net, &noise, &real, 4).unwrap();
    assert_eq!((n.noise_like, n.noise_like_fraction), (4, 1.0));
    assert!(n.mean_roughness > 3.0 * n.mean_roughness_reference, "{n:?}");
    assert!(n.classifier_fd > 2.0 * q.classifier_fd, "noise {} vs real {}", n.classifier_fd, q.classifier_fd);
    assert!(sample_quality(&net, &noise, &real[..3], 4).is_err(), "fewer reference images than samples");
}
