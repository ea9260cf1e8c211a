/* Two threads, each with its own compatible queue and VT-d vIOMMU, at once, sharing one
 * iopf_guest_memory made of regions (each guest's queues in its own pages), and both calling
 * iopf_host_answer_name (a lazily built static) and failing calls (iopf_last_error is per
 * thread). Run under helgrind and drd (second review). */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sys/mman.h>

#include "check.h"
#include "vtd_guest.h"

#define RAM (1u << 20)
#define GROUPS 40
static uint8_t *ram;
static struct iopf_guest_memory *mem;

static void on_msi(void *o, uint64_t a, uint32_t d) { (void)o; (void)a; (void)d; }
static uint32_t ok(void *o, uint32_t p, uint64_t a) { (void)o; (void)p; (void)a; return 0; }

struct job { int id; int answered; int errors; };

static void *run(void *arg)
{
    struct job *j = arg;
    struct iopf_compat_device *dev = NULL;
    struct iopf_host *host = NULL;
    if (iopf_compat_new(1, 0, &dev, &host)) { j->errors++; return NULL; }
    struct iopf_endpoint ep = { .host_dev_id = 1, .guest_rid = 8 };
    struct iopf_bridge_config cfg = { .endpoints = &ep, .n_endpoints = 1 };
    struct iopf_viommu *v = NULL;
    if (iopf_viommu_new_vtd(host, &cfg, on_msi, NULL, &v)) { j->errors++; return NULL; }
    uint64_t base = 0x40000 + (uint64_t)j->id * 0x10000;
    struct vtd_guest g = { .vtd = v, .mem = mem, .ram = ram, .prq_base = base,
                           .iq_base = base + 0x1000, .status_addr = base + 0x2000, .resolve = ok };
    if (vtd_guest_init(&g, 0)) j->errors++;
    for (int i = 0; i < GROUPS; i++) {
        struct iopf_fault_page_request r = {
            .flags = IOPF_FAULT_PAGE_REQUEST_PASID_VALID | IOPF_FAULT_PAGE_REQUEST_LAST_PAGE,
            .pasid = 1, .grpid = (uint32_t)(i % 256) + 1, .perm = IOPF_PERM_READ, .addr = 0x1000,
        };
        if (iopf_compat_report(dev, &r)) j->errors++;
        if (iopf_viommu_pump(v, mem, 0) < 0) j->errors++;
        int n = vtd_guest_handle_event(&g, 0);
        if (n < 0) j->errors++; else j->answered += n;
        if (!iopf_host_answer_name((size_t)i % IOPF_HOST_ANSWER_KINDS)) j->errors++;
        /* A failing call: its message is this thread's. */
        if (iopf_viommu_mmio_read(v, 0x7, NULL, 4) != -EINVAL) j->errors++;
        if (!strstr(iopf_last_error(), "data")) j->errors++;
        struct iopf_device_response a[4];
        iopf_compat_take_answers(dev, a, 4);
    }
    iopf_viommu_free(v);
    iopf_compat_device_free(dev);
    return NULL;
}

int main(void)
{
    ram = mmap(NULL, RAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct iopf_guest_region reg = { .guest_addr = 0, .size = RAM, .host_addr = ram };
    CHECK_RC(iopf_guest_memory_from_regions(&reg, 1, &mem), 0);
    /* helgrind and drd do not see std's futex-based Once (OnceLock) as synchronisation:
     * initialise the name table before the threads (reported as races otherwise: false
     * positives, checked). */
    CHECK(iopf_host_answer_name(0) != NULL);
    pthread_t t[2];
    struct job jobs[2] = { { .id = 0 }, { .id = 1 } };
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&t[i], NULL, run, &jobs[i]) == 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++) {
        printf("thread %d: answered %d errors %d\n", i, jobs[i].answered, jobs[i].errors);
        CHECK(jobs[i].answered == GROUPS && jobs[i].errors == 0);
    }
    iopf_guest_memory_free(mem);
    munmap(ram, RAM);
    return check_done("threads");
}
