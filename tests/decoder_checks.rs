//! Issue 15, items 2, 5 and 8: which weights the decoder loads and says it loaded, the token
//! files it refuses before any work (hostile headers made here from a real file, checksummed,
//! with the right weights hash, so only the new checks stand between them and hours of
//! decoding), and a binary that finds its default model away from the source tree.
//!
//! `GDDCM_TEST_BIN` runs these tests against another `gddcm` binary (e.g. one built before the
//! fixes).

mod cli_common;
use cli_common::{err, ok};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use gddcm::format::{
    Algorithm, Family, FinalSampler, InitStrategy, MarginalSchedule, Parameterization, SamplerKind, ScheduleEntry,
    TokenFile, XRef,
};

fn bin() -> PathBuf {
    std::env::var_os("GDDCM_TEST_BIN").map(PathBuf::from).unwrap_or_else(|| env!("CARGO_BIN_EXE_gddcm").into())
}

/// Runs `cmd`, killing it after `limit`: `None` if it was still running.
fn run_for(mut cmd: Command, limit: Duration) -> Option<Output> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run gddcm");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn gddcm(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn run(cmd: Command) -> Output {
    run_for(cmd, Duration::from_secs(600)).expect("gddcm ran for 10 minutes")
}

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/examples/fmnist_test_0_9.png").display().to_string()
}

/// A real token file of the default model (Algorithm 2, N = 8, K = 16).
fn encoded(dir: &Path) -> PathBuf {
    encoded_with(dir, &[])
}

/// The example encoded at 8 tokens, K = 16, with fixed Algorithm-2 settings (EDM's first
/// searched profile: T_s σ 0.22, 6 intervals, I2 from zeros, the Heun sampler after), so the
/// counts below do not move when the shipped profile is searched again; `extra` flags on top.
fn encoded_with(dir: &Path, extra: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let profile = dir.join("settings.json");
    std::fs::write(
        &profile,
        r#"{"p": 0.0, "k": 16, "n": 8, "t_start": 0.2188940074522796, "intervals": 6, "dt_max": 0.5191031957848462,
            "dt_min": 0.007730163337528687, "sigma_max": 3.742891708206953, "rho": 4.166241476719733, "init": "i2"}"#,
    )
    .unwrap();
    let od = dir.join("enc").display().to_string();
    let ps = profile.display().to_string();
    let ex = example();
    let mut args = vec!["encode", &ex, "--profile", &ps, "--quiet", "-o", &od];
    args.extend_from_slice(extra);
    ok(&run(gddcm(&args)));
    dir.join("enc/fmnist_test_0_9.gddcm")
}

/// A folder holding another bundled model's weights (same architecture, other hash), under
/// the file names of the default model.
fn other_weights(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/ddpm");
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    dir.to_path_buf()
}

#[test]
fn a_wrong_weights_path_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out").display().to_string();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let es = empty.display().to_string();
    for (i, extra) in [&[][..], &["--x-ref", "mean"][..]].into_iter().enumerate() {
        let f = encoded_with(&tmp.path().join(format!("enc{i}")), extra).display().to_string();
        let e = err(&run(gddcm(&["decode", &f, "-o", &out, "--weights", "/does/not/exist", "--quiet"])));
        assert!(e.contains("/does/not/exist"), "{e}");
        // A folder that exists but lacks the files is named too, and nothing else is tried.
        let e = err(&run(gddcm(&["decode", &f, "-o", &out, "--weights", &es, "--quiet"])));
        assert!(e.contains(&es) && e.contains("diffusion_pytorch_model.safetensors"), "{e}");
    }
}

#[test]
fn a_stale_gddcm_home_does_not_shadow_the_bundled_model() {
    let tmp = tempfile::tempdir().unwrap();
    let f = encoded(&tmp.path().join("enc")).display().to_string();
    let home = tmp.path().join("home");
    other_weights(&home.join("fmnist-edm"));
    let out = tmp.path().join("out").display().to_string();
    let mut c = gddcm(&["decode", &f, "-o", &out, "--quiet"]);
    c.env("GDDCM_HOME", &home);
    ok(&run(c));
    let mut c = gddcm(&["encode", &example(), "-n", "8", "-k", "16", "--quiet", "-o", &out]);
    c.env("GDDCM_HOME", &home);
    ok(&run(c));
}

