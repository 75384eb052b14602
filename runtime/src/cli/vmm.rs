//! The hidden `vmm` verb: the sandbox's jailed VMM process, started by the supervisor with
//! its job on stdin (see `crate::supervisor::vm`).

/// Runs the VM to its end; logs go to stderr (the supervisor's log).
pub fn run() -> anyhow::Result<i32> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HUSK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .finish()
        .with(husk_vmm::logging::LogThrottle::default())
        .try_init();
    crate::supervisor::vm::run_child().map_err(anyhow::Error::msg)
}
