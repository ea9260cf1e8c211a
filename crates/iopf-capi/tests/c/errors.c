/* The boundary's rules: NULLs, bad flags, bad codes, bad fds and bad configurations give a
 * negative errno and a message; frees of NULL do nothing; the records are Linux's. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"

_Static_assert(sizeof(struct iopf_hwpt_pgfault) == 40, "struct iommu_hwpt_pgfault is 40 bytes");
_Static_assert(offsetof(struct iopf_hwpt_pgfault, addr) == 24, "addr at 24");
_Static_assert(offsetof(struct iopf_hwpt_pgfault, cookie) == 36, "cookie at 36");
_Static_assert(sizeof(struct iopf_hwpt_page_response) == 8, "iommu_hwpt_page_response");
_Static_assert(sizeof(struct iopf_fault_page_request) == 40, "iommu_fault_page_request");

static void on_msi(void *opaque, uint64_t a, uint32_t d)
{
    (void)opaque;
    (void)a;
    (void)d;
}

static int fail_read(void *o, uint64_t gpa, void *buf, size_t len)
{
    (void)o; (void)gpa; (void)buf; (void)len;
    return -EFAULT;
}

int main(void)
{
    struct iopf_host *host = NULL;
    struct iopf_compat_device *dev = NULL;
    struct iopf_guest_memory *mem = NULL;
    struct iopf_viommu *v = NULL;

    CHECK(strlen(iopf_version()) > 0);

    /* Frees of NULL do nothing. */
    iopf_host_free(NULL);
    iopf_compat_device_free(NULL);
    iopf_guest_memory_free(NULL);
    iopf_viommu_free(NULL);

    /* NULL handles and out pointers. */
    CHECK_RC(iopf_host_fd(NULL), -EINVAL);
    CHECK_MSG("host is NULL");
    CHECK_RC(iopf_host_read_faults(NULL, NULL, 0), -EINVAL);
    CHECK_RC(iopf_compat_new(1, 0, NULL, &host), -EINVAL);
    CHECK(host == NULL);
    CHECK_RC(iopf_compat_new(1, 1u << 7, &dev, &host), -EINVAL);
    CHECK_MSG("unknown iopf_compat_new flags 0x80");
    CHECK(dev == NULL && host == NULL);

    /* A descriptor that is not a fault fd, and one that is not open. */
    int fds[2];
    CHECK(pipe(fds) == 0);
    CHECK_RC(iopf_host_from_fault_fd(fds[0], 1, &host), -EINVAL);
    CHECK_MSG("not an iommufd fault fd");
    CHECK(fcntl(fds[0], F_GETFD) >= 0); /* still the caller's, still open */
    close(fds[0]);
    close(fds[1]);
    CHECK_RC(iopf_host_from_fault_fd(fds[0], 1, &host), -EBADF);
    CHECK_RC(iopf_host_from_fault_fd(-1, 1, &host), -EBADF);

    /* Regression (review): every check comes before ownership is taken. A misaligned out
     * pointer leaves the fd open and the caller's; a misaligned second out pointer of
     * iopf_compat_new leaves nothing behind (valgrind saw the device end leak). */
    CHECK(pipe(fds) == 0);
    struct iopf_host *hosts[2];
    CHECK_RC(iopf_host_from_fault_fd(fds[0], 1, (struct iopf_host **)((char *)hosts + 1)), -EINVAL);
    CHECK_MSG("not aligned");
    CHECK(fcntl(fds[0], F_GETFD) >= 0);
    close(fds[0]);
    close(fds[1]);
    struct iopf_compat_device *one = NULL;
    CHECK_RC(iopf_compat_new(1, 0, &one, (struct iopf_host **)((char *)hosts + 1)), -EINVAL);
    CHECK(one == NULL);

    /* Nothing listens at this path. */
    CHECK_RC(iopf_host_attach("/nonexistent/iopf.sock", 0, 100, &host), -ENOENT);
    CHECK_MSG("/nonexistent/iopf.sock");

    /* The compatible queue: strict in what the device end and the host end take. */
    CHECK_RC(iopf_compat_new(7, 0, &dev, &host), 0);
    struct iopf_fault_page_request bad = { .flags = 1u << 9, .grpid = 1 };
    CHECK_RC(iopf_compat_report(dev, &bad), -EINVAL);
    CHECK_MSG("unknown bits");
    struct iopf_fault_page_request req = {
        .flags = IOPF_FAULT_PAGE_REQUEST_LAST_PAGE, .grpid = 3, .perm = IOPF_PERM_READ,
        .addr = 0x1000,
    };
    CHECK_RC(iopf_compat_report(dev, &req), 0);
    struct iopf_hwpt_pgfault f[4];
    CHECK_RC(iopf_host_read_faults(host, f, 4), 1);
    /* FAILURE (2) is not a code of the fault fd: -EINVAL, nothing taken. */
    struct iopf_hwpt_page_response r = { .cookie = f[0].cookie, .code = 2 };
    CHECK_RC(iopf_host_respond(host, &r, 1), -EINVAL);
    CHECK_RC(iopf_compat_outstanding(dev), 1);
    /* An unknown cookie after a good response: the good one is taken, the count says 1. */
    struct iopf_hwpt_page_response two[2] = {
        { .cookie = f[0].cookie, .code = IOPF_PAGE_RESP_SUCCESS },
        { .cookie = f[0].cookie + 1000, .code = IOPF_PAGE_RESP_SUCCESS },
    };
    CHECK_RC(iopf_host_respond(host, two, 2), 1);
    CHECK_RC(iopf_compat_outstanding(dev), 0);
    CHECK_RC(iopf_host_respond(host, &two[1], 1), -EINVAL);
    CHECK_RC(iopf_host_arm(host, 1u << 9), -EINVAL);
    CHECK_MSG("unknown readiness bits");
    struct iopf_host_stats st;
    CHECK_RC(iopf_host_stats(host, NULL), -EINVAL);
    CHECK_RC(iopf_host_stats(host, &st), 0);
    CHECK(st.kind == IOPF_HOST_COMPAT && st.records_read == 1 && st.responses_sent == 1);

    /* Guest memory: regions must be page-aligned, not empty, not overlapping. */
    uint8_t *ram = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(ram != MAP_FAILED);
    struct iopf_guest_region odd = { .guest_addr = 0, .size = 4096, .host_addr = ram + 1 };
    CHECK_RC(iopf_guest_memory_from_regions(&odd, 1, &mem), -EINVAL);
    CHECK_MSG("page-aligned");
    struct iopf_guest_region empty = { .guest_addr = 0, .size = 0, .host_addr = ram };
    CHECK_RC(iopf_guest_memory_from_regions(&empty, 1, &mem), -EINVAL);
    struct iopf_guest_region past = { .guest_addr = ~0ull - 10, .size = 4096, .host_addr = ram };
    CHECK_RC(iopf_guest_memory_from_regions(&past, 1, &mem), -EINVAL);
    struct iopf_guest_region overlap[2] = {
        { .guest_addr = 0, .size = 8192, .host_addr = ram },
        { .guest_addr = 4096, .size = 4096, .host_addr = ram + 4096 },
    };
    CHECK_RC(iopf_guest_memory_from_regions(overlap, 2, &mem), -EINVAL);
    /* Regression (review): sizes past the address space were taken, and a guest address in
     * them wrote outside the mapping. */
    struct iopf_guest_region huge = { .guest_addr = 0, .size = 1ull << 63, .host_addr = ram };
    CHECK_RC(iopf_guest_memory_from_regions(&huge, 1, &mem), -EINVAL);
    CHECK_MSG("too large");
    struct iopf_guest_region wraps = {
        .guest_addr = 0, .size = 1ull << 40, .host_addr = (void *)(~(uintptr_t)0 - 4095),
    };
    CHECK_RC(iopf_guest_memory_from_regions(&wraps, 1, &mem), -EINVAL);
    CHECK_MSG("wraps");
    CHECK_MSG("region 0");
    CHECK_RC(iopf_guest_memory_from_regions(overlap, 2, &mem), -EINVAL);
    CHECK_MSG("regions 0 and 1 overlap");
    CHECK(mem == NULL);
    /* Out of guest-address order is fine. */
    struct iopf_guest_region backwards[2] = {
        { .guest_addr = 0x100000, .size = 4096, .host_addr = ram + 4096 },
        { .guest_addr = 0, .size = 4096, .host_addr = ram },
    };
    CHECK_RC(iopf_guest_memory_from_regions(backwards, 2, &mem), 0);
    iopf_guest_memory_free(mem);
    mem = NULL;
    CHECK_RC(iopf_guest_memory_from_regions(NULL, 0, &mem), -EINVAL);
    CHECK_MSG("no guest memory regions");
    CHECK(mem == NULL);
    struct iopf_guest_memory_ops no_write = { .read = fail_read };
    CHECK_RC(iopf_guest_memory_from_callbacks(&no_write, NULL, &mem), -EINVAL);
    CHECK_RC(iopf_guest_memory_from_regions(overlap, 1, &mem), 0);

    /* vIOMMU configurations: each mistake named; the host is taken even on error (so
     * each attempt gets a fresh one; valgrind sees a double free or a leak otherwise). */
    struct iopf_compat_device *devs[8] = { 0 };
    int ndev = 0;
    struct iopf_endpoint eps[2] = {
        { .host_dev_id = 7, .guest_rid = 8 },
        { .host_dev_id = 7, .guest_rid = 9 },
    };
    struct iopf_bridge_config cfg = { .endpoints = eps, .n_endpoints = 2 };
    CHECK_RC(iopf_viommu_new_vtd(host, &cfg, on_msi, NULL, &v), -EINVAL);
    CHECK_MSG("host device 7 is configured twice");
    CHECK(v == NULL);
    cfg.n_endpoints = 1;
    cfg.aged_code = 2;
    CHECK_RC(iopf_compat_new(7, 0, &devs[ndev++], &host), 0);
    CHECK_RC(iopf_viommu_new_vtd(host, &cfg, on_msi, NULL, &v), -EINVAL);
    cfg.aged_code = 0;
    CHECK_RC(iopf_compat_new(7, 0, &devs[ndev++], &host), 0);
    CHECK_RC(iopf_viommu_new_vtd(host, &cfg, NULL, NULL, &v), -EINVAL);
    CHECK_MSG("msi is NULL");
    CHECK_RC(iopf_viommu_new_amd(NULL, &cfg, 0, on_msi, NULL, &v), -EINVAL);
    CHECK_MSG("host is NULL");
    eps[0].reserved = 1;
    CHECK_RC(iopf_compat_new(7, 0, &devs[ndev++], &host), 0);
    CHECK_RC(iopf_viommu_new_smmuv3(host, &cfg, NULL, 0, on_msi, NULL, &v), -EINVAL);
    CHECK_MSG("reserved");
    eps[0].reserved = 0;
    CHECK_RC(iopf_compat_new(7, 0, &devs[ndev++], &host), 0);
    CHECK_RC(iopf_viommu_new_smmuv3(host, &cfg, NULL, 3, on_msi, NULL, &v), -EINVAL);
    CHECK_MSG("stall_streams is NULL");
    CHECK_RC(iopf_compat_new(7, 0, &devs[ndev++], &host), 0);
    CHECK_RC(iopf_viommu_new_vtd(host, &cfg, on_msi, NULL, &v), 0);

    /* MMIO accesses that are not register accesses. */
    uint8_t b[8] = { 0 };
    CHECK_RC(iopf_viommu_mmio_read(v, 0xc1, b, 4), -EINVAL);
    CHECK_MSG("not a 32- or 64-bit register access");
    CHECK_RC(iopf_viommu_mmio_read(v, 0xc0, b, 2), -EINVAL);
    CHECK_RC(iopf_viommu_mmio_write(v, mem, 0x10000, b, 4, 0), -EINVAL);
    CHECK_RC(iopf_viommu_mmio_write(v, NULL, 0xc0, b, 8, 0), -EINVAL);
    CHECK_RC(iopf_viommu_set_pri_enabled(v, 0x77, false), -ENODEV);
    CHECK_RC(iopf_viommu_amd_set_msi(v, 0xfee00000u, 0x41, true), -EOPNOTSUPP);
    CHECK_MSG("not AMD-Vi");
    CHECK(iopf_host_answer_name(0) && strcmp(iopf_host_answer_name(0), "guest") == 0);
    CHECK(iopf_host_answer_name(IOPF_HOST_ANSWER_KINDS) == NULL);

    iopf_viommu_free(v);
    iopf_guest_memory_free(mem);
    iopf_compat_device_free(dev);
    for (int i = 0; i < ndev; i++)
        iopf_compat_device_free(devs[i]);
    munmap(ram, 2 * 4096);
    return check_done("errors");
}
