//! IVSHMEM export groups at start: the exported ports (their rings and guest pool made in
//! the group's memseg, their devargs qualified with the group), the guest's end of each
//! exported port, and the metadata block a guest reads first.
//!
//! Where it sits: steps of [`Primary::start`](crate::Primary::start), after the pools and
//! before the host ports are probed (`prepare_exported_ports`, `qualify_guest_ports`) and
//! after (`create_guest_view`, `write_export`). The block's format is `ivshmem-meta`'s.

use std::sync::Arc;

use shm::{Memseg, MemzoneKind};

use crate::{ExportRequest, MempoolRequest, Primary, PrimaryConfig, PrimaryError, Result};

/// A port exported to a guest, as the primary set it up.
pub(crate) struct ExportedPort {
    name: String,
    port_id: u16,
    seg: Arc<Memseg>,
    /// The host port's rx rings (the guest's tx) and tx rings (the guest's rx).
    host_rx: Vec<String>,
    host_tx: Vec<String>,
    pool: String,
}

/// What `make_port_objects` made for a plain exported port.
struct MadePortObjects {
    devargs: pmds::DevArgs,
    rx: Vec<String>,
    tx: Vec<String>,
    pool: String,
}

/// `d` with the names of its rings and guest pool qualified with export group `group`
/// (`NAME@GROUP`), so that they resolve only in that export.
fn qualify(d: &pmds::DevArgs, group: &str) -> std::result::Result<pmds::DevArgs, String> {
    let args = d
        .args
        .iter()
        .map(|(k, v)| {
            let named = matches!(k.as_str(), "rx_ring" | "tx_ring" | "guest_pool");
            if named && shm::names::split_qualified(v).1.is_none() {
                (k.clone(), format!("{v}@{group}"))
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    with_args(d, args)
}

/// The port `d` with the arguments `args` instead of its own, built directly (the keys
/// are `d`'s own or ones its driver takes, the values checked names).
///
/// # Errors
/// When a key is not the driver's or the text is longer than the record holds.
fn with_args(
    d: &pmds::DevArgs,
    args: Vec<(String, String)>,
) -> std::result::Result<pmds::DevArgs, String> {
    d.with_args(args)
        .map_err(|e| format!("--vdev {:?}: {e}", d.text))
}

impl Primary {
    /// For every `port=` item of an export group: checks the port is a `net_ring` port
    /// probed with `--vdev`, and for a plain one (no rings named) makes its rings and a
    /// pool for the guest in the group's memseg and rewrites its devargs to use them as a
    /// guest-facing port. Adds the port's rings and pool to the group's items, so the
    /// guest finds them.
    pub(crate) fn prepare_exported_ports(
        &self,
        config: &PrimaryConfig,
        exports: &mut [ExportRequest],
        vdevs: &mut [pmds::DevArgs],
    ) -> Result<Vec<ExportedPort>> {
        let mut out: Vec<ExportedPort> = Vec::new();
        for e in exports.iter_mut() {
            let bad = |why: String| PrimaryError::Config(format!("--ivshmem {}: {why}", e.group));
            let seg = self
                .memsegs
                .iter()
                .find(|s| s.name() == e.group)
                .expect("checked at start")
                .clone();
            let ports: Vec<String> = e
                .items
                .iter()
                .filter(|(k, _)| *k == ivshmem_meta::Kind::Port)
                .map(|(_, n)| n.clone())
                .collect();
            for name in ports {
                let Some(port_id) = vdevs.iter().position(|d| d.name == name) else {
                    return Err(bad(format!(
                        "port {name} is not probed; add --vdev {name} (a net_ring port)"
                    )));
                };
                if out.iter().any(|p| p.name == name) {
                    return Err(bad(format!("port {name} is exported twice")));
                }
                let d = &vdevs[port_id];
                if d.driver != pmds::Driver::Ring {
                    return Err(bad(format!(
                        "only net_ring ports can be exported, and {name} is not one; export a net_ring port and forward {name} to it"
                    )));
                }
                let (rx, tx, pool) = match d.get("guest_pool") {
                    Some(pool) => {
                        // The user's names, unqualified or qualified with this group.
                        let own = |n: &str| {
                            match shm::names::split_qualified(n) {
                            (obj, None) => Ok(obj.to_string()),
                            (obj, Some(g)) if g == e.group => Ok(obj.to_string()),
                            (_, Some(g)) => Err(bad(format!(
                                "port {name}: {n} is in memseg {g}, not in the export group's memseg {}",
                                e.group
                            ))),
                        }
                        };
                        let all = |k: &str| -> Result<Vec<String>> {
                            d.get_all(k).into_iter().map(own).collect()
                        };
                        (all("rx_ring")?, all("tx_ring")?, own(pool)?)
                    }
                    None if d.get("rx_ring").is_some() || d.get("tx_ring").is_some() => {
                        return Err(bad(format!(
                            "port {name} names its rings but not guest_pool=; add guest_pool=POOL (in memseg {0}), or drop rx_ring=/tx_ring= and the export makes them",
                            e.group
                        )));
                    }
                    None => {
                        let made = self
                            .make_port_objects(&seg, d, config.nb_desc)
                            .map_err(bad)?;
                        vdevs[port_id] = made.devargs;
                        (made.rx, made.tx, made.pool)
                    }
                };
                for object in rx.iter().chain(&tx).chain(std::iter::once(&pool)) {
                    if seg.lookup(object).is_err() {
                        return Err(bad(format!(
                            "{object} (used by port {name}) is not in memseg {0}; create it there ({object}=...@{0})",
                            e.group
                        )));
                    }
                }
                for r in rx.iter().chain(&tx) {
                    if !e.items.contains(&(ivshmem_meta::Kind::Ring, r.clone())) {
                        e.items.push((ivshmem_meta::Kind::Ring, r.clone()));
                    }
                }
                if !e
                    .items
                    .contains(&(ivshmem_meta::Kind::Mempool, pool.clone()))
                {
                    e.items.push((ivshmem_meta::Kind::Mempool, pool.clone()));
                }
                // The port resolves its rings and pool in this export only (a plain name
                // never reaches an export segment: shm::names).
                vdevs[port_id] = qualify(&vdevs[port_id], &e.group).map_err(bad)?;
                out.push(ExportedPort {
                    name,
                    port_id: port_id as u16,
                    seg: seg.clone(),
                    host_rx: rx,
                    host_tx: tx,
                    pool,
                });
            }
        }
        Ok(out)
    }

    /// Qualifies the ring and pool names of every other guest-facing port (`guest_pool=`
    /// naming a pool in an export segment) with that export group, as for exported ports.
    pub(crate) fn qualify_guest_ports(&self, vdevs: &mut [pmds::DevArgs]) -> Result<()> {
        for d in vdevs.iter_mut() {
            let Some(pool) = d.get("guest_pool") else {
                // Rings a guest can write are opened only by a guest-facing port, whose
                // handles are bounded and whose packets are copied: a port without
                // guest_pool= over them would trust what the guest writes.
                for k in ["rx_ring", "tx_ring"] {
                    for r in d.get_all(k) {
                        let (_, seg) = shm::names::split_qualified(r);
                        if let Some(g) = seg.filter(|g| {
                            self.memsegs
                                .iter()
                                .any(|s| s.name() == *g && self.is_exported(s))
                        }) {
                            return Err(PrimaryError::Config(format!(
                                "port {}: {k}={r} is in export group {g}, which the guest can write; add guest_pool=POOL@{g} to make it a guest-facing port",
                                d.name
                            )));
                        }
                    }
                }
                continue;
            };
            if shm::names::split_qualified(pool).1.is_some() {
                continue;
            }
            // The primary's own records of each export memseg (never its shared table).
            let group = self
                .memsegs
                .iter()
                .filter(|s| self.is_exported(s))
                .find(|s| s.lookup(pool).is_ok())
                .map(|s| s.name().to_string());
            if let Some(g) = group {
                *d = qualify(d, &g).map_err(PrimaryError::Config)?;
            }
        }
        Ok(())
    }

    /// Makes the rings (`<port>_g2h<q>`: guest to host, `<port>_h2g<q>`: host to guest)
    /// and the guest pool (`<port>_pool`) of an exported plain `net_ring` port in `seg`.
    fn make_port_objects(
        &self,
        seg: &Memseg,
        d: &pmds::DevArgs,
        nb_desc: u32,
    ) -> std::result::Result<MadePortObjects, String> {
        let queues = d
            .number("queues", 1, 1..=u32::from(pmds::layout::MAX_QUEUES))
            .map_err(|e| e.to_string())?;
        let nb_desc = d
            .number("nb_desc", nb_desc, 1..=1 << 20)
            .map_err(|e| e.to_string())?;
        let named = |suffix: String| -> std::result::Result<String, String> {
            let n = format!("{}_{suffix}", d.name);
            shm::layout::encode_name(&n)
                .map(|_| n.clone())
                .ok_or_else(|| format!("port name {} is too long to name its rings ({n})", d.name))
        };
        let mut made = MadePortObjects {
            devargs: d.clone(),
            rx: Vec::new(),
            tx: Vec::new(),
            pool: named("pool".into())?,
        };
        for q in 0..queues {
            let (g2h, h2g) = (named(format!("g2h{q}"))?, named(format!("h2g{q}"))?);
            for r in [&g2h, &h2g] {
                shm_ring::Ring::<u64>::create(seg, r, nb_desc, shm_ring::SyncMode::SP_SC)
                    .map_err(|e| format!("ring {r}: {e}"))?;
            }
            made.rx.push(g2h);
            made.tx.push(h2g);
        }
        // Enough buffers for every ring full in both directions, plus what the two ends
        // hold in flight.
        let count = (2 * queues * nb_desc + 1024).next_power_of_two() - 1;
        let req = MempoolRequest {
            name: made.pool.clone(),
            count,
            cache_size: 0,
            data_room: shm_mempool::DEFAULT_DATA_ROOM,
            memseg: seg.name().to_string(),
        };
        // In the export group's memseg: guest-writable.
        self.pools
            .create(seg, &req, true)
            .map_err(|e| format!("guest pool {}: {e}", req.name))?;
        let args = d
            .args
            .iter()
            .filter(|(k, _)| k != "queues")
            .cloned()
            .chain(made.rx.iter().map(|r| ("rx_ring".to_string(), r.clone())))
            .chain(made.tx.iter().map(|t| ("tx_ring".to_string(), t.clone())))
            .chain(std::iter::once((
                "guest_pool".to_string(),
                made.pool.clone(),
            )))
            .collect();
        made.devargs = with_args(d, args)?;
        Ok(made)
    }

    /// Creates the guest's end of an exported port in the group's memseg: a `net_ring`
    /// port over the same rings, swapped (what the host sends, the guest receives), that
    /// allocates from the guest pool. The host never opens it again: it is guest-writable.
    pub(crate) fn create_guest_view(&self, p: &ExportedPort, nb_desc: u32) -> Result<()> {
        let pool = self.pools.get(&p.pool).map_or_else(
            || {
                p.seg
                    .lookup(&p.pool)
                    .map_err(|e| e.to_string())
                    .and_then(|z| {
                        shm_mempool::Mempool::from_memzone(&z)
                            .and_then(shm_mempool::MbufPool::from_mempool)
                            .map_err(|e| e.to_string())
                    })
            },
            Ok,
        );
        let pool = pool.map_err(|e| {
            PrimaryError::Config(format!(
                "--ivshmem {}: guest pool {}: {e}",
                p.seg.name(),
                p.pool
            ))
        })?;
        let setup = pmds::PortSetup {
            port_id: p.port_id,
            nb_desc,
            rx_pool: pool,
            mac: Some([0x02, 0x53, 0x48, 0x4d, 0x47, p.port_id as u8]),
        };
        let seg = p.seg.clone();
        let find = move |name: &str| seg.lookup(name).ok();
        let host_tx: Vec<&str> = p.host_tx.iter().map(String::as_str).collect();
        let host_rx: Vec<&str> = p.host_rx.iter().map(String::as_str).collect();
        pmds::Port::from_rings(
            &p.seg,
            &p.name,
            &host_tx,
            &host_rx,
            &setup,
            &find,
            &self.devices,
        )
        .map_err(|e| {
            PrimaryError::Config(format!(
                "--ivshmem {}: {}",
                p.seg.name(),
                shm::error_chain(&e)
            ))
        })?
        .start();
        Ok(())
    }

    /// Writes the metadata block of export group `e` (its objects must already exist).
    pub(crate) fn write_export(&self, e: &ExportRequest) -> Result<()> {
        let seg = self
            .memsegs
            .iter()
            .find(|s| s.name() == e.group)
            .expect("checked at start");
        let mut entries = Vec::new();
        for (kind, name) in &e.items {
            let zone = seg.lookup(name).map_err(|_| {
                PrimaryError::Config(format!(
                    "--ivshmem {}: {} {name} is not in memseg {}; create it there ({name}=...@{})",
                    e.group,
                    kind.name(),
                    e.group,
                    e.group
                ))
            })?;
            let (want, elem_size, flags) = match kind {
                ivshmem_meta::Kind::Ring => (MemzoneKind::Ring, 8, 0),
                ivshmem_meta::Kind::Mempool => {
                    let pool = shm_mempool::Mempool::from_memzone(&zone)
                        .map_err(|err| PrimaryError::Config(err.to_string()))?;
                    (
                        MemzoneKind::Mempool,
                        pool.obj_size(),
                        u32::from(pool.is_mbuf_pool()),
                    )
                }
                ivshmem_meta::Kind::Memzone => (MemzoneKind::Raw, 0, 0),
                ivshmem_meta::Kind::Port => (MemzoneKind::Port, 0, 0),
            };
            if zone.kind != want {
                return Err(PrimaryError::Config(format!(
                    "--ivshmem {}: {name} is a {:?}, not a {}",
                    e.group,
                    zone.kind,
                    kind.name()
                )));
            }
            entries.push(ivshmem_meta::Entry {
                name: name.clone(),
                kind: *kind,
                flags,
                offset: zone.offset,
                length: zone.len_bytes,
                elem_size,
            });
        }
        let meta = ivshmem_meta::Meta {
            group: e.group.clone(),
            segment_size: seg.size_bytes(),
            entries,
        };
        let block = ivshmem_meta::encode(&meta)
            .map_err(|err| PrimaryError::Config(format!("--ivshmem {}: {err}", e.group)))?;
        seg.region()
            .write(ivshmem_meta::META_OFFSET, &block)
            .map_err(shm::Error::from)?;
        tracing::info!(
            "export group {}: {} objects in {}",
            e.group,
            meta.entries.len(),
            seg.path()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_devargs_are_what_parsing_their_text_gives() {
        let d = pmds::DevArgs::parse("net_ring0,rx_ring=a,tx_ring=b@vm2,nb_desc=64").unwrap();
        let q = qualify(&d, "vm1").unwrap();
        assert_eq!(q.text, "net_ring0,rx_ring=a@vm1,tx_ring=b@vm2,nb_desc=64");
        assert_eq!(q, pmds::DevArgs::parse(&q.text).unwrap());
        let long = (0..40)
            .map(|i| format!(",rx_ring=ring{i}"))
            .collect::<String>();
        let d = pmds::DevArgs::parse(&format!("net_ring0{}", &long[..200])).unwrap();
        assert!(qualify(&d, "group_name_long")
            .unwrap_err()
            .contains("devargs longer than"));
    }
}
