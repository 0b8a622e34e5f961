/*
 * The subset of DPDK's mempool_perf_autotest that the shmdp mempool bench mirrors, run
 * against the installed DPDK (Debian's libdpdk-dev): cache 0 and 512, 1 and 2 lcores,
 * bulk 1 and 32, n_keep 128. The full autotest takes about an hour (720 runs of 5 s); this
 * measures the 8 figures we compare in the same way: each lcore repeatedly gets n_keep
 * objects in bulks of n and puts them back in bulks of n, counting objects per second
 * summed over lcores (the autotest's rate_persec).
 *
 * Output, one line per figure: mempool/cache<C>/<K>core/bulk<N> <Mobj/s>
 * Build: cc -O3 $(pkg-config --cflags libdpdk) dpdk_mempool_perf.c $(pkg-config --libs libdpdk)
 * Run:   ./a.out --no-pci --no-huge -m 512 -l 0-1 --file-prefix X -- SECONDS
 */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>

#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_mempool.h>

#define N_KEEP 128
#define MAX_KEEP 512
#define ELT_SIZE 2048

struct job {
	struct rte_mempool *mp;
	unsigned int bulk;
	double seconds;
	volatile int start;
	uint64_t count[RTE_MAX_LCORE];
};

static int run_lcore(void *arg)
{
	struct job *job = arg;
	unsigned int lcore = rte_lcore_id();
	struct rte_mempool_cache *cache = rte_mempool_default_cache(job->mp, lcore);
	void *table[N_KEEP];
	uint64_t hz = rte_get_timer_hz();
	uint64_t done = 0;
	unsigned int i, idx;

	while (!job->start)
		rte_pause();
	uint64_t start = rte_get_timer_cycles();
	while ((double)(rte_get_timer_cycles() - start) / hz < job->seconds) {
		/* 65536 objects per check of the clock, as the autotest's N. */
		for (i = 0; i < 65536 / N_KEEP; i++) {
			for (idx = 0; idx < N_KEEP; idx += job->bulk)
				if (rte_mempool_generic_get(job->mp, &table[idx], job->bulk, cache) < 0) {
					fprintf(stderr, "get failed\n");
					return -1;
				}
			for (idx = 0; idx < N_KEEP; idx += job->bulk)
				rte_mempool_generic_put(job->mp, &table[idx], job->bulk, cache);
		}
		done += 65536;
	}
	uint64_t cycles = rte_get_timer_cycles() - start;
	job->count[lcore] = (uint64_t)((double)done * hz / cycles);
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
	double seconds = argc > 1 ? atof(argv[1]) : 2.0;
	unsigned int caches[] = {0, 512}, cores[] = {1, 2}, bulks[] = {1, 32};
	unsigned int worker = rte_get_next_lcore(-1, 1, 0);

	for (unsigned int c = 0; c < 2; c++)
		for (unsigned int k = 0; k < 2; k++) {
			if (cores[k] == 2 && worker >= RTE_MAX_LCORE)
				continue;
			for (unsigned int b = 0; b < 2; b++) {
				char name[32];
				snprintf(name, sizeof(name), "perf_%u_%u_%u", caches[c], cores[k], bulks[b]);
				struct rte_mempool *mp = rte_mempool_create(name,
					cores[k] * (MAX_KEEP + RTE_MEMPOOL_CACHE_MAX_SIZE) - 1, ELT_SIZE,
					caches[c], 0, NULL, NULL, NULL, NULL, SOCKET_ID_ANY, 0);
				if (mp == NULL) {
					fprintf(stderr, "cannot create mempool %s\n", name);
					return 1;
				}
				static struct job job;
				job.mp = mp;
				job.bulk = bulks[b];
				job.seconds = seconds;
				job.start = 0;
				for (unsigned int i = 0; i < RTE_MAX_LCORE; i++)
					job.count[i] = 0;
				if (cores[k] == 2)
					rte_eal_remote_launch(run_lcore, &job, worker);
				job.start = 1;
				run_lcore(&job);
				rte_eal_mp_wait_lcore();
				uint64_t total = 0;
				for (unsigned int i = 0; i < RTE_MAX_LCORE; i++)
					total += job.count[i];
				printf("mempool/cache%u/%ucore/bulk%u %.3f\n", caches[c], cores[k],
					bulks[b], total / 1e6);
				fflush(stdout);
				rte_mempool_free(mp);
			}
		}
	rte_eal_cleanup();
	return 0;
}
