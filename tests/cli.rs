//! The `gddcm` command as a user runs it, on the bundled default model and the committed
//! example images: exit codes, outputs, and clear errors for bad input.

mod cli_common;
use cli_common::{err, examples, ok};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gddcm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gddcm"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run gddcm")
}

#[test]
fn roundtrip_decode_inspect_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("rt");
    let ex = examples();
    let mut args = vec!["roundtrip", ex[0].as_str(), ex[1].as_str(), "-n", "12", "-k", "16", "--quiet", "-o"];
    let od = out_dir.display().to_string();
    args.push(&od);
    let stdout = ok(&gddcm(&args));
    assert!(stdout.contains("mean"), "{stdout}");
    let stem = Path::new(&ex[0]).file_stem().unwrap().to_string_lossy().into_owned();
    let token = out_dir.join(format!("{stem}.gddcm"));
    // inspect --json shows the procedure and the 12 tokens.
    let json: serde_json::Value =
        serde_json::from_str(&ok(&gddcm(&["inspect", "--json", &token.display().to_string()]))).unwrap();
    assert_eq!(json["tokens"].as_array().unwrap().len(), 12);
    assert_eq!(json["procedure"]["k"], 16);
    // decode gives exactly the right half of the roundtrip's side-by-side image, which shows
    // the pixels scaled up s times (nearest neighbour) below a caption strip, a 2s separator
    // between the two.
    let dec_dir = tmp.path().join("dec");
    ok(&gddcm(&["decode", &token.display().to_string(), "-o", &dec_dir.display().to_string(), "--quiet"]));
    let decoded = image::open(dec_dir.join(format!("{stem}.png"))).unwrap().into_luma8();
    let side = image::open(out_dir.join(format!("{stem}_roundtrip.png"))).unwrap().into_luma8();
    let (w, h) = decoded.dimensions();
    let s = (224 / w.max(h)).max(1);
    assert_eq!(side.width(), 2 * w * s + 2 * s);
    let strip = side.height() - h * s;
    for y in 0..h {
        for x in 0..w {
            for (dx, dy) in [(0, 0), (s - 1, s - 1)] {
                let (sx, sy) = (w * s + 2 * s + x * s + dx, strip + y * s + dy);
                assert_eq!(decoded.get_pixel(x, y), side.get_pixel(sx, sy), "pixel {x},{y}");
            }
        }
    }
}

#[test]
fn bad_inputs_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    // A truncated token file.
    let ex = examples();
    let od = tmp.path().display().to_string();
    ok(&gddcm(&["encode", &ex[0], "-n", "4", "-k", "4", "--quiet", "-o", &od]));
    let token: PathBuf = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "gddcm"))
        .unwrap();
    let bytes = std::fs::read(&token).unwrap();
    let cut = tmp.path().join("cut.gddcm");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = err(&gddcm(&["decode", &cut.display().to_string(), "-o", &od]));
    assert!(e.contains("cut.gddcm") && e.contains("truncated"), "{e}");
    // Not an image.
    let e = err(&gddcm(&["encode", &token.display().to_string(), "-o", &od]));
    assert!(e.contains("not a readable PNG/JPEG"), "{e}");
    // Unknown model, missing weights, bad parameters.
    let e = err(&gddcm(&["encode", &ex[0], "-m", "nope", "-o", &od]));
    assert!(e.contains("unknown model 'nope'") && e.contains("fmnist-edm"), "{e}");
    let e = err(&gddcm(&["encode", &ex[0], "-m", "ddpm-cifar10", "-o", &od]));
    assert!(e.contains("huggingface.co/google/ddpm-cifar10-32"), "{e}");
    let e = err(&gddcm(&["encode", &ex[0], "-p", "1.0", "-o", &od]));
    assert!(e.contains("p must be in [0, 1)"), "{e}");
    let e = err(&gddcm(&["encode", &ex[0], "-k", "1", "-o", &od]));
    assert!(e.contains("K must be at least 2"), "{e}");
}

#[test]
fn models_lists_the_bundled_ones_as_present() {
    let v: serde_json::Value = serde_json::from_str(&ok(&gddcm(&["models", "--json"]))).unwrap();
    for name in ["fmnist-edm", "fmnist-ddpm", "fmnist-cm", "fmnist-rf"] {
        let e = v.as_array().unwrap().iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("{name} not listed"));
        assert_eq!(e["available"], true, "bundled model {name} should be present in models/");
    }
}

