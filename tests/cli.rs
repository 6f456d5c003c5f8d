//! The `gddcm` command as a user runs it, on the bundled default model and the committed
//! example images: exit codes, outputs, and clear errors for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gddcm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gddcm"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run gddcm")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "gddcm failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn err(out: &Output) -> String {
    assert!(!out.status.success(), "gddcm should have failed:\n{}", String::from_utf8_lossy(&out.stdout));
    let e = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!e.contains("panicked"), "a panic instead of an error: {e}");
    e
}

fn examples() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/examples");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{} is missing: {e}", dir.display()))
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".png"))
        .collect();
    v.sort();
    assert!(v.len() >= 2, "need committed example images in {}", dir.display());
    v
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
    // decode gives exactly the right half of the roundtrip's side-by-side image.
    let dec_dir = tmp.path().join("dec");
    ok(&gddcm(&["decode", &token.display().to_string(), "-o", &dec_dir.display().to_string(), "--quiet"]));
    let decoded = image::open(dec_dir.join(format!("{stem}.png"))).unwrap().into_luma8();
    let side = image::open(out_dir.join(format!("{stem}_roundtrip.png"))).unwrap().into_luma8();
    let (w, h) = decoded.dimensions();
    assert_eq!(side.dimensions(), (2 * w + 2, h));
    for y in 0..h {
        for x in 0..w {
            assert_eq!(decoded.get_pixel(x, y), side.get_pixel(w + 2 + x, y), "pixel {x},{y}");
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
