//! A guest's virtqueue with arbitrary contents: descriptors, avail ring and indices come
//! from the fuzzer. Dequeue and enqueue must stay inside guest memory, never panic, and
//! every mbuf must go back to its pool.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use pmds::vhost::mem::{GuestMemory, RegionSpec};
use pmds::vhost::net::{NetQueue, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF};
use pmds::vhost::vring::{SplitRing, VringAddrs};
use shm::{Memseg, Region};
use shm_mempool::{MbufPool, MbufPoolParams, OwnerTag};

const MEM: u64 = 0x1_0000;
const UVA: u64 = 0x7000_0000;

struct Fixture {
    mem: Arc<GuestMemory>,
    pool: MbufPool,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // Sealed, as QEMU makes guest RAM: the backend refuses memory that can shrink.
        let f = pmds::vhost::mem::sealed_memfd("pmds-fuzz-vring", MEM).unwrap();
        let spec = RegionSpec {
            guest_phys_addr: 0,
            size: MEM,
            user_addr: UVA,
            mmap_offset: 0,
        };
        let seg = Memseg::create_in_region(Region::heap(8 << 20), "fuzz", 1).unwrap();
        seg.mark_ready();
        Fixture {
            mem: Arc::new(GuestMemory::map(&[spec], vec![f]).unwrap()),
            pool: MbufPool::create(&seg, "m", &MbufPoolParams::new(511, 0, 1)).unwrap(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let fx = fixture();
    // The fuzzer's bytes become the first part of guest memory (rings at the start).
    let base = fx.mem.gpa(0, MEM).unwrap();
    let n = data.len().min(MEM as usize);
    // `n <= MEM` bytes of the fixture's mapping.
    base.copy_in(0, &data[..n]);
    let size = 1u16 << (data[0] % 6);
    let a = VringAddrs {
        size,
        // Avail first, so short inputs already make chains available.
        avail: UVA,
        desc: UVA + 0x80,
        used: UVA + 0x300,
        base: u16::from(data[1]),
    };
    let features = if data[2] & 1 == 0 {
        VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF
    } else {
        0
    };
    let cache = fx.pool.cache(OwnerTag::PRIMARY).unwrap();
    {
        let ring = SplitRing::start(fx.mem.clone(), &a).unwrap();
        let mut q = NetQueue::new(ring, features);
        let mut out = Vec::new();
        let _ = q.dequeue(&cache, &mut out, 64);
        let frame = vec![0xabu8; usize::from(data[3]) * 8];
        for _ in 0..4 {
            if let Ok(m) = cache.alloc_from(&frame) {
                out.push(m);
            }
        }
        let _ = q.enqueue(&mut out);
    }
    drop(cache);
    assert_eq!(fx.pool.mempool().stats().available, 511, "every mbuf back");
});
