//! The `net_virtio_user` driver's side of the port API: probe (path free in this process,
//! queue size), start (the port's memory and the connection, recorded in the device
//! table), attach (found there again), and the queues (vring 2q: our rx, 2q+1: our tx).

use std::path::Path;
use std::sync::Arc;

use shm_mempool::{Mbuf, MbufCache};

use pmds_common_vhost_user::proto::MAX_QUEUE_PAIRS;
use pmds_ethdev::{
    Args, Attach, Burst, Devices, DriverId, NetDriver, PortDriver, PortError, Probe, QueueShm,
    Queues, RxBurst, TxBurst,
};

use crate::device::{self, PortMemory, VirtioUserDevice, VirtioUserQueue};

/// The `net_virtio_user` driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct VirtioUserDriver;

/// `net_virtio_user`'s number in the port layout.
pub const DRIVER_ID: DriverId = DriverId(4);

fn path(d: &Args) -> Result<&str, PortError> {
    d.get("path").ok_or_else(|| {
        PortError::config(
            &d.name,
            "give path=/path/to/socket (the vhost-user backend's socket)",
        )
    })
}

fn queue_size(d: &Args) -> Result<u16, PortError> {
    let size = d.number("queue_size", 256, 16..=32768)?;
    if !size.is_power_of_two() {
        return Err(PortError::config(
            &d.name,
            format!("queue_size={size} must be a power of two"),
        ));
    }
    Ok(size as u16)
}

impl NetDriver for VirtioUserDriver {
    fn id(&self) -> DriverId {
        DRIVER_ID
    }

    fn name(&self) -> &'static str {
        "net_virtio_user"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["path", "queues", "queue_size"]
    }

    fn probe(&self, p: &Probe<'_>) -> Result<Queues, PortError> {
        let d = p.devargs;
        let q = d.number("queues", 1, 1..=u32::from(MAX_QUEUE_PAIRS))? as u16;
        let at = path(d)?;
        if p.devices.find::<VirtioUserDevice>(DRIVER_ID, at).is_some() {
            return Err(PortError::config(
                &d.name,
                format!("path {at} is used by another port"),
            ));
        }
        queue_size(d)?;
        Ok(Queues { rx: q, tx: q })
    }

    fn start(&self, p: &Probe<'_>, queues: Queues) -> Result<(), PortError> {
        let d = p.devargs;
        let cfg = |why: String| PortError::config(&d.name, why);
        let at = path(d)?;
        let size = queue_size(d)?;
        // A memseg of its own (rings and buffer slots), the only memory the backend is
        // given.
        let mem = PortMemory::create(&d.name, 2 * usize::from(queues.rx), size)
            .map_err(|e| cfg(e.to_string()))?;
        let dev = VirtioUserDevice::connect(
            mem,
            Path::new(at),
            queues.rx,
            size,
            std::time::Duration::from_secs(5),
            pmds_common_vhost_user::wire::process_stop(),
        )
        .map_err(|e| cfg(e.to_string()))?;
        p.devices.add(DRIVER_ID, at, dev).map_err(|dev| {
            device::stop(&dev);
            cfg(format!("path {at} is used by another port"))
        })
    }

    fn abandon(&self, p: &Probe<'_>) {
        if let Ok(at) = path(p.devargs) {
            if let Some(dev) = p.devices.remove(DRIVER_ID, at) {
                if let Ok(dev) = dev.downcast::<VirtioUserDevice>() {
                    device::stop(&dev);
                }
            }
        }
    }

    fn attach(&self, a: &Attach<'_>) -> Result<Box<dyn PortDriver>, PortError> {
        let at = a
            .devargs
            .get("path")
            .ok_or_else(|| PortError::bad_port(&a.devargs.name, "no path="))?;
        Ok(Box::new(VirtioUserPort {
            dev: a.devices.find(DRIVER_ID, at),
            devices: a.devices.clone(),
            path: at.to_string(),
        }))
    }
}

/// A virtio-user port in this process: the connection, if it was made here.
struct VirtioUserPort {
    dev: Option<Arc<VirtioUserDevice>>,
    devices: Devices,
    path: String,
}

impl VirtioUserPort {
    /// The device of this port, if this process connected it.
    fn here(&self, q: &QueueShm) -> Result<Arc<VirtioUserDevice>, PortError> {
        self.dev.clone().ok_or_else(|| {
            PortError::Config(format!(
                "{}: a net_virtio_user port is polled in the primary, which owns its connection: forward with shmdp-primary --fwd",
                q.port_name()
            ))
        })
    }
}

impl PortDriver for VirtioUserPort {
    fn rx_queue(
        &self,
        q: &mut QueueShm,
        cache: &MbufCache,
        _opened: &mut Burst,
    ) -> Result<Box<dyn RxBurst>, PortError> {
        q.check_pool(cache)?;
        let dev = self.here(q)?;
        let queue =
            VirtioUserQueue::take(dev, 2 * usize::from(q.queue())).map_err(|e| q.config(e))?;
        Ok(Box::new(VirtioUserRx(queue)))
    }

    fn tx_queue(
        &self,
        q: &mut QueueShm,
        _cache: &MbufCache,
        _opened: &mut Burst,
    ) -> Result<Box<dyn TxBurst>, PortError> {
        let dev = self.here(q)?;
        let queue =
            VirtioUserQueue::take(dev, 2 * usize::from(q.queue()) + 1).map_err(|e| q.config(e))?;
        Ok(Box::new(VirtioUserTx(queue)))
    }

    fn link_up(&self) -> Option<bool> {
        // Down for good once the backend took the port's memory away.
        self.dev.as_ref().filter(|d| d.dropped()).map(|_| false)
    }

    fn stop(&self) {
        if let Some(d) = &self.dev {
            self.devices.remove(DRIVER_ID, &self.path);
            device::stop(d);
        }
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
