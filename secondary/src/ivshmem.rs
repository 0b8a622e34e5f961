//! Attaching to an IVSHMEM export segment: inside a QEMU guest through the `ivshmem-plain`
//! PCI device (1af4:1110, BAR2 = `resource2` in sysfs), or on the host through the same
//! segment file. Either way the segment is mapped wherever the kernel puts it, its
//! metadata block is validated, and rings and pools are opened by the names it lists:
//! the guest needs no control socket and sees nothing but its own segment.

use std::path::{Path, PathBuf};

use ivshmem_meta::{Kind, Meta, META_OFFSET};
use pmds::Port;
use shm::{Memzone, MemzoneKind, Region};
use shm_mempool::{MbufPool, Mempool};
use shm_ring::Ring;

/// PCI vendor and device of QEMU's ivshmem devices.
pub const IVSHMEM_PCI_ID: (u16, u16) = (0x1af4, 0x1110);

/// Why an export segment could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IvshmemError {
    /// No device or file to open.
    #[error("{0}")]
    NotFound(String),
    /// Mapping failed.
    #[error("{path}: {source}")]
    Io {
        /// What was opened.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The metadata block is not valid.
    #[error("{path}: {source}")]
    BadMeta {
        /// The segment.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: ivshmem_meta::MetaError,
    },
    /// An object is missing or not what the metadata says.
    #[error("{0}")]
    Object(String),
}

/// The BAR2 files of every ivshmem device in this machine's sysfs, in PCI address order.
pub fn find_devices() -> Vec<PathBuf> {
    find_devices_in(Path::new("/sys/bus/pci/devices"))
}

fn find_devices_in(root: &Path) -> Vec<PathBuf> {
    let read_id = |p: PathBuf| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| u16::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|d| {
            read_id(d.join("vendor")) == Some(IVSHMEM_PCI_ID.0)
                && read_id(d.join("device")) == Some(IVSHMEM_PCI_ID.1)
        })
        .map(|d| d.join("resource2"))
        .filter(|r| r.exists())
        .collect();
    found.sort();
    found
}

/// A mapped, validated export segment.
#[derive(Debug, Clone)]
pub struct ExportSegment {
    path: PathBuf,
    region: Region,
    meta: Meta,
    /// The device table its ports are opened with (exported ports are `net_ring` ports,
    /// which run no device; one table per segment, as a process maps one).
    devices: pmds::ethdev::Devices,
}

impl ExportSegment {
    /// Opens `spec`: `auto` (the first ivshmem device, or the one whose group is named
    /// with `auto:GROUP`), a PCI address (`0000:00:10.0`), or a path (a `resource2` file or
    /// the segment file itself).
    ///
    /// # Errors
    /// [`IvshmemError`] naming the device or file and the problem.
    pub fn open(spec: &str) -> Result<ExportSegment, IvshmemError> {
        if let Some(rest) = spec.strip_prefix("auto") {
            let group = rest.strip_prefix(':');
            let devices = find_devices();
            if devices.is_empty() {
                return Err(IvshmemError::NotFound(
                    "no ivshmem device (PCI 1af4:1110) in /sys/bus/pci/devices: start the guest with the arguments shmdp-qemu-cmdgen prints".into(),
                ));
            }
            let mut last = None;
            for d in devices {
                match ExportSegment::map(&d) {
                    Ok(s) if group.is_none_or(|g| s.meta.group == g) => return Ok(s),
                    Ok(_) => {}
                    Err(e) => last = Some(e),
                }
            }
            return Err(last.unwrap_or_else(|| {
                IvshmemError::NotFound(format!(
                    "no ivshmem device exports group {:?}",
                    group.unwrap_or_default()
                ))
            }));
        }
        let path = if spec.contains(':') && !spec.contains('/') {
            PathBuf::from("/sys/bus/pci/devices")
                .join(spec)
                .join("resource2")
        } else {
            PathBuf::from(spec)
        };
        ExportSegment::map(&path)
    }

