//! DPDK-style device arguments: `net_ring0`, `net_ring1,rx_ring=a,tx_ring=b`,
//! `net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap`. The driver is the instance name without
//! its trailing digits, looked up in a [`Registry`]; the rest are `key=value` pairs, each a
//! key the driver declared ([`NetDriver::keys`]) and checks the value of at probe time.

use std::marker::PhantomData;
use std::ops::Deref;

use crate::driver::{DriverId, NetDriver, Registry};
use crate::layout::DEVARGS_LEN;
use crate::DevArgsError;

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
    /// Parses a devargs string; the driver must be one of `R`'s.
    ///
    /// # Errors
    /// [`DevArgsError`] naming the problem and the accepted forms.
    pub fn new(text: &str) -> Result<DevArgs<R>, DevArgsError> {
        Args::parse_with(text, R::drivers()).map(|args| DevArgs {
            args,
            registry: PhantomData,
        })
    }

    /// [`DevArgs::new`] with the error as its text: the form a CLI's value parser (and
    /// callers whose errors are text) take.
    ///
    /// # Errors
    /// As [`DevArgs::new`].
    pub fn parse(text: &str) -> Result<DevArgs<R>, String> {
        DevArgs::new(text).map_err(String::from)
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
            if !driver.keys().contains(&k.as_str()) || v.is_empty() {
                return Err(DevArgsError::new(
                    &self.args.text,
                    format!("{} does not take {k}={v:?}", driver.name()),
                ));
            }
            text.push(',');
            text.push_str(k);
            text.push('=');
            text.push_str(v);
        }
        if text.len() > DEVARGS_LEN {
            return Err(DevArgsError::new(
                &text,
                format!("devargs longer than {DEVARGS_LEN} bytes"),
            ));
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

impl Args {
    /// Parses a devargs string against `drivers`.
    ///
    /// # Errors
    /// [`DevArgsError`] naming the problem and the accepted forms.
    pub fn parse_with(
        text: &str,
        drivers: &[&'static dyn NetDriver],
    ) -> Result<Args, DevArgsError> {
        let err = |why: String| DevArgsError::new(text, why);
        let mut parts = text.split(',');
        let name = parts.next().unwrap_or_default().trim();
        let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
        if base.len() == name.len() {
            return Err(err(
                "the device name needs an instance number, e.g. net_ring0 or net_pcap0".into(),
            ));
        }
        let Some(driver) = drivers.iter().find(|d| d.name() == base) else {
            let known: Vec<&str> = drivers.iter().map(|d| d.name()).collect();
            return Err(err(format!(
                "unknown driver {base:?} (known: {})",
                known.join(", ")
            )));
        };
        if shm::layout::encode_name(name).is_none() {
            return Err(err("name must be 1..31 bytes".into()));
        }
        let mut args = Vec::new();
        for kv in parts {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| err(format!("{kv:?} is not key=value")))?;
            if !driver.keys().contains(&k) {
                return Err(err(format!(
                    "{} does not take {k:?} (it takes: {})",
                    driver.name(),
                    driver.keys().join(", ")
                )));
            }
            if v.is_empty() {
                return Err(err(format!("{k}= needs a value")));
            }
            args.push((k.to_string(), v.to_string()));
        }
        if text.len() > DEVARGS_LEN {
            return Err(err(format!("devargs longer than {DEVARGS_LEN} bytes")));
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
    /// [`DevArgsError`] when the value is not a number in range.
    pub fn number(
        &self,
        key: &str,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<u32, DevArgsError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.parse().ok().filter(|n| range.contains(n)).ok_or_else(|| {
                DevArgsError::new(
                    &self.text,
                    format!(
                        "{key}={v} must be a number in {}..={}",
                        range.start(),
                        range.end()
                    ),
                )
            }),
        }
    }

    /// A `0`/`1` flag, `false` when absent.
    ///
    /// # Errors
    /// [`DevArgsError`] when the value is neither.
    pub fn flag(&self, key: &str) -> Result<bool, DevArgsError> {
        match self.get(key) {
            None | Some("0") => Ok(false),
            Some("1") => Ok(true),
            Some(v) => Err(DevArgsError::new(
                &self.text,
                format!("{key}={v}: expected 0 or 1"),
            )),
        }
    }
}
