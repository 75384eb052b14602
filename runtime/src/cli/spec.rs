//! `husk spec`: write runc's default config.json (the same bytes `runc spec` writes).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
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
    // The caller's file, with the mode runc's would have (husk's own umask is 077).
    let mut f = std::fs::File::create(&path).with_context(|| format!("{}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(crate::perms::caller_mode(
        ctx.caller_umask,
    )))
    .and_then(|()| f.write_all(DEFAULT_SPEC.as_bytes()))
    .with_context(|| format!("{}", path.display()))?;
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
