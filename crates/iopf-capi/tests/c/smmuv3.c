/* The SMMUv3 bridge through the C API, with the C guest driver of smmuv3_guest.c: PRI groups
 * reach the guest's PRI queue and its CMD_PRI_RESP answers reach the device, over guest
 * memory given as a mapped region and as callbacks, with the CMD_SYNC completed by MSI-poll
 * and by SIG_NONE, with STE.PPAR as Linux 6.12 leaves it (0) and set; a stalling stream's
 * faults reach the event queue as stall records answered by CMD_RESUME; a reset answers what
 * the guest held and the driver starts again. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <sys/mman.h>

#include "check.h"
#include "guest_ram.h"
#include "smmuv3_guest.h"

#define RAM (1u << 20)
#define DEV 4u
#define PRI_SID 0x08
#define STALL_SID 0x40
#define GUEST_BASE 0x10000u
#define PASID 5u
#define BAD_ADDR 0x80000000ull /* the guest maps nothing from here */
#define MAX_GROUPS 512

struct vmm {
    struct guest_ram ram;
    uint64_t msis;
    uint64_t msis_by_data[3];
    uint64_t other_msis;
    uint64_t last_addr;
};

static void on_msi(void *opaque, uint64_t address, uint32_t data)
{
    struct vmm *v = opaque;
    v->msis++;
    v->last_addr = address;
    if (data < 3)
        v->msis_by_data[data]++;
    else
        v->other_msis++;
}

static uint64_t resolved; /* requests the guest resolved */

static uint32_t resolve(void *opaque, int64_t pasid, uint64_t addr)
{
    (void)opaque;
    resolved++;
    return pasid == PASID && addr < BAD_ADDR ? 0 : 1;
}

static uint32_t want_code(uint32_t g)
{
    return g % 4 == 3 ? 1u : 0u;
}

static uint64_t group_addr(uint32_t g)
{
    return (want_code(g) ? BAD_ADDR : 0) + (g % 64) * 0x100000ull;
}

/* Group `g` from the device: g % 3 + 1 requests; returns how many. */
static int report(struct iopf_compat_device *dev, uint32_t g)
{
    int n = (int)(g % 3) + 1;
    for (int i = 0; i < n; i++) {
        struct iopf_fault_page_request r = {
            .flags = IOPF_FAULT_PAGE_REQUEST_PASID_VALID |
                     (i + 1 == n ? IOPF_FAULT_PAGE_REQUEST_LAST_PAGE : 0),
            .pasid = PASID,
            .grpid = g,
            .perm = i == 1 ? IOPF_PERM_WRITE : IOPF_PERM_READ,
            .addr = group_addr(g) + (uint64_t)i * 4096,
        };
        CHECK_RC(iopf_compat_report(dev, &r), 0);
    }
    return n;
}

struct rig {
    struct vmm vmm;
    struct iopf_compat_device *dev;
    struct iopf_viommu *smmu;
    struct iopf_guest_memory *mem;
    struct smmuv3_guest guest;
    uint16_t sid;
};

static const uint16_t streams[2] = { PRI_SID, STALL_SID };

static void setup(struct rig *r, int callbacks, int stall, int ppar, int sig_none)
{
    struct iopf_host *host = NULL;
    memset(r, 0, sizeof(*r));
    r->sid = stall ? STALL_SID : PRI_SID;
    r->mem = guest_ram_open(&r->vmm.ram, RAM, callbacks ? GUEST_RAM_CALLBACKS_IS_RAM : GUEST_RAM_REGION);
    CHECK_RC(iopf_compat_new(DEV, IOPF_COMPAT_PASID_REQUIRED, &r->dev, &host), 0);
    struct iopf_endpoint ep = {
        .host_dev_id = DEV, .guest_rid = r->sid,
        .flags = IOPF_ENDPOINT_PRG_RESPONSE_PASID_REQUIRED,
    };
    struct iopf_bridge_config cfg = { .endpoints = &ep, .n_endpoints = 1 };
    const uint16_t stall_streams[1] = { STALL_SID };
    CHECK_RC(iopf_viommu_new_smmuv3(host, &cfg, stall_streams, 1, on_msi, &r->vmm, &r->smmu), 0);
    CHECK(smmuv3_guest_bytes(STALL_SID) + GUEST_BASE <= RAM);
    r->guest = (struct smmuv3_guest){
        .smmu = r->smmu, .mem = r->mem, .ram = r->vmm.ram.ram, .base = GUEST_BASE,
        .streams = streams, .n_streams = 2, .ppar = ppar, .sync_sig_none = sig_none,
        .resolve = resolve,
    };
    CHECK_RC(smmuv3_guest_init(&r->guest, 0), 0);
    /* Boot's two invalidations, each with its sync; nothing has interrupted yet. */
    CHECK(r->guest.syncs == 2);
    CHECK(r->vmm.msis == 0);
}

