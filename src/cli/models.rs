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
    let rows: Vec<(zoo::ModelEntry, bool)> =
        zoo::entries().into_iter().map(|e| (e.available(None), e)).map(|(a, e)| (e, a)).collect();
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(e, a)| {
                let mut v = serde_json::to_value(e).unwrap_or_default();
                v["available"] = serde_json::Value::Bool(*a);
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
                if *a { "present" } else { "missing" },
                e.description
            );
        }
    }
    Ok(())
}
