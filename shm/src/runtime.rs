//! The runtime directory of one `--file-prefix`, the primary's lock, and stale-run clean-up.
//!
//! ```text
//! /run/shmdp/<prefix>/            ($XDG_RUNTIME_DIR/shmdp/<prefix> when not root)
//!   lock            flock(LOCK_EX) held by the primary for its lifetime; holds "pid generation"
//!   ctl.sock        control socket (unix stream, postcard messages)
//!   <memseg>.seg    symlink to each memseg file (on hugetlbfs or /dev/shm)
//! <hugetlbfs or /dev/shm>/shmdp.<prefix>.<memseg>   the memseg files themselves
//! ```
//!
//! Liveness is the lock: a primary holds it exclusively until it exits (even by `kill -9`,
//! when the kernel drops it). A process that finds the lock free but files present has found
//! a stale run; the next primary removes those files before creating its own.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::{Error, Result};

/// A validated `--file-prefix`: 1..=32 characters of `[A-Za-z0-9_-]`, so it can never
/// escape its directory (`/`, `..`) or collide with the `.` separator in file names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FilePrefix(String);

impl FilePrefix {
    /// The prefix text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for FilePrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for FilePrefix {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.is_empty() || s.len() > 32 {
            return Err(format!("file prefix {s:?} must be 1 to 32 characters long"));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(format!(
                "file prefix {s:?} contains {c:?}; use only letters, digits, '_' and '-'"
            ));
        }
        Ok(FilePrefix(s.to_string()))
    }
}

/// Validates a memseg name with the same rules as a prefix (it becomes part of a file name).
pub fn check_memseg_name(name: &str) -> std::result::Result<(), String> {
    FilePrefix::from_str(name)
        .map(|_| ())
        .map_err(|e| e.replace("file prefix", "memseg name"))
}

/// Paths of one prefix's runtime directory.
#[derive(Debug, Clone)]
pub struct RuntimeDir {
    prefix: FilePrefix,
    dir: PathBuf,
}

impl RuntimeDir {
    /// The runtime directory for `prefix`: `$SHMDP_RUNTIME_DIR/<prefix>` if set, else
    /// `/run/shmdp/<prefix>` for root, else `$XDG_RUNTIME_DIR/shmdp/<prefix>`, else
    /// `/tmp/shmdp-<uid>/<prefix>`.
    pub fn for_prefix(prefix: &FilePrefix) -> RuntimeDir {
        let base = if let Some(d) = std::env::var_os("SHMDP_RUNTIME_DIR") {
            PathBuf::from(d)
        } else if nix::unistd::geteuid().is_root() {
            PathBuf::from("/run/shmdp")
        } else if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
            PathBuf::from(x).join("shmdp")
        } else {
            PathBuf::from(format!("/tmp/shmdp-{}", nix::unistd::geteuid()))
        };
        RuntimeDir {
            prefix: prefix.clone(),
            dir: base.join(prefix.as_str()),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &FilePrefix {
        &self.prefix
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The lock file.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// The control socket.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("ctl.sock")
    }

    /// The symlink naming a memseg's file.
    pub fn memseg_link(&self, memseg: &str) -> PathBuf {
        self.dir.join(format!("{memseg}.seg"))
    }

    /// File name of a memseg's backing file (in the hugetlbfs mount or /dev/shm).
    pub fn memseg_file_name(&self, memseg: &str) -> String {
        format!("shmdp.{}.{memseg}", self.prefix)
    }

    /// What the lock says about this prefix, without taking it.
    pub fn probe(&self) -> Liveness {
        let path = self.lock_path();
        let Ok(mut file) = File::open(&path) else {
            return Liveness::NoRun;
        };
        let owner = read_owner(&mut file);
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            // Nobody holds it exclusively: the primary that wrote it is gone. Dropping the
            // shared lock at once keeps the window in which a starting primary could see it
            // tiny (the primary retries for a moment, see `PrimaryLock::acquire`).
            Ok(_shared) => Liveness::Stale { owner },
            Err(_) => Liveness::Alive { owner },
        }
    }
}

/// Who wrote the lock file: the primary's pid and the run's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockOwner {
    /// Pid of the primary.
    pub pid: u32,
    /// Generation (run number) of that primary.
    pub generation: u64,
}

/// What [`RuntimeDir::probe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// No lock file: no primary ever ran here (or it cleaned up).
    NoRun,
    /// A primary holds the lock.
    Alive {
        /// As recorded in the lock file (if readable).
        owner: Option<LockOwner>,
    },
    /// The lock file exists but nobody holds it: a crashed run.
    Stale {
        /// As recorded in the lock file (if readable).
        owner: Option<LockOwner>,
    },
}

fn read_owner(file: &mut File) -> Option<LockOwner> {
    let mut s = String::new();
    file.rewind().ok()?;
    file.take(128).read_to_string(&mut s).ok()?;
    let mut it = s.split_whitespace();
    Some(LockOwner {
        pid: it.next()?.parse().ok()?,
        generation: it.next()?.parse().ok()?,
    })
}

/// The primary's exclusive hold on a prefix. Dropping it releases the lock (the file is
/// removed by [`PrimaryLock::remove_run`]).
#[derive(Debug)]
pub struct PrimaryLock {
    lock: Flock<File>,
    dir: RuntimeDir,
    generation: u64,
    stale: Option<LockOwner>,
}

