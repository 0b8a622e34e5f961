//! The vhost-user backend with a real guest: QEMU (TCG) with its guest RAM in a shared
//! memfd, `-netdev vhost-user` on the primary's `net_vhost0` socket and a `virtio-net-pci`
//! device; inside, the guest kernel's own virtio-net driver carries frames that shmdp in the
//! guest sends and receives through AF_PACKET (`net_pcap0,iface=eth0`). The host primary
//! macswaps every frame back; the guest counts them all. The frames carry IEEE 802's local
//! experimental EtherType 0x88b5, so no network stack on the way acts on them. When the
//! host primary stops, the guest sees its link go down.
//!
//! Two guests: one with its RAM in a memfd, one in a hugetlbfs file (what a production
//! QEMU uses); the primary's memory table maps whichever fds QEMU passes, and the test
//! finds that mapping in the primary's `/proc/PID/maps` while the guest runs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tests::vm::{release_bin, VmLab, GUEST_MODULES};
use tests::*;

const FRAMES: u32 = 2000;
/// The guest sends them in batches of this many (fewer than its virtio ring holds).
const BATCH: u32 = 125;
const _: () = assert!(FRAMES.is_multiple_of(BATCH));

/// Where the guest's RAM lives.
enum GuestRam {
    /// `memory-backend-memfd`.
    Memfd,
    /// `memory-backend-file` in this hugetlbfs mount.
    Hugetlbfs(PathBuf),
}

#[test]
fn a_guest_kernel_virtio_net_talks_to_our_vhost_backend() {
    guest_round_trip(GuestRam::Memfd);
}

#[test]
fn a_guest_with_hugetlbfs_ram_talks_to_our_vhost_backend() {
    if !require_hugepages() {
        return;
    }
    // 512 MiB of guest RAM: 256 pages of 2 MiB.
    let free = free_hugepages();
    if !require(
        "256 free 2 MiB hugepages for the guest's RAM",
        free >= 256,
        "echo 768 > /proc/sys/vm/nr_hugepages",
    ) {
        return;
    }
    guest_round_trip(GuestRam::Hugetlbfs(hugetlbfs_mounts().remove(0)));
}

