/* The device end of the compatible queue driven from inside the vIOMMU's MSI callback (report
 * a new group, detach, take answers): no deadlock, each group answered once (second review). */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <sys/mman.h>

#include "check.h"
#include "vtd_guest.h"

#define RAM (1u << 20)
static struct iopf_compat_device *dev;
static int msis, mode;

static void on_msi(void *o, uint64_t a, uint32_t d)
{
    (void)o; (void)a; (void)d;
    msis++;
    if (mode == 1) {
        struct iopf_fault_page_request r = {
            .flags = IOPF_FAULT_PAGE_REQUEST_PASID_VALID | IOPF_FAULT_PAGE_REQUEST_LAST_PAGE,
            .pasid = 1, .grpid = 2, .perm = IOPF_PERM_READ, .addr = 0x2000,
        };
        CHECK_RC(iopf_compat_report(dev, &r), 0);
        mode = 0;
    } else if (mode == 2) {
        CHECK_RC(iopf_compat_set_attached(dev, false), 0);
        mode = 0;
    }
}
static uint32_t ok(void *o, uint32_t p, uint64_t a) { (void)o; (void)p; (void)a; return 0; }

int main(void)
{
    uint8_t *ram = mmap(NULL, RAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct iopf_guest_region reg = { .guest_addr = 0, .size = RAM, .host_addr = ram };
    struct iopf_guest_memory *mem = NULL;
    CHECK_RC(iopf_guest_memory_from_regions(&reg, 1, &mem), 0);
    struct iopf_host *host = NULL;
    CHECK_RC(iopf_compat_new(1, 0, &dev, &host), 0);
    struct iopf_endpoint ep = { .host_dev_id = 1, .guest_rid = 8 };
    struct iopf_bridge_config cfg = { .endpoints = &ep, .n_endpoints = 1 };
    struct iopf_viommu *v = NULL;
    CHECK_RC(iopf_viommu_new_vtd(host, &cfg, on_msi, NULL, &v), 0);
    struct vtd_guest g = { .vtd = v, .mem = mem, .ram = ram, .prq_base = 0x10000,
                           .iq_base = 0x20000, .status_addr = 0x21000, .resolve = ok };
    CHECK_RC(vtd_guest_init(&g, 0), 0);
    struct iopf_fault_page_request r = {
        .flags = IOPF_FAULT_PAGE_REQUEST_PASID_VALID | IOPF_FAULT_PAGE_REQUEST_LAST_PAGE,
        .pasid = 1, .grpid = 1, .perm = IOPF_PERM_READ, .addr = 0x1000,
    };
    /* 1: a report from inside the MSI callback. */
    mode = 1;
    CHECK_RC(iopf_compat_report(dev, &r), 0);
    CHECK(iopf_viommu_pump(v, mem, 0) >= 1);
    for (int i = 0; i < 4; i++) {
        vtd_guest_handle_event(&g, 0);
        iopf_viommu_pump(v, mem, 0);
    }
    struct iopf_device_response a[8];
    int n = iopf_compat_take_answers(dev, a, 8);
    printf("case 1: %d answers\n", n);
    CHECK(n == 2);
    /* 2: a detach from inside the MSI callback: the outstanding group answered INVALID by the
     * core; the guest's later answer is refused by the host, not sent twice. */
    mode = 2;
    r.grpid = 3;
    CHECK_RC(iopf_compat_report(dev, &r), 0);
    CHECK(iopf_viommu_pump(v, mem, 0) >= 0);
    vtd_guest_handle_event(&g, 0);
    n = iopf_compat_take_answers(dev, a, 8);
    printf("case 2: %d answers, code %u\n", n, n > 0 ? a[0].code : 99);
    CHECK(n == 1 && a[0].grpid == 3);
    struct iopf_bridge_stats st;
    CHECK_RC(iopf_viommu_stats(v, &st), 0);
    printf("outstanding %llu refused %llu msis %d\n", (unsigned long long)st.outstanding,
           (unsigned long long)st.host_refused, msis);
    CHECK(st.outstanding == 0);
    iopf_viommu_free(v);
    CHECK_RC(iopf_compat_take_answers(dev, a, 8), 0);
    iopf_compat_device_free(dev);
    iopf_guest_memory_free(mem);
    munmap(ram, RAM);
    return check_done("compat_in_callback");
}
