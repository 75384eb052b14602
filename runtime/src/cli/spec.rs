//! `husk spec`: write runc's default config.json (the same bytes `runc spec` writes).

use std::path::PathBuf;

use anyhow::{bail, Context};

use super::Ctx;

/// runc 1.1's `runc spec` output.
const DEFAULT_SPEC: &str = include_str!("default-spec.json");

/// runc spec's flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write config.json.
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
}

/// The verb.
pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<i32> {
    if ctx.log.debug_enabled() {
        ctx.log.debug("writing the default spec");
    }
    let path = a.bundle.join("config.json");
    if path.exists() {
        bail!("File {} exists. Remove it first", path.display());
    }
    std::fs::write(&path, DEFAULT_SPEC).with_context(|| format!("{}", path.display()))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_spec_parses() {
        let spec = crate::bundle::parse_spec(super::DEFAULT_SPEC).unwrap();
        assert_eq!(spec.hostname().as_deref(), Some("runc"));
    }
}
