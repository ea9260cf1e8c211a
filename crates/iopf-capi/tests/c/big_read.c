/* Regression (second review): iopf_host_read_faults with a large n over a buffer with room
 * for n records (reserved, not touched: MAP_NORESERVE, as a VMM sizing for the worst case may
 * do), one small group waiting. The library allocated and zeroed scratch for all n records, so
 * under an address-space limit the process aborted (an allocation failure is not an errno).
 * Now it reads in chunks that grow with the groups, not with n. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>

#include "check.h"

int main(void)
{
    size_t n = (size_t)1 << 26; /* 64 Mi records: a 2.5 GiB buffer, reserved only */
    struct rlimit lim = { .rlim_cur = (rlim_t)4 << 30, .rlim_max = (rlim_t)4 << 30 };
    CHECK(setrlimit(RLIMIT_AS, &lim) == 0);
    struct iopf_hwpt_pgfault *buf = mmap(NULL, n * sizeof *buf, PROT_READ | PROT_WRITE,
                                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    CHECK(buf != MAP_FAILED);
    struct iopf_compat_device *dev = NULL;
    struct iopf_host *host = NULL;
    CHECK_RC(iopf_compat_new(1, 0, &dev, &host), 0);
    struct iopf_fault_page_request r = {
        .flags = IOPF_FAULT_PAGE_REQUEST_PASID_VALID | IOPF_FAULT_PAGE_REQUEST_LAST_PAGE,
        .pasid = 1, .grpid = 1, .perm = IOPF_PERM_READ, .addr = 0x1000,
    };
    CHECK_RC(iopf_compat_report(dev, &r), 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_RC(iopf_host_read_faults(host, buf, n), 1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("read took %.3f s\n", (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    iopf_host_free(host);
    iopf_compat_device_free(dev);
    munmap(buf, n * sizeof *buf);
    return check_done("big_read");
}