static void teardown(struct rig *r)
{
    iopf_viommu_free(r->smmu);
    iopf_compat_device_free(r->dev);
    guest_ram_close(&r->vmm.ram, r->mem);
}

/* Groups `first` .. `first + n - 1` were answered at the device, each exactly once, with the
 * guest's code; returns the Invalid ones. */
static int check_answers(struct rig *r, uint32_t first, uint32_t n, int with_pasid)
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
        if (with_pasid)
            CHECK((a[i].flags & IOPF_DEVICE_RESPONSE_PASID) && a[i].pasid == PASID);
        invalid += a[i].code == 1;
    }
    for (uint32_t i = 0; i < n; i++)
        if (seen[i] != 1) {
            fprintf(stderr, "group %u answered %d times\n", first + i, seen[i]);
            CHECK(seen[i] == 1);
        }
    /* Nothing more comes. */
    CHECK_RC(iopf_compat_take_answers(r->dev, a, MAX_GROUPS), 0);
    return invalid;
}

/* Two rounds of 40 PRI groups of 1 to 3 requests, a quarter above what the guest maps: every
 * one answered once, by the guest, with its code, after one PRI queue MSI per round; the
 * second round wraps the 128-entry PRI queue. */
static void serves_pri_groups(int callbacks, int ppar, int sig_none)
{
    struct rig r;
    struct iopf_bridge_stats bs;
    struct iopf_host_stats hs;
    uint32_t prod = 0, cons = 0;
    setup(&r, callbacks, 0, ppar, sig_none);
    resolved = 0;
    int records = 0;
    for (uint32_t round = 0; round < 2; round++) {
        uint32_t first = round * 40;
        for (uint32_t g = first; g < first + 40; g++)
            records += report(r.dev, g);
        CHECK_RC(iopf_viommu_pump(r.smmu, r.mem, 1 + round), 40);
        /* The PRI queue's MSI, as the guest programmed it, once per round (the queue was
         * empty when the first entry landed). */
        CHECK(r.vmm.msis == round + 1 && r.vmm.msis_by_data[SMMU_GUEST_MSI_PRIQ] == round + 1);
        CHECK(r.vmm.last_addr == SMMU_GUEST_DOORBELL);
        CHECK_RC(iopf_viommu_mmio_read(r.smmu, SMMU_PRIQ_PROD, (uint8_t *)&prod, 4), 0);
        CHECK(prod == (uint32_t)records % 256); /* index and wrap bit of 128 entries */
        CHECK_RC(iopf_viommu_stats(r.smmu, &bs), 0);
        CHECK(bs.outstanding == 40);
        CHECK_RC(smmuv3_guest_handle_event(&r.guest, 2 + round), 40);
        CHECK_RC(iopf_viommu_mmio_read(r.smmu, SMMU_PRIQ_CONS, (uint8_t *)&cons, 4), 0);
        CHECK(cons == prod);
        CHECK(check_answers(&r, first, 40, 1) == 10);
    }
    CHECK(records == 159); /* 79 + 80 */
    CHECK(r.guest.pri_entries == 159 && r.guest.answered == 80 && resolved == 159);
    CHECK(r.guest.stall_events == 0 && r.guest.stop_markers == 0 && r.guest.gerrors == 0);
    CHECK(r.guest.syncs == 2 + 2);
    CHECK(r.vmm.msis_by_data[SMMU_GUEST_MSI_GERROR] == 0 && r.vmm.other_msis == 0);
    CHECK_RC(iopf_viommu_stats(r.smmu, &bs), 0);
    CHECK(bs.groups_read == 80 && bs.groups_posted == 80 && bs.host_answers[0] == 80);
    CHECK(bs.records_posted == 159 && bs.records_dropped == 0);
    CHECK(bs.guest_codes[0] == 60 && bs.guest_codes[1] == 20 && bs.guest_codes[2] == 0);
    CHECK(bs.outstanding == 0 && bs.unmatched == 0 && bs.owed_answers == 0);
    CHECK_RC(iopf_viommu_host_stats(r.smmu, &hs), 0);
    CHECK(hs.kind == IOPF_HOST_COMPAT && hs.records_read == 159 && hs.responses_sent == 80);
    if (callbacks)
        CHECK(r.vmm.ram.writes > 0 && r.vmm.ram.reads > 0);
    if (callbacks && !sig_none)
        CHECK(r.vmm.ram.is_ram_calls > 0); /* the MSI-poll sync asked where it writes */
    teardown(&r);
}

