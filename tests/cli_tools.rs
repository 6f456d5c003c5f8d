//! `gddcm search`, `rd` and `bench` reject bad input with a clear message (and no panic)
//! before touching a model.

use std::process::Command;

fn gddcm(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gddcm")).args(args).output().expect("run gddcm");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
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
    ];
    for (args, want) in cases {
        let (ok, err) = gddcm(args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(want), "{args:?}: expected '{want}' in: {err}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
}