/// The one token file a run wrote into `dir`, and `inspect --json` and `inspect` of it.
fn inspect_only_file(dir: &Path) -> (serde_json::Value, String) {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gddcm"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let f = files[0].display().to_string();
    (serde_json::from_str(&ok(&gddcm(&["inspect", "--json", &f]))).unwrap(), ok(&gddcm(&["inspect", &f])))
}

/// Issue 16: `-p 0.5` on a model whose shipped profile is for p = 0 must start from the
/// p = 0.5 defaults (SPEC 2.5, 7: T_r = the largest time, I1), not keep the profile's T_s = 0.22
/// and I2 as Algorithm 1's T_r and init.
#[test]
fn p_half_starts_from_its_own_defaults_not_the_p0_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let ex = examples();
    let dir = tmp.path().join("half");
    let od = dir.display().to_string();
    let stdout = ok(&gddcm(&["roundtrip", &ex[0], "-p", "0.5", "-n", "4", "-k", "4", "--quiet", "-o", &od]));
    assert!(stdout.contains("settings: defaults for p = 0.5"), "{stdout}");
    let (json, text) = inspect_only_file(&dir);
    let pr = &json["procedure"];
    assert_eq!(pr["p"], 0.5);
    assert_eq!(pr["n"], 4);
    // fmnist-edm: T_r = σ_max = 80, T_t = 0.002, ρ = 7 (SPEC 2.5), I1 (Settings::default).
    assert_eq!(pr["algorithm"]["Alg1"]["t_r"], 80.0, "{pr}");
    assert_eq!(pr["algorithm"]["Alg1"]["t_t"], 0.002, "{pr}");
    assert_eq!(pr["init"], "I1", "{pr}");
    assert!(text.contains("defaults for p = 0.5"), "{text}");
    // Without -p the shipped p = 0 profile applies, and both the run and inspect say so.
    let dir0 = tmp.path().join("zero");
    let od0 = dir0.display().to_string();
    let stdout = ok(&gddcm(&["encode", &ex[0], "-n", "4", "-k", "4", "--quiet", "-o", &od0]));
    assert!(stdout.contains("settings: shipped profile of fmnist-edm"), "{stdout}");
    let (json, text) = inspect_only_file(&dir0);
    assert!(json["procedure"]["algorithm"]["Alg2"]["t_s"].as_f64().unwrap() < 1.0, "{json}");
    assert!(text.contains("shipped profile of fmnist-edm"), "{text}");
    // An explicit profile for the other algorithm is refused rather than mixed.
    let e = err(&gddcm(&["encode", &ex[0], "--profile", "models/edm/profile.json", "-p", "0.5", "-o", &od]));
    assert!(e.contains("models/edm/profile.json") && e.contains("p = 0"), "{e}");
}

/// Issue 16: `--ddcm` is exactly `Config::ddcm` (SPEC 4), whatever the model's shipped profile
/// says (fmnist-ddpm's is I3), and refuses the flags that would change it.
#[test]
fn ddcm_is_exactly_the_spec4_baseline() {
    let tmp = tempfile::tempdir().unwrap();
    let ex = examples();
    let od = tmp.path().display().to_string();
    let stdout = ok(&gddcm(&["encode", &ex[0], "-m", "fmnist-ddpm", "--ddcm", "-k", "4", "--quiet", "-o", &od]));
    assert!(stdout.contains("settings: DDCM baseline (SPEC 4)"), "{stdout}");
    let (json, text) = inspect_only_file(tmp.path());
    let pr = &json["procedure"];
    assert_eq!(pr["k"], 4);
    assert_eq!(pr["n"], 300);
    assert_eq!(pr["p"], 0.5);
    assert_eq!(pr["seed"], 0x6464_636d_u64, "the default codebook seed");
    assert_eq!(pr["mixing"], "SigmaBig");
    assert_eq!(pr["algorithm"]["Alg1"], serde_json::json!({ "t_r": 999.0, "t_t": 0.0, "rho": 1.0 }), "{pr}");
    assert_eq!(pr["init"], "I1", "{pr}");
    assert!(text.contains("DDCM baseline (SPEC 4)"), "{text}");
    for flag in [["-n", "12"], ["--init", "i3"], ["--t-start", "500"]] {
        let e = err(&gddcm(&["encode", &ex[0], "-m", "fmnist-ddpm", "--ddcm", flag[0], flag[1], "-o", &od]));
        assert!(e.contains("--ddcm") && e.contains(flag[0]), "{e}");
    }
}

