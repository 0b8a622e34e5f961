//! The crash-point build of the programs, shared by the crash-exactness tests
//! (`crash_points.rs`, `stopped_peer.rs`): `cargo build --release --features
//! shm/crash-points --bins` into `target/crash`, once per test binary, and a spawner that
//! starts one of those programs with the crash variables it is given (and no inherited
//! `SHMDP_CRASH_AT`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::Proc;

/// The crash-point build of `name` (`shmdp-primary`, `shmdp-secondary`), built on first use.
pub fn crash_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let target = root.join("target").join("crash");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .current_dir(root)
            .args(["build", "--release", "--features", "shm/crash-points"])
            .args(["--bins", "-q", "--target-dir"])
            .arg(&target)
            .status()
            .expect("run cargo build");
        assert!(st.success(), "the crash-points build failed");
        target.join("release")
    });
    dir.join(name)
}

/// Spawns the crash-point build of `name` with `args` and the variables `env`
/// (`SHMDP_CRASH_AT`, `SHMDP_CRASH_HOW`); `prefix` as for [`Proc::spawn_command`].
pub fn spawn(name: &str, args: &[&str], env: &[(&str, &str)], prefix: Option<&str>) -> Proc {
    let mut cmd = Command::new(crash_bin(name));
    cmd.args(args).env_remove("SHMDP_CRASH_AT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc::spawn_command(cmd, name, prefix)
}
