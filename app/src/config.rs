//! The config file (`--config FILE`, TOML), read once into typed values: a `[fwd]` table
//! of forwarding options and `[[ivshmem]]` export groups.
//!
//! Where it sits: read by [`FwdArgs::resolve`](crate::fwdargs::FwdArgs::resolve) (both
//! programs take `--config`); the `[fwd]` table is merged under the command line there,
//! the export groups become the `primary` library's [`ExportRequest`]s for
//! `shmdp-primary` ([`ConfigFile::exports`]), validated as `--ivshmem` is
//! ([`export_request`]). `shmdp-secondary` ignores the export groups.

use std::path::{Path, PathBuf};

use ivshmem_meta::Kind;
use primary::ExportRequest;

use crate::CliError;

/// A read config file.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// The `[fwd]` table, if there is one (it also asks the primary to forward).
    pub fwd: Option<FwdTable>,
    /// The `[[ivshmem]]` tables.
    pub ivshmem: Vec<ExportTable>,
}

/// The file as TOML has it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    fwd: Option<FwdTable>,
    ivshmem: Option<Vec<ExportTable>>,
}

/// The `[fwd]` table: the forwarding options of the command line, by their names
/// (`--stats-period` is `stats_period`, ...); the command line wins over them.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FwdTable {
    /// `--fwd`.
    pub mode: Option<String>,
    /// `--portlist`, as a list of port ids.
    pub portlist: Option<Vec<u16>>,
    /// `--burst`.
    pub burst: Option<u16>,
    /// `-l/--lcores`, as a list of CPU numbers.
    pub lcores: Option<Vec<usize>>,
    /// `--stats-period`.
    pub stats_period: Option<u64>,
    /// `--stats-json`.
    pub stats_json: Option<PathBuf>,
    /// `--idle-exit`.
    pub idle_exit: Option<f64>,
    /// `--duration`.
    pub duration: Option<f64>,
    /// `--txpkts`.
    pub txpkts: Option<u16>,
    /// `--tx-count`.
    pub tx_count: Option<u64>,
    /// `--tx-ethertype`, as a number.
    pub tx_ethertype: Option<u16>,
    /// `--tx-first`.
    pub tx_first: Option<bool>,
    /// `--tx-retry`.
    pub tx_retry: Option<bool>,
}

/// One `[[ivshmem]]` table: an export group and what it exports (as `--ivshmem
/// GROUP:ring=A,pool=B,...`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportTable {
    /// Group (and memseg) name.
    pub group: String,
    /// Rings to export.
    #[serde(default)]
    pub ring: Vec<String>,
    /// Pools to export.
    #[serde(default)]
    pub pool: Vec<String>,
    /// Memzones to export.
    #[serde(default)]
    pub memzone: Vec<String>,
    /// Ports to export (`net_ring` ports: the guest opens the other end).
    #[serde(default)]
    pub port: Vec<String>,
}

impl ExportTable {
    /// The export request this table describes: rings, pools, memzones, then ports.
    ///
    /// # Errors
    /// As [`export_request`].
    pub fn request(&self) -> Result<ExportRequest, String> {
        let kinds = [
            (Kind::Ring, &self.ring),
            (Kind::Mempool, &self.pool),
            (Kind::Memzone, &self.memzone),
            (Kind::Port, &self.port),
        ];
        let items = kinds
            .into_iter()
            .flat_map(|(kind, names)| names.iter().map(move |n| (kind, n.clone())))
            .collect();
        export_request(&self.group, items)
    }
}

