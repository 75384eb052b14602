//! `husk list`: runc's table, `--format json` or `-q`.

use super::Ctx;
use crate::state::StateJson;

/// Output formats.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// A JSON array of states.
    Json,
}

/// runc list's flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub format: Format,
    /// Only ids.
    #[arg(short, long)]
    pub quiet: bool,
}

/// runc's tabwriter: minimum width 12, padding 3, last column unpadded.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count() + 3)
                .max()
                .unwrap_or(0)
                .max(12)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == cols {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}", w = widths[c]));
            }
        }
        out.push('\n');
    }
    out
}

/// The verb.
pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<i32> {
    let states: Vec<StateJson> = ctx
        .root
        .ids()?
        .iter()
        .filter_map(|id| ctx.root.state(id).ok())
        .collect();
    if a.quiet {
        for s in &states {
            println!("{}", s.id);
        }
        return Ok(0);
    }
    match a.format {
        Format::Json => println!("{}", serde_json::to_string(&states)?),
        Format::Table => {
            let mut rows = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
                .map(String::from)
                .to_vec()];
            for s in &states {
                rows.push(vec![
                    s.id.clone(),
                    s.pid.to_string(),
                    s.status.clone(),
                    s.bundle.display().to_string(),
                    s.created.clone(),
                    s.owner.clone(),
                ]);
            }
            print!("{}", table(&rows));
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_runc_spacing() {
        let t = table(&[["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
            .map(String::from)
            .to_vec()]);
        assert_eq!(
            t,
            "ID          PID         STATUS      BUNDLE      CREATED     OWNER\n"
        );
    }
}
