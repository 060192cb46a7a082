/*
 * fragmenter - fragment free memory page by page so that kcompactd has proactive work to do.
 *
 * Large sequential anonymous mappings (stress-ng --vm) leave free memory in big buddy blocks: the
 * fragmentation score never passes wmark_high. This program takes free memory down to a MemAvailable
 * floor in base pages (MADV_NOHUGEPAGE), reads each page's PFN from /proc/self/pagemap and then, on
 * command, keeps exactly one page per physically aligned 2^K block and frees the rest. Every free block
 * it leaves is then of order < K, so with K <= the huge-page order all freed memory counts as "unusable"
 * in the score, while the memory held is only 1/2^K of what was taken.
 *
 * It computes no score: the driver (plugins/modules/fragmenter.py) reads the score through
 * module_utils/fragmentation.py and decides the next K. Protocol, one line each way:
 *   stdin:  "spread K" | "thp MB" | "release"       (EOF = release)
 *   stdout: JSON objects, one per line: {"event": "ready"|"spread"|"released"|"refused"|"error", ...}
 * "thp MB" then faults MB of MADV_HUGEPAGE memory into the fragmented free memory: each fault wants an
 * order-H block, none is free, so the faulting task compacts directly (compact_stall, try_to_compact_pages).
 * The program releases everything on "release", EOF, SIGTERM/SIGINT/SIGHUP or its --deadline, and sets
 * its own oom_score_adj to 1000 so that the OOM killer, if it ever runs, picks this process first.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#define PM_PRESENT (1ULL << 63)
#define PM_PFN_MASK ((1ULL << 55) - 1)

struct page {
	uint64_t pfn;
	uint32_t vidx; /* index of the page in the mapping */
	uint32_t held;
};

static volatile sig_atomic_t stop_reason; /* 0 = running, else the signal (SIGALRM = deadline) */

static void on_signal(int sig) { stop_reason = sig; }

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* MemAvailable in KiB, or -1. Read often while allocating: this is the safety floor. */
static long mem_available_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/meminfo", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static const char *reason_name(int sig)
{
	switch (sig) {
	case 0: return "release";
	case SIGALRM: return "deadline";
	case SIGTERM: return "SIGTERM";
	case SIGINT: return "SIGINT";
	case SIGHUP: return "SIGHUP";
	default: return "signal";
	}
}

static int by_pfn(const void *a, const void *b)
{
	const struct page *x = a, *y = b;
	return x->pfn < y->pfn ? -1 : x->pfn > y->pfn;
}

static int by_vidx(const void *a, const void *b)
{
	const struct page *x = a, *y = b;
	return x->vidx < y->vidx ? -1 : x->vidx > y->vidx;
}

static long read_long(const char *path)
{
	long v = -1;
	FILE *f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

/* AnonHugePages of this process in KiB: how many of the THP faults got a huge page. */
static long anon_huge_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/smaps_rollup", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* Fault mb MiB of huge-page-aligned MADV_HUGEPAGE memory, stopping at the floor. Returns the mapping. */
static char *thp_fault(long mb, long floor_kb, size_t *len_out)
{
	long hpage = read_long("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
	*len_out = 0;
	if (hpage <= 0) {
		printf("{\"event\":\"error\",\"msg\":\"no THP support (hpage_pmd_size unreadable)\"}\n");
		return NULL;
	}
	size_t len = (size_t)mb << 20;
	len -= len % hpage;
	char *raw = mmap(NULL, len + hpage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED) {
		printf("{\"event\":\"error\",\"msg\":\"mmap for THP failed: %s\"}\n", strerror(errno));
		return NULL;
	}
	char *p = (char *)(((uintptr_t)raw + hpage - 1) & ~((uintptr_t)hpage - 1));
	if (p > raw)
		munmap(raw, p - raw);
	munmap(p + len, raw + len + hpage - (p + len));
	if (madvise(p, len, MADV_HUGEPAGE)) {
		printf("{\"event\":\"error\",\"msg\":\"madvise(MADV_HUGEPAGE) failed: %s\"}\n", strerror(errno));
		munmap(p, len);
		return NULL;
	}
	double t0 = now();
	size_t done = 0;
	for (; done < len && !stop_reason; done += hpage) {
		if (mem_available_kb() < floor_kb + hpage / 1024)
			break;
		p[done] = 1; /* one fault per huge page: the kernel allocates the whole block here */
	}
	*len_out = len;
	printf("{\"event\":\"thp\",\"requested_kb\":%zu,\"faulted_kb\":%zu,\"anon_huge_kb\":%ld,"
	       "\"seconds\":%.3f}\n", len / 1024, done / 1024, anon_huge_kb(), now() - t0);
	return p;
}

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s --floor-mb N [--max-mb N] [--deadline SECONDS]\n"
		"  Allocates base pages until MemAvailable would fall below the floor (or max-mb is taken),\n"
		"  then reads 'spread K' / 'release' commands on stdin.\n", argv0);
	exit(2);
}