impl PrimaryLock {
    /// Creates the runtime directory if needed and takes the prefix's lock. If a previous
    /// run crashed, its files are removed first (see [`PrimaryLock::stale_owner`]).
    ///
    /// # Errors
    /// [`Error::AlreadyRunning`] if a live primary holds the prefix; [`Error::Io`] if the
    /// directory or lock cannot be created.
    pub fn acquire(dir: &RuntimeDir) -> Result<PrimaryLock> {
        std::fs::create_dir_all(dir.path())
            .map_err(|e| Error::io(format!("create runtime dir {}", dir.path().display()), e))?;
        let path = dir.lock_path();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let previous = read_owner(&mut file);
        // A secondary probing liveness holds a shared lock for a few microseconds: retry
        // briefly before deciding that another primary is alive.
        let deadline = Instant::now() + Duration::from_millis(300);
        let mut lock = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => break l,
                Err((f, _)) if Instant::now() < deadline => {
                    file = f;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((_, _)) => {
                    return Err(Error::AlreadyRunning {
                        prefix: dir.prefix().to_string(),
                        pid: previous.map(|o| o.pid).unwrap_or(0),
                    })
                }
            }
        };
        let had_files = previous.is_some() || has_run_files(dir);
        let generation = previous.map(|o| o.generation + 1).unwrap_or(1);
        let stale = if had_files {
            let owner = previous.unwrap_or_default();
            remove_run_files(dir);
            Some(owner)
        } else {
            None
        };
        lock.set_len(0)
            .and_then(|_| lock.rewind())
            .and_then(|_| writeln!(lock, "{} {generation}", std::process::id()))
            .and_then(|_| lock.sync_data())
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        Ok(PrimaryLock {
            lock,
            dir: dir.clone(),
            generation,
            stale,
        })
    }

    /// This run's generation (previous run's + 1).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// If a crashed run's files were found and removed, who that run was.
    pub fn stale_owner(&self) -> Option<LockOwner> {
        self.stale
    }

    /// The runtime directory.
    pub fn dir(&self) -> &RuntimeDir {
        &self.dir
    }

    /// Removes every file of this run (memseg files, links, socket, lock file, directory)
    /// and releases the lock.
    pub fn remove_run(self) {
        remove_run_files(&self.dir);
        let _ = std::fs::remove_file(self.dir.lock_path());
        let _ = std::fs::remove_dir(self.dir.path());
        drop(self.lock);
    }
}

fn has_run_files(dir: &RuntimeDir) -> bool {
    std::fs::read_dir(dir.path())
        .map(|rd| rd.flatten().any(|e| e.file_name() != "lock"))
        .unwrap_or(false)
}

/// Removes a run's memseg files (through the links and by name in every hugetlbfs mount and
/// /dev/shm), the links and the socket. Leaves the lock file.
fn remove_run_files(dir: &RuntimeDir) {
    if let Ok(rd) = std::fs::read_dir(dir.path()) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "seg") {
                if let Ok(target) = std::fs::read_link(&p) {
                    let _ = std::fs::remove_file(target);
                }
                let _ = std::fs::remove_file(&p);
            } else if e.file_name() != "lock" {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    // Files created before their link was made (a crash in between).
    let pattern = format!("shmdp.{}.", dir.prefix());
    let mut dirs: Vec<PathBuf> = crate::backing::huge_mounts()
        .into_iter()
        .map(|m| m.dir)
        .collect();
    dirs.push(PathBuf::from("/dev/shm"));
    for d in dirs {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&pattern) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cannot_escape_their_directory() {
        assert!("shmdp".parse::<FilePrefix>().is_ok());
        assert!("a-b_9".parse::<FilePrefix>().is_ok());
        for bad in ["", "a/b", "..", "../x", "a.b", "a b", &"x".repeat(33)] {
            assert!(bad.parse::<FilePrefix>().is_err(), "{bad:?}");
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "flock(2) is not supported by Miri")]
    fn lock_excludes_a_second_primary_and_detects_stale_runs() {
        let base = std::env::temp_dir().join(format!("shmdp-rt-test-{}", std::process::id()));
        std::env::set_var("SHMDP_RUNTIME_DIR", &base);
        let dir = RuntimeDir::for_prefix(&"locktest".parse().unwrap());
        assert_eq!(dir.probe(), Liveness::NoRun);
        let lock = PrimaryLock::acquire(&dir).unwrap();
        assert_eq!(lock.generation(), 1);
        assert!(lock.stale_owner().is_none());
        assert!(
            matches!(dir.probe(), Liveness::Alive { owner: Some(o) } if o.pid == std::process::id())
        );
        assert!(matches!(
            PrimaryLock::acquire(&dir),
            Err(Error::AlreadyRunning { .. })
        ));
        // Simulate a crash: drop the lock without removing files, leave a stray file.
        std::fs::write(dir.path().join("junk.seg"), b"").unwrap();
        drop(lock);
        assert!(matches!(dir.probe(), Liveness::Stale { .. }));
        let lock = PrimaryLock::acquire(&dir).unwrap();
        assert_eq!(lock.generation(), 2);
        assert_eq!(lock.stale_owner().unwrap().pid, std::process::id());
        assert!(!dir.path().join("junk.seg").exists());
        lock.remove_run();
        assert!(!dir.path().exists());
        let _ = std::fs::remove_dir_all(&base);
    }
}
