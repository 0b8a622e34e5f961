//! An arbitrary capture file: the in-memory parser and the chunked file reader must never
//! panic, must agree on every record, and must end (an error or the end) in bounded steps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pmds::pcap_file::{self, PcapReader};

fuzz_target!(|data: &[u8]| {
    let mut from_slice = Vec::new();
    if let Ok((mut fmt, mut pos)) = pcap_file::open(data) {
        while let Ok(Some((r, next))) = pcap_file::next_record(data, pos, &mut fmt) {
            assert!(next > pos, "a record must move forward");
            from_slice.push(r.data.to_vec());
            pos = next;
        }
    }
    let path = std::env::temp_dir().join(format!("pmds-fuzz-pcap-{}", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let mut from_file = Vec::new();
    if let Ok(mut r) = PcapReader::open(&path, 0) {
        while let Ok(Some(rec)) = r.next_record() {
            from_file.push(rec.data.to_vec());
        }
    }
    assert_eq!(from_slice, from_file);
});
