//! `qemu-cmdgen`: turns a running primary's export groups into the exact QEMU arguments
//! (`memory-backend-file` + `ivshmem-plain`) that give a guest those segments.
//!
//! Where it sits: beside the primary, read-only. It finds the primary's memseg files
//! through the runtime directory (`/run/shmdp/<prefix>/<memseg>.seg` links), keeps those
//! holding a valid export metadata block (`ivshmem-meta`), and renders one
//! `-object`/`-device` pair per group. What it prints comes from the primary's side only
//! (link names, their targets, file sizes), never from the guest-writable segment, and
//! every option value is escaped for QEMU. Devices get stable PCI slots, in group-name order from [`FIRST_SLOT`], so a
//! guest (and a libvirt domain) sees the same address for a group every time; a guest also
//! identifies a device by the group name in its metadata.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use shm::runtime::{FilePrefix, Liveness, RuntimeDir};

/// PCI slot of the first export device (slots 0x10.. are free on QEMU's `pc` and `q35`
/// machines with the default devices).
pub const FIRST_SLOT: u32 = 0x10;

/// One export group as QEMU needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Group name.
    pub group: String,
    /// The segment file.
    pub path: PathBuf,
    /// Its size (a power of two).
    pub size: u64,
    /// PCI slot.
    pub slot: u32,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Shell-quoted arguments on one line.
    Shell,
    /// A JSON array of arguments.
    Json,
    /// A libvirt domain XML fragment (`<qemu:commandline>`).
    Libvirt,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "shell" => Ok(Format::Shell),
            "json" => Ok(Format::Json),
            "libvirt" => Ok(Format::Libvirt),
            other => Err(format!("--format {other:?}: use shell, json or libvirt")),
        }
    }
}

/// Why no arguments could be made.
#[derive(Debug, thiserror::Error)]
pub enum CmdgenError {
    /// No primary runs on the prefix.
    #[error(
        "no primary is running with --file-prefix {0}; start shmdp-primary with --ivshmem first"
    )]
    NoPrimary(String),
    /// A group that the primary does not export.
    #[error("export group {group:?} is not exported by the primary (exported: {known})")]
    UnknownGroup {
        /// Asked for.
        group: String,
        /// What exists.
        known: String,
    },
    /// The primary exports nothing.
    #[error("the primary with --file-prefix {0} exports no group; start it with --ivshmem GROUP:ring=NAME,...")]
    NothingExported(String),
    /// A segment file QEMU could not share.
    #[error("{path}: {why}")]
    NotShareable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// The size of the memseg file at `path` if it is an export segment (holds a valid
/// metadata block for its size). The block is guest-writable: nothing else of it is used.
fn export_size(path: &Path) -> Option<u64> {
    let f = std::fs::File::open(path).ok()?;
    let mut block = vec![0u8; ivshmem_meta::BLOCK_SIZE];
    f.read_exact_at(&mut block, ivshmem_meta::META_OFFSET)
        .ok()?;
    let meta = ivshmem_meta::decode(&block).ok()?;
    let size = f.metadata().ok()?.len();
    (meta.segment_size == size).then_some(size)
}

/// The export segments linked from the runtime directory `dir`, as `(group, file, size)`
/// in group order. Everything printed later comes from the primary's side: the group is
/// the link's name (`<memseg>.seg`, made by the primary; an export group is the memseg of
/// that name), the path is the link's target, the size the file's; the guest-writable
/// metadata only tells that the memseg is exported. A link whose name is not a valid
/// group name ([`ivshmem_meta::valid_group`]) is skipped.
pub fn exports_in(dir: &Path) -> Vec<(String, PathBuf, u64)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let link = entry.path();
        if link.extension().is_none_or(|e| e != "seg") {
            continue;
        }
        let Some(group) = link.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if !ivshmem_meta::valid_group(group) {
            continue;
        }
        let Ok(path) = std::fs::read_link(&link) else {
            continue;
        };
        if let Some(size) = export_size(&path) {
            all.push((group.to_string(), path, size));
        }
    }
    all.sort();
    all
}

