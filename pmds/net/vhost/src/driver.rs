//! The `net_vhost` driver's side of the port API: probe (the socket path is free in this
//! process), start (the backend's thread, recorded in the device table), attach (found
//! there again), and the queues (guest receive queue = our tx, guest transmit = our rx).
//! The device-table bookkeeping is `pmds_ethdev::hosted`'s, shared with virtio-user.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use shm_mempool::{Mbuf, MbufCache};

use pmds_ethdev::{
    Attach, Burst, DriverId, Hosted, HostedDevice, HostedKind, NetDriver, PortDriver, PortError,
    Probe, QueueShm, Queues, RxBurst, TxBurst,
};

use crate::backend::{self, VhostDevice, MAX_QUEUE_PAIRS};
use crate::VhostQueue;

/// The `net_vhost` driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct VhostDriver;

/// `net_vhost`'s number in the port layout.
pub const DRIVER_ID: DriverId = DriverId(3);

/// Where `net_vhost` devices live: the primary's table, under `iface=`.
const HOSTED: HostedKind = HostedKind {
    driver: DRIVER_ID,
    name: "net_vhost",
    key: "iface",
    hint: "/path/to/socket (the vhost-user socket)",
    why: "where the frontend's memory is mapped",
};

impl HostedDevice for VhostDevice {
    fn stop(dev: &Arc<Self>) {
        backend::stop(dev);
    }
}

impl NetDriver for VhostDriver {
    fn id(&self) -> DriverId {
        DRIVER_ID
    }

    fn name(&self) -> &'static str {
        HOSTED.name
    }

    fn keys(&self) -> &'static [&'static str] {
        &["iface", "client", "queues"]
    }

    fn probe(&self, p: &Probe<'_>) -> Result<Queues, PortError> {
        let d = p.devargs;
        let q = d.number("queues", 1, 1..=u32::from(MAX_QUEUE_PAIRS))? as u16;
        HOSTED.check_free::<VhostDevice>(p)?;
        d.flag("client")?;
        Ok(Queues { rx: q, tx: q })
    }

    fn start(&self, p: &Probe<'_>, queues: Queues) -> Result<(), PortError> {
        let path = HOSTED.key(p.devargs)?;
        let client = p.devargs.flag("client")?;
        // The error names the socket.
        let dev = VhostDevice::start(Path::new(path), queues.rx, client)
            .map_err(|e| PortError::failed(&p.devargs.name, "starting the backend", e))?;
        HOSTED.record(p, dev)
    }

    fn abandon(&self, p: &Probe<'_>) {
        HOSTED.abandon::<VhostDevice>(p);
    }

    fn attach(&self, a: &Attach<'_>) -> Result<Box<dyn PortDriver>, PortError> {
        Ok(Box::new(VhostPort(HOSTED.attach(a)?)))
    }
}

/// A vhost port in this process: the backend, if it runs here (the guest's memory is
/// mapped only there).
struct VhostPort(Hosted<VhostDevice>);

impl PortDriver for VhostPort {
    fn rx_queue(
        &self,
        q: &mut QueueShm,
        cache: &MbufCache,
        _opened: &mut Burst,
    ) -> Result<Box<dyn RxBurst>, PortError> {
        q.check_pool(cache)?;
        let dev = self.0.here(q)?;
        // The guest's transmit queue.
        let vring = 2 * usize::from(q.queue()) + 1;
        Ok(Box::new(VhostRx(VhostQueue::new(dev, vring))))
    }

    fn tx_queue(
        &self,
        q: &mut QueueShm,
        _cache: &MbufCache,
        _opened: &mut Burst,
    ) -> Result<Box<dyn TxBurst>, PortError> {
        let dev = self.0.here(q)?;
        // The guest's receive queue.
        let vring = 2 * usize::from(q.queue());
        Ok(Box::new(VhostTx(VhostQueue::new(dev, vring))))
    }

    fn link_up(&self) -> Option<bool> {
        // Up while a frontend is connected with every vring started.
        self.0.device().map(|d| d.ready())
    }

    fn errors(&self) -> u64 {
        // Relaxed: a counter.
        self.0
            .device()
            .map_or(0, |d| d.protocol_errors.load(Ordering::Relaxed))
    }

    fn stop(&self) {
        self.0.stop();
    }
}

/// An rx queue: the guest's transmit queue.
#[derive(Debug)]
struct VhostRx(VhostQueue);

impl RxBurst for VhostRx {
    fn rx_burst<'c>(
        &mut self,
        q: &mut QueueShm,
        cache: &'c MbufCache,
        out: &mut Vec<Mbuf<'c>>,
        max: usize,
    ) -> Burst {
        let start = out.len();
        let o = self.0.receive(cache, out, max);
        let port_id = q.port_id();
        for m in &mut out[start..] {
            m.set_port(port_id);
        }
        Burst {
            packets: (out.len() - start) as u64,
            bytes: o.bytes,
            no_mbuf: o.dropped,
            errors: o.bad_chains + u64::from(o.broken),
            dropped: 0,
        }
    }
}

/// A tx queue: the guest's receive queue.
#[derive(Debug)]
struct VhostTx(VhostQueue);

impl TxBurst for VhostTx {
    fn tx_burst<'c>(
        &mut self,
        _q: &mut QueueShm,
        _cache: &'c MbufCache,
        pkts: &mut Vec<Mbuf<'c>>,
    ) -> Burst {
        let o = self.0.send(pkts);
        // Dropped ones (too large for the guest's buffers) left `pkts` too.
        Burst {
            packets: o.packets as u64,
            bytes: o.bytes,
            no_mbuf: 0,
            errors: o.bad_chains + u64::from(o.broken),
            dropped: o.dropped,
        }
    }
}
