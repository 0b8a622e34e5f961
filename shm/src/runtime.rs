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
//! Nothing here trusts the file system blindly (see [`crate::access`]): the primary
//! creates the base and runtime directories itself or refuses ones that belong to
//! someone else or that group or others may write to ([`RuntimeDir::prepare`]); a
//! secondary checks the same before it believes a lock or connects to a socket
//! ([`RuntimeDir::check_existing`]); clean-up never deletes through a `*.seg` link that
//! does not name one of this prefix's memseg files owned by this user.
//!
//! Liveness is the lock: a primary holds it exclusively until it exits (even by `kill -9`,
//! when the kernel drops it). A process that finds the lock free but files present has found
//! a stale run; the next primary removes those files before creating its own.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::access::{self, Access};
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

    /// For the primary: makes the base directory (0711) if it is missing, checks it and
    /// every directory above it, makes the runtime directory if it is missing, refuses it
    /// if it is a symlink, belongs to another user or is writable by group or others, and
    /// gives it `access`'s group and mode. Returns the same directory by its canonical
    /// path, which is what the run uses from then on.
    ///
    /// # Errors
    /// [`Error::Untrusted`] (one line with the fix) or [`Error::Io`].
    pub fn prepare(&self, access: Access) -> Result<RuntimeDir> {
        let me = access::my_uid();
        let base = self.dir.parent().unwrap_or(Path::new("/"));
        let mut created_base = false;
        if std::fs::symlink_metadata(base).is_err() {
            if let Some(parent) = base.parent() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
            }
            match DirBuilder::new().mode(0o711).create(base) {
                Ok(()) => created_base = true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(format!("create {}", base.display()), e)),
            }
        }
        let canon = base
            .canonicalize()
            .map_err(|e| Error::io(format!("resolve {}", base.display()), e))?;
        if let Some(above) = canon.parent() {
            access::check_ancestors(above, None)?;
        }
        const BASE: &str = "runtime base directory";
        let bf = access::open_dir_nofollow(&canon)
            .map_err(|e| access::dir_open_error(BASE, &canon, e))?;
        let md = bf
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", canon.display()), e))?;
        access::check_owned_dir(BASE, &canon, &md, &[me, 0])?;
        // Exact modes whatever the umask; a group needs to traverse the base.
        let want = if created_base {
            0o711
        } else {
            md.mode() & 0o777
        };
        let want = if access.group().is_some() {
            want | 0o011
        } else {
            want
        };
        if md.uid() == me && want != md.mode() & 0o777 {
            bf.set_permissions(std::fs::Permissions::from_mode(want))
                .map_err(|e| Error::io(format!("chmod {}", canon.display()), e))?;
        }
        let dir = canon.join(self.prefix.as_str());
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(access::dir_open_error(BASE, &canon, e)),
        }
        const RUN: &str = "runtime directory";
        let f =
            access::open_dir_nofollow(&dir).map_err(|e| access::dir_open_error(RUN, &dir, e))?;
        let md = f
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", dir.display()), e))?;
        access::check_owned_dir(RUN, &dir, &md, &[me])?;
        access.apply(&f, &dir, true)?;
        Ok(RuntimeDir {
            prefix: self.prefix.clone(),
            dir,
        })
    }

    /// For a secondary: checks the runtime directory a primary made before anything in it
    /// is believed. It must be a real directory (no symlink) that nobody but its owner can
    /// write to, owned by this user, by root, or (a `--group` run) by a user whose
    /// directory is group-owned by one of this process's groups; every directory above it
    /// belongs to root, to us or to that owner and is not writable by others unless
    /// sticky. Returns the directory by its canonical path and the uid its primary must
    /// run as (checked on the socket with `SO_PEERCRED`), or `None` when there is no
    /// runtime directory at all.
    ///
    /// # Errors
    /// [`Error::Untrusted`] (one line with the fix) or [`Error::Io`].
    pub fn check_existing(&self) -> Result<Option<(RuntimeDir, u32)>> {
        const RUN: &str = "runtime directory";
        match std::fs::symlink_metadata(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(access::dir_open_error(RUN, &self.dir, e)),
            Ok(_) => {}
        }
        let base = self.dir.parent().unwrap_or(Path::new("/"));
        let canon = base
            .canonicalize()
            .map_err(|e| Error::io(format!("resolve {}", base.display()), e))?
            .join(self.prefix.as_str());
        let f = access::open_dir_nofollow(&canon)
            .map_err(|e| access::dir_open_error(RUN, &canon, e))?;
        let md = f
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", canon.display()), e))?;
        let me = access::my_uid();
        let owner = md.uid();
        let group_run = md.mode() & 0o070 != 0 && access::in_group(md.gid());
        if owner != me && owner != 0 && !group_run {
            return Err(Error::Untrusted(format!(
                "runtime directory {} belongs to uid {owner}, not to this user (uid {me}) nor shared with a group of ours; run as uid {owner}, or have its primary started with --group",
                canon.display()
            )));
        }
        access::check_owned_dir(RUN, &canon, &md, &[owner])?;
        if let Some(above) = canon.parent() {
            access::check_ancestors(above, Some(owner))?;
        }
        Ok(Some((
            RuntimeDir {
                prefix: self.prefix.clone(),
                dir: canon,
            },
            owner,
        )))
    }

    /// What the lock says about this prefix, without taking it.
    pub fn probe(&self) -> Liveness {
        let path = self.lock_path();
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Liveness::NoRun,
            // Present but not ours to read: say so through the socket check, not "no run".
            Err(_) => return Liveness::Alive { owner: None },
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
    /// Prepares the runtime directory ([`RuntimeDir::prepare`]) and takes the prefix's
    /// lock (mode 0600, or 0660 for a group). If a previous run crashed, its files are
    /// removed first (see [`PrimaryLock::stale_owner`]); nothing is removed when the
    /// directory is refused.
    ///
    /// # Errors
    /// [`Error::AlreadyRunning`] if a live primary holds the prefix;
    /// [`Error::Untrusted`] if the directory cannot be trusted; [`Error::Io`] if the
    /// directory or lock cannot be created.
    pub fn acquire(dir: &RuntimeDir, access: Access) -> Result<PrimaryLock> {
        let dir = &dir.prepare(access)?;
        let path = dir.lock_path();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(access.file_mode())
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
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
        access.apply(&lock, &path, false)?;
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
/// /dev/shm), the links and the socket. Leaves the lock file. Only this user's memseg
/// files of this prefix are removed: a link to anything else is removed, not followed.
fn remove_run_files(dir: &RuntimeDir) {
    let me = access::my_uid();
    let mut stores: Vec<PathBuf> = crate::backing::huge_mounts()
        .into_iter()
        .map(|m| m.dir)
        .collect();
    stores.push(PathBuf::from("/dev/shm"));
    if let Ok(rd) = std::fs::read_dir(dir.path()) {
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name();
            if let Some(memseg) = name.to_str().and_then(|n| n.strip_suffix(".seg")) {
                if let Ok(target) = std::fs::read_link(&p) {
                    if is_own_memseg_file(dir, memseg, &target, &stores, me) {
                        let _ = std::fs::remove_file(&target);
                    } else {
                        tracing::warn!(
                            "{} points to {}, not to a memseg file of this prefix owned by uid {me}: removing the link only",
                            p.display(),
                            target.display()
                        );
                    }
                }
                let _ = std::fs::remove_file(&p);
            } else if name != "lock" {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    // Files created before their link was made (a crash in between).
    let pattern = format!("shmdp.{}.", dir.prefix());
    for d in stores {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let ours = e
                    .metadata() // of the entry itself: does not follow a symlink
                    .is_ok_and(|m| m.is_file() && m.uid() == me);
                if ours && e.file_name().to_string_lossy().starts_with(&pattern) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// True when `target` (a `<memseg>.seg` link's text) names this prefix's file of
/// `memseg` directly inside one of the memseg `stores`, and that file is a regular file
/// (not a symlink) owned by `uid`.
fn is_own_memseg_file(
    dir: &RuntimeDir,
    memseg: &str,
    target: &Path,
    stores: &[PathBuf],
    uid: u32,
) -> bool {
    check_memseg_name(memseg).is_ok()
        && target
            .parent()
            .is_some_and(|p| stores.iter().any(|s| s == p))
        && target
            .file_name()
            .is_some_and(|n| *n == *dir.memseg_file_name(memseg))
        && std::fs::symlink_metadata(target).is_ok_and(|m| m.is_file() && m.uid() == uid)
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
        let lock = PrimaryLock::acquire(&dir, Access::private()).unwrap();
        assert_eq!(lock.generation(), 1);
        assert!(lock.stale_owner().is_none());
        assert!(
            matches!(dir.probe(), Liveness::Alive { owner: Some(o) } if o.pid == std::process::id())
        );
        assert!(matches!(
            PrimaryLock::acquire(&dir, Access::private()),
            Err(Error::AlreadyRunning { .. })
        ));
        // Simulate a crash: drop the lock without removing files, leave a stray file.
        std::fs::write(dir.path().join("junk.seg"), b"").unwrap();
        drop(lock);
        assert!(matches!(dir.probe(), Liveness::Stale { .. }));
        let lock = PrimaryLock::acquire(&dir, Access::private()).unwrap();
        assert_eq!(lock.generation(), 2);
        assert_eq!(lock.stale_owner().unwrap().pid, std::process::id());
        assert!(!dir.path().join("junk.seg").exists());
        lock.remove_run();
        assert!(!dir.path().exists());
        let _ = std::fs::remove_dir_all(&base);
    }

    fn scratch(tag: &str) -> (PathBuf, RuntimeDir) {
        let base = std::env::temp_dir().join(format!("shmdp-rt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = RuntimeDir {
            prefix: tag.parse().unwrap(),
            dir: base.join(tag),
        };
        (base, dir)
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system calls")]
    fn dirs_and_lock_get_exact_modes_and_a_writable_dir_is_refused_untouched() {
        let (base, dir) = scratch("modes");
        let lock = PrimaryLock::acquire(&dir, Access::private()).unwrap();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&base), 0o711);
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&dir.lock_path()), 0o600);
        drop(lock);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(dir.path().join("planted"), b"x").unwrap();
        let e = PrimaryLock::acquire(&dir, Access::private()).unwrap_err();
        assert!(matches!(e, Error::Untrusted(_)), "{e}");
        assert!(e.to_string().contains("writable by group or others"), "{e}");
        assert!(dir.path().join("planted").exists(), "nothing deleted");
        assert!(dir.path().join("lock").exists(), "nothing deleted");
        // A symlinked runtime directory is refused too, not followed.
        std::fs::remove_dir_all(dir.path()).unwrap();
        let elsewhere = base.join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path()).unwrap();
        let e = PrimaryLock::acquire(&dir, Access::private()).unwrap_err();
        assert!(e.to_string().contains("is a symlink"), "{e}");
        assert!(matches!(dir.check_existing(), Err(Error::Untrusted(_))));
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system calls")]
    fn stale_seg_links_are_never_followed_outside_our_memseg_files() {
        let (base, dir) = scratch("links");
        let lock = PrimaryLock::acquire(&dir, Access::private()).unwrap();
        let victim = base.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.memseg_link("main")).unwrap();
        // Right directory, wrong name.
        let shm_victim = PathBuf::from(format!("/dev/shm/shmdp-victim-{}", std::process::id()));
        std::fs::write(&shm_victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&shm_victim, dir.memseg_link("other")).unwrap();
        drop(lock); // a crash
        let lock = PrimaryLock::acquire(&dir, Access::private()).unwrap();
        assert!(lock.stale_owner().is_some());
        assert!(
            !dir.memseg_link("main").exists(),
            "the link itself is removed"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&shm_victim).unwrap(), b"precious");
        let stores = [PathBuf::from("/dev/shm")];
        let own = PathBuf::from("/dev/shm").join(dir.memseg_file_name("main"));
        std::fs::write(&own, b"").unwrap();
        assert!(is_own_memseg_file(
            &dir,
            "main",
            &own,
            &stores,
            access::my_uid()
        ));
        assert!(!is_own_memseg_file(
            &dir,
            "main",
            &own,
            &stores,
            access::my_uid() + 1
        ));
        assert!(!is_own_memseg_file(
            &dir,
            "x",
            &own,
            &stores,
            access::my_uid()
        ));
        std::fs::remove_file(&own).unwrap();
        lock.remove_run();
        std::fs::remove_file(&shm_victim).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }
}
