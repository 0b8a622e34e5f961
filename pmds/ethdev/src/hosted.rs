//! Devices that run in the process that probed their port (the primary): a vhost-user
//! backend, a virtio-user connection. Where it sits: a helper for driver crates, over
//! the per-process [`Devices`] table. The device is recorded there under its devargs key
//! (a socket path) when the port starts, found again when the port is opened, and
//! removed when it stops; a process that did not start it (a secondary) opens the port
//! but cannot poll its queues, and is told so ([`PortError::NotHere`]).
//!
//! A driver describes its devices once ([`HostedKind`]) and keeps a [`Hosted`] in its
//! [`crate::PortDriver`].

use std::any::Any;
use std::sync::Arc;

use crate::devargs::Args;
use crate::driver::{Attach, Devices, DriverId, Probe};
use crate::{BadPortReason, ConfigError, PortError, QueueShm};

/// A device one process runs for a port.
pub trait HostedDevice: Any + Send + Sync {
    /// Stops it (its thread, its connection); called once it is out of the table.
    fn stop(dev: &Arc<Self>)
    where
        Self: Sized;
}

/// How a driver's devices are found: its number, its name, the devargs key naming a
/// device, and what to tell a process that does not run it.
#[derive(Debug, Clone, Copy)]
pub struct HostedKind {
    /// The driver's number.
    pub driver: DriverId,
    /// The driver's name (`net_vhost`).
    pub name: &'static str,
    /// The devargs key naming the device (`iface`, `path`); a port needs it.
    pub key: &'static str,
    /// What the key's value is, for the error when it is absent
    /// (`/path/to/socket (the vhost-user socket)`).
    pub hint: &'static str,
    /// Why the device is the primary's (`where the frontend's memory is mapped`).
    pub why: &'static str,
}

impl HostedKind {
    /// The device key's value in `d`.
    ///
    /// # Errors
    /// [`PortError::DevArgs`] when absent.
    pub fn key<'a>(&self, d: &'a Args) -> Result<&'a str, PortError> {
        d.require(self.key, self.hint)
    }

    /// Probe: the device key's value, which no port of this process uses yet.
    ///
    /// # Errors
    /// [`PortError::DevArgs`] when absent, [`PortError::Config`] when in use.
    pub fn check_free<'a, T: HostedDevice>(&self, p: &Probe<'a>) -> Result<&'a str, PortError> {
        let value = self.key(p.devargs)?;
        if p.devices.find::<T>(self.driver, value).is_some() {
            return Err(self.in_use(p.devargs, value));
        }
        Ok(value)
    }

    fn in_use(&self, d: &Args, value: &str) -> PortError {
        PortError::config(
            &d.name,
            ConfigError::InUse {
                key: self.key,
                value: value.to_string(),
            },
        )
    }

    /// Start: records the started `dev` in the process's table (stopping it when
    /// another port took the key in between).
    ///
    /// # Errors
    /// [`PortError::DevArgs`] when the key is absent, [`PortError::Config`] when in use.
    pub fn record<T: HostedDevice>(&self, p: &Probe<'_>, dev: Arc<T>) -> Result<(), PortError> {
        let value = self.key(p.devargs)?;
        p.devices.add(self.driver, value, dev).map_err(|dev| {
            T::stop(&dev);
            self.in_use(p.devargs, value)
        })
    }

    /// Undoes [`record`](Self::record): removes and stops the device, if any.
    pub fn abandon<T: HostedDevice>(&self, p: &Probe<'_>) {
        let Ok(value) = self.key(p.devargs) else {
            return;
        };
        if let Some(dev) = p.devices.remove(self.driver, value) {
            if let Ok(dev) = dev.downcast::<T>() {
                T::stop(&dev);
            }
        }
    }

    /// Attach: the port's device, if this process runs it.
    ///
    /// # Errors
    /// [`PortError::BadPort`] when the devargs lack the key.
    pub fn attach<T: HostedDevice>(&self, a: &Attach<'_>) -> Result<Hosted<T>, PortError> {
        let value = a.devargs.get(self.key).ok_or_else(|| {
            PortError::bad_port(&a.devargs.name, BadPortReason::MissingKey { key: self.key })
        })?;
        Ok(Hosted {
            kind: *self,
            dev: a.devices.find(self.driver, value),
            devices: a.devices.clone(),
            value: value.to_string(),
        })
    }
}

