//! `shmdp-qemu-cmdgen`: prints the QEMU arguments for a running primary's export groups.
//!
//! usage: shmdp-qemu-cmdgen --file-prefix P [--group G]... [--format shell|json|libvirt]

use std::process::ExitCode;

use clap::Parser;
use qemu_cmdgen::Format;
use shm::runtime::FilePrefix;
use shmdp_app::{CliError, Exit};

/// Prints the QEMU arguments (memory-backend-file + ivshmem-plain) that give a guest the
/// export groups of a running shmdp primary.
#[derive(Debug, Parser)]
#[command(name = "shmdp-qemu-cmdgen", version, about)]
struct Cli {
    /// The primary's --file-prefix.
    #[arg(long, default_value = "shmdp")]
    file_prefix: FilePrefix,
    /// Only this group (repeatable; default: every exported group).
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
    /// shell (default), json or libvirt.
    #[arg(long, default_value = "shell")]
    format: Format,
}

fn main() -> ExitCode {
    let cli: Cli = shmdp_app::eal::parse_args_or_exit("shmdp-qemu-cmdgen");
    let result = qemu_cmdgen::discover(&cli.file_prefix, &cli.groups)
        .map(|exports| {
            print!("{}", qemu_cmdgen::render(&exports, cli.format));
            Exit::Ok
        })
        .map_err(CliError::usage);
    shmdp_app::finish("shmdp-qemu-cmdgen", result)
}