/// The export groups of the primary running on `prefix`, in name order with their slots;
/// only `wanted` ones when it is not empty.
///
/// # Errors
/// [`CmdgenError`]: no primary, nothing exported, an unknown group, a file QEMU could not
/// map shared.
pub fn discover(prefix: &FilePrefix, wanted: &[String]) -> Result<Vec<Export>, CmdgenError> {
    let dir = RuntimeDir::for_prefix(prefix);
    if !matches!(dir.probe(), Liveness::Alive { .. }) {
        return Err(CmdgenError::NoPrimary(prefix.to_string()));
    }
    let all = exports_in(dir.path());
    if all.is_empty() {
        return Err(CmdgenError::NothingExported(prefix.to_string()));
    }
    let exports: Vec<Export> = all
        .into_iter()
        .enumerate()
        .map(|(i, (group, path, size))| Export {
            group,
            path,
            size,
            slot: FIRST_SLOT + i as u32,
        })
        .collect();
    for w in wanted {
        if !exports.iter().any(|e| &e.group == w) {
            return Err(CmdgenError::UnknownGroup {
                group: w.clone(),
                known: exports
                    .iter()
                    .map(|e| e.group.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let chosen: Vec<Export> = exports
        .into_iter()
        .filter(|e| wanted.is_empty() || wanted.contains(&e.group))
        .collect();
    for e in &chosen {
        check_shareable(e)?;
    }
    Ok(chosen)
}

/// QEMU maps the file with `share=on`: it must be a regular file we can open for writing,
/// of a power-of-two size (ivshmem-plain refuses anything else).
fn check_shareable(e: &Export) -> Result<(), CmdgenError> {
    let bad = |why: String| CmdgenError::NotShareable {
        path: e.path.clone(),
        why,
    };
    let md = std::fs::metadata(&e.path).map_err(|err| bad(err.to_string()))?;
    if !md.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if !md.len().is_power_of_two() {
        return Err(bad(format!("size {} is not a power of two", md.len())));
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&e.path)
        .map_err(|err| bad(format!("cannot be opened for writing: {err}")))?;
    let mut one = [0u8; 1];
    f.read(&mut one).map_err(|err| bad(err.to_string()))?;
    Ok(())
}

/// A value inside a QEMU `-object`/`-device` option list: QEMU's option syntax ends a
/// value at a single `,` and reads `,,` as one comma (QEMU `docs/system/invocation`,
/// "option values containing commas").
fn qemu_value(s: &str) -> String {
    s.replace(',', ",,")
}

/// The QEMU arguments for `exports`. Every value is escaped ([`qemu_value`]), whatever is
/// in the [`Export`] (a group name with a comma yields an id QEMU refuses, never another
/// option).
pub fn args(exports: &[Export]) -> Vec<String> {
    let mut out = Vec::new();
    for e in exports {
        let id = qemu_value(&format!("shmdp-{}", e.group));
        out.push("-object".to_string());
        let path = qemu_value(&e.path.display().to_string());
        out.push(format!(
            "memory-backend-file,id={id},mem-path={path},size={},share=on",
            e.size
        ));
        out.push("-device".to_string());
        out.push(format!("ivshmem-plain,memdev={id},addr={:#04x}", e.slot));
    }
    out
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=,./:@%+".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn json_string(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o += "\\\"",
            '\\' => o += "\\\\",
            c if (c as u32) < 0x20 => o += &format!("\\u{:04x}", c as u32),
            c => o.push(c),
        }
    }
    o + "\""
}

fn xml_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// Renders `exports` in `format` (a trailing newline included).
pub fn render(exports: &[Export], format: Format) -> String {
    let a = args(exports);
    match format {
        Format::Shell => {
            a.iter()
                .map(|s| shell_quote(s))
                .collect::<Vec<_>>()
                .join(" ")
                + "\n"
        }
        Format::Json => format!(
            "[{}]\n",
            a.iter()
                .map(|s| json_string(s))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Format::Libvirt => {
            let mut x = String::from(
                "<!-- shmdp export groups: put inside <domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'> -->\n<qemu:commandline>\n",
            );
            for s in &a {
                x += &format!("  <qemu:arg value='{}'/>\n", xml_attr(s));
            }
            x + "</qemu:commandline>\n"
        }
    }
}
