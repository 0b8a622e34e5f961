//! Mbuf and mempool tools behind `shmdp-secondary`'s pool commands and the examples: send
//! packets through a ring, receive and check them, hold buffers, stress a pool, and print
//! pool statistics. They double as the reference for how an application uses the pools.

use std::time::{Duration, Instant};

use shm::stats::PoolStats;
use shm_mempool::{Mbuf, MbufCache, MbufHandle, Mempool, PoolError};
use shm_ring::{Ring, RingError};

use crate::ringside::RingSide;

/// What went wrong in a pool tool.
#[derive(Debug, thiserror::Error)]
pub enum PoolToolError {
    /// A pool operation failed.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// A ring operation failed.
    #[error("ring {ring}: {source}")]
    Ring {
        /// Ring name.
        ring: String,
        /// Cause.
        #[source]
        source: RingError,
    },
    /// No progress for too long.
    #[error("{0}")]
    Timeout(String),
    /// A received packet was not what the sender wrote.
    #[error("{0}")]
    Check(String),
}

/// The payload of packet `seq` of `size` bytes (at least 8): the sequence number, then
/// a pattern derived from it.
pub fn payload(seq: u64, size: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend((8..size.max(8)).map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8));
}

/// Allocates `count` packets of `size` bytes, writes [`payload`] into each and enqueues
/// their handles into `ring`, waiting while it is full (up to `timeout` without progress).
///
/// # Errors
/// Pool exhaustion for longer than `timeout`, ring errors.
pub fn send(
    cache: &MbufCache,
    ring: &Ring<u64>,
    count: u64,
    size: usize,
    timeout: Duration,
) -> Result<u64, PoolToolError> {
    let ring_err = ring_error(ring);
    let mut enq = RingSide::producer(ring).map_err(ring_err)?;
    let mut bytes = Vec::with_capacity(size.max(8));
    let mut last = Instant::now();
    let mut seq = 0;
    while seq < count {
        payload(seq, size, &mut bytes);
        let m = match cache.alloc_from(&bytes) {
            Ok(m) => m,
            Err(_) if last.elapsed() < timeout => {
                std::thread::yield_now();
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let handle = m.into_transit().expect("a fresh mbuf is not shared");
        loop {
            if enq.put(handle.0).map_err(ring_err)? {
                break;
            }
            if last.elapsed() > timeout {
                return Err(ring_full(ring, timeout));
            }
            std::thread::yield_now();
        }
        last = Instant::now();
        seq += 1;
    }
    Ok(count)
}

/// Dequeues `count` handles from `ring`, adopts each and checks that packet `k` carries
/// [`payload`]`(k, size)`, then frees it.
///
/// # Errors
/// A refused handle, a wrong payload, ring errors, or no packet for `timeout`.
pub fn receive(
    cache: &MbufCache,
    ring: &Ring<u64>,
    count: u64,
    size: usize,
    timeout: Duration,
) -> Result<u64, PoolToolError> {
    let ring_err = ring_error(ring);
    let mut deq = RingSide::consumer(ring).map_err(ring_err)?;
    let mut want = Vec::with_capacity(size.max(8));
    let mut got = 0;
    let mut last = Instant::now();
    while got < count {
        let Some(raw) = deq.take().map_err(ring_err)? else {
            if last.elapsed() > timeout {
                return Err(nothing_for(got, count, timeout));
            }
            std::thread::yield_now();
            continue;
        };
        last = Instant::now();
        let m = cache
            .adopt(MbufHandle(raw))
            .map_err(|e| PoolToolError::Check(format!("packet {got}: {e}")))?;
        payload(got, size, &mut want);
        if m.to_vec() != want {
            return Err(PoolToolError::Check(format!(
                "packet {got}: payload differs from what was sent ({} bytes, {} segments)",
                m.pkt_len(),
                m.nb_segs()
            )));
        }
        got += 1;
    }
    Ok(got)
}

/// How `send_bursts` and `receive_bursts` move packets: the bench mode of `mbuf-send` and
/// `mbuf-recv` (`--burst`, `--seq-only`), the work DPDK's `bench/dpdk_xproc.c` does.
#[derive(Debug, Clone, Copy)]
pub struct BurstOpts {
    /// Packets per allocation, enqueue and dequeue (1..=512).
    pub burst: usize,
    /// Write and check only the sequence number in the first 8 bytes (the rest of the
    /// frame is whatever the buffer held), instead of the whole [`payload`].
    pub seq_only: bool,
}

/// Largest `BurstOpts::burst`.
pub const MAX_BURST: usize = 512;

/// A finished bench-mode transfer: packets and the seconds they took (the sender from its
/// first allocation, the receiver from its first packet to its last).
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    /// Packets moved.
    pub packets: u64,
    /// Seconds.
    pub seconds: f64,
}

impl Transfer {
    /// Million packets per second.
    pub fn mpps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.packets as f64 / self.seconds / 1e6
        } else {
            0.0
        }
    }
}

