//! `gddcm inspect`: what a token file holds.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use gddcm::codec;
use gddcm::format::TokenFile;
use gddcm::profile::Settings;
use gddcm::tokenizer::Config;
use gddcm::zoo;

use super::args::DDCM_SOURCE;
use super::common::escape_untrusted;

#[derive(Args)]
pub struct InspectArgs {
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let InspectArgs { file, json } = args;
    let bytes = gddcm::ladder::read_bytes(&file)?;
    let resolver = gddcm::ladder::Resolver::new(None);
    let (container, container_json, resolved) =
        gddcm::ladder::describe(&bytes, &resolver).with_context(|| format!("reading {}", file.display()))?;
    // A compact file whose model is not installed still shows its raw fields.
    let (mut v, text) = match &resolved {
        Ok(st) => {
            let source = match &st.compact {
                Some(c) => format!("shipped operating point {} of {}", c.point, st.file.model.name),
                None => settings_source(&st.file),
            };
            let mut v = serde_json::to_value(&st.file)?;
            v["settings"] = source.clone().into();
            let mut text = format!("{}\n{container}\nsettings: {source}", st.file);
            if let Some(note) = x_ref_note(&st.file) {
                text.push_str(&format!("\nx_ref:      {note}"));
                v["x_ref"] = note.into();
            }
            (v, text)
        }
        Err(e) => (
            serde_json::json!({ "resolved": false, "error": format!("{e:#}") }),
            format!("{container}\nsettings:   not resolved: {e:#}"),
        ),
    };
    if json {
        v["container"] = container_json;
        // Pretty, but the tokens on one line rather than one line each.
        const SLOT: &str = "\u{0}tokens\u{0}";
        match v.get_mut("tokens") {
            Some(t) => {
                let tokens = std::mem::replace(t, SLOT.into());
                let text = serde_json::to_string_pretty(&v)?;
                let slot = serde_json::to_string(SLOT)?;
                println!("{}", text.replacen(&slot, &serde_json::to_string(&tokens)?, 1));
            }
            None => println!("{}", serde_json::to_string_pretty(&v)?),
        }
    } else {
        // The model name comes from the file: no raw control characters to the terminal.
        println!("{}", escape_untrusted(&text));
    }
    Ok(())
}

/// Whose reference image a file's x_ref hash names (SPEC 7): the training-set mean the file's
/// model ships, or a hash this installation does not hold.
fn x_ref_note(tf: &TokenFile) -> Option<String> {
    let (gddcm::format::InitStrategy::I2 { x_ref } | gddcm::format::InitStrategy::I3 { x_ref, .. }) = tf.procedure.init
    else {
        return None;
    };
    let gddcm::format::XRef::Image { sha256 } = x_ref else { return None };
    let lookup = zoo::entry(&tf.model.name).ok().and_then(|e| e.reference(None).ok());
    Some(match lookup {
        Some(l) if l.image.as_ref().is_some_and(|i| i.sha256 == sha256) => {
            format!("{} ({})", l.image.map(|i| i.description).unwrap_or_default(), l.places)
        }
        Some(l) => format!("not the reference image model '{}' ships here (looked in {})", tf.model.name, l.places),
        None => format!("model '{}' is not known here", tf.model.name),
    })
}

/// What `inspect` can tell of the settings that made a token file, which has no field for it:
/// whether its procedure is the DDCM baseline, the model's shipped profile or the defaults for
/// its p (each at the file's K, N and seed).
fn settings_source(tf: &TokenFile) -> String {
    let pr = &tf.procedure;
    let j0 = match pr.init {
        gddcm::format::InitStrategy::I3 { j0, .. } => Some(j0),
        _ => None,
    };
    let Ok(entry) = zoo::entry(&tf.model.name) else {
        return format!("unknown: model '{}' is not known here", tf.model.name);
    };
    let family = entry.family;
    let same = |cfg: &Config| {
        codec::procedure(cfg, family, pr.clip_x0, j0)
            .is_ok_and(|p| gddcm::format::Procedure { dtype: pr.dtype, ..p } == *pr)
    };
    if family == gddcm::family::Family::Ddpm && same(&Config::ddcm(pr.k, pr.seed)) {
        return DDCM_SOURCE.into();
    }
    let marginal = entry.marginal();
    let mean = entry.reference(None).ok().and_then(|r| r.image);
    let with_file = |s: Settings| Settings { k: pr.k, n: pr.n, seed: pr.seed, ..s };
    let matches = |s: Settings| with_file(s).to_config_with(family, &marginal, mean.as_ref()).is_ok_and(|c| same(&c));
    let shipped = entry.shipped_profile(None).ok().flatten();
    if let Some((s, origin)) = &shipped {
        if matches(s.clone()) {
            return format!("shipped profile of {} ({origin}), at this K, N and seed", entry.name);
        }
    }
    if matches(Settings { p: pr.p, ..Settings::default() }) {
        return format!("defaults for p = {}, at this K, N and seed", pr.p);
    }
    format!(
        "other: not the DDCM baseline, {}the defaults for p = {} (a --profile file or flags)",
        if shipped.is_some() { "the shipped profile or " } else { "" },
        pr.p
    )
}
