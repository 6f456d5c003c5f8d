//! Fuzz target for the decoder's checks before any network call (`gddcm::validate`): whatever
//! parses as a token file must be either refused or accepted by `validate::check` against the
//! description of every bundled and published model, without panicking; and what is accepted
//! must be bounded work on grids the decoder can walk.
//!
//! Besides the known models, each parsed file is checked against a description that agrees
//! with the file's own family, parameterisation, schedule and image (as a model for it would),
//! so that mutations reach the time-domain, schedule, sampler and work checks rather than stop
//! at the first field that names another model. As in `parse`, each input is tried as is and
//! with its CRC-32 fixed.
#![no_main]

// Compiled from the crate's own source, without candle (see ../README.md).
#[allow(dead_code)]
#[path = "../../src/atomic.rs"]
mod atomic;
#[allow(dead_code)]
// The compact container's re-exports are not used by this target.
#[allow(unused_imports)]
#[path = "../../src/atoms.rs"]
mod atoms;

#[path = "../../src/format/mod.rs"]
mod format;
#[allow(dead_code)]
#[path = "../../src/schedule.rs"]
mod schedule;
#[allow(dead_code)]
#[path = "../../src/validate.rs"]
mod validate;

use libfuzzer_sys::fuzz_target;
use validate::{ModelDescription, DEFAULT_MAX_NFE};

fn check_against(desc: &ModelDescription, file: &format::TokenFile) {
    let limited = validate::check(desc, file, Some(DEFAULT_MAX_NFE));
    let unlimited = validate::check(desc, file, None);
    match (&limited, &unlimited) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "the limit changed the count");
            assert!(*a <= DEFAULT_MAX_NFE, "accepted {a} evaluations above the limit");
            assert!(*a >= u64::from(file.procedure.n), "fewer evaluations than tokens");
            // Accepted times are inside the model's domain.
            let d = &desc.domain;
            let t0 = match &file.procedure.algorithm {
                format::Algorithm::Alg1 { t_r, .. } => *t_r,
                format::Algorithm::Alg2 { t_s, .. } => *t_s,
            };
            assert!(t0.is_finite() && t0 > d.clean && t0 <= d.max, "accepted start time {t0}");
        }
        // Only the work bound may differ between the two.
        (Err(e), Ok(n)) => assert!(*n > DEFAULT_MAX_NFE && e.field == "procedure", "{e} for {n} evaluations"),
        // The work bound is checked before the grids: without it, a later check may refuse.
        (Err(a), Err(b)) => assert!(a == b || a.field == "procedure", "{a} / {b}"),
        (Ok(_), Err(e)) => panic!("accepted with a limit, refused without: {e}"),
    }
    let _ = limited.map_err(|e| e.to_string());
}

fn check(data: &[u8]) {
    let Ok(file) = format::TokenFile::from_bytes(data) else { return };
    for desc in validate::known_descriptions() {
        check_against(&desc, &file);
    }
    // A model made for this file: every identity and image check passes.
    let m = &file.model;
    let mut own =
        ModelDescription::new("fuzz", m.family, m.parameterization, m.schedule, file.image.channels, file.image.height);
    own.lo = file.image.lo;
    own.hi = file.image.hi;
    own.clip_x0 = file.procedure.clip_x0;
    check_against(&own, &file);
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= 4 {
        let mut fixed = data.to_vec();
        let body = fixed.len() - 4;
        let crc = crc32fast::hash(&fixed[..body]);
        fixed[body..].copy_from_slice(&crc.to_le_bytes());
        check(&fixed);
    }
});