int main(int argc, char **argv)
{
	long floor_mb = -1, max_mb = 0, deadline = 600;
	for (int i = 1; i < argc; i++) {
		if (i + 1 < argc && !strcmp(argv[i], "--floor-mb"))
			floor_mb = atol(argv[++i]);
		else if (i + 1 < argc && !strcmp(argv[i], "--max-mb"))
			max_mb = atol(argv[++i]);
		else if (i + 1 < argc && !strcmp(argv[i], "--deadline"))
			deadline = atol(argv[++i]);
		else
			usage(argv[0]);
	}
	if (floor_mb < 0 || max_mb < 0 || deadline <= 0)
		usage(argv[0]);

	setvbuf(stdout, NULL, _IOLBF, 0);
	long page_size = sysconf(_SC_PAGESIZE);
	long floor_kb = floor_mb * 1024;
	const long chunk = 4L << 20; /* touch and re-check the floor every 4 MiB */

	long avail = mem_available_kb();
	if (avail < 0) {
		printf("{\"event\":\"error\",\"msg\":\"cannot read MemAvailable from /proc/meminfo\"}\n");
		return 1;
	}
	if (avail < floor_kb + chunk / 1024) {
		printf("{\"event\":\"refused\",\"mem_available_kb\":%ld,\"floor_kb\":%ld,"
		       "\"msg\":\"MemAvailable %ld MiB is below the floor %ld MiB plus one 4 MiB step: "
		       "nothing allocated; lower fragmenter_floor_mb or free memory first\"}\n",
		       avail, floor_kb, avail / 1024, floor_mb);
		return 3;
	}

	/* Be the OOM killer's first choice: this process is the only one allowed to die for the experiment. */
	int oom_fd = open("/proc/self/oom_score_adj", O_WRONLY);
	int oom_ok = oom_fd >= 0 && write(oom_fd, "1000", 4) == 4;
	if (oom_fd >= 0)
		close(oom_fd);

	struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: a signal ends the blocking read */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGALRM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	alarm(deadline);

	size_t want = (size_t)(avail - floor_kb) * 1024;
	if (max_mb && want > (size_t)max_mb << 20)
		want = (size_t)max_mb << 20;
	want -= want % chunk;
	char *base = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (base == MAP_FAILED) {
		printf("{\"event\":\"error\",\"msg\":\"mmap of %zu bytes failed: %s\"}\n", want, strerror(errno));
		return 1;
	}
	/* Base pages only: a THP would be one order-9 block that no pattern can fragment. */
	if (madvise(base, want, MADV_NOHUGEPAGE)) {
		printf("{\"event\":\"error\",\"msg\":\"madvise(MADV_NOHUGEPAGE) failed: %s\"}\n", strerror(errno));
		return 1;
	}

	double t0 = now();
	size_t touched = 0;
	while (touched < want && !stop_reason) {
		if (mem_available_kb() < floor_kb + chunk / 1024)
			break;
		/* MADV_POPULATE_WRITE (5.14+) faults the chunk in inside the kernel: under TCG a user-space
		 * touch loop costs one emulated trap per page. Older kernels touch. */
		if (madvise(base + touched, chunk, MADV_POPULATE_WRITE))
			for (size_t off = 0; off < (size_t)chunk; off += page_size)
				base[touched + off] = 1;
		touched += chunk;
	}
	size_t npages = touched / page_size;
	double t_alloc = now() - t0;

	/* PFNs need CAP_SYS_ADMIN; without it pagemap reads 0 and the pattern falls back to virtual order. */
	struct page *pages = calloc(npages ? npages : 1, sizeof(*pages));
	if (!pages) {
		printf("{\"event\":\"error\",\"msg\":\"out of memory for the page table of %zu pages\"}\n", npages);
		return 1;
	}
	int pm = open("/proc/self/pagemap", O_RDONLY);
	int have_pfn = pm >= 0;
	uint64_t buf[512];
	for (size_t i = 0; i < npages && have_pfn; i += 512) {
		size_t n = npages - i < 512 ? npages - i : 512;
		off_t off = (off_t)(((uintptr_t)base / page_size + i) * sizeof(uint64_t));
		if (pread(pm, buf, n * sizeof(uint64_t), off) != (ssize_t)(n * sizeof(uint64_t))) {
			have_pfn = 0;
			break;
		}
		for (size_t j = 0; j < n; j++) {
			if (!(buf[j] & PM_PRESENT) || !(buf[j] & PM_PFN_MASK))
				have_pfn = 0;
			pages[i + j].pfn = buf[j] & PM_PFN_MASK;
		}
	}
	if (pm >= 0)
		close(pm);
	for (size_t i = 0; i < npages; i++) {
		pages[i].vidx = (uint32_t)i;
		pages[i].held = 1;
		if (!have_pfn)
			pages[i].pfn = i;
	}
	qsort(pages, npages, sizeof(*pages), by_pfn);

	printf("{\"event\":\"ready\",\"pages\":%zu,\"page_size\":%ld,\"allocated_kb\":%zu,"
	       "\"mem_available_kb\":%ld,\"floor_kb\":%ld,\"alloc_seconds\":%.3f,\"setup_seconds\":%.3f,"
	       "\"pfn_source\":\"%s\",\"oom_score_adj\":%s,\"pid\":%d}\n",
	       npages, page_size, touched / 1024, mem_available_kb(), floor_kb, t_alloc, now() - t0 - t_alloc,
	       have_pfn ? "pagemap" : "virtual", oom_ok ? "1000" : "null", getpid());

	char line[64];
	size_t len = 0;
	char *thp = NULL;
	size_t thp_len = 0;
	long mb;
	size_t held = npages;
	line[0] = 0;
	while (!stop_reason) {
		char *nl = strchr(line, '\n');
		if (!nl) {
			if (len == sizeof(line) - 1)
				len = 0; /* overlong junk: drop it */
			ssize_t r = read(0, line + len, sizeof(line) - 1 - len);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break; /* EOF: the driver is gone, release */
			len += r;
			line[len] = 0;
			continue;
		}
		*nl = 0;
		int order;
		if (!strcmp(line, "release")) {
			break;
		} else if (sscanf(line, "spread %d", &order) == 1 && order >= 0 && order < 32) {
			/* pages is sorted by pfn: keep the first held page of every aligned 2^order block. */
			double ts = now();
			uint64_t cur = UINT64_MAX;
			size_t freed = 0;
			for (size_t i = 0; i < npages; i++) {
				if (!pages[i].held)
					continue;
				if (pages[i].pfn >> order == cur) {
					pages[i].held = 0;
					freed++;
				} else {
					cur = pages[i].pfn >> order;
				}
			}
			/* Free in virtual order so that neighbouring pages go in one madvise call. */
			qsort(pages, npages, sizeof(*pages), by_vidx);
			size_t calls = 0;
			for (size_t i = 0; i < npages;) {
				if (pages[i].held) {
					i++;
					continue;
				}
				size_t j = i;
				while (j < npages && !pages[j].held)
					j++;
				/* Re-freeing already freed pages is a no-op; it keeps runs long. */
				madvise(base + (size_t)pages[i].vidx * page_size, (j - i) * page_size, MADV_DONTNEED);
				calls++;
				i = j;
			}
			qsort(pages, npages, sizeof(*pages), by_pfn);
			held -= freed;
			printf("{\"event\":\"spread\",\"order\":%d,\"held_pages\":%zu,\"freed_pages\":%zu,"
			       "\"madvise_calls\":%zu,\"seconds\":%.3f}\n", order, held, freed, calls, now() - ts);
		} else if (sscanf(line, "thp %ld", &mb) == 1 && mb > 0 && !thp) {
			thp = thp_fault(mb, floor_kb, &thp_len);
		} else {
			printf("{\"event\":\"error\",\"msg\":\"unknown command '%s': use 'spread K', 'thp MB' (once) "
			       "or 'release'\"}\n",
			       line);
		}
		memmove(line, nl + 1, len - (nl + 1 - line));
		len -= nl + 1 - line;
		line[len] = 0;
	}
	munmap(base, want);
	if (thp)
		munmap(thp, thp_len);
	printf("{\"event\":\"released\",\"reason\":\"%s\",\"held_pages\":%zu}\n", reason_name(stop_reason), held);
	return 0;
}
