//! `pmds-net-pcap`: the `net_pcap` driver (DPDK's `net_pcap`): rx from a pcap or pcapng
//! file read a chunk at a time, tx to a pcap file, or either side on a live interface
//! (`iface=`, `rx_iface=`, `tx_iface=`) through `pmds-net-af-packet`.
//!
//! Where it sits: a driver crate under `pmds/net/`; the facade `pmds` registers
//! [`PcapDriver`]. A port has at most one rx and one tx queue. The rx reader's file
//! position lives in the queue block in shared memory, so a new poller (in any process)
//! continues where the last one stopped. No `unsafe` here: files are read through a
//! buffer ([`pcap_file`]), never mapped.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod pcap_file;

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use shm_mempool::{Mbuf, MbufCache};

use pcap_file::{PcapReader, PcapWriter};
use pmds_ethdev::{
    Args, Attach, Burst, DriverId, NetDriver, PortDriver, PortError, Probe, QueueShm, Queues,
    RxBurst, TxBurst,
};
use pmds_net_af_packet::{IfaceRx, IfaceTx};

/// The `net_pcap` driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct PcapDriver;

/// `net_pcap`'s number in the port layout.
pub const DRIVER_ID: DriverId = DriverId(2);

/// Why `net_pcap` refuses a port's devargs (the reasons of [`PortError::Config`] and
/// [`PortError::BadPort`] that only this driver knows).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcapPortError {
    /// One side given both as a file and as an interface.
    #[error("give {file}= or {iface}=/iface=, not both")]
    FileAndIface {
        /// The file key (`rx_pcap`).
        file: &'static str,
        /// The interface key (`rx_iface`).
        iface: &'static str,
    },
    /// Neither side given.
    #[error("give rx_pcap=FILE and/or tx_pcap=FILE, or iface=/rx_iface=/tx_iface=IFACE")]
    NoSide,
}

/// Where a pcap port's rx or tx side goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PcapEnd {
    File(PathBuf),
    Iface(String),
}

/// Both sides of a pcap port, from its devargs.
#[derive(Debug)]
struct PcapEnds {
    rx: Option<PcapEnd>,
    tx: Option<PcapEnd>,
}

impl PcapEnds {
    /// `fail` makes the error (a probe's is a configuration error, an attach's a bad port).
    fn of(d: &Args, fail: impl Fn(PcapPortError) -> PortError) -> Result<PcapEnds, PortError> {
        let iface = d.get("iface");
        let pick = |file: &'static str, ifc: &'static str| -> Result<Option<PcapEnd>, PortError> {
            let f = d.get(file).map(|p| PcapEnd::File(PathBuf::from(p)));
            let i = d.get(ifc).or(iface).map(|n| PcapEnd::Iface(n.to_string()));
            match (f, i) {
                (Some(_), Some(_)) => Err(fail(PcapPortError::FileAndIface { file, iface: ifc })),
                (f, i) => Ok(f.or(i)),
            }
        };
        Ok(PcapEnds {
            rx: pick("rx_pcap", "rx_iface")?,
            tx: pick("tx_pcap", "tx_iface")?,
        })
    }
}

impl NetDriver for PcapDriver {
    fn id(&self) -> DriverId {
        DRIVER_ID
    }

    fn name(&self) -> &'static str {
        "net_pcap"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["rx_pcap", "tx_pcap", "rx_iface", "tx_iface", "iface"]
    }

    fn probe(&self, p: &Probe<'_>) -> Result<Queues, PortError> {
        let d = p.devargs;
        let cfg = |why: PcapPortError| PortError::config(&d.name, why);
        let failed = |what: String, e: std::io::Error| PortError::failed(&d.name, what, e);
        let ends = PcapEnds::of(d, cfg)?;
        if ends.rx.is_none() && ends.tx.is_none() {
            return Err(cfg(PcapPortError::NoSide));
        }
        for key in ["iface", "rx_iface", "tx_iface"] {
            if let Some(name) = d.get(key) {
                pmds_net_af_packet::ifindex(name)
                    .map_err(|e| failed(format!("{key}={name}"), e))?;
            }
        }
        if let Some(rx) = d.get("rx_pcap") {
            PcapReader::open(Path::new(rx), 0).map_err(|e| failed(format!("rx_pcap {rx}"), e))?;
        }
        if let Some(tx) = d.get("tx_pcap") {
            std::fs::write(tx, pcap_file::file_header())
                .map_err(|e| failed(format!("tx_pcap {tx}"), e))?;
        }
        Ok(Queues {
            rx: u16::from(ends.rx.is_some()),
            tx: u16::from(ends.tx.is_some()),
        })
    }

    fn attach(&self, a: &Attach<'_>) -> Result<Box<dyn PortDriver>, PortError> {
        let ends = PcapEnds::of(a.devargs, |why| PortError::bad_port(&a.devargs.name, why))?;
        Ok(Box::new(ends))
    }
}

