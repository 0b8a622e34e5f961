//! The command line of `shmdp-primary` (clap derive): [`PrimaryCli`] and the parsers of
//! its object options (`--memseg`, `--memzone`, `--ring`, `--mempool`, `--ivshmem`,
//! `--fill-ring`) into the `primary` library's requests.
//!
//! Where it sits: in `shmdp-primary`, parsed by `main.rs`; the EAL and forwarding options
//! are `shmdp_app`'s, shared with `shmdp-secondary`.

use clap::Parser;

use primary::{MempoolRequest, MemsegRequest, MemzoneRequest, RingRequest, MAIN_MEMSEG};
use shmdp_app::eal::EalArgs;

/// `shmdp-primary`: creates a process group's shared memory and serves its secondaries
/// until SIGINT or SIGTERM, then removes every file it created.
#[derive(Debug, Parser)]
#[command(
    name = "shmdp-primary",
    version,
    about = "shmdp primary process: owns shared memory, rings, pools and ports"
)]
pub struct PrimaryCli {
    /// Process options.
    #[command(flatten)]
    pub eal: EalArgs,
    /// Another memseg to create, size in MiB (repeatable), e.g. --memseg guest1=4.
    #[arg(long = "memseg", value_name = "NAME=MiB", value_parser = parse_memseg)]
    pub memsegs: Vec<MemsegRequest>,
    /// A memzone to reserve at start (repeatable), e.g. --memzone demo=4k@main.
    #[arg(long = "memzone", value_name = "NAME=SIZE[@MEMSEG]", value_parser = parse_memzone)]
    pub memzones: Vec<MemzoneRequest>,
    /// A ring of 8-byte handles to create (repeatable); MODE is sp_sc, mp_mc, mp_sc or
    /// sp_mc (default mp_mc), e.g. --ring rx0=1024:sp_sc@guest1.
    #[arg(long = "ring", value_name = "NAME=CAPACITY[:MODE][@MEMSEG]", value_parser = parse_ring)]
    pub rings: Vec<RingRequest>,
    /// After start, enqueue COUNT sequence-numbered elements into ring NAME (repeatable),
    /// waiting while it is full; secondaries check them with `ring-drain`.
    #[arg(long = "fill-ring", value_name = "NAME=COUNT", value_parser = parse_fill)]
    pub fills: Vec<(String, u64)>,
    /// An mbuf pool to create (repeatable): COUNT mbufs, per-lcore CACHE (0..512, default
    /// 256) and DATAROOM bytes (default 2048), e.g. --mempool mbufs=8191:256:2048.
    #[arg(long = "mempool", value_name = "NAME=COUNT[:CACHE[:DATAROOM]][@MEMSEG]", value_parser = parse_mempool)]
    pub mempools: Vec<MempoolRequest>,
    /// A port to probe (repeatable; ids in order), DPDK style: net_ring0,
    /// net_ring1,rx_ring=A,tx_ring=B, net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap.
    #[arg(long = "vdev", value_name = "DEVARGS", value_parser = pmds::DevArgs::parse)]
    pub vdevs: Vec<pmds::DevArgs>,
    /// Descriptors per port queue (ring capacity of net_ring queues).
    #[arg(long = "nb-desc", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1048576))]
    pub nb_desc: u32,
    /// Export a memseg to a QEMU guest as an IVSHMEM device (repeatable):
    /// GROUP:KIND=NAME,... with KIND ring, pool, memzone or port; GROUP is a memseg of its
    /// own holding those objects, e.g. --memseg vm1=16 --ring vm1_rx=1024@vm1
    /// --ivshmem vm1:ring=vm1_rx. port=net_ringN exports a net_ring port: its rings and a
    /// pool for the guest are made in GROUP and the guest opens the other end as a port.
    /// `shmdp-qemu-cmdgen` prints the QEMU arguments.
    #[arg(long = "ivshmem", value_name = "GROUP:KIND=NAME,...", value_parser = parse_export)]
    pub exports: Vec<primary::ExportRequest>,
    /// Forward between the ports in the primary itself (also with --config): io, mac,
    /// macswap, rxonly, txonly, l2switch
    /// (default: only serve the ports; secondaries forward with `shmdp-secondary fwd`).
    #[arg(long = "fwd", value_name = "MODE")]
    pub fwd: Option<fwd::Mode>,
    /// Share the process group with an operator group: its members may attach (the
    /// runtime directory becomes 0750 and the lock, socket and memseg files 0660, group
    /// NAME). Without it only this user and root may.
    #[arg(long = "group", value_name = "NAME")]
    pub group: Option<String>,
    /// Forwarding options (with --fwd; `--config FILE` may also hold `[[ivshmem]]` export
    /// groups: group = "vm1", ring = ["a"], pool = ["b"], memzone = []).
    #[command(flatten)]
    pub fwd_args: shmdp_app::fwdargs::FwdArgs,
}

/// `--ivshmem GROUP:KIND=NAME,...`, checked as a `[[ivshmem]]` table is
/// (`shmdp_app::config::export_request`).
fn parse_export(s: &str) -> Result<primary::ExportRequest, String> {
    let usage = || {
        format!("--ivshmem {s:?}: expected GROUP:KIND=NAME,..., e.g. vm1:ring=vm1_rx,pool=vm1_pool")
    };
    let (group, rest) = s.split_once(':').ok_or_else(usage)?;
    let mut items = Vec::new();
    for item in rest.split(',') {
        let (kind, name) = item.split_once('=').ok_or_else(usage)?;
        let kind = match kind {
            "ring" => ivshmem_meta::Kind::Ring,
            "pool" | "mempool" => ivshmem_meta::Kind::Mempool,
            "memzone" => ivshmem_meta::Kind::Memzone,
            "port" => ivshmem_meta::Kind::Port,
            other => {
                return Err(format!(
                    "--ivshmem {s:?}: unknown kind {other:?} (ring, pool, memzone, port)"
                ))
            }
        };
        items.push((kind, name.to_string()));
    }
    shmdp_app::config::export_request(group, items).map_err(|e| format!("--ivshmem {s:?}: {e}"))
}

