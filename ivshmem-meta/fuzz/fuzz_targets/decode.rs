//! Fuzzes the metadata decoder. The input is XORed over a valid block (so the fuzzer starts
//! past the magic and sizes), with the checksum fixed up when the first byte is odd so the
//! checks behind it are reached; inputs shorter than a byte are decoded raw. It must never
//! panic, and whatever it accepts must encode back to the same metadata.
#![no_main]

use ivshmem_meta::{decode, encode, fnv1a, Entry, Kind, Meta, BLOCK_SIZE};
use libfuzzer_sys::fuzz_target;

fn template() -> [u8; BLOCK_SIZE] {
    let entry = |name: &str, kind, offset, length| Entry {
        name: name.into(),
        kind,
        flags: 0,
        offset,
        length,
        elem_size: 8,
    };
    encode(&Meta {
        group: "vm1".into(),
        segment_size: 8 << 20,
        entries: vec![
            entry("rx", Kind::Ring, 20480, 8576),
            entry("tx", Kind::Ring, 29056, 8576),
            entry("pool", Kind::Mempool, 40960, 1 << 20),
        ],
    })
    .expect("a valid template")
}

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
    let mut block = template();
    for (i, b) in data.iter().enumerate() {
        block[i % BLOCK_SIZE] ^= b;
    }
    if data.first().is_some_and(|b| b & 1 == 1) {
        block[60..64].fill(0);
        let sum = fnv1a(&block);
        block[60..64].copy_from_slice(&sum.to_le_bytes());
    }
    if let Ok(meta) = decode(&block) {
        let again = encode(&meta).expect("a decoded block encodes");
        assert_eq!(decode(&again).expect("and decodes"), meta);
    }
});
