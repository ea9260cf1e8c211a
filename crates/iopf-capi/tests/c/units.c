/* SMMUv3 and AMD-Vi units through the C API: they report what they are in their ID
 * registers, answer at once what comes while the
 * guest's queue is off, and the host queue answers what is left on free: nothing stranded,
 * nothing FAILURE. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <sys/mman.h>

#include "check.h"

#define RAM (1u << 16)

static void on_msi(void *opaque, uint64_t address, uint32_t data)
{
    (void)address;
    (void)data;
    (*(int *)opaque)++;
}

static void report(struct iopf_compat_device *dev, uint32_t grpid)
{
    struct iopf_fault_page_request r = {
        .flags = IOPF_FAULT_PAGE_REQUEST_PASID_VALID | IOPF_FAULT_PAGE_REQUEST_LAST_PAGE,
        .pasid = 1,
        .grpid = grpid,
        .perm = IOPF_PERM_WRITE,
        .addr = 0x4000,
    };
    CHECK_RC(iopf_compat_report(dev, &r), 0);
}

enum arch { SMMU, AMD };

static void unit(enum arch arch)
{
    uint8_t *ram = mmap(NULL, RAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(ram != MAP_FAILED);
    struct iopf_guest_region reg = { .guest_addr = 0, .size = RAM, .host_addr = ram };
    struct iopf_guest_memory *mem = NULL;
    CHECK_RC(iopf_guest_memory_from_regions(&reg, 1, &mem), 0);
    struct iopf_compat_device *dev = NULL;
    struct iopf_host *host = NULL;
    CHECK_RC(iopf_compat_new(2, 0, &dev, &host), 0);
    struct iopf_endpoint ep = { .host_dev_id = 2, .guest_rid = 0x18 };
    struct iopf_bridge_config cfg = { .endpoints = &ep, .n_endpoints = 1 };
    struct iopf_viommu *v = NULL;
    int msis = 0;
    uint64_t reg64 = 0;
    uint32_t reg32 = 0;
    if (arch == SMMU) {
        uint16_t stall[1] = { 0x40 };
        CHECK_RC(iopf_viommu_new_smmuv3(host, &cfg, stall, 1, on_msi, &msis, &v), 0);
        CHECK_RC(iopf_viommu_mmio_read(v, 0x0 /* IDR0 */, (uint8_t *)&reg32, 4), 0);
        CHECK(reg32 & (1u << 16)); /* IDR0.PRI */
    } else {
        CHECK_RC(iopf_viommu_new_amd(host, &cfg, 0, on_msi, &msis, &v), 0);
        CHECK_RC(iopf_viommu_mmio_read(v, 0x30 /* EXT_FEATURES */, (uint8_t *)&reg64, 8), 0);
        CHECK(reg64 & (1u << 1)); /* PPRSup */
    }
    CHECK(iopf_viommu_host_fd(v) >= 0);

    /* The guest has not turned its queue on: the group is answered INVALID at once
     * ("queue_off"), not held for a queue that may never come. */
    struct iopf_device_response a[4];
    report(dev, 11);
    CHECK(iopf_viommu_pump(v, mem, 1) == 0);
    CHECK_RC(iopf_compat_take_answers(dev, a, 4), 1);
    CHECK(a[0].grpid == 11 && a[0].code == 1);
    CHECK(msis == 0);
    struct iopf_bridge_stats bs;
    CHECK_RC(iopf_viommu_stats(v, &bs), 0);
    CHECK(strcmp(iopf_host_answer_name(4), "queue_off") == 0);
    CHECK(bs.host_answers[4] == 1 && bs.outstanding == 0);

    /* A reset with nothing held answers nothing twice. */
    CHECK_RC(iopf_viommu_reset(v), 0);
    CHECK_RC(iopf_compat_take_answers(dev, a, 4), 0);

    /* A group still in the host queue when the vIOMMU is freed is answered INVALID by the
     * queue (the kernel's release), once. */
    report(dev, 12);
    iopf_viommu_free(v);
    CHECK_RC(iopf_compat_take_answers(dev, a, 4), 1);
    CHECK(a[0].grpid == 12 && a[0].code == 1);
    iopf_compat_device_free(dev);
    iopf_guest_memory_free(mem);
    munmap(ram, RAM);
}

int main(void)
{
    unit(SMMU);
    unit(AMD);
    return check_done("units");
}
