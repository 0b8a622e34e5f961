//! `shmdp-primary`: see [`primary::cli::PrimaryCli`].
fn main() -> std::process::ExitCode {
    primary::cli::main()
}
