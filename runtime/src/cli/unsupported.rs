//! `checkpoint` and `restore`: refused clearly.

/// Whatever runc would accept.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Ignored.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Always an error.
pub fn run(verb: &str, _: Args) -> anyhow::Result<i32> {
    anyhow::bail!(
        "{verb} is not supported by husk: a container's state lives in a microVM, which cannot be checkpointed yet"
    )
}
