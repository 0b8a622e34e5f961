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

    /// Removes the device from the table and stops it, if this process runs it.
    pub fn stop(&self) {
        if let Some(d) = &self.dev {
            self.devices.remove(self.kind.driver, &self.value);
            T::stop(d);
        }
    }
}
