//! `gddcm models`: the known models and whether their weights are present.

use anyhow::Result;
use clap::Args;

use gddcm::zoo;

/// The model's shipped operating points, smallest files first (none when it is not installed
/// or ships none; a broken registry is reported, not fatal to the listing).
fn points(e: &zoo::ModelEntry) -> Vec<gddcm::rate::Rung> {
    let found = gddcm::ladder::locate(e, None).and_then(|l| match l {
        Some((dir, sha)) => gddcm::rate::ladder_of(e, &dir, sha),
        None => Ok(vec![]),
    });
    found.unwrap_or_else(|err| {
        eprintln!("warning: the operating points of {}: {err:#}", e.name);
        vec![]
    })
}

#[derive(Args)]
pub struct ModelsArgs {
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ModelsArgs) -> Result<()> {
    let ModelsArgs { json } = args;
    let rows: Vec<(zoo::ModelEntry, Option<zoo::Source>)> =
        zoo::entries().into_iter().map(|e| (e.find(None).ok(), e)).map(|(a, e)| (e, a)).collect();
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(e, a)| {
                let mut v = serde_json::to_value(e).unwrap_or_default();
                v["available"] = serde_json::Value::Bool(a.is_some());
                v["found"] = serde_json::to_value(a).unwrap_or_default();
                v["searched"] = serde_json::to_value(e.candidate_dirs()).unwrap_or_default();
                v["operating_points"] = serde_json::Value::Array(
                    points(e)
                        .iter()
                        .map(|r| {
                            serde_json::json!({
                                "id": r.point.id, "name": r.point.name, "file_bytes": r.file_bytes,
                                "file_bpp": r.bpp(), "rate_control": r.point.rate_control,
                                "settings": r.point.settings,
                            })
                        })
                        .collect(),
                );
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{:<22} {:<5} {:<10} description", "model", "family", "weights");
        for (e, a) in &rows {
            let default = if e.name == zoo::default_model() { " (default)" } else { "" };
            println!(
                "{:<22} {:<6} {:<10} {}{default}",
                e.name,
                e.family.to_string(),
                match a {
                    Some(zoo::Source::Embedded) => "embedded",
                    Some(_) => "present",
                    None => "missing",
                },
                e.description
            );
            match a {
                Some(zoo::Source::Folder(dir)) => println!("{:<29} found in {}", "", dir.display()),
                Some(zoo::Source::Embedded) => {}
                None => {
                    let dirs: Vec<String> = e.candidate_dirs().iter().map(|d| d.display().to_string()).collect();
                    println!(
                        "{:<29} looked in {}",
                        "",
                        if dirs.is_empty() { "(nowhere)".into() } else { dirs.join(", ") }
                    );
                }
            }
            let (ladder, named_only): (Vec<_>, Vec<_>) = points(e).into_iter().partition(|r| r.point.rate_control);
            let list = |rungs: &[gddcm::rate::Rung]| -> String {
                rungs.iter().map(|r| format!("{} {:.3}", r.point.id, r.bpp())).collect::<Vec<_>>().join(", ")
            };
            if !ladder.is_empty() {
                println!("{:<29} operating points (id bpp): {}", "", list(&ladder));
            }
            if !named_only.is_empty() {
                println!("{:<29} by --point only, beaten at their size: {}", "", list(&named_only));
            }
            println!("{:<29} download: {}", "", e.download);
        }
    }
    Ok(())
}
