//! The `net_vhost` driver's side of the port API: probe (the socket path is free in this
//! process), start (the backend's thread, recorded in the device table), attach (found
//! there again), and the queues (guest receive queue = our tx, guest transmit = our rx).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use shm_mempool::{Mbuf, MbufCache};

use pmds_ethdev::{
    Attach, Burst, Devices, DriverId, NetDriver, PortDriver, PortError, Probe, QueueShm, Queues,
    RxBurst, TxBurst,
};

use crate::backend::{self, VhostDevice, MAX_QUEUE_PAIRS};
use crate::VhostQueue;

/// The `net_vhost` driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct VhostDriver;

/// `net_vhost`'s number in the port layout.
pub const DRIVER_ID: DriverId = DriverId(3);

fn iface<'a>(p: &'a Probe<'_>) -> Result<&'a str, PortError> {
    p.devargs.get("iface").ok_or_else(|| {
        PortError::config(
            &p.devargs.name,
            "give iface=/path/to/socket (the vhost-user socket)",
        )
    })
}

impl NetDriver for VhostDriver {
    fn id(&self) -> DriverId {
        DRIVER_ID
    }

    fn name(&self) -> &'static str {
        "net_vhost"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["iface", "client", "queues"]
    }

    fn probe(&self, p: &Probe<'_>) -> Result<Queues, PortError> {
        let d = p.devargs;
        let q = d.number("queues", 1, 1..=u32::from(MAX_QUEUE_PAIRS))? as u16;
        let path = iface(p)?;
        d.flag("client")
            .map_err(|e| PortError::config(&d.name, e))?;
        if p.devices.find::<VhostDevice>(DRIVER_ID, path).is_some() {
            return Err(PortError::config(
                &d.name,
                format!("iface {path} is served by another port"),
            ));
        }
        Ok(Queues { rx: q, tx: q })
    }

    fn start(&self, p: &Probe<'_>, queues: Queues) -> Result<(), PortError> {
        let cfg = |why: String| PortError::config(&p.devargs.name, why);
        let path = iface(p)?;
        let client = p.devargs.flag("client")?;
        let dev = VhostDevice::start(Path::new(path), queues.rx, client)
            .map_err(|e| cfg(e.to_string()))?;
        p.devices.add(DRIVER_ID, path, dev).map_err(|dev| {
            backend::stop(&dev);
            cfg(format!("iface {path} is served by another port"))
        })
    }

    fn abandon(&self, p: &Probe<'_>) {
        if let Ok(path) = iface(p) {
            if let Some(dev) = p.devices.remove(DRIVER_ID, path) {
                if let Ok(dev) = dev.downcast::<VhostDevice>() {
                    backend::stop(&dev);
                }
            }
        }
    }

    fn attach(&self, a: &Attach<'_>) -> Result<Box<dyn PortDriver>, PortError> {
        let path = a
            .devargs
            .get("iface")
            .ok_or_else(|| PortError::bad_port(&a.devargs.name, "no iface="))?;
        Ok(Box::new(VhostPort {
            dev: a.devices.find(DRIVER_ID, path),
            devices: a.devices.clone(),
            path: path.to_string(),
        }))
    }
}

/// A vhost port in this process: the backend, if it runs here.
struct VhostPort {
    dev: Option<Arc<VhostDevice>>,
    devices: Devices,
    path: String,
}

impl VhostPort {
    /// The backend of this port, if this process runs it (the guest's memory is mapped
    /// only there).
    fn here(&self, q: &QueueShm) -> Result<Arc<VhostDevice>, PortError> {
        self.dev.clone().ok_or_else(|| {
            PortError::Config(format!(
                "{}: a net_vhost port is polled in the primary, where the frontend's memory is mapped: forward with shmdp-primary --fwd",
                q.port_name()
            ))
        })
    }
}

impl PortDriver for VhostPort {
    fn rx_queue(
        &self,
        q: &mut QueueShm,
        cache: &MbufCache,
        _opened: &mut Burst,
    ) -> Result<Box<dyn RxBurst>, PortError> {
        q.check_pool(cache)?;
        let dev = self.here(q)?;
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
        let dev = self.here(q)?;
        // The guest's receive queue.
        let vring = 2 * usize::from(q.queue());
        Ok(Box::new(VhostTx(VhostQueue::new(dev, vring))))
    }

    fn link_up(&self) -> Option<bool> {
        // Up while a frontend is connected with every vring started.
        self.dev.as_ref().map(|d| d.ready())
    }

    fn errors(&self) -> u64 {
        // Relaxed: a counter.
        self.dev
            .as_ref()
            .map_or(0, |d| d.protocol_errors.load(Ordering::Relaxed))
    }

    fn stop(&self) {
        if let Some(d) = &self.dev {
            self.devices.remove(DRIVER_ID, &self.path);
            backend::stop(d);
        }
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