impl PortDriver for PcapEnds {
    fn rx_queue(
        &self,
        q: &mut QueueShm,
        cache: &MbufCache,
        _opened: &mut Burst,
    ) -> Result<Box<dyn RxBurst>, PortError> {
        match &self.rx {
            Some(PcapEnd::Iface(name)) => Ok(Box::new(IfaceRx::open(name, q, cache)?)),
            Some(PcapEnd::File(path)) => {
                q.check_pool(cache)?;
                let resume = q.block().position.load(Ordering::Acquire);
                let reader = PcapReader::open(path, resume)
                    .map_err(|e| q.failed(format!("rx_pcap {}", path.display()), e))?;
                Ok(Box::new(PcapRx {
                    reader,
                    done: false,
                }))
            }
            None => unreachable!("a pcap rx queue exists only with rx_pcap or an interface"),
        }
    }

    fn tx_queue(
        &self,
        q: &mut QueueShm,
        _cache: &MbufCache,
        _opened: &mut Burst,
    ) -> Result<Box<dyn TxBurst>, PortError> {
        match &self.tx {
            Some(PcapEnd::Iface(name)) => Ok(Box::new(IfaceTx::open(name, q)?)),
            Some(PcapEnd::File(path)) => {
                let file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(|e| PortError::io(q.port_name(), "open tx_pcap", e))?;
                Ok(Box::new(PcapTx(PcapWriter::append(
                    BufWriter::with_capacity(1 << 18, file),
                ))))
            }
            None => unreachable!("a pcap tx queue exists only with tx_pcap or an interface"),
        }
    }
}

/// An rx queue reading a capture file.
#[derive(Debug)]
struct PcapRx {
    reader: PcapReader,
    done: bool,
}

impl RxBurst for PcapRx {
    fn rx_burst<'c>(
        &mut self,
        q: &mut QueueShm,
        cache: &'c MbufCache,
        out: &mut Vec<Mbuf<'c>>,
        max: usize,
    ) -> Burst {
        let port_id = q.port_id();
        let mut b = Burst::default();
        let start = out.len();
        while out.len() - start < max && !self.done {
            let before = self.reader.position();
            match self.reader.next_record() {
                Ok(Some(rec)) => match cache.alloc_from(rec.data) {
                    Ok(mut m) => {
                        m.set_port(port_id);
                        b.bytes += rec.data.len() as u64;
                        b.packets += 1;
                        out.push(m);
                    }
                    Err(_) => {
                        // Retry this record on the next burst.
                        self.reader.rewind_to(before);
                        b.no_mbuf += 1;
                        break;
                    }
                },
                Ok(None) => self.done = true,
                Err(e) => {
                    tracing::warn!(
                        "{}: rx_pcap: {e}; the packets before it were delivered",
                        q.port_name()
                    );
                    b.errors += 1;
                    self.done = true;
                }
            }
        }
        q.block()
            .position
            .store(self.reader.position(), Ordering::Release);
        b
    }

    fn exhausted(&self) -> bool {
        self.done
    }
}

/// A tx queue appending to a capture file.
#[derive(Debug)]
struct PcapTx(PcapWriter<BufWriter<File>>);

impl TxBurst for PcapTx {
    fn tx_burst<'c>(
        &mut self,
        _q: &mut QueueShm,
        _cache: &'c MbufCache,
        pkts: &mut Vec<Mbuf<'c>>,
    ) -> Burst {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut b = Burst::default();
        for m in pkts.iter() {
            if self
                .0
                .write(ts, m.pkt_len() as usize, m.segments())
                .is_err()
            {
                b.errors += 1;
                break;
            }
            b.bytes += u64::from(m.pkt_len());
            b.packets += 1;
        }
        pkts.drain(..b.packets as usize);
        b
    }

    fn flush(&mut self) -> Burst {
        Burst {
            errors: u64::from(self.0.flush().is_err()),
            ..Burst::default()
        }
    }
}
