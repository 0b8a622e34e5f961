//! Fuzzes the metadata decoder: any bytes, with the checksum fixed up half the time so the
//! checks behind it are reached. It must never panic, and whatever it accepts must encode
//! back to the same block.
#![no_main]

use ivshmem_meta::{decode, encode, fnv1a, BLOCK_SIZE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut block = data.to_vec();
    if block.len() >= BLOCK_SIZE && data.first().is_some_and(|b| b & 1 == 1) {
        block[60..64].fill(0);
        let sum = fnv1a(&block[..BLOCK_SIZE]);
        block[60..64].copy_from_slice(&sum.to_le_bytes());
    }
    if let Ok(meta) = decode(&block) {
        let again = encode(&meta).expect("a decoded block encodes");
        assert_eq!(decode(&again).expect("and decodes"), meta);
    }
});
