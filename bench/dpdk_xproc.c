/*
 * Packets that really cross processes, DPDK's way, against the installed libdpdk: the
 * yardstick for `shmdp-secondary mbuf-send` / `mbuf-recv --burst 32 --seq-only`
 * (bench/xproc-vs-dpdk.sh runs both).
 *
 * Three roles, one binary:
 *   primary  creates the pktmbuf pool "xproc_pool" (POOL mbufs, per-lcore cache CACHE,
 *            default data room) and the ring "xproc_ring" (RING slots, SP/SC), prints
 *            "ready", then waits until stdin closes (or reads "quit") and frees both;
 *   send     (a --proc-type=secondary) allocates COUNT mbufs in bulks of BURST
 *            (rte_pktmbuf_alloc_bulk), makes each a SIZE-byte frame whose first 8 bytes
 *            are its sequence number, and enqueues each bulk (rte_ring_enqueue_burst,
 *            spinning while the ring is full);
 *   recv     (a --proc-type=secondary) dequeues bursts of up to BURST, checks each
 *            packet's length and sequence number, frees them (rte_pktmbuf_free_bulk).
 * The sender and the receiver print one line each, "sent|received N packets ... (R Mpps)";
 * the receiver's rate runs from its first packet to its last, the sender's from its
 * first allocation. Exit 1 on a wrong packet, a missing pool or ring, or no progress for
 * 30 s.
 *
 * Build: cc -O3 $(pkg-config --cflags libdpdk) dpdk_xproc.c $(pkg-config --libs libdpdk)
 * Run:   ./a.out -l 0 --file-prefix X -- primary [POOL [CACHE [RING]]]   (8191 512 1024)
 *        ./a.out -l 1 --file-prefix X --proc-type=secondary -- recv COUNT [BURST [SIZE]]
 *        ./a.out -l 0 --file-prefix X --proc-type=secondary -- send COUNT [BURST [SIZE]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <inttypes.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_pause.h>
#include <rte_ring.h>
#include <rte_mbuf.h>

#define POOL_NAME "xproc_pool"
#define RING_NAME "xproc_ring"
#define MAX_BURST 512
#define STALL_SECS 30

static int run_primary(unsigned int pool_n, unsigned int cache, unsigned int ring_n)
{
	struct rte_mempool *mp = rte_pktmbuf_pool_create(POOL_NAME, pool_n, cache, 0,
		RTE_MBUF_DEFAULT_BUF_SIZE, (int)rte_socket_id());
	struct rte_ring *r = rte_ring_create(RING_NAME, ring_n, (int)rte_socket_id(),
		RING_F_SP_ENQ | RING_F_SC_DEQ);
	if (mp == NULL || r == NULL) {
		fprintf(stderr, "primary: cannot create the pool or the ring: %s\n",
			rte_strerror(rte_errno));
		return 1;
	}
	printf("ready: pool %s %u mbufs cache %u ops %s, ring %s %u slots sp/sc\n", POOL_NAME,
		pool_n, cache, rte_mempool_get_ops(mp->ops_index)->name, RING_NAME,
		rte_ring_get_capacity(r));
	fflush(stdout);
	char line[64];
	while (fgets(line, sizeof(line), stdin) != NULL && strncmp(line, "quit", 4) != 0)
		;
	rte_ring_free(r);
	rte_mempool_free(mp);
	return 0;
}

static int lookup(struct rte_mempool **mp, struct rte_ring **r)
{
	*mp = rte_mempool_lookup(POOL_NAME);
	*r = rte_ring_lookup(RING_NAME);
	if (*mp == NULL || *r == NULL) {
		fprintf(stderr, "no %s or %s: is the primary running?\n", POOL_NAME, RING_NAME);
		return -1;
	}
	return 0;
}

static double mpps(uint64_t n, uint64_t cycles)
{
	return cycles ? (double)n * rte_get_timer_hz() / cycles / 1e6 : 0.0;
}

static int run_send(uint64_t count, unsigned int burst, uint16_t size)
{
	struct rte_mempool *mp;
	struct rte_ring *r;
	struct rte_mbuf *m[MAX_BURST];
	uint64_t hz = rte_get_timer_hz(), seq = 0;

	if (lookup(&mp, &r) < 0)
		return 1;
	uint64_t start = rte_get_timer_cycles(), last = start;
	while (seq < count) {
		unsigned int n = count - seq < burst ? (unsigned int)(count - seq) : burst;
		if (rte_pktmbuf_alloc_bulk(mp, m, n) != 0) {
			if (rte_get_timer_cycles() - last > STALL_SECS * hz) {
				fprintf(stderr, "send: pool empty for %d s\n", STALL_SECS);
				return 1;
			}
			rte_pause();
			continue;
		}
		for (unsigned int i = 0; i < n; i++) {
			/* A fresh mbuf has no data: append SIZE bytes (data_len, pkt_len). */
			uint64_t *d = (uint64_t *)rte_pktmbuf_append(m[i], size);
			*d = seq + i;
		}
		unsigned int done = 0;
		while (done < n) {
			unsigned int k = rte_ring_enqueue_burst(r, (void **)&m[done], n - done, NULL);
			if (k) {
				done += k;
				last = rte_get_timer_cycles();
			} else if (rte_get_timer_cycles() - last > STALL_SECS * hz) {
				fprintf(stderr, "send: ring full for %d s\n", STALL_SECS);
				return 1;
			} else {
				rte_pause();
			}
		}
		seq += n;
	}
	uint64_t cycles = rte_get_timer_cycles() - start;
	printf("sent %" PRIu64 " packets of %u B (%.2f Mpps)\n", count, size, mpps(count, cycles));
	return 0;
}