/* A stalling stream: each group (of 1 to 3 records on the host) is one stall record in the
 * event queue, answered by CMD_RESUME (RETRY: Success; ABORT: Invalid). */
static void serves_stalls(int callbacks)
{
    struct rig r;
    struct iopf_bridge_stats bs;
    setup(&r, callbacks, 1, 0, 0);
    resolved = 0;
    int records = 0;
    for (uint32_t g = 0; g < 30; g++)
        records += report(r.dev, g);
    CHECK_RC(iopf_viommu_pump(r.smmu, r.mem, 1), 30);
    CHECK(r.vmm.msis == 1 && r.vmm.msis_by_data[SMMU_GUEST_MSI_EVTQ] == 1);
    uint32_t prod = 0;
    CHECK_RC(iopf_viommu_mmio_read(r.smmu, SMMU_EVTQ_PROD, (uint8_t *)&prod, 4), 0);
    CHECK(prod == 30);
    CHECK_RC(iopf_viommu_mmio_read(r.smmu, SMMU_PRIQ_PROD, (uint8_t *)&prod, 4), 0);
    CHECK(prod == 0);
    CHECK_RC(smmuv3_guest_handle_event(&r.guest, 2), 30);
    CHECK(r.guest.stall_events == 30 && r.guest.pri_entries == 0 && r.guest.other_events == 0);
    CHECK(resolved == 30);
    CHECK(check_answers(&r, 0, 30, 0) == 7); /* 3, 7, ..., 27 */
    CHECK_RC(iopf_viommu_stats(r.smmu, &bs), 0);
    CHECK(bs.groups_posted == 30 && bs.records_posted == 30 && bs.host_answers[0] == 30);
    CHECK(bs.guest_codes[0] == 23 && bs.guest_codes[1] == 7 && bs.outstanding == 0);
    CHECK(bs.unmatched == 0);
    struct iopf_host_stats hs;
    CHECK_RC(iopf_viommu_host_stats(r.smmu, &hs), 0);
    CHECK(hs.records_read == (uint64_t)records && hs.responses_sent == 30);
    teardown(&r);
}

/* A reset answers what the guest held INVALID, once; the driver sets the unit up again and
 * the next group goes the whole way. */
static void reset_then_serve(void)
{
    struct rig r;
    struct iopf_device_response a[8];
    setup(&r, 0, 0, 0, 0);
    report(r.dev, 1);
    report(r.dev, 2);
    CHECK_RC(iopf_viommu_pump(r.smmu, r.mem, 1), 2);
    CHECK_RC(iopf_viommu_reset(r.smmu), 0);
    CHECK_RC(iopf_compat_take_answers(r.dev, a, 8), 2);
    CHECK(a[0].code == 1 && a[1].code == 1);
    uint32_t cr0 = 1;
    CHECK_RC(iopf_viommu_mmio_read(r.smmu, SMMU_CR0, (uint8_t *)&cr0, 4), 0);
    CHECK(cr0 == 0);
    CHECK_RC(smmuv3_guest_init(&r.guest, 10), 0);
    report(r.dev, 4); /* two requests, Success */
    CHECK_RC(iopf_viommu_pump(r.smmu, r.mem, 11), 1);
    CHECK_RC(smmuv3_guest_handle_event(&r.guest, 12), 1);
    CHECK_RC(iopf_compat_take_answers(r.dev, a, 8), 1);
    CHECK(a[0].grpid == 4 && a[0].code == 0);
    CHECK_RC(iopf_compat_take_answers(r.dev, a, 8), 0);
    struct iopf_bridge_stats bs;
    CHECK_RC(iopf_viommu_stats(r.smmu, &bs), 0);
    int reset = -1;
    for (size_t i = 0; i < IOPF_HOST_ANSWER_KINDS; i++)
        if (strcmp(iopf_host_answer_name(i), "reset") == 0)
            reset = (int)i;
    CHECK(reset > 0);
    CHECK(bs.host_answers[reset] == 2 && bs.host_answers[0] == 1 && bs.outstanding == 0);
    teardown(&r);
}

int main(void)
{
    serves_pri_groups(0, 0, 0);
    serves_pri_groups(1, 0, 0);
    serves_pri_groups(0, 1, 0);
    serves_pri_groups(0, 0, 1);
    serves_pri_groups(1, 1, 1);
    serves_stalls(0);
    serves_stalls(1);
    reset_then_serve();
    return check_done("smmuv3");
}