/// One guest at a time: two TCG guests and their busy-polling host primaries on two
/// CPUs starve each other past the primary's serving time.
static ONE_GUEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn guest_round_trip(ram: GuestRam) {
    let _one = ONE_GUEST.lock().unwrap_or_else(|p| p.into_inner());
    let lab = match VmLab::get() {
        Ok(l) => l,
        Err(e) => {
            let _ = require("the VM lab", false, &e);
            return;
        }
    };
    let primary_bin = release_bin("primary", "shmdp-primary");
    let secondary_bin = release_bin("secondary", "shmdp-secondary");
    // In the guest: eth0 up (no IPv6 chatter, promiscuous: the frames carry shmdp's MACs),
    // a primary owning an AF_PACKET port on it, a receiver and a sender (--tx-retry: none
    // dropped when the kernel queue is full). Then wait for the host to go away.
    let script = format!(
        r#"echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
ip link set eth0 promisc on
ip link set eth0 up
i=0; while [ "$(cat /sys/class/net/eth0/carrier)" != 1 ]; do i=$((i+1)); [ $i -gt 100 ] && exit 1; sleep 0.1; done
echo LINK-UP
mkdir -p /dev/shm /run && mount -t tmpfs tmpfs /dev/shm && mount -t tmpfs tmpfs /run
shmdp-primary --file-prefix g --no-huge -m 32 --vdev net_pcap0,iface=eth0 > /tmp/p.log 2>&1 &
i=0; until grep -q ready: /tmp/p.log; do i=$((i+1)); [ $i -gt 200 ] && cat /tmp/p.log && exit 1; sleep 0.1; done
shmdp-secondary --file-prefix g fwd --fwd rxonly --idle-exit 4 > /tmp/rx.log 2>&1 &
rx=$!
# The receiver's AF_PACKET socket must be open before the first frame comes back.
i=0; until grep -q forwarding: /tmp/rx.log; do i=$((i+1)); [ $i -gt 200 ] && cat /tmp/rx.log && exit 1; sleep 0.1; done
sleep 1
# In batches smaller than the virtio transmit ring (256): the AF_PACKET port bypasses the
# guest's qdisc, so a frame the full ring cannot take is dropped by the guest kernel
# after our socket handed it over, where no counter of ours sees it.
n=0
while [ $n -lt {FRAMES} ]; do
  shmdp-secondary --file-prefix g fwd --fwd txonly --tx-count {BATCH} --tx-retry --txpkts 128 --tx-ethertype 0x88b5 > /tmp/tx.log 2>&1 || {{ cat /tmp/tx.log; exit 1; }}
  n=$((n+{BATCH}))
  sleep 0.2
done
wait $rx
cat /tmp/rx.log /tmp/p.log
grep -q 'RX-packets: {FRAMES} ' /tmp/rx.log || exit 1
echo GUEST-GOT-ALL
i=0; while [ "$(cat /sys/class/net/eth0/carrier)" = 1 ]; do i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.1; done
echo LINK-DOWN-SEEN
"#
    );
    let initrd = lab
        .initramfs_with_modules(
            "vhost",
            &[&primary_bin, &secondary_bin],
            &script,
            GUEST_MODULES,
        )
        .unwrap();
    let prefix = unique_prefix(match ram {
        GuestRam::Memfd => "vhguest",
        GuestRam::Hugetlbfs(_) => "vhguesthp",
    });
    let sock = std::env::temp_dir().join(format!("{prefix}.sock"));
    let vdev = format!("net_vhost0,iface={}", sock.display());
    // The host primary serves for a bounded time, then stops: the guest must see that.
    let mut primary = Proc::primary(
        &prefix,
        &[
            "--no-huge",
            "-m",
            "64",
            "--vdev",
            &vdev,
            "--fwd",
            "macswap",
            // A TCG guest refills its receive ring slowly: wait for it, do not drop.
            "--tx-retry",
            "--duration",
            "25",
        ],
    );
    assert!(primary.wait_stdout("forwarding:", Duration::from_secs(10)));
    let (backend, mapped_mark) = match &ram {
        GuestRam::Memfd => (
            "memory-backend-memfd,id=ram0,size=512M,share=on".to_string(),
            "memfd:".to_string(),
        ),
        GuestRam::Hugetlbfs(dir) => (
            format!(
                "memory-backend-file,id=ram0,size=512M,share=on,mem-path={}",
                dir.display()
            ),
            format!("{}/", dir.display()),
        ),
    };
    // Watch the primary's mappings while the guest runs: the memory table's regions
    // must come from the backend QEMU was given.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let watching = watching.clone();
        let maps = format!("/proc/{}/maps", primary.pid());
        std::thread::spawn(move || {
            while watching.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&maps).unwrap_or_default();
                if let Some(line) = text.lines().find(|l| l.contains(&mapped_mark)) {
                    return Some(line.to_string());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            None
        })
    };
    let qemu: Vec<String> = [
        "-object",
        &backend,
        "-machine",
        "memory-backend=ram0",
        "-chardev",
        &format!("socket,id=chr0,path={}", sock.display()),
        "-netdev",
        "vhost-user,id=net0,chardev=chr0,queues=1",
        "-device",
        "virtio-net-pci,netdev=net0,romfile=,mac=52:54:00:00:00:10",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let boot = lab.boot(&initrd, &qemu, Duration::from_secs(180)).unwrap();
    watching.store(false, Ordering::Relaxed);
    let mapped = watcher.join().expect("watcher");
    println!("guest serial:\n{}", boot.serial);
    println!("guest RAM as the primary maps it: {mapped:?}");
    assert!(
        mapped.is_some(),
        "the primary never mapped the guest RAM backend"
    );
    println!("primary stderr:\n{}", primary.stderr().join("\n"));
    assert!(boot.serial.contains("GUEST-GOT-ALL"), "{}", boot.serial);
    assert!(boot.serial.contains("LINK-DOWN-SEEN"), "{}", boot.serial);
    assert!(boot.passed, "{}", boot.serial);
    let st = primary
        .wait_exit(Duration::from_secs(30))
        .expect("primary ends");
    assert!(st.success(), "{:?}", primary.stderr());
    let ours = primary.stdout().join("\n");
    assert!(ours.contains("every packet accounted for"), "{ours}");
    println!("VM: qemu start to poweroff {:.1} s", boot.seconds);
}
