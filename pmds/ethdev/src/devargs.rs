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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::{Attach, PortDriver, Probe, Queues};

    /// A driver that only names itself and its keys.
    struct Foo;

    impl NetDriver for Foo {
        fn id(&self) -> DriverId {
            DriverId(7)
        }
        fn name(&self) -> &'static str {
            "net_foo"
        }
        fn keys(&self) -> &'static [&'static str] {
            &["size", "on"]
        }
        fn probe(&self, _: &Probe<'_>) -> Result<Queues, PortError> {
            unreachable!("not probed")
        }
        fn attach(&self, _: &Attach<'_>) -> Result<Box<dyn PortDriver>, PortError> {
            unreachable!("not attached")
        }
    }

    const DRIVERS: &[&dyn NetDriver] = &[&Foo];

    fn parse(text: &str) -> Result<Args, DevArgsError> {
        Args::parse_with(text, DRIVERS)
    }

    #[test]
    fn each_refusal_is_its_variant_with_a_message_that_says_the_fix() {
        let cases: [(&str, DevArgsError, &str); 5] = [
            (
                "net_foo",
                DevArgsError::NoInstance {
                    name: "net_foo".into(),
                },
                "needs an instance number",
            ),
            (
                "net_bar0",
                DevArgsError::UnknownDriver {
                    driver: "net_bar".into(),
                    known: vec!["net_foo"],
                },
                "unknown driver \"net_bar\" (known: net_foo)",
            ),
            (
                "net_foo0,size",
                DevArgsError::NotKeyValue {
                    item: "size".into(),
                },
                "\"size\" is not key=value",
            ),
            (
                "net_foo0,colour=red",
                DevArgsError::UnknownKey {
                    driver: "net_foo",
                    key: "colour".into(),
                    takes: &["size", "on"],
                },
                "net_foo does not take \"colour\" (it takes: size, on)",
            ),
            (
                "net_foo0,size=",
                DevArgsError::NoValue { key: "size".into() },
                "size= needs a value",
            ),
        ];
        for (text, want, says) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e, want, "{text}");
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
        let long = format!("net_foo0,size={}", "9".repeat(DEVARGS_LEN));
        assert!(matches!(
            parse(&long).unwrap_err(),
            DevArgsError::TooLong {
                max: DEVARGS_LEN,
                ..
            }
        ));
    }

    #[test]
    fn values_are_checked_with_the_port_named() {
        let d = parse("net_foo0,size=99,on=yes").unwrap();
        assert_eq!(d.number("size", 1, 1..=99).unwrap(), 99);
        assert_eq!(d.number("absent", 5, 1..=9).unwrap(), 5);
        let e = d.number("size", 1, 1..=16).unwrap_err();
        assert_eq!(
            e.to_string(),
            "net_foo0: size=99 must be a number in 1..=16"
        );
        assert!(matches!(
            e,
            PortError::DevArgs {
                reason: DevArgsError::BadNumber {
                    min: 1,
                    max: 16,
                    ..
                },
                ..
            }
        ));
        assert_eq!(
            d.flag("on").unwrap_err().to_string(),
            "net_foo0: on=yes: expected 0 or 1"
        );
        assert!(!d.flag("absent").unwrap());
        assert_eq!(
            d.require("path", "/path/to/socket")
                .unwrap_err()
                .to_string(),
            "net_foo0: give path=/path/to/socket"
        );
    }
}
