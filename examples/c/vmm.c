/*
 * A small C VMM loop around iopf: a PRI device's page requests arrive on a host fault queue
 * (here iopf's compatible queue, which follows the kernel's fault fd rules), an emulated
 * VT-d unit carries them into the guest's page request queue, the guest's driver answers
 * through its invalidation queue, and the answers reach the device.
 *
 *   make -C examples/c run
 *
 * The event loop is the VMM's own: it polls the host queue's descriptor and pumps the vIOMMU
 * when it is readable; the vIOMMU's interrupt callback marks the guest's interrupt pending.
 * Exit status 0 when every group the device sent was answered exactly once, with the code
 * the guest chose.
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "iopf.h"
#include "vtd_guest.h"

#define GUEST_RAM (1u << 20)
#define GROUPS 1000u
#define DEV_ID 1u
#define GUEST_RID 0x08
#define PASID 5u
/* The guest maps addresses below this; above, it answers Invalid Request. */
#define MAPPED_LIMIT 0x40000000ull

struct vmm {
    int irq_pending;
    uint64_t msis;
};

static void on_msi(void *opaque, uint64_t address, uint32_t data)
{
    struct vmm *vmm = opaque;
    (void)address;
    (void)data;
    vmm->irq_pending = 1;
    vmm->msis++;
}

static uint32_t resolve(void *opaque, uint32_t pasid, uint64_t addr)
{
    (void)opaque;
    return (pasid == PASID && addr < MAPPED_LIMIT) ? 0 : 1;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "vmm: %s: %s (%s)\n", what, strerror(-rc), iopf_last_error());
    return 1;
}

/* Group g: (g % 3) + 1 requests; every seventh group faults above what the guest maps. */
static uint64_t group_addr(uint32_t g)
{
    return (g % 7 == 6 ? MAPPED_LIMIT : 0) + (uint64_t)g * 0x10000;
}

