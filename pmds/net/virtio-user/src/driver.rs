//! The `net_virtio_user` driver's side of the port API: probe (path free in this process,
//! queue size), start (the port's memory and the connection, recorded in the device
//! table), attach (found there again), and the queues (vring 2q: our rx, 2q+1: our tx).
//! The device-table bookkeeping is `pmds_ethdev::hosted`'s, shared with the vhost backend.

use std::path::Path;
use std::sync::Arc;

use shm_mempool::{Mbuf, MbufCache};

use pmds_common_vhost_user::proto::MAX_QUEUE_PAIRS;
use pmds_ethdev::{
    Args, Attach, Burst, DevArgsError, DriverId, Hosted, HostedDevice, HostedKind, NetDriver,
    PortDriver, PortError, Probe, QueueShm, Queues, RxBurst, TxBurst,
};

use crate::device::{self, PortMemory, VirtioUserDevice, VirtioUserQueue};

/// The `net_virtio_user` driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct VirtioUserDriver;

/// `net_virtio_user`'s number in the port layout.
pub const DRIVER_ID: DriverId = DriverId(4);

/// Where `net_virtio_user` devices live: the primary's table, under `path=`.
const HOSTED: HostedKind = HostedKind {
    driver: DRIVER_ID,
    name: "net_virtio_user",
    key: "path",
    hint: "/path/to/socket (the vhost-user backend's socket)",
    why: "which owns its connection",
};

impl HostedDevice for VirtioUserDevice {
    fn stop(dev: &Arc<Self>) {
        device::stop(dev);
    }
}

fn queue_size(d: &Args) -> Result<u16, PortError> {
    let size = d.number("queue_size", 256, 16..=32768)?;
    if !size.is_power_of_two() {
        return Err(PortError::devargs(
            &d.name,
            DevArgsError::NotPowerOfTwo {
                key: "queue_size",
                value: size,
            },
        ));
    }
    Ok(size as u16)
}

impl NetDriver for VirtioUserDriver {
    fn id(&self) -> DriverId {
        DRIVER_ID
    }

    fn name(&self) -> &'static str {
        HOSTED.name
    }

    fn keys(&self) -> &'static [&'static str] {
        &["path", "queues", "queue_size"]
    }

    fn probe(&self, p: &Probe<'_>) -> Result<Queues, PortError> {
        let d = p.devargs;
        let q = d.number("queues", 1, 1..=u32::from(MAX_QUEUE_PAIRS))? as u16;
        HOSTED.check_free::<VirtioUserDevice>(p)?;
        queue_size(d)?;
        Ok(Queues { rx: q, tx: q })
    }

    fn start(&self, p: &Probe<'_>, queues: Queues) -> Result<(), PortError> {
        let d = p.devargs;
        let at = HOSTED.key(d)?;
        let size = queue_size(d)?;
        // A memseg of its own (rings and buffer slots), the only memory the backend is
        // given.
        let mem = PortMemory::create(&d.name, 2 * usize::from(queues.rx), size)
            .map_err(|e| PortError::failed(&d.name, "its memory", e))?;
        let dev = VirtioUserDevice::connect(
            mem,
            Path::new(at),
            queues.rx,
            size,
            std::time::Duration::from_secs(5),
            pmds_common_vhost_user::wire::process_stop(),
        )
        // The error names the socket.
        .map_err(|e| PortError::failed(&d.name, "connecting to the backend", e))?;
        HOSTED.record(p, dev)
    }

    fn abandon(&self, p: &Probe<'_>) {
        HOSTED.abandon::<VirtioUserDevice>(p);
    }

    fn attach(&self, a: &Attach<'_>) -> Result<Box<dyn PortDriver>, PortError> {
        Ok(Box::new(VirtioUserPort(HOSTED.attach(a)?)))
    }
}

/// A virtio-user port in this process: the connection, if it was made here.
struct VirtioUserPort(Hosted<VirtioUserDevice>);

impl PortDriver for VirtioUserPort {
    fn rx_queue(
        &self,
        q: &mut QueueShm,
        cache: &MbufCache,
        _opened: &mut Burst,
    ) -> Result<Box<dyn RxBurst>, PortError> {
        q.check_pool(cache)?;
        let dev = self.0.here(q)?;
        let queue = VirtioUserQueue::take(dev, 2 * usize::from(q.queue()))
            .map_err(|e| q.failed("its rx vring", e))?;
        Ok(Box::new(VirtioUserRx(queue)))
    }

    fn tx_queue(
        &self,
        q: &mut QueueShm,
        _cache: &MbufCache,
        _opened: &mut Burst,
    ) -> Result<Box<dyn TxBurst>, PortError> {
        let dev = self.0.here(q)?;
        let queue = VirtioUserQueue::take(dev, 2 * usize::from(q.queue()) + 1)
            .map_err(|e| q.failed("its tx vring", e))?;
        Ok(Box::new(VirtioUserTx(queue)))
    }

    fn link_up(&self) -> Option<bool> {
        // Down for good once the backend took the port's memory away.
        self.0.device().filter(|d| d.dropped()).map(|_| false)
    }

    fn stop(&self) {
        self.0.stop();
    }
}

/// An rx queue (the backend's transmit side).
#[derive(Debug)]
struct VirtioUserRx(VirtioUserQueue);

impl RxBurst for VirtioUserRx {
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
            no_mbuf: o.no_mbuf,
            errors: o.errors,
            dropped: 0,
        }
    }
}

/// A tx queue (the backend's receive side).
#[derive(Debug)]
struct VirtioUserTx(VirtioUserQueue);

impl TxBurst for VirtioUserTx {
    fn tx_burst<'c>(
        &mut self,
        _q: &mut QueueShm,
        _cache: &'c MbufCache,
        pkts: &mut Vec<Mbuf<'c>>,
    ) -> Burst {
        let o = self.0.send(pkts);
        Burst {
            packets: o.packets as u64,
            bytes: o.bytes,
            no_mbuf: 0,
            errors: o.errors,
            dropped: o.no_mbuf,
        }
    }
}
