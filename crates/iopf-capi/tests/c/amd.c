/* The AMD-Vi bridge through the C API, with the C guest driver of amd_guest.c: groups reach
 * the guest's PPR log and its COMPLETE_PPR_REQUEST answers (each batch closed by a
 * COMPLETION_WAIT that stores to a semaphore) reach the device, over guest memory given as a
 * mapped region and as callbacks; a request without a PASID is answered FAILURE by the guest
 * as Linux does, and reaches the device as INVALID (iommufd carries no FAILURE); a reset
 * answers what the guest held and the driver starts again.
 *
 * The PPR interrupt: the IOMMU's MSI is programmed in its PCI configuration space, which the
 * VMM emulates and passes on with iopf_viommu_amd_set_msi (regression: the C API had no such
 * call, and an AMD unit made by iopf_viommu_new_amd never sent an MSI). */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <sys/mman.h>

#include "amd_guest.h"
#include "check.h"
#include "guest_ram.h"

#define RAM (1u << 20)
#define DEV 6u
#define RID 0x28
#define GUEST_BASE 0x10000u
#define PASID 5u
#define BAD_ADDR 0x80000000ull
#define MAX_GROUPS 512

struct vmm {
    struct guest_ram ram;
    uint64_t msis;
};

static void on_msi(void *opaque, uint64_t address, uint32_t data)
{
    struct vmm *v = opaque;
    (void)address;
    (void)data;
    v->msis++;
}

static uint64_t resolved;

static uint32_t resolve(void *opaque, uint32_t pasid, uint64_t addr)
{
    (void)opaque;
    resolved++;
    return pasid == PASID && addr < BAD_ADDR ? 0 : 1;
}

static uint32_t want_code(uint32_t g)
{
    return g % 4 == 3 ? 1u : 0u;
}

/* Group `g` from the device: g % 3 + 1 requests, with a PASID unless `no_pasid`. */
static int report(struct iopf_compat_device *dev, uint32_t g, int no_pasid)
{
    int n = (int)(g % 3) + 1;
    uint64_t addr = (want_code(g) ? BAD_ADDR : 0) + (g % 64) * 0x100000ull;
    for (int i = 0; i < n; i++) {
        struct iopf_fault_page_request r = {
            .flags = (no_pasid ? 0 : IOPF_FAULT_PAGE_REQUEST_PASID_VALID) |
                     (i + 1 == n ? IOPF_FAULT_PAGE_REQUEST_LAST_PAGE : 0),
            .pasid = no_pasid ? 0 : PASID,
            .grpid = g,
            .perm = i == 1 ? IOPF_PERM_WRITE : IOPF_PERM_READ,
            .addr = addr + (uint64_t)i * 4096,
        };
        CHECK_RC(iopf_compat_report(dev, &r), 0);
    }
    return n;
}

struct rig {
    struct vmm vmm;
    struct iopf_compat_device *dev;
    struct iopf_viommu *amd;
    struct iopf_guest_memory *mem;
    struct amd_guest guest;
};

static void setup(struct rig *r, int callbacks)
{
    struct iopf_host *host = NULL;
    memset(r, 0, sizeof(*r));
    r->mem = guest_ram_open(&r->vmm.ram, RAM, callbacks ? GUEST_RAM_CALLBACKS : GUEST_RAM_REGION);
    CHECK_RC(iopf_compat_new(DEV, 0, &r->dev, &host), 0);
    struct iopf_endpoint ep = {
        .host_dev_id = DEV, .guest_rid = RID, .flags = IOPF_ENDPOINT_PRG_RESPONSE_PASID_REQUIRED,
    };
    struct iopf_bridge_config cfg = { .endpoints = &ep, .n_endpoints = 1 };
    CHECK_RC(iopf_viommu_new_amd(host, &cfg, 0, on_msi, &r->vmm, &r->amd), 0);
    r->guest = (struct amd_guest){
        .amd = r->amd, .mem = r->mem, .ram = r->vmm.ram.ram, .base = GUEST_BASE, .pri_tlp = 1,
        .resolve = resolve,
    };
    CHECK(GUEST_BASE + AMD_GUEST_BYTES <= RAM);
    /* The guest's MSI capability write, as the VMM's PCI config space emulation passes it on. */
    CHECK_RC(iopf_viommu_amd_set_msi(r->amd, 0xfee00000u, 0x41, true), 0);
    CHECK_RC(amd_guest_init(&r->guest, 0), 0);
    CHECK(r->guest.max_pasids == 0xffff); /* PASMAX 15 */
    uint32_t status = 0;
    CHECK_RC(iopf_viommu_mmio_read(r->amd, AMD_STATUS, (uint8_t *)&status, 4), 0);
    CHECK((status & (AMD_STATUS_PPR_RUN | AMD_STATUS_CMDBUF_RUN)) ==
          (AMD_STATUS_PPR_RUN | AMD_STATUS_CMDBUF_RUN));
    CHECK(!(status & AMD_STATUS_PPR_INT));
}

