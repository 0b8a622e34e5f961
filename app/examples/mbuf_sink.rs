//! A small application built on the secondary library (and `shmdp_app`'s payload check):
//! attaches to a primary, receives packets from a ring of mbuf handles, checks each one and
//! frees it.
//!
//! It is a different binary from `shmdp-secondary` on purpose: the pools keep nothing in
//! shared memory that depends on which binary reads them, so both use one pool at once.
//!
//! usage: mbuf_sink --file-prefix P POOL RING COUNT [SIZE]
//! (packets as `shmdp-secondary mbuf-send` writes them: 8-byte sequence number + pattern)

use std::process::ExitCode;
use std::time::{Duration, Instant};

use secondary::Secondary;
use shm::runtime::FilePrefix;
use shm_mempool::MbufHandle;
use shmdp_app::Exit;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: mbuf_sink --file-prefix P POOL RING COUNT [SIZE]";
    let (prefix, rest) = match args.as_slice() {
        [flag, p, rest @ ..] if flag == "--file-prefix" => (p.clone(), rest),
        _ => {
            eprintln!("mbuf_sink: error: {usage}");
            return Exit::Usage.into();
        }
    };
    let (pool_name, ring_name, count, size) = match rest {
        [pool, ring, count, more @ ..] if more.len() <= 1 => {
            let size = more.first().map_or(Some(64), |s| s.parse().ok());
            match (count.parse::<u64>().ok(), size) {
                (Some(c), Some(s)) => (pool, ring, c, s),
                _ => {
                    eprintln!("mbuf_sink: error: COUNT and SIZE must be numbers; {usage}");
                    return Exit::Usage.into();
                }
            }
        }
        _ => {
            eprintln!("mbuf_sink: error: {usage}");
            return Exit::Usage.into();
        }
    };
    let prefix = match prefix.parse::<FilePrefix>() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mbuf_sink: error: {e}");
            return Exit::Usage.into();
        }
    };
    let sec = match Secondary::attach(&prefix, "mbuf_sink") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mbuf_sink: error: {e}");
            return Exit::Usage.into();
        }
    };
    let result = (|| -> Result<u64, String> {
        let pool = sec.mbuf_pool(pool_name).map_err(|e| e.to_string())?;
        let ring = sec.ring(ring_name).map_err(|e| e.to_string())?;
        let mut rx = ring.mc_consumer().map_err(|e| e.to_string())?;
        let cache = pool.cache(sec.owner_tag()).map_err(|e| e.to_string())?;
        println!(
            "mbuf_sink: attached as slot {}, waiting for {count} packets",
            sec.slot()
        );
        let mut handles = [0u64; 32];
        let mut want = Vec::new();
        let mut got = 0u64;
        let mut last = Instant::now();
        while got < count {
            let n = rx.dequeue_burst(&mut handles).map_err(|e| e.to_string())?;
            if n == 0 {
                if last.elapsed() > Duration::from_secs(30) {
                    return Err(format!("received {got} of {count}; nothing for 30 s"));
                }
                std::thread::yield_now();
                continue;
            }
            last = Instant::now();
            for &h in &handles[..n] {
                let m = cache
                    .adopt(MbufHandle(h))
                    .map_err(|e| format!("packet {got}: {e}"))?;
                shmdp_app::pooltool::payload(got, size, &mut want);
                if m.to_vec() != want {
                    return Err(format!("packet {got}: payload differs"));
                }
                got += 1;
            }
        }
        Ok(got)
    })();
    sec.detach();
    match result {
        Ok(n) => {
            println!("mbuf_sink: received {n} packets, payloads ok");
            Exit::Ok.into()
        }
        Err(e) => {
            eprintln!("mbuf_sink: error: {e}");
            Exit::Failed.into()
        }
    }
}
