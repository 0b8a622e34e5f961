//! Who may reach a process group's files and control socket: other local users get
//! nothing.
//!
//! A primary runs with an [`Access`]: private (the default) or shared with one operator
//! group (`--group NAME`). It decides every mode the primary sets, whatever the umask:
//!
//! | object                        | private | `--group`          |
//! |-------------------------------|---------|--------------------|
//! | runtime directory `<prefix>/` | 0700    | 0750, group NAME   |
//! | `lock`, `ctl.sock`, memsegs   | 0600    | 0660, group NAME   |
//! | base directory (`/run/shmdp`) | 0711 when we create it (traverse only) |
//!
//! Directories are opened with `O_NOFOLLOW` and checked on the open descriptor (owner and
//! mode), so a symlink or a directory someone else prepared is refused, never followed or
//! used. Every directory above the base must belong to root or to us and, if others can
//! write to it, carry the sticky bit (as `/tmp` does), so nobody can swap a component
//! after the checks.
//!
//! The control socket admits a peer by its kernel credentials (`SO_PEERCRED`, see
//! unix(7)): [`Access::admits`].

use std::fs::{File, OpenOptions, Permissions};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};

use crate::{Error, Result};

/// Who may use a primary's files and control socket besides its own user (and root).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Access {
    group: Option<u32>,
}

impl Access {
    /// Only this user (and root).
    pub fn private() -> Access {
        Access { group: None }
    }

    /// This user, root and the members of group `gid`.
    pub fn with_group(gid: u32) -> Access {
        Access { group: Some(gid) }
    }

    /// Resolves `--group NAME` (a name or a numeric gid).
    ///
    /// # Errors
    /// [`Error::Config`] if there is no such group.
    pub fn for_group_name(name: &str) -> Result<Access> {
        if let Ok(gid) = name.parse::<u32>() {
            return Ok(Access::with_group(gid));
        }
        match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Ok(Access::with_group(g.gid.as_raw())),
            _ => Err(Error::Config(format!(
                "--group {name}: no such group; create it (groupadd {name}) or drop --group"
            ))),
        }
    }

    /// The operator group, if any.
    pub fn group(&self) -> Option<u32> {
        self.group
    }

    /// Mode of the runtime directory.
    pub fn dir_mode(&self) -> u32 {
        if self.group.is_some() {
            0o750
        } else {
            0o700
        }
    }

    /// Mode of the lock file, the control socket and the memseg files.
    pub fn file_mode(&self) -> u32 {
        if self.group.is_some() {
            0o660
        } else {
            0o600
        }
    }

    /// Gives the open file `file` (at `path`, for messages) its group and exact mode:
    /// `fchown` then `fchmod`, so the umask plays no part.
    ///
    /// # Errors
    /// [`Error::Config`] when this user may not hand the file to the group (not a member);
    /// [`Error::Io`] otherwise.
    pub fn apply(&self, file: &File, path: &Path, dir: bool) -> Result<()> {
        if let Some(gid) = self.group {
            std::os::unix::fs::fchown(file.as_fd(), None, Some(gid)).map_err(|e| {
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    Error::Config(format!(
                        "--group {gid}: cannot give {} to the group: this user is not a member of it (usermod -aG GROUP USER, then log in again)",
                        path.display()
                    ))
                } else {
                    Error::io(format!("chown {}", path.display()), e)
                }
            })?;
        }
        let mode = if dir {
            self.dir_mode()
        } else {
            self.file_mode()
        };
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| Error::io(format!("chmod {}", path.display()), e))
    }

    /// Sets the group and mode of the file at `path` that this process just made (a
    /// bound socket, which has no descriptor to `fchmod`). Only for paths inside a
    /// runtime directory already checked, where nobody else can swap the entry.
    ///
    /// # Errors
    /// As [`Access::apply`].
    pub fn apply_path(&self, path: &Path) -> Result<()> {
        if let Some(gid) = self.group {
            std::os::unix::fs::lchown(path, None, Some(gid))
                .map_err(|e| Error::io(format!("chown {}", path.display()), e))?;
        }
        std::fs::set_permissions(path, Permissions::from_mode(self.file_mode()))
            .map_err(|e| Error::io(format!("chmod {}", path.display()), e))
    }

    /// True when a control-socket peer may be served: it runs as this process's effective
    /// uid, as root, or (with a group) with the group as its primary or a supplementary
    /// group (read from `/proc/<pid>/status` of the peer).
    pub fn admits(&self, peer: &PeerCred) -> bool {
        let me = nix::unistd::geteuid().as_raw();
        if peer.uid == me || peer.uid == 0 {
            return true;
        }
        let Some(gid) = self.group else {
            return false;
        };
        peer.gid == gid || process_groups(peer.pid).contains(&gid)
    }
}