static int run_recv(uint64_t count, unsigned int burst, uint16_t size)
{
	struct rte_mempool *mp;
	struct rte_ring *r;
	struct rte_mbuf *m[MAX_BURST];
	uint64_t hz = rte_get_timer_hz(), got = 0, first = 0;

	if (lookup(&mp, &r) < 0)
		return 1;
	uint64_t last = rte_get_timer_cycles();
	while (got < count) {
		unsigned int n = rte_ring_dequeue_burst(r, (void **)m, burst, NULL);
		if (n == 0) {
			if (rte_get_timer_cycles() - last > STALL_SECS * hz) {
				fprintf(stderr, "recv: %" PRIu64 " of %" PRIu64 " packets, nothing for %d s\n",
					got, count, STALL_SECS);
				return 1;
			}
			rte_pause();
			continue;
		}
		last = rte_get_timer_cycles();
		if (got == 0)
			first = last;
		for (unsigned int i = 0; i < n; i++) {
			uint64_t seq = *rte_pktmbuf_mtod(m[i], uint64_t *);
			if (m[i]->pkt_len != size || seq != got + i) {
				fprintf(stderr, "recv: packet %" PRIu64 ": length %u sequence %" PRIu64 "\n",
					got + i, m[i]->pkt_len, seq);
				return 1;
			}
		}
		rte_pktmbuf_free_bulk(m, n);
		got += n;
	}
	uint64_t cycles = rte_get_timer_cycles() - first;
	printf("received %" PRIu64 " packets, sequence ok (%.2f Mpps)\n", got, mpps(got, cycles));
	return 0;
}

int main(int argc, char **argv)
{
	int used = rte_eal_init(argc, argv);
	if (used < 0) {
		fprintf(stderr, "rte_eal_init failed\n");
		return 1;
	}
	argc -= used;
	argv += used;
	if (argc < 2) {
		fprintf(stderr, "usage: EAL... -- primary [POOL [CACHE [RING]]] | send|recv COUNT [BURST [SIZE]]\n");
		return 2;
	}
	int rc;
	if (strcmp(argv[1], "primary") == 0) {
		rc = run_primary(argc > 2 ? atoi(argv[2]) : 8191, argc > 3 ? atoi(argv[3]) : 512,
			argc > 4 ? atoi(argv[4]) : 1024);
	} else if (argc >= 3 && (strcmp(argv[1], "send") == 0 || strcmp(argv[1], "recv") == 0)) {
		uint64_t count = strtoull(argv[2], NULL, 10);
		unsigned int burst = argc > 3 ? (unsigned int)atoi(argv[3]) : 32;
		long size = argc > 4 ? atol(argv[4]) : 64;
		if (burst < 1 || burst > MAX_BURST || size < 8 || size > 2048) {
			fprintf(stderr, "BURST 1..%d, SIZE 8..2048\n", MAX_BURST);
			return 2;
		}
		rc = argv[1][0] == 's' ? run_send(count, burst, (uint16_t)size)
				       : run_recv(count, burst, (uint16_t)size);
	} else {
		fprintf(stderr, "unknown role %s\n", argv[1]);
		return 2;
	}
	rte_eal_cleanup();
	return rc;
}
