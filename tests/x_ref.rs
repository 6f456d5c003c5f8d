//! The dataset-mean reference image `x_ref` of the bundled models (SPEC 7, issue 16): the
//! shipped files, the copy embedded in the binary, and `gddcm x-ref`, which makes them.

use std::path::Path;

use gddcm::data::Image;
use gddcm::reference::{dataset_mean, RefImage, X_REF_FILE};

/// SHA-256 of the values of the Fashion-MNIST training mean (60 000 images, 28×28 in 32×32 with
/// a margin of −1) that every bundled model ships. A changed file must come with a new hash:
/// token files name the image by it.
const FMNIST_MEAN_SHA256: &str = "634cabb6f3a5524d504885c3a9d5ec681ee7c59186abc36eb5228f5e989effb0";

fn shipped(dir: &str) -> RefImage {
    RefImage::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(dir).join(X_REF_FILE)).unwrap()
}

#[test]
fn bundled_models_ship_one_pinned_mean_in_their_layout() {
    for dir in ["edm", "ddpm", "cm", "rf"] {
        let r = shipped(dir);
        assert_eq!(r.sha256_hex(), FMNIST_MEAN_SHA256, "models/{dir}");
        assert_eq!(r.shape, [1, 32, 32], "models/{dir}");
        for (i, &v) in r.values.iter().enumerate() {
            let (y, x) = (i / 32, i % 32);
            if !(2..30).contains(&y) || !(2..30).contains(&x) {
                assert_eq!(v, -1.0, "models/{dir}: margin at {y},{x}");
            } else {
                assert!((-1.0..=1.0).contains(&v), "models/{dir}: {v} at {y},{x}");
            }
        }
        // A mean, not a constant: Fashion-MNIST's centre is brighter than its corners.
        assert!(r.values[16 * 32 + 16] > r.values[2 * 32 + 2] + 0.5, "models/{dir}");
        assert!(r.description.contains("60000 images of Fashion-MNIST's training split"), "{}", r.description);
    }
    // The binary carries the default model's copy, so that it alone decodes such files.
    let entry = gddcm::zoo::entry("fmnist-edm").unwrap();
    let lookup = entry.reference(None).unwrap();
    assert!(lookup.places.contains("embedded"), "{}", lookup.places);
    assert_eq!(lookup.image.unwrap().sha256_hex(), FMNIST_MEAN_SHA256);
}

/// `gddcm x-ref` on a folder of images writes their mean in the model's layout, bit for bit
/// what `reference::dataset_mean` gives, and refuses to overwrite without --force.
#[test]
fn x_ref_command_writes_the_mean_of_a_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let images: Vec<Image> = (0..3u32)
        .map(|k| Image {
            channels: 1,
            height: 28,
            width: 28,
            data: (0..784u32).map(|i| ((i * 7 + k * 91) % 256) as u8).collect(),
        })
        .collect();
    for (k, img) in images.iter().enumerate() {
        img.save_png(&data.join(format!("{k}.png"))).unwrap();
    }
    let out = tmp.path().join("x_ref.safetensors");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gddcm"))
            .args(["x-ref", "-m", "fmnist-ddpm", "--data"])
            .arg(&data)
            .arg("-o")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = RefImage::load(&out).unwrap();
    assert_eq!(&*r.values, dataset_mean(&images, 32, -1.0).unwrap().as_slice());
    assert!(String::from_utf8_lossy(&o.stdout).contains(&r.sha256_hex()));
    let o = run(&[]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert!(run(&["--force"]).status.success());
}

/// The shipped mean is a recomputation's from Fashion-MNIST, bit for bit. Needs the dataset
/// (Debian's `dataset-fashion-mnist`), which CI does not install: run it where it is with
/// `cargo test --test x_ref -- --ignored`.
#[test]
#[ignore]
fn shipped_mean_matches_the_dataset() {
    let ds = gddcm::data::fashion_mnist(Path::new(gddcm::data::FASHION_MNIST_DIR), gddcm::data::Split::Val, usize::MAX)
        .unwrap();
    assert_eq!(ds.images.len(), 60_000);
    let mean = dataset_mean(&ds.images, 32, -1.0).unwrap();
    assert_eq!(&*shipped("edm").values, mean.as_slice());
}
