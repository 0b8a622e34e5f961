//! Logging of every shmdp program: `tracing` to stderr.

/// Sets up logging to stderr (`RUST_LOG` overrides the `info` default); colours only on a
/// terminal, no timestamps or targets (one short line per event).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