/// Issue 17: the default settings are a shipped operating point, so the files are compact
/// (300 token bytes + 8, 3.14 bpp instead of 503 bytes); other settings keep the full header;
/// both decode, and inspect says which form.
#[test]
fn shipped_operating_points_write_compact_files() {
    let tmp = tempfile::tempdir().unwrap();
    let ex = examples();
    // fmnist-edm names a default operating point (11: Algorithm 1 with p = 0.5 searched, 300
    // token bytes, 1 byte of I3 index, 8 of container); fmnist-ddpm names point 7 (Algorithm 1
    // searched at N = 300).
    for (model, bytes, point) in [("fmnist-edm", 309u64, 11), ("fmnist-ddpm", 309, 7)] {
        let dir = tmp.path().join(model);
        let od = dir.display().to_string();
        let stdout = ok(&gddcm(&["roundtrip", &ex[0], "-m", model, "--quiet", "-o", &od]));
        // File bits per pixel come first.
        let header: Vec<&str> = stdout.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header[..3], ["image", "file", "bpp"], "{stdout}");
        let bpp = format!("{:.4}", bytes as f64 * 8.0 / 784.0);
        assert!(stdout.lines().nth(1).unwrap().split_whitespace().nth(1) == Some(bpp.as_str()), "{stdout}");
        let (json, text) = inspect_only_file(&dir);
        let c = &json["container"];
        assert_eq!(
            (c["form"].as_str(), c["file_bytes"].as_u64(), c["overhead_bytes"].as_u64()),
            (Some("compact"), Some(bytes), Some(8)),
            "{json}"
        );
        assert_eq!(json["procedure"]["k"], 256);
        assert!(text.contains("compact v1") && text.contains(&format!("operating point {point}")), "{text}");
        assert!(text.contains(&format!("shipped operating point {point} of {model}")), "{text}");
    }
    // Other settings: the full header, which still decodes.
    let dir = tmp.path().join("full");
    let od = dir.display().to_string();
    ok(&gddcm(&["encode", &ex[0], "--seed", "1", "-n", "4", "-k", "4", "--quiet", "-o", &od]));
    let (json, text) = inspect_only_file(&dir);
    assert_eq!(json["container"]["form"], "full", "{json}");
    assert!(text.contains("full header"), "{text}");
}

#[test]
fn sample_quality_writes_its_numbers_and_checks_before_sampling() {
    let tmp = tempfile::tempdir().unwrap();
    let (png, json) = (tmp.path().join("s.png"), tmp.path().join("q.json"));
    let (png_s, json_s) = (png.display().to_string(), json.display().to_string());
    let base = ["sample", "-m", "fmnist-cm", "--quiet", "--quality", "--reference", "assets/examples"];
    // More samples than reference images, and --json without --quality: refused, nothing written.
    let e = err(&gddcm(&[&base[..], &["-n", "9", "-o", &png_s]].concat()));
    assert!(e.contains("has 8"), "{e}");
    let e = err(&gddcm(&["sample", "-m", "fmnist-cm", "-n", "2", "--json", &json_s, "-o", &png_s]));
    assert!(e.contains("--quality"), "{e}");
    let e = err(&gddcm(&[&base[..], &["-n", "1", "-o", &png_s]].concat()));
    assert!(e.contains("at least 2 samples"), "{e}");
    assert!(!png.exists() && !json.exists());

    let out = ok(&gddcm(&[&base[..], &["-n", "4", "--grid", "4", "-o", &png_s, "--json", &json_s]].concat()));
    assert!(out.contains("noise-like samples"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let q = &v["quality"];
    assert_eq!((q["n_samples"].as_u64(), q["n_reference"].as_u64()), (Some(4), Some(8)));
    let fd = q["classifier_fd"].as_f64().unwrap();
    assert!(fd.is_finite() && fd > 0.0, "{q}");
    let hist: u64 = q["predicted_class_histogram"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum();
    assert_eq!(hist, 4);
    assert_eq!(v["model"], "fmnist-cm");
    // The grid: 2×2 samples of 32×32.
    assert_eq!(image::image_dimensions(&png).unwrap(), (64, 64));
}
