//! `evaluate` with a keep folder: an interrupted evaluation continues from the token files and
//! reconstructions it kept, recomputes only what is missing, and refuses files made with other
//! settings.

use candle_core::Device;
use gddcm::data::image_folder;
use gddcm::eval::{evaluate, EvalOptions, Metric};
use gddcm::profile::Settings;
use gddcm::zoo;

#[test]
fn evaluation_resumes_from_its_keep_folder() {
    let model = zoo::load("fmnist-edm", None, &candle_core::Device::Cpu).expect("bundled model fmnist-edm");
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/examples");
    let data = image_folder(&examples, 1, 3).unwrap();
    let settings = |n: u32| Settings { k: 16, n, ..model.profile().unwrap().unwrap_or_default() };
    let cfg = model.config(&settings(12)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("run");
    let opts = |resume: bool| EvalOptions {
        metrics: vec![Metric::Pixel],
        batch: 2,
        keep: Some(keep.clone()),
        resume,
        ..Default::default()
    };
    let dev = Device::Cpu;

    let first = evaluate(&model, &cfg, &data, &opts(false), &dev, None).unwrap();
    assert_eq!(first.images, 3);
    for name in &data.names {
        assert!(keep.join(format!("{name}.gddcm")).is_file() && keep.join(format!("{name}.png")).is_file());
    }

    // Everything kept: nothing recomputed (no speed to report), the same numbers.
    let again = evaluate(&model, &cfg, &data, &opts(true), &dev, None).unwrap();
    assert!(again.encode_images_per_s.is_nan() && again.decode_images_per_s.is_nan());
    assert_eq!((again.psnr, again.ssim, again.bpp), (first.psnr, first.ssim, first.bpp));

    // One image lost its reconstruction (an interrupted run): only it is recomputed; the kept
    // files of the others are not rewritten.
    let modified = |name: &str| std::fs::metadata(keep.join(name)).unwrap().modified().unwrap();
    let kept_before: Vec<_> = [0, 2].iter().map(|&i| modified(&format!("{}.gddcm", data.names[i]))).collect();
    std::fs::remove_file(keep.join(format!("{}.png", data.names[1]))).unwrap();
    let resumed = evaluate(&model, &cfg, &data, &opts(true), &dev, None).unwrap();
    assert!(resumed.encode_images_per_s.is_finite());
    assert!(keep.join(format!("{}.png", data.names[1])).is_file());
    let kept_after: Vec<_> = [0, 2].iter().map(|&i| modified(&format!("{}.gddcm", data.names[i]))).collect();
    assert_eq!(kept_before, kept_after);
    // (Re-encoding one image alone may break a near-tie differently than in a batch of two,
    // SPEC 5 G4, so the mean PSNR is compared loosely.)
    assert!((resumed.psnr.unwrap() - first.psnr.unwrap()).abs() < 1.0);

    // An I3 start (its index is per image, in each file) resumes too, and its index is
    // counted in the rate.
    let i3 = Settings { init: gddcm::profile::InitKind::I3, k0: 16, ..settings(12) };
    let cfg_i3 = model.config(&i3).unwrap();
    let opts_i3 = |resume: bool| EvalOptions { keep: Some(dir.path().join("i3")), ..opts(resume) };
    let a = evaluate(&model, &cfg_i3, &data, &opts_i3(false), &dev, None).unwrap();
    let b = evaluate(&model, &cfg_i3, &data, &opts_i3(true), &dev, None).unwrap();
    assert!(b.encode_images_per_s.is_nan() && (a.psnr, a.bpp) == (b.psnr, b.bpp));
    assert!((a.bpp - first.bpp - 4.0 / (28.0 * 28.0)).abs() < 1e-12, "{} vs {}", a.bpp, first.bpp);

    // Kept files from other settings are an error naming the file, not silently reused.
    let other = model.config(&settings(13)).unwrap();
    let err = evaluate(&model, &other, &data, &opts(true), &dev, None).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(".gddcm") && msg.contains("other settings"), "{msg}");
}
