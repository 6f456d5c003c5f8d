//! Rate control over a model's ladder of shipped operating points (issue 17 item 4).
//!
//! A model ships operating points ([`crate::ladder`]); each makes files of one known size at a
//! given image size (the compact container has no variable part but the I3 index, which is
//! fixed-width). So a rate target picks a point before any work: `--bpp B` takes the largest
//! point whose file fits `B` bits per pixel. A quality target needs the encoder: `--psnr Q`
//! takes, per image, the smallest point whose reconstruction reaches `Q` dB (the encoder's own
//! reconstruction is what a decoder produces, SPEC 5 G4), by a binary search over the ladder
//! that assumes PSNR grows with the rate of the point (true of a ladder searched for PSNR;
//! `gddcm models` lists the measured means).

use anyhow::{bail, Context, Result};

use crate::format::compact::{CompactFile, OperatingPoint};
use crate::format::TokenFile;
use crate::ladder::{self, PointSettings};
use crate::zoo::{LoadedModel, ModelEntry};

/// One rung of the ladder: a shipped operating point and the size of its files.
#[derive(Debug, Clone)]
pub struct Rung {
    /// The point as the registry names it.
    pub point: PointSettings,
    /// Its full procedure.
    pub operating_point: OperatingPoint,
    /// Bytes of a file of this point for an image of the model's native size.
    pub file_bytes: u64,
}

impl Rung {
    /// File bits per pixel at the native size.
    pub fn bpp(&self) -> f64 {
        let img = &self.operating_point.image;
        8.0 * self.file_bytes as f64 / (f64::from(img.height) * f64::from(img.width))
    }

    /// `id name (bytes, bpp)`, for messages.
    pub fn describe(&self) -> String {
        format!("point {} '{}' ({} bytes, {:.4} bpp)", self.point.id, self.point.name, self.file_bytes, self.bpp())
    }
}

/// The ladder of a model as installed in `dir` (weights hash `sha256`), smallest files first
/// (ties by id); empty when it ships no points.
pub fn ladder_of(entry: &ModelEntry, dir: &std::path::Path, sha256: [u8; 32]) -> Result<Vec<Rung>> {
    let Some(reg) = ladder::registry(entry, dir)? else { return Ok(vec![]) };
    let points = ladder::operating_points(entry, dir, sha256)?;
    let mut rungs: Vec<Rung> = reg
        .points
        .into_iter()
        .zip(points)
        .map(|(point, op)| {
            let file_bytes = file_bytes(&op)?;
            Ok(Rung { point, operating_point: op, file_bytes })
        })
        .collect::<Result<_>>()?;
    rungs.sort_by_key(|r| (r.file_bytes, r.point.id));
    Ok(rungs)
}

/// The operating point a run with no tokenizer settings uses, if the model names one.
pub fn default_point(model: &LoadedModel) -> Result<Option<Rung>> {
    let Some(reg) = ladder::registry(&model.entry, &model.dir)? else { return Ok(None) };
    let Some(id) = reg.default else { return Ok(None) };
    Ok(ladder(model)?.into_iter().find(|r| r.point.id == id))
}

/// The ladder of a loaded model: every point it ships.
pub fn ladder(model: &LoadedModel) -> Result<Vec<Rung>> {
    ladder_of(&model.entry, &model.dir, model.weights_sha256)
}

/// The newest (highest id) one-atom point at codebook size `k`, `n` tokens and exactly this `p`
/// (0: Algorithm 2): points are only ever added, so a later search supersedes an earlier one
/// without changing what the files naming the old point mean.
pub fn newest_point(rungs: &[Rung], k: u32, n: u32, p: f64) -> Option<&Rung> {
    rungs
        .iter()
        .filter(|r| {
            let s = &r.point.settings;
            (s.k, s.n, s.p, s.atoms) == (k, n, p, crate::atoms::AtomRule::Single)
        })
        .max_by_key(|r| r.point.id)
}

/// The rungs rate control chooses among: the ladder without the points marked
/// `"rate_control": false` (each beaten by another point at no larger file).
pub fn rate_ladder(model: &LoadedModel) -> Result<Vec<Rung>> {
    Ok(ladder(model)?.into_iter().filter(|r| r.point.rate_control).collect())
}

/// The exact size of a compact file of `op` at its native image size: the file is built and
/// measured, so the count cannot drift from the container's layout.
fn file_bytes(op: &OperatingPoint) -> Result<u64> {
    let pr = &op.procedure;
    let step = pr.atoms.first_step();
    let file = TokenFile {
        model: op.model.clone(),
        procedure: pr.clone(),
        image: op.image,
        tokens: (0..pr.n).flat_map(|_| step.iter().copied()).collect(),
        fit: None,
    };
    let compact = CompactFile::of(&file, op)?.context("an operating point's own file is stored compact")?;
    Ok(compact.to_bytes().len() as u64)
}

