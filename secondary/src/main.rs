//! `shmdp-secondary`: see [`secondary::cli::SecondaryCli`].
fn main() -> std::process::ExitCode {
    secondary::cli::main()
}