/// Spins between polls of a full ring or an empty pool or ring; true once `timeout` has
/// passed since `last` (the clock is read every 1024 spins only).
#[inline]
fn stalled(spins: &mut u32, last: Instant, timeout: Duration) -> bool {
    std::hint::spin_loop();
    *spins = spins.wrapping_add(1);
    *spins & 1023 == 0 && last.elapsed() > timeout
}

/// Writes packet `seq`'s bytes into `data` (its whole length): the sequence number, then,
/// unless `seq_only`, [`payload`]'s pattern.
#[inline]
fn write_frame(seq: u64, data: &mut [u8], seq_only: bool) {
    data[..8].copy_from_slice(&seq.to_le_bytes());
    if !seq_only {
        for (i, b) in data.iter_mut().enumerate().skip(8) {
            *b = (seq as usize).wrapping_mul(31).wrapping_add(i) as u8;
        }
    }
}

/// True when `data` is what [`write_frame`] wrote for `seq`.
#[inline]
fn frame_ok(seq: u64, data: &[u8], seq_only: bool) -> bool {
    data.len() >= 8
        && data[..8] == seq.to_le_bytes()
        && (seq_only
            || data
                .iter()
                .enumerate()
                .skip(8)
                .all(|(i, &b)| b == (seq as usize).wrapping_mul(31).wrapping_add(i) as u8))
}

/// Wraps a ring error with the name of `ring`.
fn ring_error(ring: &Ring<u64>) -> impl Fn(RingError) -> PoolToolError + Copy + '_ {
    move |source| PoolToolError::Ring {
        ring: ring.name().to_string(),
        source,
    }
}

/// `ring` had no room for `timeout`.
#[cold]
fn ring_full(ring: &Ring<u64>, timeout: Duration) -> PoolToolError {
    PoolToolError::Timeout(format!("ring {} stayed full for {timeout:?}", ring.name()))
}

/// Nothing arrived for `timeout` after `got` of `count` packets.
#[cold]
fn nothing_for(got: u64, count: u64, timeout: Duration) -> PoolToolError {
    PoolToolError::Timeout(format!(
        "received {got} of {count} packets; nothing for {timeout:?}"
    ))
}

/// Bench mode: allocates `n` one-segment mbufs into `mbufs`, spinning while the pool is
/// empty (`wait`: the spin count, the time of the last progress and the timeout, as
/// [`stalled`] takes them).
#[inline]
fn alloc_burst<'c>(
    cache: &'c MbufCache,
    mbufs: &mut Vec<Mbuf<'c>>,
    n: usize,
    (spins, last, timeout): (&mut u32, Instant, Duration),
) -> Result<(), PoolToolError> {
    while cache.alloc_bulk(mbufs, n).is_err() {
        if stalled(spins, last, timeout) {
            return Err(PoolToolError::Timeout(format!(
                "pool {} stayed empty for {timeout:?}",
                cache.pool().mempool().name()
            )));
        }
    }
    Ok(())
}

/// Bench mode: appends `size` bytes (within the data room, checked by the caller) to the
/// fresh mbuf `m` and writes packet `seq`'s frame into them.
#[inline]
fn fill_frame(m: &mut Mbuf<'_>, seq: u64, size: usize, seq_only: bool) {
    let data = m
        .append(size)
        .expect("a fresh mbuf has the data room checked above");
    write_frame(seq, data, seq_only);
}

/// Bench mode: packet `got` must be `size` bytes holding [`write_frame`]'s frame.
#[inline]
fn check_frame(got: u64, m: &Mbuf<'_>, size: usize, seq_only: bool) -> Result<(), PoolToolError> {
    if m.pkt_len() as usize != size || !frame_ok(got, m.data(), seq_only) {
        return Err(PoolToolError::Check(format!(
            "packet {got}: not the frame sent ({} bytes, {} segments)",
            m.pkt_len(),
            m.nb_segs()
        )));
    }
    Ok(())
}