    /// Maps `path` and validates its metadata.
    ///
    /// # Errors
    /// [`IvshmemError::Io`] or [`IvshmemError::BadMeta`].
    pub fn map(path: &Path) -> Result<ExportSegment, IvshmemError> {
        let region = map_rw(path)?;
        let mut block = vec![0u8; ivshmem_meta::BLOCK_SIZE];
        region
            .read_bytes(META_OFFSET, &mut block)
            .map_err(|e| IvshmemError::Object(format!("{}: {e}", path.display())))?;
        let meta = ivshmem_meta::decode(&block).map_err(|source| IvshmemError::BadMeta {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.segment_size != region.len() {
            return Err(IvshmemError::BadMeta {
                path: path.to_path_buf(),
                source: ivshmem_meta::MetaError::Size("segment size (differs from the mapping)"),
            });
        }
        Ok(ExportSegment {
            path: path.to_path_buf(),
            region,
            meta,
            devices: pmds::ethdev::Devices::new(),
        })
    }

    /// The validated metadata.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// What was mapped.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn entry(&self, kind: Kind, name: &str) -> Result<&ivshmem_meta::Entry, IvshmemError> {
        self.meta.find(kind, name).ok_or_else(|| {
            IvshmemError::Object(format!(
                "export group {} has no {} named {name} (it has: {})",
                self.meta.group,
                kind.name(),
                self.meta
                    .entries
                    .iter()
                    .map(|e| format!("{} {}", e.kind.name(), e.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// The memzone an entry describes, in this mapping.
    fn zone(&self, e: &ivshmem_meta::Entry) -> Result<Memzone, IvshmemError> {
        let kind = match e.kind {
            Kind::Ring => MemzoneKind::Ring,
            Kind::Mempool => MemzoneKind::Mempool,
            Kind::Memzone => MemzoneKind::Raw,
            Kind::Port => MemzoneKind::Port,
        };
        Memzone::described(&self.region, &e.name, e.offset, e.length, kind)
            .map_err(|err| IvshmemError::Object(err.to_string()))
    }

    /// Finds an exported ring or pool by name (what a port's devargs name; the host's
    /// devargs qualify them with the group, `NAME@GROUP`).
    fn find(&self, name: &str) -> Option<Memzone> {
        let name = match shm::names::split_qualified(name) {
            (obj, Some(group)) if group == self.meta.group => obj,
            (_, Some(_)) => return None,
            (obj, None) => obj,
        };
        self.meta
            .entries
            .iter()
            .find(|e| e.name == name && matches!(e.kind, Kind::Ring | Kind::Mempool))
            .and_then(|e| self.zone(e).ok())
    }

    /// Opens the exported port `name`: the guest's end of a host `net_ring` port (what
    /// the host sends on it arrives on this port's rx queues).
    ///
    /// # Errors
    /// [`IvshmemError::Object`] when absent or invalid.
    pub fn port(&self, name: &str) -> Result<Port, IvshmemError> {
        let e = self.entry(Kind::Port, name)?;
        let zone = self.zone(e)?;
        Port::open(&zone, &|n: &str| self.find(n), &self.devices)
            .map_err(|err| IvshmemError::Object(format!("port {name}: {}", shm::error_chain(&err))))
    }

    /// Every exported port, by id.
    ///
    /// # Errors
    /// As [`ExportSegment::port`].
    pub fn ports(&self) -> Result<Vec<Port>, IvshmemError> {
        let mut ports = self
            .meta
            .entries
            .iter()
            .filter(|e| e.kind == Kind::Port)
            .map(|e| self.port(&e.name))
            .collect::<Result<Vec<_>, _>>()?;
        ports.sort_by_key(Port::id);
        Ok(ports)
    }

    /// Opens the exported ring `name`.
    ///
    /// # Errors
    /// [`IvshmemError::Object`] when absent or invalid.
    pub fn ring(&self, name: &str) -> Result<Ring<u64>, IvshmemError> {
        let e = self.entry(Kind::Ring, name)?;
        Ring::open(&self.region, e.offset, e.length)
            .map_err(|err| IvshmemError::Object(format!("ring {name}: {err}")))
    }

    /// Opens the exported mbuf pool `name`.
    ///
    /// # Errors
    /// [`IvshmemError::Object`] when absent or invalid.
    pub fn mbuf_pool(&self, name: &str) -> Result<MbufPool, IvshmemError> {
        let e = self.entry(Kind::Mempool, name)?;
        Mempool::open(&self.region, e.offset, e.length)
            .and_then(MbufPool::from_mempool)
            .map_err(|err| IvshmemError::Object(format!("pool {name}: {err}")))
    }
}

impl ExportSegment {
    /// Offsets of every ring in the segment: the exported rings (unless `pools_only`) and
    /// the pools' free rings (at each pool header's `ring_off`).
    fn ring_offsets(&self, pools_only: bool) -> Vec<u64> {
        let mut rings = Vec::new();
        for e in &self.meta.entries {
            match e.kind {
                Kind::Ring if !pools_only => rings.push(e.offset),
                Kind::Mempool => {
                    if let Ok(info) = self
                        .region
                        .read_copy::<shm_mempool::layout::PoolInfo>(e.offset)
                    {
                        rings.push(e.offset.saturating_add(info.ring_off));
                    }
                }
                _ => {}
            }
        }
        rings
    }

    /// For `how_long`, keeps rewriting the head indices of every ring in the segment (only
    /// the pools' free rings with `pools_only`), as a hostile guest can: mostly a head a
    /// little past its tail (a reservation that is never published), sometimes a wild
    /// value; with `tails`, now and then a wild tail too. Returns how many
    /// indices were written. For robustness tests: the host must stay bounded.
    ///
    /// # Errors
    /// [`IvshmemError::Object`] if the segment holds no ring.
    pub fn scribble_indices(
        &self,
        how_long: std::time::Duration,
        pools_only: bool,
        tails: bool,
        seed: u64,
    ) -> Result<u64, IvshmemError> {
        use shm_ring::layout::{CONS_OFF, PROD_OFF};
        // Within a HeadTail: head at 0, tail one 128-byte pair of lines later.
        const TAIL: u64 = 128;
        let rings = self.ring_offsets(pools_only);
        if rings.is_empty() {
            return Err(IvshmemError::Object(format!(
                "{}: no ring to scribble on",
                self.path.display()
            )));
        }
        let mut x = seed | 1;
        let mut written = 0u64;
        let end = std::time::Instant::now() + how_long;
        while std::time::Instant::now() < end {
            for _ in 0..1024 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let Some(&ring) = rings.get((x % rings.len() as u64) as usize) else {
                    continue;
                };
                let side = ring + if x & 0x100 == 0 { PROD_OFF } else { CONS_OFF };
                let tail: u32 = self.region.read_copy(side + TAIL).unwrap_or(0);
                let (off, v) = match (x >> 9) & 7 {
                    // A wild tail (impossible indices), when asked for.
                    0 if tails => (side + TAIL, (x >> 32) as u32),
                    // A wild head.
                    0 | 1 => (side, (x >> 32) as u32),
                    // A reservation never published: the head a little past the tail.
                    _ => (side, tail.wrapping_add(1 + ((x >> 16) as u32 & 15))),
                };
                if self.region.write(off, &v).is_ok() {
                    written += 1;
                }
            }
        }
        Ok(written)
    }
}

/// Maps the segment file (or BAR2 `resource2`) at `path` shared, read and write.
fn map_rw(path: &Path) -> Result<Region, IvshmemError> {
    let io = |source| IvshmemError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let map = memmap2::MmapOptions::new().map_raw(&file).map_err(io)?;
    Ok(Region::from_mmap(map))
}

/// Overwrites the whole segment at `path` with pseudo-random bytes `rounds` times: what a
/// hostile or broken guest can do, for robustness tests (the host must survive it).
///
/// # Errors
/// When the segment cannot be mapped.
pub fn scribble(path: &Path, rounds: u32, seed: u64) -> Result<u64, IvshmemError> {
    let region = map_rw(path)?;
    let mut x = seed | 1;
    let mut chunk = [0u8; 4096];
    let mut written = 0u64;
    for _ in 0..rounds {
        let mut off = 0;
        while off < region.len() {
            for w in chunk.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.copy_from_slice(&x.to_le_bytes());
            }
            // Segments are powers of two of at least 2 MiB: whole 4 KiB chunks.
            region
                .write(off, &chunk)
                .map_err(|e| IvshmemError::Object(e.to_string()))?;
            off += chunk.len() as u64;
            written += chunk.len() as u64;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ivshmem_devices_in_a_sysfs_tree() {
        let root = std::env::temp_dir().join(format!("shmdp-sysfs-{}", std::process::id()));
        for (dev, vendor, device) in [
            ("0000:00:11.0", "0x1af4", "0x1110"),
            ("0000:00:10.0", "0x1af4", "0x1110"),
            ("0000:00:03.0", "0x8086", "0x100e"),
        ] {
            let d = root.join(dev);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("vendor"), format!("{vendor}\n")).unwrap();
            std::fs::write(d.join("device"), format!("{device}\n")).unwrap();
            std::fs::write(d.join("resource2"), b"").unwrap();
        }
        let found = find_devices_in(&root);
        assert_eq!(
            found,
            vec![
                root.join("0000:00:10.0/resource2"),
                root.join("0000:00:11.0/resource2")
            ]
        );
        let _ = std::fs::remove_dir_all(root);
    }
}