/// A port's device as one process sees it: there when this process runs it.
pub struct Hosted<T: HostedDevice> {
    kind: HostedKind,
    dev: Option<Arc<T>>,
    devices: Devices,
    value: String,
}

impl<T: HostedDevice> std::fmt::Debug for Hosted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hosted")
            .field("driver", &self.kind.name)
            .field("key", &self.value)
            .field("here", &self.dev.is_some())
            .finish()
    }
}

impl<T: HostedDevice> Hosted<T> {
    /// The device, if this process runs it.
    pub fn device(&self) -> Option<&Arc<T>> {
        self.dev.as_ref()
    }

    /// The device, for opening queue `q` of its port.
    ///
    /// # Errors
    /// [`PortError::NotHere`] when another process (the primary) runs it.
    pub fn here(&self, q: &QueueShm) -> Result<Arc<T>, PortError> {
        self.dev.clone().ok_or_else(|| PortError::NotHere {
            port: q.port_name().to_string(),
            driver: self.kind.name,
            why: self.kind.why,
        })
    }

    /// Removes the device from the table and stops it, if this process runs it and it
    /// is still recorded (once, however many times this is called, and never a later
    /// port's device on the same key).
    pub fn stop(&self) {
        if let Some(d) = &self.dev {
            if self.devices.remove_this(self.kind.driver, &self.value, d) {
                T::stop(d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use shm::{Memseg, Region};
    use shm_mempool::{MbufPool, MbufPoolParams};
    use zerocopy::FromZeros;

    use super::*;
    use crate::layout::PortInfo;
    use crate::PortSetup;

    /// A device that counts its stops.
    #[derive(Default)]
    struct Dev(AtomicU32);

    impl HostedDevice for Dev {
        fn stop(dev: &Arc<Self>) {
            // Relaxed: a counter read by this thread.
            dev.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    const KIND: HostedKind = HostedKind {
        driver: DriverId(99),
        name: "net_test",
        key: "path",
        hint: "/path/to/socket",
        why: "which owns it",
    };

    fn args(text: &str) -> Args {
        let (name, rest) = text.split_once(',').unwrap_or((text, ""));
        Args {
            name: name.to_string(),
            driver: KIND.driver,
            args: rest
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            text: text.to_string(),
        }
    }

    #[test]
    fn a_device_is_recorded_found_refused_twice_and_stopped_once() {
        let seg = Memseg::create_in_region(Region::heap(4 << 20), "hosted", 1).unwrap();
        let setup = PortSetup {
            port_id: 0,
            nb_desc: 64,
            rx_pool: MbufPool::create(&seg, "m", &MbufPoolParams::new(63, 0, 1)).unwrap(),
            mac: None,
        };
        let devices = Devices::new();
        let find = |_: &str| None;
        let probe = |d: &Args| -> Result<(), PortError> {
            let p = Probe {
                seg: &seg,
                devargs: d,
                setup: &setup,
                nb_desc: 64,
                find: &find,
                devices: &devices,
            };
            KIND.check_free::<Dev>(&p)?;
            KIND.record(&p, Arc::new(Dev::default()))
        };
        let missing = probe(&args("net_test0")).unwrap_err();
        assert_eq!(missing.to_string(), "net_test0: give path=/path/to/socket");
        let d = args("net_test0,path=/s");
        probe(&d).unwrap();
        let twice = probe(&args("net_test1,path=/s")).unwrap_err();
        assert_eq!(
            twice.to_string(),
            "net_test1: path /s is used by another port"
        );

        let info = PortInfo::new_zeroed();
        let attach = |devices: &Devices| {
            KIND.attach::<Dev>(&Attach {
                info: &info,
                devargs: &d,
                find: &find,
                devices,
            })
        };
        // Another process's table: no device there.
        let elsewhere = attach(&Devices::new()).unwrap();
        assert!(elsewhere.device().is_none());
        elsewhere.stop();
        let here = attach(&devices).unwrap();
        let dev = here.device().unwrap().clone();
        here.stop();
        here.stop();
        assert_eq!(dev.0.load(Ordering::Relaxed), 1, "stopped once");
        assert!(
            devices.find::<Dev>(KIND.driver, "/s").is_none(),
            "out of the table"
        );
        let no_key = KIND
            .attach::<Dev>(&Attach {
                info: &info,
                devargs: &args("net_test0"),
                find: &find,
                devices: &devices,
            })
            .unwrap_err();
        assert_eq!(no_key.to_string(), "bad port: net_test0: no path=");
    }
}