#[test]
fn a_weights_mismatch_names_where_the_weights_came_from_and_where_the_file_expects_them() {
    let tmp = tempfile::tempdir().unwrap();
    let other = other_weights(&tmp.path().join("other"));
    let out = tmp.path().join("out").display().to_string();
    let os = other.display().to_string();
    // Also for a file that starts from the model's shipped mean, which the other folder lacks:
    // the weights are the cause to name, not the reference image.
    for (i, extra) in [&[][..], &["--x-ref", "mean"][..]].into_iter().enumerate() {
        let f = encoded_with(&tmp.path().join(format!("enc{i}")), extra).display().to_string();
        let e = err(&run(gddcm(&["decode", &f, "-o", &out, "--weights", &os, "--quiet"])));
        assert!(e.contains(&other.join("diffusion_pytorch_model.safetensors").display().to_string()), "{e}");
        assert!(e.contains("expects its weights from") && e.contains("embedded"), "{e}");
    }
}

/// One hostile header: a change to the real file, what the error must say.
struct Case {
    what: &'static str,
    change: fn(&mut TokenFile),
    says: &'static [&'static str],
}

fn alg2(f: &mut TokenFile, schedule: Vec<ScheduleEntry>) {
    let n: u32 = schedule.iter().map(|e| e.repeats).sum();
    let t_s = match f.procedure.algorithm {
        Algorithm::Alg2 { t_s, .. } => t_s,
        _ => unreachable!("the default profile is Algorithm 2"),
    };
    f.procedure.k = 2;
    f.procedure.n = n;
    f.procedure.algorithm = Algorithm::Alg2 { t_s, schedule };
    f.tokens = vec![1; n as usize];
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "N = 2^20",
            change: |f| alg2(f, vec![ScheduleEntry { delta: 0.01, repeats: 1 << 20 }]),
            says: &["1048611 network evaluations", "limit of 4096", "--max-nfe"],
        },
        Case {
            what: "65536 schedule intervals",
            change: |f| alg2(f, vec![ScheduleEntry { delta: 0.01, repeats: 1 }; 65536]),
            says: &["network evaluations", "--max-nfe"],
        },
        Case {
            what: "65536 sampler steps",
            change: |f| f.procedure.sampler = FinalSampler { kind: SamplerKind::Heun, steps: 65536, rho: 7.0 },
            says: &["network evaluations", "--max-nfe"],
        },
        Case {
            what: "T_s = 1e300",
            change: |f| {
                if let Algorithm::Alg2 { t_s, .. } = &mut f.procedure.algorithm {
                    *t_s = 1e300;
                }
            },
            says: &["T_s = 1e300", "outside the model's time range (0, 80]"],
        },
        Case {
            what: "T_r = 1e300 (Algorithm 1)",
            change: |f| {
                f.procedure.p = 0.5;
                f.procedure.algorithm = Algorithm::Alg1 { t_r: 1e300, t_t: 0.002, rho: 7.0 };
            },
            says: &["T_r = 1e300", "outside the model's time range"],
        },
        Case {
            what: "a jump below the clean time",
            change: |f| alg2(f, vec![ScheduleEntry { delta: 50.0, repeats: 8 }]),
            says: &["Δ = 50", "outside the model's time range"],
        },
        Case { what: "DDPM family", change: |f| f.model.family = Family::Ddpm, says: &["model.family"] },
        Case {
            what: "velocity parameterisation",
            change: |f| f.model.parameterization = Parameterization::Velocity,
            says: &["model.parameterization"],
        },
        Case {
            what: "DDPM schedule",
            change: |f| f.model.schedule = MarginalSchedule::DdpmLinear { t: 1000 },
            says: &["model.schedule"],
        },
        Case { what: "value range", change: |f| f.image.lo = 0.0, says: &["value range"] },
        Case { what: "3 channels", change: |f| f.image.channels = 3, says: &["3-channel"] },
        Case { what: "a 30×28 image", change: |f| f.image.width = 30, says: &["30×28"] },
        Case {
            what: "a reference image the model does not ship",
            change: |f| f.procedure.init = InitStrategy::I2 { x_ref: XRef::Image { sha256: [0xee; 32] } },
            says: &[
                "procedure.init.x_ref",
                "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
                "looked in the copy of fmnist-edm embedded in this gddcm binary",
            ],
        },
        Case {
            what: "an unnamed dataset mean",
            change: |f| f.procedure.init = InitStrategy::I2 { x_ref: XRef::DatasetMean },
            says: &["x_ref tag 1", "no decoder can reproduce it"],
        },
    ]
}

