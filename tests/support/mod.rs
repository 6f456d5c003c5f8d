//! Shared by the tests: the reference fixtures in `tests/fixtures/` (see its README.md), and
//! deterministic token sequences for the token-file tests.
//!
//! Fixtures of large networks do not store their random weights: their JSON holds a
//! `seeded_weights` recipe, and [`materialise`] regenerates the weights with the project's own
//! Philox generator (`gddcm::codebook::philox4x32_10`, the codebooks' generator of SPEC 5)
//! exactly as `tools/fixtures/seeded.py` drew them for the reference run.
#![allow(dead_code)] // each test file uses its own part

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use gddcm::codebook::philox4x32_10;

/// The Philox stream of fixture weights (0: codebooks, 1: initial noise; SPEC 5, 7).
pub const STREAM_FIXTURE_WEIGHTS: u32 = 2;

/// `tests/fixtures/<name>`; a missing file fails the test with the command that makes it.
pub fn fixture_path(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    assert!(
        p.is_file(),
        "fixture {} is missing: it is part of the repository (tests/fixtures/README.md says which \
         tools/fixtures script regenerates it)",
        p.display()
    );
    p
}

/// The JSON description of a fixture.
pub fn json(name: &str) -> serde_json::Value {
    let p = fixture_path(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
}

/// Element `e` of seeded tensor `t`: a uniform value in (−1, 1) with 24 random bits, exact in
/// f32 (tools/fixtures/seeded.py states the same rule).
pub fn seeded_values(seed: u64, t: u32, n: usize, offset: f64, scale: f64) -> Vec<f32> {
    let key = [seed as u32, (seed >> 32) as u32];
    let mut out = Vec::with_capacity(n);
    for q in 0..n.div_ceil(4) {
        let words = philox4x32_10([q as u32, t, 0, STREAM_FIXTURE_WEIGHTS], key);
        for w in words.iter().take(n - 4 * q) {
            let u = ((w >> 8) as f64 * 2.0 + 1.0) * 2f64.powi(-24) - 1.0;
            out.push((offset + scale * u) as f32);
        }
    }
    out
}

/// The tensors of a `seeded_weights` recipe, keyed `w.<key>`.
pub fn seeded_weights(recipe: &serde_json::Value) -> HashMap<String, Tensor> {
    let seed = recipe["seed"].as_u64().expect("seeded_weights.seed");
    assert_eq!(recipe["stream"].as_u64(), Some(STREAM_FIXTURE_WEIGHTS as u64), "seeded_weights.stream");
    let tensors = recipe["tensors"].as_array().expect("seeded_weights.tensors");
    let mut out = HashMap::with_capacity(tensors.len());
    for (t, spec) in tensors.iter().enumerate() {
        let key = spec["key"].as_str().expect("key");
        let shape: Vec<usize> =
            spec["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let (offset, scale) = (spec["offset"].as_f64().unwrap(), spec["scale"].as_f64().unwrap());
        let n = shape.iter().product::<usize>();
        let tensor = match spec["dtype"].as_str() {
            Some("F32") => Tensor::from_vec(seeded_values(seed, t as u32, n, offset, scale), shape, &Device::Cpu),
            Some("I64") => Tensor::from_vec(vec![offset as i64; n], shape, &Device::Cpu),
            other => panic!("{key}: seeded dtype {other:?} is not F32 or I64"),
        }
        .unwrap();
        out.insert(format!("w.{key}"), tensor);
    }
    out
}

/// Every tensor of fixture `name`: the committed `<name>.safetensors`, plus the weights of
/// its `seeded_weights` recipe when its JSON has one.
pub fn tensors(name: &str) -> HashMap<String, Tensor> {
    let meta = json(&format!("{name}.json"));
    let mut all = candle_core::safetensors::load(fixture_path(&format!("{name}.safetensors")), &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot read fixture {name}: {e}"));
    if !meta["seeded_weights"].is_null() {
        let seeded = seeded_weights(&meta["seeded_weights"]);
        for k in seeded.keys() {
            assert!(!all.contains_key(k), "{name}: {k} is both stored and seeded");
        }
        all.extend(seeded);
    }
    all
}

/// [`tensors`] as one file, as the loaders read it, written to a temporary folder (kept
/// alive by the returned guard).
pub fn materialise(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.safetensors"));
    candle_core::safetensors::save(&tensors(name), &path).unwrap();
    (dir, path)
}

/// Deterministic pseudo-random tokens below `k` (xorshift on `salt`), for token-file tests.
pub fn tokens(k: u32, n: u32, salt: u64) -> Vec<u32> {
    let mut s = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % u64::from(k)) as u32
        })
        .collect()
}