/// The largest rung whose files fit `bpp` bits per pixel; an error naming the smallest rung
/// when none does, or when the model ships no ladder.
pub fn for_bpp<'a>(rungs: &'a [Rung], bpp: f64, model: &str) -> Result<&'a Rung> {
    if !(bpp.is_finite() && bpp > 0.0) {
        bail!("--bpp must be a finite number > 0, found {bpp}");
    }
    let Some(smallest) = rungs.first() else {
        bail!("model '{model}' ships no operating points (operating_points.json), so --bpp cannot choose one");
    };
    match rungs.iter().rev().find(|r| r.bpp() <= bpp) {
        Some(r) => Ok(r),
        None => bail!(
            "--bpp {bpp} is below the smallest operating point of '{model}': {} (file size at the native size)",
            smallest.describe()
        ),
    }
}

/// The rung of each image for a quality target: per image the smallest rung index whose PSNR
/// reaches `target`, found by binary search, all images advancing together so that each probe
/// encodes one batch per rung. `psnr(rung, images)` encodes those images at that rung and
/// returns their PSNRs. Returns per image `(rung index, reached)`; an image no rung brings to
/// the target gets the largest rung and `reached = false` (best effort, which the caller
/// must state).
pub fn for_psnr(
    rungs: usize,
    images: usize,
    target: f64,
    mut psnr: impl FnMut(usize, &[usize]) -> Result<Vec<f64>>,
) -> Result<Vec<(usize, bool)>> {
    if !target.is_finite() {
        bail!("--psnr must be a finite number of dB, found {target}");
    }
    if rungs == 0 {
        bail!("the model ships no operating points (operating_points.json), so --psnr cannot choose one");
    }
    // Invariant per image: the answer is in lo..=hi, and hi reaches the target unless
    // `hi_known` is false (then hi is the top rung, not yet measured).
    let mut lo = vec![0usize; images];
    let mut hi = vec![rungs - 1; images];
    let mut hi_reached = vec![None::<bool>; images];
    loop {
        let mut probes: Vec<(usize, usize)> = (0..images)
            .filter(|&i| lo[i] < hi[i] || hi_reached[i].is_none())
            .map(|i| (if lo[i] < hi[i] { (lo[i] + hi[i]) / 2 } else { hi[i] }, i))
            .collect();
        if probes.is_empty() {
            break;
        }
        probes.sort_unstable();
        for group in probes.chunk_by(|a, b| a.0 == b.0) {
            let rung = group[0].0;
            let which: Vec<usize> = group.iter().map(|&(_, i)| i).collect();
            let got = psnr(rung, &which)?;
            for (&i, p) in which.iter().zip(got) {
                let ok = p >= target;
                if lo[i] == hi[i] {
                    hi_reached[i] = Some(ok);
                } else if ok {
                    hi[i] = rung;
                    hi_reached[i] = Some(true);
                } else {
                    lo[i] = rung + 1;
                    if lo[i] == hi[i] && hi[i] == rungs - 1 {
                        hi_reached[i] = None; // the top rung: measure it
                    }
                }
            }
        }
    }
    Ok((0..images).map(|i| (hi[i], hi_reached[i].unwrap_or(false))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_search_finds_the_smallest_reaching_rung_with_few_probes() {
        // Image i reaches rung r's quality 20 + 2r − i: monotone in r.
        let quality = |r: usize, i: usize| 20.0 + 2.0 * r as f64 - i as f64;
        for rungs in 1..=9 {
            let mut probes = 0;
            let got = for_psnr(rungs, 12, 25.0, |r, imgs| {
                probes += 1;
                Ok(imgs.iter().map(|&i| quality(r, i)).collect())
            })
            .unwrap();
            for (i, &(r, reached)) in got.iter().enumerate() {
                let want = (0..rungs).find(|&r| quality(r, i) >= 25.0);
                match want {
                    Some(w) => assert_eq!((r, reached), (w, true), "rungs {rungs} image {i}"),
                    None => assert_eq!((r, reached), (rungs - 1, false), "rungs {rungs} image {i}: best effort"),
                }
            }
            // One batch per (round, rung): far fewer than images × rungs.
            assert!(probes <= 2 * rungs.max(2) * (usize::BITS - rungs.leading_zeros()) as usize, "{probes} probes");
        }
    }

    #[test]
    fn bad_targets_are_errors() {
        assert!(for_psnr(3, 1, f64::NAN, |_, _| Ok(vec![0.0])).is_err());
        assert!(for_psnr(0, 1, 30.0, |_, _| Ok(vec![0.0])).unwrap_err().to_string().contains("no operating points"));
        assert!(for_bpp(&[], 1.0, "m").unwrap_err().to_string().contains("ships no operating points"));
        assert!(for_bpp(&[], -1.0, "m").unwrap_err().to_string().contains("> 0"));
    }
}