impl ConfigFile {
    /// Reads and parses `path`.
    ///
    /// # Errors
    /// [`Exit::Usage`](crate::Exit::Usage): one line naming the file and the problem
    /// (unreadable, not TOML, an unknown table or key, a value of the wrong type).
    pub fn read(path: &Path) -> Result<ConfigFile, CliError> {
        let bad = |e: String| CliError::usage(format!("--config {}: {e}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let raw: RawFile = toml::from_str(&text)
            .map_err(|e| bad(e.to_string().lines().collect::<Vec<_>>().join(" ")))?;
        Ok(ConfigFile {
            path: path.to_path_buf(),
            fwd: raw.fwd,
            ivshmem: raw.ivshmem.unwrap_or_default(),
        })
    }

    /// The `[[ivshmem]]` export groups as the primary takes them.
    ///
    /// # Errors
    /// [`Exit::Usage`](crate::Exit::Usage): `--config FILE: [[ivshmem]] GROUP: ` and what
    /// is wrong with the group.
    pub fn exports(&self) -> Result<Vec<ExportRequest>, CliError> {
        self.ivshmem
            .iter()
            .map(|t| {
                t.request().map_err(|e| {
                    CliError::usage(format!(
                        "--config {}: [[ivshmem]] {}: {e}",
                        self.path.display(),
                        t.group
                    ))
                })
            })
            .collect()
    }
}

/// An export group `group` of `items`, checked as both `--ivshmem` and `[[ivshmem]]` are:
/// the group is a valid memseg name, every object name fits a memzone name, and there are
/// at most [`ivshmem_meta::MAX_ENTRIES`] objects.
///
/// # Errors
/// One line saying which rule is broken.
pub fn export_request(group: &str, items: Vec<(Kind, String)>) -> Result<ExportRequest, String> {
    shm::runtime::check_memseg_name(group)?;
    if let Some((_, name)) = items
        .iter()
        .find(|(_, n)| shm::layout::encode_name(n).is_none())
    {
        return Err(format!("name {name:?} must be 1..31 bytes"));
    }
    if items.len() > ivshmem_meta::MAX_ENTRIES {
        return Err(format!(
            "at most {} objects per group",
            ivshmem_meta::MAX_ENTRIES
        ));
    }
    Ok(ExportRequest {
        group: group.to_string(),
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("shmdp-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn export_tables_become_typed_requests() {
        let path = write(
            "iv",
            "[[ivshmem]]\ngroup = \"vm1\"\nport = [\"net_ring0\"]\nring = [\"a\", \"b\"]\npool = [\"p\"]\n",
        );
        let file = ConfigFile::read(&path).unwrap();
        assert!(file.fwd.is_none());
        let e = file.exports().unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].group, "vm1");
        let items: Vec<(Kind, &str)> = e[0].items.iter().map(|(k, n)| (*k, n.as_str())).collect();
        assert_eq!(
            items,
            [
                (Kind::Ring, "a"),
                (Kind::Ring, "b"),
                (Kind::Mempool, "p"),
                (Kind::Port, "net_ring0")
            ]
        );
        std::fs::write(
            &path,
            "[[ivshmem]]\ngroup = \"vm1\"\nring = [\"a,pool=b\"]\n",
        )
        .unwrap();
        // A name is a name: no second parse can read a comma in it as another item.
        let e = ConfigFile::read(&path).unwrap().exports().unwrap();
        assert_eq!(e[0].items, [(Kind::Ring, "a,pool=b".to_string())]);
        let long = "x".repeat(40);
        std::fs::write(
            &path,
            format!("[[ivshmem]]\ngroup = \"vm1\"\nring = [\"{long}\"]\n"),
        )
        .unwrap();
        let err = ConfigFile::read(&path)
            .unwrap()
            .exports()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[[ivshmem]] vm1: name") && err.contains("1..31 bytes"),
            "{err}"
        );
        std::fs::write(&path, "[[ivshmem]]\ngroup = \"vm1\"\nrings = [\"a\"]\n").unwrap();
        let err = ConfigFile::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("unknown field") && err.contains("rings"),
            "{err}"
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn export_requests_are_checked() {
        assert!(export_request("vm1", vec![(Kind::Ring, "r".into())]).is_ok());
        assert!(export_request("a/b", vec![]).is_err());
        assert!(export_request("vm1", vec![(Kind::Ring, String::new())]).is_err());
        let many = (0..=ivshmem_meta::MAX_ENTRIES)
            .map(|i| (Kind::Ring, format!("r{i}")))
            .collect();
        assert!(export_request("vm1", many)
            .unwrap_err()
            .contains("objects per group"));
    }
}
