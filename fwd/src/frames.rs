//! Frames the engine writes: txonly's generated UDP/IPv4 and raw frames, mac mode's peer
//! addresses, and the mac/macswap header rewrite of a burst about to go out.
//!
//! Where it sits: in `fwd`, used by the polling loop (`poll.rs`).

use pmds::Port;
use shm_mempool::Mbuf;

use crate::Mode;

/// The peer MAC address testpmd uses for port `id` in mac mode.
pub fn peer_mac(id: u16) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, id as u8]
}

/// A UDP/IPv4 frame of `len` bytes (at least 64) from `src` to `dst`, as txonly sends.
pub fn txonly_frame(src: [u8; 6], dst: [u8; 6], len: usize) -> Vec<u8> {
    let len = len.clamp(64, 1518);
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (len - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
    ip[16..20].copy_from_slice(&[198, 18, 0, 2]);
    let mut sum: u32 = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&9u16.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

/// A frame of `len` bytes (at least 64) from `src` to `dst` with EtherType `ethertype`
/// and no protocol above it: the payload is the ASCII tag `shmdp` and zeros. With a local
/// experimental type (0x88b5, 0x88b6) no host or guest network stack acts on it.
pub fn raw_frame(src: [u8; 6], dst: [u8; 6], ethertype: u16, len: usize) -> Vec<u8> {
    let len = len.clamp(64, 1518);
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
    f[14..19].copy_from_slice(b"shmdp");
    f
}

/// Applies the mode's header rewrite to a burst about to go out on `out`.
pub(crate) fn rewrite(mode: Mode, burst: &mut [Mbuf<'_>], out: &Port) {
    match mode {
        Mode::Mac => {
            let (src, dst) = (out.mac(), peer_mac(out.id()));
            for m in burst {
                if let Some(d) = m.data_mut().filter(|d| d.len() >= 12) {
                    d[0..6].copy_from_slice(&dst);
                    d[6..12].copy_from_slice(&src);
                }
            }
        }
        Mode::MacSwap => {
            for m in burst {
                if let Some(d) = m.data_mut().filter(|d| d.len() >= 12) {
                    let (a, b) = d.split_at_mut(6);
                    a.swap_with_slice(&mut b[..6]);
                }
            }
        }
        _ => {}
    }
}
