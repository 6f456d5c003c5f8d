//! The codec's operating points from the command line (issue 17 items 2–4): several atoms per
//! step, `--point`, `--bpp` and `--psnr` over the default model's shipped ladder, read from
//! `gddcm models --json` so the tests follow the ladder as it grows.

mod cli_common;
use cli_common::{err, examples, ok};

use std::path::Path;
use std::process::{Command, Output};

fn gddcm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gddcm"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("run gddcm")
}

/// The default model's shipped points as `(id, file bytes)`, smallest files first: those rate
/// control chooses among (`rate_control = true`) or the others.
fn shipped_points(rate_control: bool) -> Vec<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(&ok(&gddcm(&["models", "--json"]))).unwrap();
    let edm = v.as_array().unwrap().iter().find(|m| m["name"] == "fmnist-edm").expect("fmnist-edm listed");
    let points: Vec<(u64, u64)> = edm["operating_points"]
        .as_array()
        .expect("operating_points listed")
        .iter()
        .filter(|p| p["rate_control"].as_bool() == Some(rate_control))
        .map(|p| (p["id"].as_u64().unwrap(), p["file_bytes"].as_u64().unwrap()))
        .collect();
    assert!(points.windows(2).all(|w| w[0].1 <= w[1].1), "smallest files first: {points:?}");
    points
}

/// The points rate control chooses among.
fn ladder() -> Vec<(u64, u64)> {
    let points = shipped_points(true);
    assert!(!points.is_empty(), "the default model ships operating points");
    points
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn bpp_takes_the_largest_point_that_fits_and_refuses_less_than_the_smallest() {
    let points = ladder();
    let (smallest, largest) = (points[0], points[points.len() - 1]);
    let bpp = |bytes: u64| (8 * bytes) as f64 / 784.0;
    let dir = tmp();
    // Below the smallest point: an error naming it, before any work.
    let below = format!("{}", bpp(smallest.1) * 0.99);
    let e = err(&gddcm(&["encode", &examples()[0], "-o", &s(dir.path()), "--bpp", &below]));
    assert!(e.contains("below the smallest operating point") && e.contains(&format!("point {}", smallest.0)), "{e}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing written");
    // Exactly the smallest point's rate: that point, in a file of exactly its size.
    let at = format!("{}", bpp(smallest.1));
    let out = ok(&gddcm(&["encode", &examples()[0], "-o", &s(dir.path()), "--bpp", &at, "--quiet"]));
    let file = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
    assert_eq!(std::fs::metadata(&file).unwrap().len(), smallest.1, "{out}");
    let shown = ok(&gddcm(&["inspect", &s(&file)]));
    assert!(shown.contains(&format!("operating point {}", smallest.0)), "{shown}");
    // A generous budget: the largest point.
    let dir2 = tmp();
    let out = ok(&gddcm(&["encode", &examples()[0], "-o", &s(dir2.path()), "--bpp", "64", "--quiet"]));
    assert!(out.contains(&format!("point {} ", largest.0)), "{out}");
    // A point marked off rate control (beaten by a point no larger) is never chosen, even at
    // exactly its own size: the budget goes to the largest rate-control point that fits.
    let beaten = shipped_points(false);
    assert!(!beaten.is_empty(), "fmnist-edm ships points off rate control (point 0)");
    for (id, bytes) in beaten {
        let want = points.iter().rev().find(|p| p.1 <= bytes).unwrap();
        let dir3 = tmp();
        let out = ok(&gddcm(&["encode", &examples()[0], "-o", &s(dir3.path()), "--bpp", &format!("{}", bpp(bytes))]));
        assert!(out.contains(&format!("point {} ", want.0)) && !out.contains(&format!("point {id} ")), "{out}");
    }
}

#[test]
fn psnr_takes_per_image_the_smallest_point_that_reaches_it_or_says_best_effort() {
    let points = ladder();
    let dir = tmp();
    let imgs = &examples()[..2];
    // Any reconstruction reaches 1 dB: the smallest point for every image.
    let out = ok(&gddcm(&["roundtrip", &imgs[0], &imgs[1], "-o", &s(dir.path()), "--psnr", "1", "--quiet"]));
    let rows: Vec<&str> = out.lines().skip(1).take(2).collect();
    for r in &rows {
        assert!(r.trim_end().ends_with(&format!(" {}", points[0].0)), "smallest point expected: {r}\n{out}");
    }
    // None reaches 99 dB: the largest point, said to be best effort.
    let dir = tmp();
    let o = gddcm(&["encode", &imgs[0], "-o", &s(dir.path()), "--psnr", "99", "--quiet"]);
    let stdout = ok(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("no shipped operating point reaches 99 dB"), "{stderr}");
    assert!(stdout.contains("best effort") && stdout.contains(&format!("point {} ", points[points.len() - 1].0)));
    // A target is a whole preset: no tokenizer flag with it.
    assert!(err(&gddcm(&["encode", &imgs[0], "-o", &s(dir.path()), "--psnr", "30", "-n", "5"]))
        .contains("cannot be used with"));
    assert!(err(&gddcm(&["encode", &imgs[0], "-o", &s(dir.path()), "--psnr", "nan"])).contains("finite"));
}

#[test]
fn an_unknown_point_lists_the_shipped_ones() {
    let dir = tmp();
    let e = err(&gddcm(&["encode", &examples()[0], "-o", &s(dir.path()), "--point", "no-such-point"]));
    assert!(e.contains("has no operating point 'no-such-point'") && e.contains("0 '"), "{e}");
}

#[test]
fn several_atoms_per_step_from_the_command_line() {
    // Turbo-DDCM's top-M (⌈log2 C(256, 3)⌉ = 22 bits of rank) and matching pursuit: a version-3 file that decodes to the encoder's
    // reconstruction (roundtrip decodes from the file) and says its rule.
    for (rule, bits) in [("topm:3", 22 + 3), ("pursuit:2:3", 2 * 8 + 3)] {
        let dir = tmp();
        let out = ok(&gddcm(&[
            "roundtrip",
            &examples()[0],
            "-o",
            &s(dir.path()),
            "-n",
            "6",
            "-p",
            "0.5",
            "--t-start",
            "10",
            "--atoms",
            rule,
            "--quiet",
        ]));
        assert!(out.contains("mean"), "{out}");
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "gddcm"))
            .unwrap();
        let shown = ok(&gddcm(&["inspect", &s(&file)]));
        assert!(shown.contains("format version 3") && shown.contains(rule), "{shown}");
        assert!(shown.contains(&format!("payload {} bits", 6 * bits)), "{rule}: {shown}");
    }
    let e = err(&gddcm(&["encode", &examples()[0], "-o", "unused-out", "--atoms", "topm:0"]));
    assert!(e.contains("top-M needs 1 ≤ M"), "{e}");
}