static void teardown(struct rig *r)
{
    iopf_viommu_free(r->amd);
    iopf_compat_device_free(r->dev);
    guest_ram_close(&r->vmm.ram, r->mem);
}

/* Groups `first` .. `first + n - 1` were answered at the device, each exactly once, with the
 * guest's code; returns the Invalid ones. */
static int check_answers(struct rig *r, uint32_t first, uint32_t n)
{
    struct iopf_device_response a[MAX_GROUPS];
    int seen[MAX_GROUPS] = { 0 };
    int invalid = 0;
    CHECK_RC(iopf_compat_take_answers(r->dev, a, MAX_GROUPS), (int)n);
    for (uint32_t i = 0; i < n && i < MAX_GROUPS; i++) {
        uint32_t g = a[i].grpid;
        CHECK(g >= first && g < first + n);
        if (g < first || g >= first + n)
            continue;
        seen[g - first]++;
        CHECK(a[i].code == want_code(g));
        invalid += a[i].code == 1;
    }
    for (uint32_t i = 0; i < n; i++)
        if (seen[i] != 1) {
            fprintf(stderr, "group %u answered %d times\n", first + i, seen[i]);
            CHECK(seen[i] == 1);
        }
    CHECK_RC(iopf_compat_take_answers(r->dev, a, MAX_GROUPS), 0);
    return invalid;
}

/* Two rounds of 40 groups of 1 to 3 requests, a quarter above what the guest maps: every one
 * answered once, by the guest, with its code. */
static void serves_groups(int callbacks)
{
    struct rig r;
    struct iopf_bridge_stats bs;
    setup(&r, callbacks);
    resolved = 0;
    int records = 0;
    for (uint32_t round = 0; round < 2; round++) {
        uint32_t first = round * 40, status = 0, tail = 0, head = 0;
        for (uint32_t g = first; g < first + 40; g++)
            records += report(r.dev, g, 0);
        CHECK_RC(iopf_viommu_pump(r.amd, r.mem, 1 + round), 40);
        CHECK_RC(iopf_viommu_mmio_read(r.amd, AMD_STATUS, (uint8_t *)&status, 4), 0);
        CHECK(status & AMD_STATUS_PPR_INT);
        CHECK(!(status & AMD_STATUS_PPR_OVERFLOW));
        CHECK(r.vmm.msis > 0); /* the MSI programmed through iopf_viommu_amd_set_msi */
        CHECK_RC(iopf_viommu_mmio_read(r.amd, AMD_PPR_TAIL, (uint8_t *)&tail, 4), 0);
        CHECK(tail == (uint32_t)records * 16 % 8192);
        CHECK_RC(amd_guest_handle_event(&r.guest, 2 + round), 40);
        CHECK_RC(iopf_viommu_mmio_read(r.amd, AMD_PPR_HEAD, (uint8_t *)&head, 4), 0);
        CHECK(head == tail);
        CHECK_RC(iopf_viommu_mmio_read(r.amd, AMD_STATUS, (uint8_t *)&status, 4), 0);
        CHECK(!(status & AMD_STATUS_PPR_INT));
        CHECK(check_answers(&r, first, 40) == 10);
    }
    CHECK(records == 159);
    CHECK(r.guest.ppr_entries == 159 && resolved == 159 && r.guest.answered == 80);
    CHECK(r.guest.bad_entries == 0 && r.guest.events == 0 && r.guest.restarts == 0);
    CHECK(r.guest.waits == 2 && r.guest.ppr_ints == 2);
    CHECK_RC(iopf_viommu_stats(r.amd, &bs), 0);
    CHECK(bs.groups_read == 80 && bs.groups_posted == 80 && bs.host_answers[0] == 80);
    CHECK(bs.records_posted == 159 && bs.records_dropped == 0);
    CHECK(bs.guest_codes[0] == 60 && bs.guest_codes[1] == 20 && bs.guest_codes[2] == 0);
    CHECK(bs.outstanding == 0 && bs.unmatched == 0 && bs.owed_answers == 0);
    struct iopf_host_stats hs;
    CHECK_RC(iopf_viommu_host_stats(r.amd, &hs), 0);
    CHECK(hs.kind == IOPF_HOST_COMPAT && hs.records_read == 159 && hs.responses_sent == 80);
    if (callbacks)
        CHECK(r.vmm.ram.writes > 0 && r.vmm.ram.reads > 0);
    teardown(&r);
}