/// [`send`] in bursts: allocates `opts.burst` one-segment mbufs at a time
/// (`rte_pktmbuf_alloc_bulk`), appends `size` bytes to each and writes the frame, and
/// enqueues the burst's handles, spinning while the pool is empty or the ring full (up to
/// `timeout` without progress). No heap allocation or system call per packet.
///
/// # Errors
/// `size` above the data room, pool exhaustion or a full ring for longer than `timeout`,
/// ring errors.
pub fn send_bursts(
    cache: &MbufCache,
    ring: &Ring<u64>,
    count: u64,
    size: usize,
    opts: BurstOpts,
    timeout: Duration,
) -> Result<Transfer, PoolToolError> {
    let ring_err = ring_error(ring);
    let burst = opts.burst.clamp(1, MAX_BURST);
    let room = (cache.pool().data_room() as usize).min(u16::MAX as usize);
    if size < 8 || size > room {
        return Err(PoolToolError::Check(format!(
            "--burst/--seq-only send one-segment frames: size {size} not in 8..={room}"
        )));
    }
    let sp_sc = ring.mode().single_producer && ring.mode().single_consumer;
    if sp_sc {
        return send_local(cache, ring, count, size, opts, timeout);
    }
    let mut enq = RingSide::producer(ring).map_err(ring_err)?;
    let mut mbufs = Vec::with_capacity(burst);
    let mut handles = [0u64; MAX_BURST];
    let (mut seq, mut spins) = (0u64, 0u32);
    let t0 = Instant::now();
    let mut last = t0;
    while seq < count {
        let n = (count - seq).min(burst as u64) as usize;
        alloc_burst(cache, &mut mbufs, n, (&mut spins, last, timeout))?;
        for (k, (mut m, h)) in mbufs.drain(..).zip(handles.iter_mut()).enumerate() {
            fill_frame(&mut m, seq + k as u64, size, opts.seq_only);
            *h = m.into_transit().expect("a fresh mbuf is not shared").0;
        }
        let mut done = 0;
        while done < n {
            let k = enq.put_burst(&handles[done..n]).map_err(ring_err)?;
            if k > 0 {
                done += k;
                last = Instant::now();
            } else if stalled(&mut spins, last, timeout) {
                return Err(ring_full(ring, timeout));
            }
        }
        seq += n as u64;
    }
    Ok(Transfer {
        packets: count,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// [`receive`] in bursts: dequeues up to `opts.burst` handles at a time, adopts each,
/// checks its length (`size`) and frame (`write_frame`'s, in sequence) and frees it.
///
/// # Errors
/// A refused handle, a wrong packet, ring errors, or no packet for `timeout`.
pub fn receive_bursts(
    cache: &MbufCache,
    ring: &Ring<u64>,
    count: u64,
    size: usize,
    opts: BurstOpts,
    timeout: Duration,
) -> Result<Transfer, PoolToolError> {
    let ring_err = ring_error(ring);
    let burst = opts.burst.clamp(1, MAX_BURST);
    if ring.mode().single_producer && ring.mode().single_consumer {
        return receive_local(cache, ring, count, size, opts, timeout);
    }
    let mut deq = RingSide::consumer(ring).map_err(ring_err)?;
    let mut handles = [0u64; MAX_BURST];
    let (mut got, mut spins) = (0u64, 0u32);
    let mut first = None;
    let mut last = Instant::now();
    while got < count {
        let want = (count - got).min(burst as u64) as usize;
        let n = deq.take_burst(&mut handles[..want]).map_err(ring_err)?;
        if n == 0 {
            if stalled(&mut spins, last, timeout) {
                return Err(nothing_for(got, count, timeout));
            }
            continue;
        }
        last = Instant::now();
        first.get_or_insert(last);
        for &raw in &handles[..n] {
            let m = cache
                .adopt(MbufHandle(raw))
                .map_err(|e| PoolToolError::Check(format!("packet {got}: {e}")))?;
            check_frame(got, &m, size, opts.seq_only)?;
            got += 1;
        }
    }
    Ok(Transfer {
        packets: got,
        seconds: first.map_or(0.0, |t| last.duration_since(t).as_secs_f64()),
    })
}

/// [`send_bursts`] on an SP/SC ring: through `pmds::MbufSender`, the crash-exact local
/// hand-off (no header write for the hand-off; the receiver claims each packet with one
/// CAS), as a ring port's tx queue does.
fn send_local(
    cache: &MbufCache,
    ring: &Ring<u64>,
    count: u64,
    size: usize,
    opts: BurstOpts,
    timeout: Duration,
) -> Result<Transfer, PoolToolError> {
    let ring_err = ring_error(ring);
    let burst = opts.burst.clamp(1, MAX_BURST);
    let mut tx = pmds::MbufSender::new(ring, cache.owner()).map_err(ring_err)?;
    let mut mbufs = Vec::with_capacity(burst);
    let (mut seq, mut spins) = (0u64, 0u32);
    let t0 = Instant::now();
    let mut last = t0;
    while seq < count {
        let n = (count - seq).min(burst as u64) as usize;
        alloc_burst(cache, &mut mbufs, n, (&mut spins, last, timeout))?;
        for (k, m) in mbufs.iter_mut().enumerate() {
            fill_frame(m, seq + k as u64, size, opts.seq_only);
        }
        while !mbufs.is_empty() {
            if tx.send(cache, &mut mbufs) > 0 {
                last = Instant::now();
            } else if stalled(&mut spins, last, timeout) {
                return Err(ring_full(ring, timeout));
            }
        }
        seq += n as u64;
    }
    Ok(Transfer {
        packets: count,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// [`receive_bursts`] on an SP/SC ring: through `pmds::MbufReceiver`.
fn receive_local(
    cache: &MbufCache,
    ring: &Ring<u64>,
    count: u64,
    size: usize,
    opts: BurstOpts,
    timeout: Duration,
) -> Result<Transfer, PoolToolError> {
    let ring_err = ring_error(ring);
    let burst = opts.burst.clamp(1, MAX_BURST);
    let mut rx = pmds::MbufReceiver::new(ring).map_err(ring_err)?;
    let mut pkts = Vec::with_capacity(burst);
    let (mut got, mut spins) = (0u64, 0u32);
    let mut first = None;
    let mut last = Instant::now();
    while got < count {
        let want = (count - got).min(burst as u64) as usize;
        let (n, refused) = rx.recv(cache, &mut pkts, want);
        if refused > 0 {
            return Err(PoolToolError::Check(format!(
                "packet {got}: {refused} handles refused"
            )));
        }
        if n == 0 {
            if stalled(&mut spins, last, timeout) {
                return Err(nothing_for(got, count, timeout));
            }
            continue;
        }
        last = Instant::now();
        first.get_or_insert(last);
        for m in &pkts {
            check_frame(got, m, size, opts.seq_only)?;
            got += 1;
        }
        // `rte_pktmbuf_free_bulk`, as the DPDK side does.
        cache.free_bulk(&mut pkts);
    }
    Ok(Transfer {
        packets: got,
        seconds: first.map_or(0.0, |t| last.duration_since(t).as_secs_f64()),
    })
}

/// Receives `count` packets from `rx` and sends each back, unchanged, on `tx` (the guest
/// side of an echo test); returns how many went back.
///
/// # Errors
/// A refused handle, ring errors, or no packet for `timeout`.
pub fn echo(
    cache: &MbufCache,
    rx: &Ring<u64>,
    tx: &Ring<u64>,
    count: u64,
    timeout: Duration,
) -> Result<u64, PoolToolError> {
    let mut deq = RingSide::consumer(rx).map_err(ring_error(rx))?;
    let mut enq = RingSide::producer(tx).map_err(ring_error(tx))?;
    let mut done = 0;
    let mut last = Instant::now();
    while done < count {
        let Some(raw) = deq.take().map_err(ring_error(rx))? else {
            if last.elapsed() > timeout {
                return Err(PoolToolError::Timeout(format!(
                    "echoed {done} of {count} packets; nothing for {timeout:?}"
                )));
            }
            std::thread::yield_now();
            continue;
        };
        last = Instant::now();
        let m = cache
            .adopt(MbufHandle(raw))
            .map_err(|e| PoolToolError::Check(format!("packet {done}: {e}")))?;
        let handle = m.into_transit().expect("an adopted mbuf is not shared");
        while !enq.put(handle.0).map_err(ring_error(tx))? {
            if last.elapsed() > timeout {
                return Err(ring_full(tx, timeout));
            }
            std::thread::yield_now();
        }
        done += 1;
    }
    Ok(done)
}

/// Runs `ops` get/put operations of varying bulk sizes (1..=48) through a cached handle
/// (uncached unless `cached`: a guest-writable pool's cache slots are not the host's):
/// the pool's objects must all be back and distinct afterwards ([`Mempool::audit`]).
pub fn stress(
    pool: &Mempool,
    owner: shm_mempool::OwnerTag,
    cached: bool,
    ops: u64,
    seed: u64,
) -> Result<u64, PoolToolError> {
    let mut h = if cached {
        pool.cache(owner)?
    } else {
        pool.uncached()
    };
    let mut held: Vec<u32> = Vec::with_capacity(4096);
    let mut buf = [0u32; 48];
    let mut x = seed | 1;
    let mut done = 0;
    while done < ops {
        // xorshift: cheap, deterministic sizes and choices.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = 1 + (x % 48) as usize;
        if x & (1 << 40) == 0 || held.len() < n {
            if held.len() + n <= held.capacity() && h.get_bulk(&mut buf[..n]).is_ok() {
                held.extend_from_slice(&buf[..n]);
            }
        } else {
            let at = held.len() - n;
            h.put_bulk(&held[at..]);
            held.truncate(at);
        }
        done += 1;
    }
    h.put_bulk(&held);
    Ok(done)
}

/// One line describing packet `n` seen at `place` (e.g. `port 0/1`): MACs, EtherType (and
/// VLAN), lengths, segments, and the first bytes after the Ethernet header.
pub fn describe(place: &str, n: u64, m: &shm_mempool::Mbuf<'_>) -> String {
    let d = m.data();
    let mac = |b: &[u8]| {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let mut line = format!("{place} #{n}: ");
    if d.len() >= 14 {
        let (mut et, mut off) = (u16::from_be_bytes([d[12], d[13]]), 14);
        line += &format!("src={} dst={}", mac(&d[6..12]), mac(&d[0..6]));
        if et == 0x8100 && d.len() >= 18 {
            line += &format!(" vlan={}", u16::from_be_bytes([d[14], d[15]]) & 0xfff);
            et = u16::from_be_bytes([d[16], d[17]]);
            off = 18;
        }
        line += &format!(" type=0x{et:04x}");
        let head: String = d[off..d.len().min(off + 16)]
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        line += &format!(" length={} segs={} data={head}", m.pkt_len(), m.nb_segs());
    } else {
        line += &format!("runt length={}", m.pkt_len());
    }
    line
}

/// Takes up to `count` packets from `ring` (waiting up to `timeout` for each), describes
/// each one and frees it.
///
/// # Errors
/// A refused handle or a ring error.
pub fn dump_ring(
    cache: &MbufCache,
    ring: &Ring<u64>,
    count: u64,
    timeout: Duration,
) -> Result<Vec<String>, PoolToolError> {
    let err = ring_error(ring);
    let mut deq = RingSide::consumer(ring).map_err(err)?;
    let mut lines = Vec::new();
    let mut last = Instant::now();
    while (lines.len() as u64) < count && last.elapsed() < timeout {
        let Some(raw) = deq.take().map_err(err)? else {
            std::thread::yield_now();
            continue;
        };
        last = Instant::now();
        let m = cache
            .adopt(MbufHandle(raw))
            .map_err(|e| PoolToolError::Check(e.to_string()))?;
        lines.push(describe(
            &format!("ring {}", ring.name()),
            lines.len() as u64,
            &m,
        ));
    }
    Ok(lines)
}

/// Prints port statistics as text.
pub fn print_port_stats(stats: &[shm::stats::PortStats]) {
    for p in stats {
        println!(
            "port {} ({}): rx {} pkts {} B  tx {} pkts {} B  rx_nombuf {}  tx_dropped {}  errors {}",
            p.id, p.name, p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes, p.rx_dropped, p.tx_dropped, p.errors
        );
    }
}

/// Prints pool statistics as text.
pub fn print_stats(stats: &[PoolStats]) {
    if stats.is_empty() {
        println!("no mempools");
    }
    for p in stats {
        println!(
            "pool {} (id {}): {} objects of {} B, cache {}",
            p.name, p.pool_id, p.count, p.obj_size, p.cache_size
        );
        println!(
            "  available {} (ring {}, caches {})  in use {}",
            p.available, p.in_ring, p.in_caches, p.in_use
        );
        for c in &p.caches {
            println!(
                "  cache slot {:>2}: pid {} owner {} holds {}",
                c.slot, c.pid, c.owner, c.len
            );
        }
        println!(
            "  get_fail {} put_fail {} bad_handle {} double_free {} corrupt_header {} reclaimed {} caches_recovered {}",
            p.get_fail, p.put_fail, p.bad_handle, p.double_free, p.corrupt_header, p.reclaimed, p.caches_recovered
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_frames_match_payload_and_are_checked() {
        let mut want = Vec::new();
        for (seq, size) in [(0u64, 8usize), (7, 64), (1 << 40, 200)] {
            let mut frame = vec![0u8; size];
            write_frame(seq, &mut frame, false);
            payload(seq, size, &mut want);
            assert_eq!(frame, want);
            assert!(frame_ok(seq, &frame, false) && frame_ok(seq, &frame, true));
            assert!(!frame_ok(seq + 1, &frame, true));
            if size > 8 {
                frame[size - 1] ^= 1;
                assert!(!frame_ok(seq, &frame, false) && frame_ok(seq, &frame, true));
            }
        }
        assert!(!frame_ok(0, &[0u8; 7], true));
    }
}
