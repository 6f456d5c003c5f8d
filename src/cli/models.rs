//! `gddcm models`: the known models and whether their weights are present.

use anyhow::Result;
use clap::Args;

use gddcm::zoo;

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
            println!("{:<29} download: {}", "", e.download);
        }
    }
    Ok(())
}
