//! The classic codecs of `gddcm rd --codecs`, for real: every codec's Debian tools encode and
//! decode a few example images. The tools are required (`.ci/run` installs them): a missing one
//! fails these tests, naming the package, rather than skipping them.

use std::path::Path;

use gddcm::classic::{discover, Codec, CodecTools};
use gddcm::data::{image_folder, Dataset};
use gddcm::eval::{EvalOptions, Metric};
use gddcm::rd::compare::{codec_curve, compressai_json};

fn tools(codec: Codec) -> CodecTools {
    let path = std::env::var_os("PATH").unwrap_or_default();
    discover(codec, &path).unwrap_or_else(|e| {
        panic!("{e:#}\n(the classic-codec tests need the Debian tools; .ci/run installs them, or run: apt-get install -y webp libavif-bin libjxl-tools libjpeg-turbo-progs)")
    })
}

fn examples(n: usize) -> Dataset {
    let ds = image_folder(&Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/examples"), 1, n).unwrap();
    assert_eq!(ds.images.len(), n);
    ds
}

/// Each codec's file signature.
fn has_signature(codec: Codec, file: &[u8]) -> bool {
    match codec {
        Codec::Jpeg => file.starts_with(&[0xff, 0xd8]),
        Codec::Webp => file.len() > 12 && &file[..4] == b"RIFF" && &file[8..12] == b"WEBP",
        Codec::Avif => file.len() > 12 && &file[4..12] == b"ftypavif",
        // A bare codestream or the ISO BMFF container.
        Codec::Jxl => file.starts_with(&[0xff, 0x0a]) || file.starts_with(b"\0\0\0\x0cJXL "),
    }
}

#[test]
fn every_codec_codes_images_and_its_rate_is_the_file_size() {
    let ds = examples(3);
    let opts = EvalOptions { metrics: vec![Metric::Pixel], batch: 4, ..Default::default() };
    for codec in Codec::ALL {
        let t = tools(codec);
        assert!(!t.encoder_version.is_empty() && !t.decoder_version.is_empty());
        // Lowest level first: the worse quality.
        let levels = match codec {
            Codec::Jpeg => [20.0, 90.0],
            Codec::Webp => [20.0, 90.0],
            Codec::Avif => [50.0, 10.0],
            Codec::Jxl => [6.0, 0.5],
        };
        let mut seen = 0;
        let curve = codec_curve(&t, &levels, &ds, &opts, &mut |c| seen = c.points.len()).unwrap();
        assert_eq!((seen, curve.points.len()), (2, 2), "{codec}");
        for (point, &level) in curve.points.iter().zip(&levels) {
            // The rate is the mean of file bytes × 8 / pixels, from the files themselves.
            let mut bits_per_pixel = 0.0;
            for img in &ds.images {
                let coded = t.code(img, level).unwrap();
                assert!(has_signature(codec, &coded.file), "{codec} at {level}: not a {codec} file");
                assert_eq!((coded.decoded.width, coded.decoded.height, coded.decoded.channels), (28, 28, 1));
                bits_per_pixel += 8.0 * coded.file.len() as f64 / (28.0 * 28.0);
            }
            bits_per_pixel /= ds.images.len() as f64;
            assert!(
                (point.bpp - bits_per_pixel).abs() < 1e-12,
                "{codec} at {level}: {} vs {bits_per_pixel}",
                point.bpp
            );
            assert_eq!(point.report.file_bpp, point.bpp);
            let psnr = point.report.psnr.unwrap();
            assert!((12.0..70.0).contains(&psnr), "{codec} at {level}: PSNR {psnr}");
        }
        let (lo, hi) = (&curve.points[0], &curve.points[1]);
        assert!(hi.report.psnr > lo.report.psnr && hi.bpp > lo.bpp, "{codec}: quality and rate grow with the level");
        let json = compressai_json(&curve);
        assert_eq!(json["results"]["bpp"].as_array().unwrap().len(), 2);
        assert_eq!(json["gddcm"]["settings"]["encoder_version"], t.encoder_version.as_str());
    }
}

#[test]
fn a_level_out_of_range_is_an_error_not_a_tool_failure() {
    let t = tools(Codec::Jpeg);
    let ds = examples(1);
    let e = t.code(&ds.images[0], 0.0).unwrap_err().to_string();
    assert!(e.contains("outside"), "{e}");
}

/// `gddcm rd --ladder --codecs` end to end on two images: the ladder's files are the compact
/// ones (every shipped point's file size), every output is written, and each BD-rate is a
/// number or "n/a" with the reason.
#[test]
fn rd_ladder_against_codecs_end_to_end() {
    for c in [Codec::Jpeg, Codec::Jxl] {
        tools(c);
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rd");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/examples");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gddcm"))
        .args(["rd", "-m", "fmnist-edm", "--ladder", "--codecs", "jpeg,jxl", "--levels", "jpeg=30,60,80,95"])
        .args(["--levels", "jxl=4,2,1,0.5", "--metrics", "pixel", "--limit", "2", "--quiet", "--data"])
        .arg(&examples)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    for f in ["summary.json", "rd.svg", "rd.png", "jpeg.json", "jxl.json", "gddcm-fmnist-edm.json"] {
        assert!(out.join(f).is_file(), "{f} missing:\n{stdout}");
    }
    let read = |f: &str| -> serde_json::Value { serde_json::from_slice(&std::fs::read(out.join(f)).unwrap()).unwrap() };
    let ladder = read("gddcm-fmnist-edm.json");
    let bpps: Vec<f64> = ladder["results"]["bpp"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    // Every shipped point of rate control, stored compact: its rate is its file's bytes, the
    // same for both images.
    let v: serde_json::Value = serde_json::from_slice(
        &std::process::Command::new(env!("CARGO_BIN_EXE_gddcm")).args(["models", "--json"]).output().unwrap().stdout,
    )
    .unwrap();
    let edm = v.as_array().unwrap().iter().find(|m| m["name"] == "fmnist-edm").unwrap();
    let mut want: Vec<f64> = edm["operating_points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["rate_control"] == true)
        .map(|p| p["file_bytes"].as_f64().unwrap() * 8.0 / 784.0)
        .collect();
    let mut got = bpps.clone();
    want.sort_by(f64::total_cmp);
    got.sort_by(f64::total_cmp);
    assert_eq!(got.len(), want.len(), "{bpps:?}");
    assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-9), "{got:?} vs {want:?}");
    let summary = read("summary.json");
    let comparisons = summary["comparisons"].as_array().unwrap();
    assert_eq!(comparisons.len(), 4, "2 codecs × (PSNR, SSIM)");
    for c in comparisons {
        // A BD-rate where the curves overlap, else "n/a" with the reason; never a NaN.
        let bd = &c["bd_rate"];
        match bd["percent"].as_f64() {
            Some(p) => assert!(p.is_finite(), "{c}"),
            None => assert!(!bd["not_available"].as_str().unwrap_or_else(|| panic!("{c}")).is_empty()),
        }
    }
    assert!(stdout.contains("BD-rate"), "{stdout}");
    // A second run keeps the outputs unless --force.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_gddcm"))
        .args(["rd", "--codecs", "jpeg", "--limit", "1", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("--force"));
}