/* A group without a PASID: Linux's ppr_is_valid() answers each of its requests
 * IOMMU_PAGE_RESP_FAILURE (2), a status AMD reserves, which the unit reads as Response
 * Failure. The first completion answers the group (the second matches nothing), and the
 * iommufd path carries Failure as INVALID (its uAPI has no FAILURE): the device gets 1. */
static void no_pasid_is_failure(void)
{
    struct rig r;
    struct iopf_device_response a[4];
    setup(&r, 0);
    resolved = 0;
    report(r.dev, 4, 1); /* two requests: the guest answers each, as ppr.c does */
    CHECK_RC(iopf_viommu_pump(r.amd, r.mem, 1), 1);
    CHECK_RC(amd_guest_handle_event(&r.guest, 2), 2);
    CHECK(r.guest.bad_entries == 2 && resolved == 0);
    CHECK_RC(iopf_compat_take_answers(r.dev, a, 4), 1);
    CHECK(a[0].grpid == 4 && a[0].code == 1);
    CHECK_RC(iopf_compat_take_answers(r.dev, a, 4), 0);
    struct iopf_bridge_stats bs;
    CHECK_RC(iopf_viommu_stats(r.amd, &bs), 0);
    CHECK(bs.host_answers[0] == 1 && bs.guest_codes[2] == 1 && bs.unmatched == 1);
    CHECK(bs.guest_codes[0] == 0 && bs.guest_codes[1] == 0 && bs.outstanding == 0);
    teardown(&r);
}

/* A reset answers what the guest held INVALID, once; the driver sets the unit up again. */
static void reset_then_serve(void)
{
    struct rig r;
    struct iopf_device_response a[8];
    setup(&r, 0);
    report(r.dev, 1, 0);
    report(r.dev, 2, 0);
    CHECK_RC(iopf_viommu_pump(r.amd, r.mem, 1), 2);
    CHECK_RC(iopf_viommu_reset(r.amd), 0);
    CHECK_RC(iopf_compat_take_answers(r.dev, a, 8), 2);
    CHECK(a[0].code == 1 && a[1].code == 1);
    uint64_t control = 1;
    CHECK_RC(iopf_viommu_mmio_read(r.amd, AMD_CONTROL, (uint8_t *)&control, 8), 0);
    CHECK(control == 0);
    CHECK_RC(amd_guest_init(&r.guest, 10), 0);
    report(r.dev, 4, 0); /* two requests, Success */
    CHECK_RC(iopf_viommu_pump(r.amd, r.mem, 11), 1);
    CHECK_RC(amd_guest_handle_event(&r.guest, 12), 1);
    CHECK_RC(iopf_compat_take_answers(r.dev, a, 8), 1);
    CHECK(a[0].grpid == 4 && a[0].code == 0);
    CHECK_RC(iopf_compat_take_answers(r.dev, a, 8), 0);
    teardown(&r);
}

int main(void)
{
    serves_groups(0);
    serves_groups(1);
    no_pasid_is_failure();
    reset_then_serve();
    return check_done("amd");
}
