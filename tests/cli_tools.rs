//! `gddcm search`, `rd` and `bench` reject bad input with a clear message (and no panic)
//! before touching a model.

use std::process::Command;

fn gddcm(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gddcm")).args(args).output().expect("run gddcm");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Each command must fail with an error (not a panic) that contains its expected text.
fn expect_errors(cases: &[(&[&str], &str)]) {
    for (args, want) in cases {
        let (ok, err) = gddcm(args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(want), "{args:?}: expected '{want}' in: {err}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["search", "-p", "1.0"], "--p must be in [0, 1)"),
        (&["search", "--fix-p"], "--fix-p needs a p > 0"),
        (&["search", "--trials", "0", "--refine", "0"], "nothing to do"),
        (&["rd", "-k", "1,16"], "every K must be at least 2"),
        (&["rd", "-p", "0,1.5"], "every p must be in [0, 1)"),
        (&["rd", "-n", "0"], "every N must be at least 1"),
        (&["bench", "-n", "0"], "N must be at least 1"),
        (&["bench", "--batch", "0"], "batch sizes must be at least 1"),
        (&["search", "--model", "no-such-model"], "unknown model 'no-such-model'"),
        (&["search", "--start", "no-such-profile.json"], "no-such-profile.json"),
    ];
    expect_errors(cases);
}

#[test]
fn rd_codec_arguments_are_checked_before_any_work() {
    let cases: &[(&[&str], &str)] = &[
        (&["rd", "--codecs", "jpeg,png"], "unknown codec 'png' in --codecs (jpeg, webp, avif, jxl or all)"),
        (&["rd", "--codecs", "jpeg", "-k", "16"], "cannot be used with"),
        (&["rd", "--codecs", "jpeg", "--levels", "jpeg=0,50"], "0 is outside the range of cjpeg -quality"),
        (&["rd", "--codecs", "jpeg", "--levels", "webp=50"], "--levels: webp is not among the codecs of this run"),
        (&["rd", "--codecs", "jpeg", "--levels", "jpeg"], "expected CODEC=VALUE"),
    ];
    expect_errors(cases);
}

/// A model folder without operating_points.json has no ladder.
#[test]
fn rd_ladder_needs_operating_points() {
    let dir = tempfile::tempdir().unwrap();
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/edm");
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(models.join(f), dir.path().join(f)).unwrap();
    }
    let (ok, err) = gddcm(&["rd", "--ladder", "-m", "fmnist-edm", "--weights", dir.path().to_str().unwrap()]);
    assert!(!ok && err.contains("model 'fmnist-edm' ships no operating points"), "{err}");
}

/// A codec asked for by name whose tool is not on PATH is an error naming the tool and its
/// Debian package, before any work; with `all` it is skipped with a note.
#[test]
fn rd_missing_codec_tools() {
    let empty = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = |codecs: &str| {
        Command::new(env!("CARGO_BIN_EXE_gddcm"))
            .args(["rd", "--codecs", codecs, "--limit", "2", "-o"])
            .arg(out.path().join("rd"))
            .env("PATH", empty.path())
            .output()
            .expect("run gddcm")
    };
    let o = run("webp");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("`cwebp` not found") && err.contains("apt-get install webp"), "{err}");
    assert!(!out.path().join("rd").exists(), "nothing is written before the check");
    let o = run("all");
    let (stdout, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!o.status.success() && err.contains("none of the codecs of --codecs is installed"), "{err}");
    for package in ["libjpeg-turbo-progs", "webp", "libavif-bin", "libjxl-tools"] {
        assert!(stdout.contains(&format!("apt-get install {package}")), "{stdout}");
    }
}

/// The class-likelihood objective needs labels: images from a folder have none, which is said
/// before the first trial.
#[test]
fn search_for_the_class_needs_labelled_images() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/examples");
    let args = ["search", "--data", examples.to_str().unwrap(), "--val", "2", "-k", "4", "-n", "3"];
    let args =
        [&args[..], &["--objective", "classifier-nll", "--trials", "1", "--refine", "0", "-o", "/nonexistent/x.json"]]
            .concat();
    expect_errors(&[(&args, "needs a label for every validation image; 2 of 2 have none")]);
}

/// `search --start FILE --x-ref mean --score-region image` starts from that profile and keeps
/// both fixed options in every trial and in the best settings it writes.
#[test]
fn search_starts_from_a_profile_and_keeps_its_fixed_options() {
    let dir = tempfile::tempdir().unwrap();
    let start = dir.path().join("start.json");
    std::fs::write(&start, r#"{"k": 4, "n": 3, "p": 0.0, "t_start": 0.3, "sampler_steps": 0, "init": "i2"}"#).unwrap();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/examples");
    let out = dir.path().join("best.json");
    let log = dir.path().join("log.json");
    let o = Command::new(env!("CARGO_BIN_EXE_gddcm"))
        .args(["search", "-m", "fmnist-edm", "--data", examples.to_str().unwrap(), "--val", "1", "-k", "4", "-n", "3"])
        .args(["--trials", "1", "--refine", "0", "--objective", "neg-psnr", "--quiet", "--x-ref", "mean"])
        .args(["--score-region", "image", "--start", start.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .args(["--log", log.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let best: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!((best["x_ref"].as_str(), best["score_region"].as_str()), (Some("mean"), Some("image")), "{best}");
    let log: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&log).unwrap()).unwrap();
    let trials = log["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2, "the start and one random trial: {log}");
    let first = &trials[0]["settings"];
    assert_eq!((first["t_start"].as_f64(), first["sampler_steps"].as_u64()), (Some(0.3), Some(0)), "{first}");
    assert!(trials.iter().all(|t| t["settings"]["x_ref"] == "mean" && t["settings"]["score_region"] == "image"));
    assert!(log["start"].as_str().unwrap().ends_with("start.json"), "{log}");
}