/// The kernel's record of who is at the other end of a unix socket (`SO_PEERCRED`: the
/// credentials of the process at `connect`/`listen` time, see unix(7)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id (in our pid namespace).
    pub pid: u32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// Reads the peer's credentials of a connected unix socket.
///
/// # Errors
/// The `getsockopt` error.
pub fn peer_cred(conn: &UnixStream) -> std::io::Result<PeerCred> {
    let c = nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(std::io::Error::from)?;
    Ok(PeerCred {
        pid: c.pid() as u32,
        uid: c.uid(),
        gid: c.gid(),
    })
}

/// Every group of process `pid`: its effective gid and supplementary groups, from
/// `/proc/<pid>/status` (empty if it is gone).
fn process_groups(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    parse_groups(&status)
}

fn parse_groups(status: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for line in status.lines() {
        if let Some(gids) = line.strip_prefix("Gid:") {
            // real, effective, saved, fs
            out.extend(
                gids.split_whitespace()
                    .nth(1)
                    .and_then(|g| g.parse::<u32>().ok()),
            );
        } else if let Some(gids) = line.strip_prefix("Groups:") {
            out.extend(
                gids.split_whitespace()
                    .filter_map(|g| g.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// This process's effective uid.
pub fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// True when this process has group `gid` (effective or supplementary).
pub fn in_group(gid: u32) -> bool {
    nix::unistd::getegid().as_raw() == gid
        || nix::unistd::getgroups()
            .map(|g| g.iter().any(|x| x.as_raw() == gid))
            .unwrap_or(false)
}

/// Opens directory `path` without following a symlink in its last component.
pub(crate) fn open_dir_nofollow(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Explains an open error of a directory we must trust.
pub(crate) fn dir_open_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => Error::Untrusted(format!(
            "{what} {} is a symlink or not a directory; remove it (rm {}) and start again",
            path.display(),
            path.display()
        )),
        Some(libc::EACCES) => Error::Untrusted(format!(
            "{what} {} is not accessible to this user (uid {}); run as its owner, or start the primary with --group and join that group",
            path.display(),
            my_uid()
        )),
        _ => Error::io(format!("open {what} {}", path.display()), e),
    }
}

/// Checks every directory from `/` down to `path` (which must be absolute and free of
/// symlinks, e.g. canonical): each belongs to root, to us or to `also_trusted`, and if
/// group or others may write to it, it has the sticky bit, so no other user can rename
/// or replace what lies below it.
///
/// # Errors
/// [`Error::Untrusted`] naming the first directory that fails.
pub(crate) fn check_ancestors(path: &Path, also_trusted: Option<u32>) -> Result<()> {
    let me = my_uid();
    let mut cur = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::RootDir => cur.push("/"),
            Component::Normal(c) => cur.push(c),
            _ => {
                return Err(Error::Untrusted(format!(
                    "runtime path {} is not canonical",
                    path.display()
                )))
            }
        }
        let md = std::fs::symlink_metadata(&cur)
            .map_err(|e| Error::io(format!("stat {}", cur.display()), e))?;
        let uid = md.uid();
        if uid != 0 && uid != me && Some(uid) != also_trusted {
            return Err(Error::Untrusted(format!(
                "{} (above the runtime directory) belongs to uid {uid}, who could replace what is below it; set SHMDP_RUNTIME_DIR to a directory of your own",
                cur.display()
            )));
        }
        let mode = md.mode();
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(Error::Untrusted(format!(
                "{} (above the runtime directory) is writable by others without the sticky bit (mode {:o}); chmod go-w {} or set SHMDP_RUNTIME_DIR elsewhere",
                cur.display(),
                mode & 0o7777,
                cur.display()
            )));
        }
    }
    Ok(())
}

/// Refuses a runtime or base directory `md` (of `path`) that belongs to someone else
/// than `owner` or that group or others may write to.
pub(crate) fn check_owned_dir(
    what: &str,
    path: &Path,
    md: &std::fs::Metadata,
    owners: &[u32],
) -> Result<()> {
    if !md.is_dir() {
        return Err(Error::Untrusted(format!(
            "{what} {} is not a directory; remove it (rm {}) and start again",
            path.display(),
            path.display()
        )));
    }
    if !owners.contains(&md.uid()) {
        return Err(Error::Untrusted(format!(
            "{what} {} belongs to uid {}, not to this user (uid {}); remove it (rm -r {}) or choose another --file-prefix or SHMDP_RUNTIME_DIR",
            path.display(),
            md.uid(),
            my_uid(),
            path.display()
        )));
    }
    if md.mode() & 0o022 != 0 {
        return Err(Error::Untrusted(format!(
            "{what} {} is writable by group or others (mode {:o}), so its files cannot be trusted; remove it (rm -r {}) and start again",
            path.display(),
            md.mode() & 0o7777,
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(
        miri,
        ignore = "group lookups (getgrnam, sysconf) are not supported by Miri"
    )]
    fn modes_follow_the_group_option() {
        assert_eq!(Access::private().dir_mode(), 0o700);
        assert_eq!(Access::private().file_mode(), 0o600);
        assert_eq!(Access::with_group(5).dir_mode(), 0o750);
        assert_eq!(Access::with_group(5).file_mode(), 0o660);
        assert!(Access::for_group_name("no-such-group-shmdp").is_err());
        assert_eq!(Access::for_group_name("77").unwrap().group(), Some(77));
    }

    #[test]
    #[cfg_attr(miri, ignore = "uid and group calls are not supported by Miri")]
    fn other_uids_are_admitted_only_through_the_group() {
        let me = my_uid();
        let mine = PeerCred {
            pid: std::process::id(),
            uid: me,
            gid: 0,
        };
        assert!(Access::private().admits(&mine));
        assert!(Access::private().admits(&PeerCred { uid: 0, ..mine }));
        let stranger = PeerCred {
            pid: u32::MAX - 1, // no such process: no supplementary groups
            uid: 64999,
            gid: 64999,
        };
        assert!(!Access::private().admits(&stranger));
        assert!(!Access::with_group(4242).admits(&stranger));
        assert!(Access::with_group(64999).admits(&stranger));
    }

    #[test]
    fn groups_are_parsed_from_proc_status() {
        let s = "Name:\tx\nGid:\t10\t20\t20\t20\nGroups:\t4 24 27 \n";
        assert_eq!(parse_groups(s), [20, 4, 24, 27]);
        assert!(parse_groups("garbage").is_empty());
    }

    #[test]
    #[cfg_attr(miri, ignore = "sockets are not supported by Miri")]
    fn peer_cred_names_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let c = peer_cred(&a).unwrap();
        assert_eq!(c.pid, std::process::id());
        assert_eq!(c.uid, my_uid());
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system calls are not supported by Miri")]
    fn writable_or_symlinked_directories_are_untrusted() {
        let base = std::env::temp_dir().join(format!("shmdp-access-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir(&base).unwrap();
        let d = base.join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, Permissions::from_mode(0o777)).unwrap();
        let md = std::fs::metadata(&d).unwrap();
        let e = check_owned_dir("runtime directory", &d, &md, &[my_uid()]).unwrap_err();
        assert!(e.to_string().contains("writable by group or others"), "{e}");
        std::fs::set_permissions(&d, Permissions::from_mode(0o700)).unwrap();
        let md = std::fs::metadata(&d).unwrap();
        check_owned_dir("runtime directory", &d, &md, &[my_uid()]).unwrap();
        let e = check_owned_dir("runtime directory", &d, &md, &[my_uid() + 1]).unwrap_err();
        assert!(e.to_string().contains("belongs to uid"), "{e}");
        let link = base.join("l");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        let e = open_dir_nofollow(&link).unwrap_err();
        // O_NOFOLLOW with O_DIRECTORY on a symlink: ENOTDIR (ELOOP without O_DIRECTORY).
        assert!(
            matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)),
            "{e}"
        );
        // /tmp is sticky: fine above a runtime directory; a 0777 directory is not.
        check_ancestors(&std::env::temp_dir().canonicalize().unwrap(), None).unwrap();
        std::fs::set_permissions(&d, Permissions::from_mode(0o777)).unwrap();
        let e = check_ancestors(&d.canonicalize().unwrap(), None).unwrap_err();
        assert!(e.to_string().contains("without the sticky bit"), "{e}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