fn parse_mempool(s: &str) -> Result<MempoolRequest, String> {
    let usage = || {
        format!("--mempool {s:?}: expected NAME=COUNT[:CACHE[:DATAROOM]][@MEMSEG], e.g. mbufs=8191:256:2048")
    };
    let (name, rest) = s.split_once('=').ok_or_else(usage)?;
    let (rest, memseg) = rest.split_once('@').unwrap_or((rest, MAIN_MEMSEG));
    if shm::layout::encode_name(name).is_none() {
        return Err(format!("--mempool {s:?}: name must be 1..31 bytes"));
    }
    let mut parts = rest.split(':');
    let mut number = |what: &str, default: Option<u32>, range: std::ops::RangeInclusive<u32>| match (
        parts.next(),
        default,
    ) {
        (None, Some(d)) => Ok(d),
        (Some(v), _) => v.parse().ok().filter(|n| range.contains(n)).ok_or_else(|| {
            format!(
                "--mempool {s:?}: {what} {v:?} must be {}..={}",
                range.start(),
                range.end()
            )
        }),
        (None, None) => Err(usage()),
    };
    let count = number("COUNT", None, 1..=shm_mempool::layout::MAX_OBJS)?;
    let cache_size = number("CACHE", Some(256), 0..=shm_mempool::layout::CACHE_MAX_SIZE)?;
    let data_room = number(
        "DATAROOM",
        Some(shm_mempool::DEFAULT_DATA_ROOM),
        1..=65535 - shm_mempool::DEFAULT_HEADROOM,
    )?;
    if parts.next().is_some() {
        return Err(usage());
    }
    Ok(MempoolRequest {
        name: name.into(),
        count,
        cache_size,
        data_room,
        memseg: memseg.into(),
    })
}

fn parse_ring(s: &str) -> Result<RingRequest, String> {
    let bad =
        || format!("--ring {s:?}: expected NAME=CAPACITY[:MODE][@MEMSEG], e.g. rx0=1024:sp_sc");
    let (name, rest) = s.split_once('=').ok_or_else(bad)?;
    let (rest, memseg) = rest.split_once('@').unwrap_or((rest, MAIN_MEMSEG));
    let (cap, mode) = rest.split_once(':').unwrap_or((rest, "mp_mc"));
    if shm::layout::encode_name(name).is_none() {
        return Err(format!("--ring {s:?}: name must be 1..31 bytes"));
    }
    let capacity: u32 = cap
        .parse()
        .ok()
        .filter(|c| (1..=1 << 31).contains(c))
        .ok_or_else(|| format!("--ring {s:?}: capacity {cap:?} must be 1..2147483648"))?;
    let mode = match mode {
        "sp_sc" => shm_ring::SyncMode::SP_SC,
        "mp_mc" => shm_ring::SyncMode::MP_MC,
        "mp_sc" => shm_ring::SyncMode::MP_SC,
        "sp_mc" => shm_ring::SyncMode::SP_MC,
        other => {
            return Err(format!(
                "--ring {s:?}: mode {other:?} is not sp_sc, mp_mc, mp_sc or sp_mc"
            ))
        }
    };
    Ok(RingRequest {
        name: name.into(),
        capacity,
        mode,
        memseg: memseg.into(),
    })
}

fn parse_fill(s: &str) -> Result<(String, u64), String> {
    let (name, count) = s
        .split_once('=')
        .ok_or_else(|| format!("--fill-ring {s:?}: expected NAME=COUNT"))?;
    let count = count
        .parse()
        .map_err(|_| format!("--fill-ring {s:?}: COUNT must be a number"))?;
    Ok((name.into(), count))
}

fn parse_memseg(s: &str) -> Result<MemsegRequest, String> {
    let (name, mib) = s
        .split_once('=')
        .ok_or_else(|| format!("--memseg {s:?}: expected NAME=MiB, e.g. guest1=4"))?;
    shm::runtime::check_memseg_name(name)?;
    let mib: u64 = mib
        .parse()
        .ok()
        .filter(|m| (1..=1 << 20).contains(m))
        .ok_or_else(|| format!("--memseg {s:?}: size must be 1..1048576 MiB"))?;
    Ok(MemsegRequest {
        name: name.into(),
        size_bytes: mib << 20,
    })
}

fn parse_memzone(s: &str) -> Result<MemzoneRequest, String> {
    let (name, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("--memzone {s:?}: expected NAME=SIZE[@MEMSEG], e.g. demo=4k"))?;
    let (size, seg) = rest.split_once('@').unwrap_or((rest, MAIN_MEMSEG));
    if shm::layout::encode_name(name).is_none() {
        return Err(format!("--memzone {s:?}: name must be 1..31 bytes"));
    }
    let len_bytes = shm::backing::parse_size(size)
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            format!("--memzone {s:?}: size {size:?} is not a size like 4096, 4k or 2M")
        })?;
    Ok(MemzoneRequest {
        name: name.into(),
        len_bytes,
        memseg: seg.into(),
    })
}
