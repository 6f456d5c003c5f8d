//! The first hour of a real user (issue 15, CLI items): no silent data loss, settings and
//! outputs checked before any work, clear and safe messages, photos of any size.
//! Every hostile input is made by the test itself.

mod cli_common;
use cli_common::{err, ok};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test; `GDDCM_TEST_BIN` runs these tests against another build (e.g. one
/// from before a fix, to see them fail).
fn bin() -> Command {
    let exe = std::env::var_os("GDDCM_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_gddcm").into());
    let mut c = Command::new(exe);
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn gddcm(args: &[&str]) -> Output {
    bin().args(args).output().expect("run gddcm")
}

/// Runs gddcm, killing it after `limit`: a check meant to come before the work must not wait
/// for the work.
fn gddcm_within(args: &[&str], limit: Duration) -> Output {
    let mut child = bin().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run gddcm");
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "gddcm {args:?} still ran after {limit:?} (the check came after the work): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/examples").join(first_example()).display().to_string()
}

fn first_example() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/examples");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|p| p.ends_with(".png"))
        .collect();
    v.sort();
    v.remove(0)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A token file of the example, K = 4, N = 4, in `dir`.
fn token_file(dir: &Path) -> PathBuf {
    ok(&gddcm(&["encode", &example(), "-n", "4", "-k", "4", "--quiet", "-o", &s(dir)]));
    let stem = Path::new(&first_example()).file_stem().unwrap().to_string_lossy().into_owned();
    dir.join(format!("{stem}.gddcm"))
}

/// Item 1: inputs with one file stem would write one output; an existing output is kept.
#[test]
fn same_stem_inputs_and_existing_outputs_are_refused_before_work() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::copy(example(), a.join("x.png")).unwrap();
    std::fs::copy(example(), b.join("x.png")).unwrap();
    let (ax, bx) = (s(&a.join("x.png")), s(&b.join("x.png")));
    let out = tmp.path().join("o");
    for cmd in ["encode", "roundtrip"] {
        let e = err(&gddcm_within(
            &[cmd, &ax, &bx, "-n", "4", "-k", "4", "--quiet", "-o", &s(&out)],
            Duration::from_secs(20),
        ));
        assert!(e.contains(&ax) && e.contains(&bx), "{cmd}: the error names both inputs: {e}");
        assert!(!out.exists(), "{cmd}: nothing written");
    }
    // decode a/x.gddcm b/x.gddcm
    let ta = token_file(&a);
    let tb = b.join(ta.file_name().unwrap());
    std::fs::copy(&ta, &tb).unwrap();
    let e = err(&gddcm(&["decode", &s(&ta), &s(&tb), "--quiet", "-o", &s(&out)]));
    assert!(e.contains(&s(&ta)) && e.contains(&s(&tb)), "{e}");
    // An existing output is not overwritten without --force, whichever command.
    let dec = tmp.path().join("dec");
    ok(&gddcm(&["decode", &s(&ta), "--quiet", "-o", &s(&dec)]));
    let png = dec.join(ta.with_extension("png").file_name().unwrap());
    std::fs::write(&png, b"keep me").unwrap();
    let e = err(&gddcm(&["decode", &s(&ta), "--quiet", "-o", &s(&dec)]));
    assert!(e.contains(&s(&png)) && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(&png).unwrap(), b"keep me");
    ok(&gddcm(&["decode", &s(&ta), "--quiet", "--force", "-o", &s(&dec)]));
    assert_ne!(std::fs::read(&png).unwrap(), b"keep me");
    let e = err(&gddcm_within(&["encode", &example(), "--quiet", "-o", &s(&a)], Duration::from_secs(20)));
    assert!(e.contains(&s(&ta)) && e.contains("--force"), "{e}");
    ok(&gddcm(&["encode", &example(), "-n", "4", "-k", "4", "--quiet", "--force", "-o", &s(&a)]));
}

/// Item 3: a K the token file cannot hold, and an output folder that cannot be written, fail
/// at once (K = 2^24 + 1 used to encode for a minute first).
#[test]
fn limits_and_output_folders_are_checked_before_work() {
    let tmp = tempfile::tempdir().unwrap();
    let out = s(&tmp.path().join("o"));
    let e =
        err(&gddcm_within(&["encode", &example(), "-k", "16777217", "--quiet", "-o", &out], Duration::from_secs(20)));
    assert!(e.contains("16777217") && e.contains("K"), "{e}");
    assert!(!tmp.path().join("o").exists(), "a failed run leaves no output folder");
    // A folder that exists but cannot take files (/proc/self even for root).
    let e = err(&gddcm_within(&["encode", &example(), "--quiet", "-o", "/proc/self"], Duration::from_secs(20)));
    assert!(e.contains("/proc/self"), "{e}");
    let e = err(&gddcm_within(&["roundtrip", &example(), "--quiet", "-o", "/proc/self"], Duration::from_secs(20)));
    assert!(e.contains("/proc/self"), "{e}");
    // Output files of the other commands, checked before the work too.
    for args in [
        &["sample", "-n", "4", "--quiet", "-o", "/proc/self/x.png"][..],
        &["eval", "--limit", "2", "--metrics", "pixel", "--quiet", "--json", "/proc/self/r.json"],
    ] {
        let e = err(&gddcm_within(args, Duration::from_secs(20)));
        assert!(e.contains("/proc/self"), "{args:?}: {e}");
    }
}