int main(void)
{
    struct vmm vmm = { 0 };
    struct iopf_compat_device *device = NULL;
    struct iopf_host *host = NULL;
    struct iopf_viommu *vtd = NULL;
    struct iopf_guest_memory *mem = NULL;
    int rc, status = 1;

    uint8_t *ram = mmap(NULL, GUEST_RAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ram == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    struct iopf_guest_region region = { .guest_addr = 0, .size = GUEST_RAM, .host_addr = ram };
    if ((rc = iopf_guest_memory_from_regions(&region, 1, &mem)) < 0)
        return fail("guest memory", rc);
    if ((rc = iopf_compat_new(DEV_ID, 0, &device, &host)) < 0)
        return fail("compatible queue", rc);

    struct iopf_endpoint ep = {
        .host_dev_id = DEV_ID,
        .guest_rid = GUEST_RID,
        .flags = IOPF_ENDPOINT_PRG_RESPONSE_PASID_REQUIRED,
    };
    struct iopf_bridge_config cfg = { .endpoints = &ep, .n_endpoints = 1 };
    /* The vIOMMU takes the host queue. */
    if ((rc = iopf_viommu_new_vtd(host, &cfg, on_msi, &vmm, &vtd)) < 0) {
        status = fail("VT-d unit", rc);
        goto out;
    }

    struct vtd_guest guest = {
        .vtd = vtd, .mem = mem, .ram = ram,
        .prq_base = 0x10000, .iq_base = 0x20000, .status_addr = 0x21000,
        .resolve = resolve,
    };
    if ((rc = vtd_guest_init(&guest, now_ns())) < 0) {
        status = fail("guest driver init", rc);
        goto out;
    }

    /* The device sends its page requests; the queue is the kernel's fault fd in all but name. */
    uint32_t sent = 0, expect_invalid = 0;
    uint64_t t0 = now_ns();
    for (uint32_t g = 0; g < GROUPS; g++) {
        uint32_t n = g % 3 + 1;
        for (uint32_t i = 0; i < n; i++) {
            struct iopf_fault_page_request req = {
                .flags = IOPF_FAULT_PAGE_REQUEST_PASID_VALID |
                         (i + 1 == n ? IOPF_FAULT_PAGE_REQUEST_LAST_PAGE : 0),
                .pasid = PASID,
                .grpid = g % 512,
                .perm = IOPF_PERM_READ | IOPF_PERM_WRITE,
                .addr = group_addr(g) + i * 0x1000,
            };
            if ((rc = iopf_compat_report(device, &req)) < 0) {
                status = fail("report", rc);
                goto out;
            }
        }
        sent++;
        expect_invalid += g % 7 == 6;

        /* The VMM's loop: the guest takes its interrupt, the host queue is polled and
         * pumped (only a whole PRQ's worth at a time fits: 128 descriptors). */
        for (;;) {
            if (vmm.irq_pending) {
                vmm.irq_pending = 0;
                if ((rc = vtd_guest_handle_event(&guest, now_ns())) < 0) {
                    status = fail("guest page request handler", rc);
                    goto out;
                }
            }
            if ((rc = iopf_viommu_host_arm(vtd, IOPF_READY_FAULTS)) < 0) {
                status = fail("arm", rc);
                goto out;
            }
            struct pollfd pfd = { .fd = iopf_viommu_host_fd(vtd), .events = POLLIN };
            if (rc == 0 && poll(&pfd, 1, 0) <= 0)
                break; /* nothing waits: back to the device */
            if ((rc = iopf_viommu_pump(vtd, mem, now_ns())) < 0) {
                status = fail("pump", rc);
                goto out;
            }
            if (rc == 0 && !vmm.irq_pending)
                break; /* the guest's queue is full and its interrupt handled: later */
        }
    }
    /* Drain what is left. */
    for (int spins = 0; spins < 10000 && guest.answered < sent; spins++) {
        if ((rc = iopf_viommu_pump(vtd, mem, now_ns())) < 0) {
            status = fail("pump", rc);
            goto out;
        }
        if ((rc = vtd_guest_handle_event(&guest, now_ns())) < 0) {
            status = fail("guest page request handler", rc);
            goto out;
        }
    }
    uint64_t elapsed = now_ns() - t0;

    /* What reached the device. */
    struct iopf_device_response answers[256];
    uint32_t success = 0, invalid = 0, other = 0, total = 0;
    while ((rc = iopf_compat_take_answers(device, answers, 256)) > 0) {
        for (int i = 0; i < rc; i++) {
            total++;
            if (answers[i].code == 0)
                success++;
            else if (answers[i].code == 1)
                invalid++;
            else
                other++;
        }
    }
    struct iopf_bridge_stats bs;
    iopf_viommu_stats(vtd, &bs);
    printf("iopf C VMM example: VT-d over the compatible queue\n");
    printf("groups sent %u, posted to the guest %llu, answered by the guest %llu\n", sent,
           (unsigned long long)bs.groups_posted, (unsigned long long)bs.host_answers[0]);
    printf("at the device: %u answers, %u Success, %u Invalid Request, %u other\n", total,
           success, invalid, other);
    printf("page request interrupts %llu, descriptors read %llu, %.2f us per group\n",
           (unsigned long long)vmm.msis, (unsigned long long)guest.descriptors,
           (double)elapsed / 1000.0 / sent);
    if (total == sent && invalid == expect_invalid && other == 0 && bs.outstanding == 0) {
        printf("OK: every group answered exactly once, with the guest's code\n");
        status = 0;
    } else {
        printf("MISMATCH: expected %u answers, %u of them Invalid Request\n", sent,
               expect_invalid);
    }
out:
    iopf_viommu_free(vtd); /* and the host queue it took */
    iopf_compat_device_free(device);
    iopf_guest_memory_free(mem);
    munmap(ram, GUEST_RAM);
    return status;
}
