//! DPDK-style device arguments: `net_ring0`, `net_ring1,rx_ring=a,tx_ring=b`,
//! `net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap`. The driver is the instance name without
//! its trailing digits, looked up in a [`Registry`]; the rest are `key=value` pairs, each a
//! key the driver declared ([`NetDriver::keys`]) and checks the value of at probe time.

use std::marker::PhantomData;
use std::ops::Deref;

use crate::driver::{DriverId, NetDriver, Registry};
use crate::layout::DEVARGS_LEN;
use crate::{DevArgsError, PortError};

/// Parsed devargs, without the registry they were checked against: what a driver sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Instance name, e.g. `net_pcap0` (the port's name).
    pub name: String,
    /// Driver.
    pub driver: DriverId,
    /// `key=value` pairs in order.
    pub args: Vec<(String, String)>,
    /// The text as given.
    pub text: String,
}

/// Devargs checked against the drivers of registry `R` (the facade crate's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevArgs<R: Registry> {
    args: Args,
    registry: PhantomData<R>,
}

impl<R: Registry> Deref for DevArgs<R> {
    type Target = Args;
    fn deref(&self) -> &Args {
        &self.args
    }
}

impl<R: Registry> DevArgs<R> {
    /// Parses a devargs string; the driver must be one of `R`'s. (Also a CLI's value
    /// parser: `value_parser = DevArgs::parse`.)
    ///
    /// # Errors
    /// [`DevArgsError`] naming the problem and the accepted forms.
    pub fn parse(text: &str) -> Result<DevArgs<R>, DevArgsError> {
        Args::parse_with(text, R::drivers()).map(|args| DevArgs {
            args,
            registry: PhantomData,
        })
    }

    /// The same device with `args` instead of its own key=value pairs, built directly (no
    /// text parsed again): each key must be one the driver takes and each value non-empty,
    /// and the text, written from them, must fit the port's shared record.
    ///
    /// # Errors
    /// [`DevArgsError`] naming the key or the length.
    pub fn with_args(&self, args: Vec<(String, String)>) -> Result<DevArgs<R>, DevArgsError> {
        let driver = self.net_driver();
        let mut text = self.args.name.clone();
        for (k, v) in &args {
            check_key(driver, k, v)?;
            text.push(',');
            text.push_str(k);
            text.push('=');
            text.push_str(v);
        }
        if text.len() > DEVARGS_LEN {
            return Err(DevArgsError::too_long(text.len()));
        }
        Ok(DevArgs {
            args: Args {
                name: self.args.name.clone(),
                driver: self.args.driver,
                args,
                text,
            },
            registry: PhantomData,
        })
    }

    /// The driver of these devargs.
    pub fn net_driver(&self) -> &'static dyn NetDriver {
        crate::driver::by_id::<R>(self.args.driver).expect("parsed against R")
    }
}

/// `key=value` is one `driver` takes: a key of its and a value.
fn check_key(driver: &dyn NetDriver, key: &str, value: &str) -> Result<(), DevArgsError> {
    if !driver.keys().contains(&key) {
        return Err(DevArgsError::UnknownKey {
            driver: driver.name(),
            key: key.to_string(),
            takes: driver.keys(),
        });
    }
    if value.is_empty() {
        return Err(DevArgsError::NoValue {
            key: key.to_string(),
        });
    }
    Ok(())
}

impl Args {
    /// Parses a devargs string against `drivers`.
    ///
    /// # Errors
    /// [`DevArgsError`] naming the problem and the accepted forms.
    pub fn parse_with(
        text: &str,
        drivers: &[&'static dyn NetDriver],
    ) -> Result<Args, DevArgsError> {
        let mut parts = text.split(',');
        let name = parts.next().unwrap_or_default().trim();
        let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
        if base.len() == name.len() {
            return Err(DevArgsError::NoInstance {
                name: name.to_string(),
            });
        }
        let Some(driver) = drivers.iter().find(|d| d.name() == base) else {
            return Err(DevArgsError::UnknownDriver {
                driver: base.to_string(),
                known: drivers.iter().map(|d| d.name()).collect(),
            });
        };
        if shm::layout::encode_name(name).is_none() {
            return Err(DevArgsError::BadName {
                name: name.to_string(),
            });
        }
        let mut args = Vec::new();
        for kv in parts {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| DevArgsError::NotKeyValue {
                    item: kv.to_string(),
                })?;
            check_key(*driver, k, v)?;
            args.push((k.to_string(), v.to_string()));
        }
        if text.len() > DEVARGS_LEN {
            return Err(DevArgsError::too_long(text.len()));
        }
        Ok(Args {
            name: name.to_string(),
            driver: driver.id(),
            args,
            text: text.to_string(),
        })
    }

    /// The value of `key`, if given (the last one wins).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, which the driver needs; `hint` says what it is (see
    /// [`DevArgsError::Missing`]).
    ///
    /// # Errors
    /// [`PortError::DevArgs`] when absent.
    pub fn require(&self, key: &'static str, hint: &'static str) -> Result<&str, PortError> {
        self.get(key)
            .ok_or_else(|| PortError::devargs(&self.name, DevArgsError::Missing { key, hint }))
    }

    /// Every value of `key`, in order (a key may repeat: one ring per queue).
    pub fn get_all(&self, key: &str) -> Vec<&str> {
        self.args
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A numeric argument in `range`, or `default`.
    ///
    /// # Errors
    /// [`PortError::DevArgs`] when the value is not a number in range.
    pub fn number(
        &self,
        key: &'static str,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<u32, PortError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.parse().ok().filter(|n| range.contains(n)).ok_or_else(|| {
                PortError::devargs(
                    &self.name,
                    DevArgsError::BadNumber {
                        key,
                        value: v.to_string(),
                        min: *range.start(),
                        max: *range.end(),
                    },
                )
            }),
        }
    }

    /// A `0`/`1` flag, `false` when absent.
    ///
    /// # Errors
    /// [`PortError::DevArgs`] when the value is neither.
    pub fn flag(&self, key: &'static str) -> Result<bool, PortError> {
        match self.get(key) {
            None | Some("0") => Ok(false),
            Some("1") => Ok(true),
            Some(v) => Err(PortError::devargs(
                &self.name,
                DevArgsError::BadFlag {
                    key,
                    value: v.to_string(),
                },
            )),
        }
    }
}