/// Item 4: NaN, infinities and negative values are errors that name the flag and its range.
#[test]
fn non_finite_and_negative_settings_name_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let out = s(tmp.path());
    let cases: &[(&[&str], &str)] = &[
        (&["--rho", "NaN"], "--rho"),
        (&["--sigma-max=-1"], "--sigma-max"),
        (&["--sigma-max", "-1"], "--sigma-max"),
        (&["--t-start", "inf"], "--t-start"),
        (&["--t-end", "-0.5", "-p", "0.5"], "--t-end"),
        (&["--dt-min", "NaN"], "--dt-min"),
        (&["-p", "-1"], "-p"),
        (&["-p", "NaN"], "-p"),
    ];
    for (flags, flag) in cases {
        let mut args = vec!["encode", example_str(), "--quiet", "-o", &out];
        args.extend_from_slice(flags);
        let e = err(&gddcm_within(&args, Duration::from_secs(20)));
        assert!(e.contains(flag), "{flags:?}: the error names {flag}: {e}");
        assert!(e.contains("must be") || e.contains("range"), "{flags:?}: the error gives the range: {e}");
        assert!(!e.contains("pure ODE"), "{flags:?}: {e}");
    }
    let e = err(&gddcm(&["encode", example_str(), "-p", "1", "-o", &out]));
    assert!(e.contains("pure ODE"), "{e}");
}

fn example_str() -> &'static str {
    static EX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    EX.get_or_init(example)
}

/// Item 6: writing to a closed pipe (`inspect --json FILE | head -1`) ends quietly.
#[test]
fn a_closed_stdout_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let tf = token_file(tmp.path());
    for args in [vec!["inspect", "--json", &s(&tf)][..].to_vec(), vec!["inspect", &s(&tf)], vec!["models"]] {
        // A pipe whose reading end is closed before gddcm starts: every write fails (EPIPE).
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        unsafe { libc::close(fds[0]) };
        let write_end = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
        let out = bin().args(&args).stdout(Stdio::from(write_end)).stderr(Stdio::piped()).output().unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!e.contains("panicked") && !e.contains("Broken pipe"), "{args:?}: {e}");
        use std::os::unix::process::ExitStatusExt;
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: ended with {:?}: {e}",
            out.status
        );
    }
}

