//! vhost-user messages as a frontend (a guest's QEMU, a hostile process) might send them:
//! the header parser and the decoder must refuse or accept, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmds::vhost::proto::{decode, Header};

fuzz_target!(|data: &[u8]| {
    if data.len() < 13 {
        return;
    }
    let nfds = usize::from(data[0] % 10);
    let hdr: [u8; 12] = data[1..13].try_into().expect("12 bytes");
    if let Ok(h) = Header::parse(&hdr) {
        let _ = decode(&h, &data[13..], nfds);
    }
    // The decoder on its own, whatever the header said about the size.
    let h = Header {
        request: u32::from(data[1] % 40),
        flags: 1,
        size: (data.len() - 13) as u32,
    };
    let _ = decode(&h, &data[13..], nfds);
});
