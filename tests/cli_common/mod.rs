//! What the tests that run the `gddcm` binary share: reading its exit status and output.
#![allow(dead_code)] // each test file uses its own part

use std::path::Path;
use std::process::Output;

/// The standard output of a run that must have succeeded (else both streams, in the failure).
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "gddcm failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The standard error of a run that must have failed with an error, not a panic.
pub fn err(out: &Output) -> String {
    assert!(!out.status.success(), "gddcm should have failed:\n{}", String::from_utf8_lossy(&out.stdout));
    let e = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!e.contains("panicked"), "a panic instead of an error: {e}");
    e
}

/// The committed example images (`assets/examples/*.png`), sorted.
pub fn examples() -> Vec<String> {
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