/// Item 7: a model name with terminal escapes is printed escaped, by inspect and in errors.
#[test]
fn terminal_escapes_from_a_file_are_printed_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let tf = token_file(tmp.path());
    let mut file = gddcm::format::TokenFile::read(&tf).unwrap();
    file.model.name = "evil\x1b]0;owned\x07\x1b[2J\x1b[31mred\r".into();
    let bad = tmp.path().join("bad.gddcm");
    std::fs::write(&bad, file.to_bytes().unwrap()).unwrap();
    let text = gddcm(&["inspect", &s(&bad)]);
    let json = gddcm(&["inspect", "--json", &s(&bad)]);
    let dec = gddcm(&["decode", &s(&bad), "--quiet", "-o", &s(&tmp.path().join("d"))]);
    for (what, out) in [("inspect", &text), ("inspect --json", &json), ("decode", &dec)] {
        for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(
                !bytes.iter().any(|&b| b == 0x1b || b == 0x07 || b == b'\r'),
                "{what} {stream} has raw control bytes: {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
    assert!(String::from_utf8_lossy(&text.stdout).contains("evil\\u{1b}"), "{}", String::from_utf8_lossy(&text.stdout));
    assert!(String::from_utf8_lossy(&dec.stderr).contains("evil\\u{1b}"), "{}", String::from_utf8_lossy(&dec.stderr));
}

/// Item 9: a photo of another size and colour goes through `--fit`, and comes back at its size.
#[test]
fn fit_takes_photos_of_any_size() {
    let tmp = tempfile::tempdir().unwrap();
    let photo = tmp.path().join("photo.png");
    let img = image::RgbaImage::from_fn(72, 47, |x, y| image::Rgba([(x * 3) as u8, (y * 5) as u8, 90, 200]));
    img.save(&photo).unwrap();
    let out = tmp.path().join("o");
    let e = err(&gddcm(&["encode", &s(&photo), "-n", "4", "-k", "4", "--quiet", "-o", &s(&out)]));
    assert!(e.contains("--fit"), "the error says the way forward: {e}");
    for (fit, size) in [("crop", (47, 47)), ("pad", (72, 47)), ("resize", (72, 47))] {
        let dir = tmp.path().join(fit);
        let o = gddcm(&["roundtrip", &s(&photo), "--fit", fit, "-n", "4", "-k", "4", "--quiet", "-o", &s(&dir)]);
        ok(&o);
        let warn = String::from_utf8_lossy(&o.stderr);
        assert_eq!(warn.matches("warning").count(), 1, "colour and alpha dropped is said once: {warn}");
        assert!(warn.contains("colour") || warn.contains("color"), "{warn}");
        let tf = dir.join("photo.gddcm");
        let dec = tmp.path().join(format!("dec-{fit}"));
        ok(&gddcm(&["decode", &s(&tf), "--quiet", "-o", &s(&dec)]));
        let back = image::open(dec.join("photo.png")).unwrap();
        assert_eq!((back.width(), back.height()), size, "--fit {fit}: the decoder restores the size");
        let text = ok(&gddcm(&["inspect", &s(&tf)]));
        assert!(text.contains("72×47") && text.contains(fit), "{text}");
    }
    // eval on a folder of mixed sizes: names the file it cannot batch, or fits them all.
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(example(), data.join("a.png")).unwrap();
    std::fs::copy(&photo, data.join("b.png")).unwrap();
    let base = ["eval", "--data", &s(&data), "--metrics", "pixel", "-n", "4", "-k", "4", "--quiet"];
    let e = err(&gddcm(&base));
    assert!(e.contains("b.png") && e.contains("--fit"), "{e}");
    let mut args = base.to_vec();
    args.extend(["--fit", "pad"]);
    let out = gddcm(&args);
    let rep = ok(&out);
    assert!(rep.contains("2 images"), "{rep}");
    let warn = String::from_utf8_lossy(&out.stderr);
    assert_eq!(warn.matches("warning").count(), 1, "eval says once what it dropped: {warn}");
    assert!(warn.contains("b.png") && warn.contains("colour and alpha"), "{warn}");
}

/// Item 10: what a person reads.
#[test]
fn messages_and_outputs_read_well() {
    let tmp = tempfile::tempdir().unwrap();
    // Errors do not repeat themselves.
    let missing = tmp.path().join("missing.png");
    let notpng = tmp.path().join("notpng.png");
    std::fs::write(&notpng, b"this is not an image").unwrap();
    for (p, repeated) in [(&missing, "os error 2"), (&notpng, "signature")] {
        let out_dir = tmp.path().join("never");
        let e = err(&gddcm(&["encode", &s(p), "--quiet", "-o", &s(&out_dir)]));
        assert!(e.matches(repeated).count() <= 1, "{e}");
        assert!(!out_dir.exists(), "a failed encode leaves no output folder");
    }
    let e = err(&gddcm(&["decode", &s(&tmp.path().join("missing.gddcm")), "--quiet", "-o", &s(&tmp.path().join("d"))]));
    assert_eq!(e.matches("os error 2").count(), 1, "{e}");
    // Help in user words, with the defaults a model's profile supplies and the images taken.
    for cmd in [
        "encode",
        "decode",
        "roundtrip",
        "inspect",
        "models",
        "eval",
        "table1",
        "sample",
        "search",
        "rd",
        "bench",
        "x-ref",
    ] {
        let h = ok(&gddcm(&[cmd, "--help"]));
        assert!(!h.contains("SPEC") && !h.contains("(issue"), "{cmd} --help cites internal documents: {h}");
    }
    let h = ok(&gddcm(&["encode", "--help"]));
    assert!(h.contains("PNG") && h.contains("JPEG"), "{h}");
    assert!(h.contains("fmnist-edm") && h.contains("K = 256"), "profile defaults: {h}");
    // inspect --json: the tokens on one line.
    let tf = token_file(tmp.path());
    let j = ok(&gddcm(&["inspect", "--json", &s(&tf)]));
    let line = j.lines().find(|l| l.contains("\"tokens\"")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    let tokens: Vec<String> = v["tokens"].as_array().unwrap().iter().map(|t| t.to_string()).collect();
    assert!(line.contains(&tokens.join(",")), "{j}");
    // A long name keeps the roundtrip table aligned; the side-by-side PNG is readable.
    let long = tmp.path().join("a_rather_long_file_name_for_an_image_of_a_shoe_from_the_set.png");
    std::fs::copy(example(), &long).unwrap();
    let dir = tmp.path().join("rt");
    let o = ok(&gddcm(&["roundtrip", &s(&long), &example(), "-n", "4", "-k", "4", "--quiet", "-o", &s(&dir)]));
    let table: Vec<&str> =
        o.lines().skip_while(|l| !l.starts_with("image")).take_while(|l| !l.starts_with('(')).collect();
    assert_eq!(table.len(), 4, "{o}");
    let width = table[0].chars().count();
    assert!(table.iter().all(|l| l.chars().count() == width), "the columns stay aligned:\n{o}");
    let side = image::open(dir.join(format!("{}_roundtrip.png", long.file_stem().unwrap().to_string_lossy()))).unwrap();
    assert!(side.width() >= 2 * 8 * 28 && side.height() > 8 * 28, "{}×{}", side.width(), side.height());
}
