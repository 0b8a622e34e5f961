//! The command line's definitions (clap derive): [`SecondaryCli`], its subcommands and
//! the `ivshmem` subcommands, with every option's help text.
//!
//! Where it sits: in `shmdp-secondary`, parsed and dispatched by `main.rs`.

use clap::{Parser, Subcommand};

use shmdp_app::eal::EalArgs;

/// `shmdp-secondary`: attaches to a running primary by `--file-prefix`.
#[derive(Debug, Parser)]
#[command(
    name = "shmdp-secondary",
    version,
    about = "shmdp secondary: attach to a primary's shared memory by prefix"
)]
pub struct SecondaryCli {
    /// Process options.
    #[command(flatten)]
    pub eal: EalArgs,
    /// Attach to an IVSHMEM export instead of a primary (what a guest does): `auto`,
    /// `auto:GROUP`, a PCI address or a segment file. `info`, `stats`, `fwd` and
    /// `mbuf-echo` then work on the exported objects (as `ivshmem --dev DEV ...`).
    #[arg(long = "ivshmem", value_name = "DEV")]
    pub ivshmem: Option<String>,
    /// What to do once attached.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the memsegs and memzones attached to, then detach.
    Info {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stay attached until the primary goes away (exit 3) or a signal arrives (exit 0).
    Monitor,
    /// Enqueue COUNT sequence-numbered elements (producer_id << 48 | seq) into a ring.
    RingFill {
        /// Ring name.
        ring: String,
        /// Elements to enqueue.
        #[arg(long)]
        count: u64,
        /// Producer id stamped into the elements (0..32768).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..32768))]
        producer_id: u64,
        /// Elements per enqueue call.
        #[arg(long, default_value_t = 32)]
        burst: usize,
        /// Give up after this many seconds without progress.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Dequeue COUNT elements and check every producer's sequence is complete and in order.
    RingDrain {
        /// Ring name.
        ring: String,
        /// Elements to dequeue.
        #[arg(long)]
        count: u64,
        /// Number of producers (ids 0..N).
        #[arg(long, default_value_t = 1)]
        producers: u64,
        /// Elements per dequeue call.
        #[arg(long, default_value_t = 32)]
        burst: usize,
        /// Give up after this many seconds without progress.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Forward packets between ports (testpmd style) until SIGINT/SIGTERM or --idle-exit.
    Fwd {
        /// Mode: io (default), mac, macswap, rxonly, txonly, l2switch.
        #[arg(long = "fwd")]
        mode: Option<fwd::Mode>,
        /// Engine options.
        #[command(flatten)]
        args: shmdp_app::fwdargs::FwdArgs,
    },
    /// Receive and print the first COUNT packets of a port's rx queue (like testpmd's
    /// verbose mode; the packets are consumed), then exit.
    Dump {
        /// Port id.
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Rx queue.
        #[arg(long, default_value_t = 0)]
        queue: u16,
        /// Packets to print.
        #[arg(long, default_value_t = 10)]
        count: u64,
        /// Give up after this many seconds without a packet.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Work on an IVSHMEM export segment, as a guest does (no primary connection needed):
    /// inside a QEMU guest with --dev auto, on the host with the segment file.
    Ivshmem {
        /// `auto`, `auto:GROUP`, a PCI address (0000:00:10.0), or a path (resource2 or the
        /// segment file).
        #[arg(long, default_value = "auto")]
        dev: String,
        /// What to do.
        #[command(subcommand)]
        command: IvshmemCommand,
    },
    /// Print every port's and mempool's statistics (as the primary reports them).
    Stats {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Allocate COUNT mbufs from each POOL and hold them until the primary goes away
    /// (exit 3) or SIGINT/SIGTERM (frees them, exit 0). A pool in an export segment
    /// (`NAME@GROUP`) is used without a cache slot.
    MbufHold {
        /// Pool names.
        #[arg(required = true)]
        pools: Vec<String>,
        /// Mbufs to hold.
        #[arg(long)]
        count: u32,
    },
    /// Send COUNT packets of SIZE bytes (sequence number + pattern) from POOL through RING.
    MbufSend(MbufRingArgs),
    /// Receive COUNT packets from RING, check each payload as `mbuf-send` wrote it, free them.
    MbufRecv(MbufRingArgs),
    /// Receive COUNT packets on ring RX and send each back on ring TX (as `ivshmem echo`
    /// does in a guest).
    MbufEcho {
        /// Pool the packets belong to.
        pool: String,
        /// Ring to receive from.
        rx: String,
        /// Ring to send on.
        tx: String,
        /// Packets.
        #[arg(long)]
        count: u64,
        /// Give up after this many seconds without a packet.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Run OPS get/put operations of random bulk sizes on POOL's objects.
    PoolStress {
        /// Pool name.
        pool: String,
        /// Operations.
        #[arg(long)]
        ops: u64,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Check POOL's free list (run it when nothing else uses the pool): every object free
    /// once, none duplicated or out of range. Exit 1 if not.
    PoolAudit {
        /// Pool name.
        pool: String,
        /// Find every mbuf wherever it is (free list, rings, port in-flight records, held
        /// by a live process) and check each is in exactly one place; print a JSON summary.
        /// Exit 1 unless exact.
        #[arg(long)]
        exact: bool,
    },
    /// Mixed pool, ring and port work until killed, for the crash-point tests.
    CrashMix(shmdp_app::crashmix::MixArgs),
}

/// What `ivshmem` does.
#[derive(Debug, Subcommand)]
pub enum IvshmemCommand {
    /// Forward between the exported ports (`--ivshmem GROUP:port=...` on the primary), as
    /// `shmdp-secondary fwd` does on the host: same modes, options and report.
    Fwd {
        /// Mode: io (default), mac, macswap, rxonly, txonly, l2switch.
        #[arg(long = "fwd")]
        mode: Option<fwd::Mode>,
        /// Pin forwarding threads to these CPUs (as -l on the host), e.g. 0-1.
        #[arg(short = 'l', long = "lcores", value_name = "LIST")]
        lcores: Option<shm::eal::LcoreList>,
        /// Engine options.
        #[command(flatten)]
        args: shmdp_app::fwdargs::FwdArgs,
    },
    /// Print the export group's metadata (objects, offsets, sizes).
    Info {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Receive COUNT packets on ring RX and send each back on ring TX.
    Echo {
        /// Pool the packets belong to.
        #[arg(long)]
        pool: String,
        /// Ring to receive from.
        #[arg(long)]
        rx: String,
        /// Ring to send on.
        #[arg(long)]
        tx: String,
        /// Packets.
        #[arg(long)]
        count: u64,
        /// Give up after this many seconds without a packet.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Print the statistics of every pool in the segment.
    Stats {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Receive and print the first COUNT packets of ring RX (consumed and freed).
    Dump {
        /// Pool the packets belong to.
        #[arg(long)]
        pool: String,
        /// Ring to read.
        #[arg(long)]
        rx: String,
        /// Packets to print.
        #[arg(long, default_value_t = 10)]
        count: u64,
        /// Give up after this many seconds without a packet.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Overwrite the whole segment with random bytes ROUNDS times (a hostile guest, for
    /// robustness tests: the host must survive it). Does not read the metadata.
    Scribble {
        /// Passes over the segment.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Instead: for SECS seconds, keep rewriting the head index of every ring in the
        /// segment (exported rings and the pools' free rings), mostly as reservations
        /// that are never published (a hostile guest's ring attack).
        #[arg(long, value_name = "SECS")]
        indices: Option<f64>,
        /// With --indices: only the pools' free rings.
        #[arg(long, requires = "indices")]
        pools_only: bool,
        /// With --indices: also write wild tails now and then (impossible indices).
        #[arg(long, requires = "indices")]
        tails: bool,
    },
    /// Send COUNT numbered packets (as `mbuf-send` writes them) on ring TX.
    Gen {
        /// Pool to allocate from.
        #[arg(long)]
        pool: String,
        /// Ring to send on.
        #[arg(long)]
        tx: String,
        /// Packets.
        #[arg(long)]
        count: u64,
        /// Bytes per packet.
        #[arg(long, default_value_t = 64)]
        size: u64,
    },
}

/// Arguments of `mbuf-send` and `mbuf-recv`.
#[derive(Debug, clap::Args)]
pub struct MbufRingArgs {
    /// Pool name.
    pub(crate) pool: String,
    /// Ring name.
    pub(crate) ring: String,
    /// Packets.
    #[arg(long)]
    pub(crate) count: u64,
    /// Bytes per packet (8..; packets above the data room are chained).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(8..=1_000_000))]
    pub(crate) size: u64,
    /// Give up after this many seconds without progress.
    #[arg(long, default_value_t = 30)]
    pub(crate) timeout: u64,
    /// Bench mode: move packets in bursts of N (allocation, enqueue, dequeue), spinning
    /// instead of yielding while waiting, one-segment frames only; the receiver's rate then
    /// runs from its first packet. Default: one packet at a time.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=512))]
    pub(crate) burst: Option<u16>,
    /// Bench mode (also without --burst): write and check only the sequence number in the
    /// first 8 bytes of each frame (and its length), not the whole payload.
    #[arg(long)]
    pub(crate) seq_only: bool,
}

impl MbufRingArgs {
    /// The bench mode's options, if `--burst` or `--seq-only` was given.
    pub(crate) fn burst_opts(&self) -> Option<shmdp_app::pooltool::BurstOpts> {
        (self.burst.is_some() || self.seq_only).then(|| shmdp_app::pooltool::BurstOpts {
            burst: usize::from(self.burst.unwrap_or(1)),
            seq_only: self.seq_only,
        })
    }
}
