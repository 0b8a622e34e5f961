//! DPDK-style device arguments: `net_ring0`, `net_ring1,rx_ring=a,tx_ring=b`,
//! `net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap`. The driver is the instance name without
//! its trailing digits; the rest are `key=value` pairs that each driver checks.

/// The poll-mode drivers a port can have (stored as a number in shared memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Driver {
    /// `net_ring`: queues are shm rings of mbuf handles.
    Ring = 1,
    /// `net_pcap`: rx from a pcap file or a live interface, tx to a pcap file or one.
    Pcap = 2,
    /// vhost-user backend (`net_vhost`): the peer is a QEMU guest or a virtio-user process.
    Vhost = 3,
    /// virtio-user (`net_virtio_user`): shmdp as the vhost-user frontend.
    VirtioUser = 4,
}

impl Driver {
    /// The driver stored as `n` in a port header.
    pub fn from_u16(n: u16) -> Option<Driver> {
        match n {
            1 => Some(Driver::Ring),
            2 => Some(Driver::Pcap),
            3 => Some(Driver::Vhost),
            4 => Some(Driver::VirtioUser),
            _ => None,
        }
    }

    /// The DPDK-style driver name.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Ring => "net_ring",
            Driver::Pcap => "net_pcap",
            Driver::Vhost => "net_vhost",
            Driver::VirtioUser => "net_virtio_user",
        }
    }
}

/// Parsed devargs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevArgs {
    /// Instance name, e.g. `net_pcap0` (the port's name).
    pub name: String,
    /// Driver.
    pub driver: Driver,
    /// `key=value` pairs in order.
    pub args: Vec<(String, String)>,
    /// The text as given.
    pub text: String,
}

/// Keys each driver accepts.
fn known_keys(driver: Driver) -> &'static [&'static str] {
    match driver {
        Driver::Ring => &["rx_ring", "tx_ring", "queues", "nb_desc", "guest_pool"],
        Driver::Pcap => &["rx_pcap", "tx_pcap", "rx_iface", "tx_iface", "iface"],
        Driver::Vhost => &["iface", "client", "queues"],
        Driver::VirtioUser => &["path", "queues", "queue_size"],
    }
}

impl DevArgs {
    /// Parses a devargs string.
    ///
    /// # Errors
    /// One line naming the problem and the accepted forms.
    pub fn parse(text: &str) -> Result<DevArgs, String> {
        let mut parts = text.split(',');
        let name = parts.next().unwrap_or_default().trim();
        let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
        if base.len() == name.len() {
            return Err(format!(
                "--vdev {text:?}: the device name needs an instance number, e.g. net_ring0 or net_pcap0"
            ));
        }
        let driver = match base {
            "net_ring" => Driver::Ring,
            "net_pcap" => Driver::Pcap,
            "net_vhost" => Driver::Vhost,
            "net_virtio_user" => Driver::VirtioUser,
            other => {
                return Err(format!(
                "--vdev {text:?}: unknown driver {other:?} (known: net_ring, net_pcap, net_vhost, net_virtio_user)"
            ))
            }
        };
        if shm::layout::encode_name(name).is_none() {
            return Err(format!("--vdev {text:?}: name must be 1..31 bytes"));
        }
        let mut args = Vec::new();
        for kv in parts {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("--vdev {text:?}: {kv:?} is not key=value"))?;
            if !known_keys(driver).contains(&k) {
                return Err(format!(
                    "--vdev {text:?}: {} does not take {k:?} (it takes: {})",
                    driver.name(),
                    known_keys(driver).join(", ")
                ));
            }
            if v.is_empty() {
                return Err(format!("--vdev {text:?}: {k}= needs a value"));
            }
            args.push((k.to_string(), v.to_string()));
        }
        if text.len() > crate::layout::DEVARGS_LEN {
            return Err(format!(
                "--vdev: devargs longer than {} bytes",
                crate::layout::DEVARGS_LEN
            ));
        }
        Ok(DevArgs {
            name: name.to_string(),
            driver,
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
    /// One line when the value is not a number in range.
    pub fn number(
        &self,
        key: &str,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<u32, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.parse().ok().filter(|n| range.contains(n)).ok_or_else(|| {
                format!(
                    "--vdev {:?}: {key}={v} must be a number in {}..={}",
                    self.text,
                    range.start(),
                    range.end()
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dpdk_style_devargs() {
        let d = DevArgs::parse("net_pcap0,rx_pcap=in.pcap,tx_pcap=/tmp/out.pcap").unwrap();
        assert_eq!((d.name.as_str(), d.driver), ("net_pcap0", Driver::Pcap));
        assert_eq!(d.get("rx_pcap"), Some("in.pcap"));
        assert_eq!(d.get("tx_pcap"), Some("/tmp/out.pcap"));
        let r = DevArgs::parse("net_ring12").unwrap();
        assert_eq!(
            (r.name.as_str(), r.driver, r.args.len()),
            ("net_ring12", Driver::Ring, 0)
        );
        assert_eq!(
            DevArgs::parse("net_ring0,queues=4")
                .unwrap()
                .number("queues", 1, 1..=16),
            Ok(4)
        );
        for (bad, says) in [
            ("net_ring", "instance number"),
            ("net_bogus0", "unknown driver"),
            ("net_pcap0,rx_pcap", "not key=value"),
            ("net_pcap0,rx_ring=x", "does not take"),
            ("net_pcap0,rx_pcap=", "needs a value"),
        ] {
            let e = DevArgs::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let q = DevArgs::parse("net_ring0,queues=99").unwrap();
        assert!(q
            .number("queues", 1, 1..=16)
            .unwrap_err()
            .contains("1..=16"));
    }
}