#[test]
fn hostile_headers_are_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let real = TokenFile::read(encoded(tmp.path())).unwrap();
    let out = tmp.path().join("out").display().to_string();
    let mut failures = Vec::new();
    for case in cases() {
        let mut f = real.clone();
        (case.change)(&mut f);
        let bytes = f.to_bytes().unwrap_or_else(|e| panic!("{}: {e}", case.what));
        assert!(bytes.len() <= 1 << 20, "{}: {} bytes", case.what, bytes.len());
        let path = tmp.path().join("hostile.gddcm");
        std::fs::write(&path, &bytes).unwrap();
        let ps = path.display().to_string();
        let start = Instant::now();
        match run_for(gddcm(&["decode", &ps, "-o", &out, "--quiet"]), Duration::from_secs(30)) {
            None => failures.push(format!("{}: still decoding after 30 s", case.what)),
            Some(o) if o.status.success() => failures.push(format!("{}: decoded (exit 0)", case.what)),
            Some(o) => {
                let e = String::from_utf8_lossy(&o.stderr).into_owned();
                if e.contains("panicked") || !case.says.iter().all(|s| e.contains(s)) || !e.contains("hostile.gddcm") {
                    failures.push(format!("{}: wrong error: {e}", case.what));
                } else if start.elapsed() > Duration::from_secs(10) {
                    failures.push(format!("{}: refused only after {:?}", case.what, start.elapsed()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn max_nfe_is_stated_and_overridable() {
    let tmp = tempfile::tempdir().unwrap();
    let f = encoded(tmp.path()).display().to_string();
    let out = tmp.path().join("out").display().to_string();
    // The real file: 8 tokens and EDM's Heun sampler from T_s (17 steps: 8 + 18 + 17 = 43).
    let e = err(&run(gddcm(&["decode", &f, "-o", &out, "--max-nfe", "42", "--quiet"])));
    assert!(e.contains("43 network evaluations") && e.contains("limit of 42"), "{e}");
    ok(&run(gddcm(&["decode", &f, "-o", &out, "--max-nfe", "43", "--quiet"])));
}

/// Item 8: a copy of the binary in another folder, run from elsewhere with the compiled-in
/// source tree ignored (as after `cargo install` and moving the clone away), has its default
/// model, says where each model was found, and says where it looked for the others.
#[test]
fn a_binary_away_from_the_source_tree_has_its_default_model() {
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("bin/gddcm");
    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
    std::fs::copy(bin(), &b).unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::copy(example(), work.join("photo.png")).unwrap();
    let home = tmp.path().join("home");
    let cmd = |args: &[&str]| {
        let mut c = Command::new(&b);
        c.args(args)
            .current_dir(&work)
            .env("GDDCM_NO_SOURCE_TREE", "1")
            .env("GDDCM_HOME", &home)
            .env("HOME", &home)
            .env("HF_HOME", home.join("hf"));
        c
    };
    let v: serde_json::Value = serde_json::from_str(&ok(&run(cmd(&["models", "--json"])))).unwrap();
    let model = |name: &str| v.as_array().unwrap().iter().find(|e| e["name"] == name).unwrap().clone();
    assert_eq!(model("fmnist-edm")["found"], "embedded", "{v:#}");
    assert_eq!(model("fmnist-edm")["available"], true);
    let ddpm = model("fmnist-ddpm");
    assert_eq!(ddpm["available"], false, "{ddpm:#}");
    assert_eq!(ddpm["searched"][0], home.join("fmnist-ddpm").display().to_string(), "{ddpm:#}");
    let text = ok(&run(cmd(&["models"])));
    assert!(
        text.contains("embedded") && text.contains(&format!("looked in {}", home.join("fmnist-ddpm").display())),
        "{text}"
    );
    // The main job works with the default model; a missing model says where to put it.
    let stdout = ok(&run(cmd(&["roundtrip", "photo.png", "-n", "8", "-k", "16", "-o", "out", "--quiet"])));
    assert!(stdout.contains("mean") && stdout.contains("embedded"), "{stdout}");
    ok(&run(cmd(&["decode", "out/photo.gddcm", "-o", "dec", "--quiet"])));
    assert!(work.join("dec/photo.png").is_file());
    // The training-set mean x_ref (SPEC 7) is embedded too: the binary alone decodes such files.
    let args = ["encode", "photo.png", "-n", "8", "-k", "16", "--init", "i2", "--x-ref", "mean", "-o", "mean"];
    ok(&run(cmd(&[&args[..], &["--quiet"]].concat())));
    ok(&run(cmd(&["decode", "mean/photo.gddcm", "-o", "mean-dec", "--quiet"])));
    assert!(work.join("mean-dec/photo.png").is_file());
    let text = ok(&run(cmd(&["inspect", "mean/photo.gddcm"])));
    assert!(text.contains("training-set mean") && text.contains("embedded"), "{text}");
    let e = err(&run(cmd(&["encode", "photo.png", "-m", "fmnist-ddpm", "-o", "out"])));
    assert!(e.contains(&home.join("fmnist-ddpm").display().to_string()) && e.contains("--weights"), "{e}");
}
