//! Feature bits (virtio 1.x §6, §5.1.3) and what they decide for virtio-net.

/// `VIRTIO_NET_F_MRG_RXBUF`: a received packet may span several chains.
pub const VIRTIO_NET_F_MRG_RXBUF: u64 = 1 << 15;
/// `VIRTIO_NET_F_MQ`: several queue pairs.
pub const VIRTIO_NET_F_MQ: u64 = 1 << 22;
/// `VIRTIO_F_VERSION_1`.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// `VIRTIO_F_IN_ORDER`: buffers are used in the order they were made available; the
/// device may return a batch with one used element (virtio 1.x §2.7.9).
pub const VIRTIO_F_IN_ORDER: u64 = 1 << 35;
/// `VHOST_USER_F_PROTOCOL_FEATURES` (vhost-user: the protocol feature messages exist).
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// `VIRTIO_RING_F_INDIRECT_DESC` (not offered).
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;

/// Length of the `virtio_net_hdr` in front of every packet for the negotiated `features`
/// (virtio 1.x §5.1.6): 12 bytes with `VIRTIO_F_VERSION_1` or `VIRTIO_NET_F_MRG_RXBUF`
/// (the last two are `num_buffers`), 10 without.
pub fn header_len(features: u64) -> usize {
    if features & (VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF) != 0 {
        12
    } else {
        10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_len_follows_version_1_and_mergeable_buffers() {
        assert_eq!(header_len(0), 10);
        assert_eq!(header_len(VIRTIO_F_VERSION_1), 12);
        assert_eq!(header_len(VIRTIO_NET_F_MRG_RXBUF), 12);
        assert_eq!(header_len(VIRTIO_NET_F_MQ), 10);
    }
}
