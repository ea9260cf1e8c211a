/* The VT-d bridge through the C API, with the C guest driver of examples/c: groups reach the
 * guest and its answers reach the device, over guest memory given as a mapped region and as
 * callbacks; memory the unit cannot reach, PRI turned off, a reset and the age limit each
 * answer the host groups (never strand them, never FAILURE). */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <sys/mman.h>

#include "check.h"
#include "guest_ram.h"
#include "vtd_guest.h"

#define RAM (1u << 20)
#define DEV 4u
#define RID 0x10

struct vmm {
    struct guest_ram ram;
    uint64_t msis;
    uint64_t last_addr;
    uint32_t last_data;
};

static void on_msi(void *opaque, uint64_t address, uint32_t data)
{
    struct vmm *v = opaque;
    v->msis++;
    v->last_addr = address;
    v->last_data = data;
}

static uint32_t resolve(void *opaque, uint32_t pasid, uint64_t addr)
{
    (void)opaque;
    return pasid == 5 && addr < 0x80000000ull ? 0 : 1;
}

static void report(struct iopf_compat_device *dev, uint32_t grpid, uint64_t addr, int n)
{
    for (int i = 0; i < n; i++) {
        struct iopf_fault_page_request r = {
            .flags = IOPF_FAULT_PAGE_REQUEST_PASID_VALID |
                     (i + 1 == n ? IOPF_FAULT_PAGE_REQUEST_LAST_PAGE : 0),
            .pasid = 5,
            .grpid = grpid,
            .perm = IOPF_PERM_READ,
            .addr = addr + (uint64_t)i * 4096,
        };
        CHECK_RC(iopf_compat_report(dev, &r), 0);
    }
}

struct rig {
    struct vmm vmm;
    struct iopf_compat_device *dev;
    struct iopf_viommu *vtd;
    struct iopf_guest_memory *mem;
    struct vtd_guest guest;
};

static void setup(struct rig *r, int callbacks, uint64_t age_limit_ns)
{
    struct iopf_host *host = NULL;
    memset(r, 0, sizeof(*r));
    r->mem = guest_ram_open(&r->vmm.ram, RAM, callbacks ? GUEST_RAM_CALLBACKS : GUEST_RAM_REGION);
    CHECK_RC(iopf_compat_new(DEV, IOPF_COMPAT_PASID_REQUIRED, &r->dev, &host), 0);
    struct iopf_endpoint ep = {
        .host_dev_id = DEV, .guest_rid = RID, .flags = IOPF_ENDPOINT_PRG_RESPONSE_PASID_REQUIRED,
    };
    struct iopf_bridge_config cfg = { .endpoints = &ep, .n_endpoints = 1, .age_limit_ns = age_limit_ns };
    CHECK_RC(iopf_viommu_new_vtd(host, &cfg, on_msi, &r->vmm, &r->vtd), 0);
    r->guest = (struct vtd_guest){
        .vtd = r->vtd, .mem = r->mem, .ram = r->vmm.ram.ram,
        .prq_base = 0x10000, .iq_base = 0x20000, .status_addr = 0x21000,
        .resolve = resolve,
    };
    CHECK_RC(vtd_guest_init(&r->guest, 0), 0);
}

static void teardown(struct rig *r)
{
    iopf_viommu_free(r->vtd);
    iopf_compat_device_free(r->dev);
    guest_ram_close(&r->vmm.ram, r->mem);
}

/* 40 groups of 1 to 3 requests, a quarter above what the guest maps: every one answered
 * once, by the guest, with its code, through the unit's MSI. */
static void serves_groups(int callbacks)
{
    struct rig r;
    struct iopf_device_response a[64];
    setup(&r, callbacks, 0);
    for (uint32_t g = 0; g < 40; g++)
        report(r.dev, g, (g % 4 == 3 ? 0x80000000ull : 0) + g * 0x100000ull, (int)(g % 3) + 1);
    CHECK_RC(iopf_viommu_pump(r.vtd, r.mem, 1), 40);
    CHECK(r.vmm.msis == 1);
    CHECK(r.vmm.last_addr == 0xfee00000u && r.vmm.last_data == 0x40);
    CHECK_RC(vtd_guest_handle_event(&r.guest, 2), 40);
    CHECK_RC(iopf_compat_take_answers(r.dev, a, 64), 40);
    int invalid = 0;
    for (int i = 0; i < 40; i++) {
        CHECK(a[i].flags & IOPF_DEVICE_RESPONSE_PASID);
        CHECK(a[i].pasid == 5);
        CHECK(a[i].code == (a[i].grpid % 4 == 3 ? 1u : 0u));
        invalid += a[i].code == 1;
    }
    CHECK(invalid == 10);
    struct iopf_bridge_stats bs;
    CHECK_RC(iopf_viommu_stats(r.vtd, &bs), 0);
    CHECK(bs.groups_read == 40 && bs.groups_posted == 40 && bs.host_answers[0] == 40);
    CHECK(bs.guest_codes[0] == 30 && bs.guest_codes[1] == 10 && bs.outstanding == 0);
    struct iopf_host_stats hs;
    CHECK_RC(iopf_viommu_host_stats(r.vtd, &hs), 0);
    CHECK(hs.kind == IOPF_HOST_COMPAT && hs.records_read == 79 && hs.responses_sent == 40);
    if (callbacks)
        CHECK(r.vmm.ram.writes > 0 && r.vmm.ram.reads > 0);
    teardown(&r);
}

static int kind(const char *name)
{
    for (size_t i = 0; i < IOPF_HOST_ANSWER_KINDS; i++)
        if (strcmp(iopf_host_answer_name(i), name) == 0)
            return (int)i;
    return -1;
}

/* A page request queue the unit cannot write: the groups are answered INVALID by the bridge
 * (the guest cannot see them), counted as guest_memory, and nothing waits forever. */
static void unreachable_queue(void)
{
    struct rig r;
    struct iopf_device_response a[8];
    setup(&r, 1, 0);
    r.vmm.ram.unreachable_from = 0x10000; /* the PRQ and the invalidation queue */
    report(r.dev, 1, 0x1000, 1);
    report(r.dev, 2, 0x2000, 2);
    CHECK(iopf_viommu_pump(r.vtd, r.mem, 1) >= 0);
    CHECK_RC(iopf_compat_take_answers(r.dev, a, 8), 2);
    CHECK(a[0].code == 1 && a[1].code == 1);
    struct iopf_bridge_stats bs;
    CHECK_RC(iopf_viommu_stats(r.vtd, &bs), 0);
    CHECK(kind("guest_memory") > 0);
    CHECK(bs.host_answers[kind("guest_memory")] == 2);
    CHECK(bs.outstanding == 0);
    teardown(&r);
}

/* PRI turned off, a reset, the age limit and the vIOMMU's free each answer what the guest
 * held: INVALID, INVALID, the aged code (Success), INVALID. */
static void held_groups_are_answered(void)
{
    struct rig r;
    struct iopf_device_response a[8];
    setup(&r, 0, 1000000 /* 1 ms */);
    report(r.dev, 1, 0x1000, 1);
    CHECK_RC(iopf_viommu_pump(r.vtd, r.mem, 10), 1);
    CHECK_RC(iopf_viommu_set_pri_enabled(r.vtd, RID, false), 0);
    CHECK_RC(iopf_compat_take_answers(r.dev, a, 8), 1);
    CHECK(a[0].grpid == 1 && a[0].code == 1);
    CHECK_RC(iopf_viommu_set_pri_enabled(r.vtd, RID, true), 0);

    report(r.dev, 2, 0x2000, 1);
    CHECK_RC(iopf_viommu_pump(r.vtd, r.mem, 20), 1);
    CHECK_RC(iopf_viommu_reset(r.vtd), 0);
    CHECK_RC(iopf_compat_take_answers(r.dev, a, 8), 1);
    CHECK(a[0].grpid == 2 && a[0].code == 1);
    CHECK_RC(vtd_guest_init(&r.guest, 30), 0);

    report(r.dev, 3, 0x3000, 1);
    CHECK_RC(iopf_viommu_pump(r.vtd, r.mem, 40), 1);
    CHECK_RC(iopf_viommu_pump(r.vtd, r.mem, 40 + 2000000), 0);
    CHECK_RC(iopf_compat_take_answers(r.dev, a, 8), 1);
    CHECK(a[0].grpid == 3 && a[0].code == 0);
    struct iopf_bridge_stats bs;
    CHECK_RC(iopf_viommu_stats(r.vtd, &bs), 0);
    CHECK(bs.host_answers[kind("aged")] == 1 && bs.host_answers[kind("reset")] == 1);
    CHECK(bs.host_answers[kind("pri_disabled")] == 1);

    report(r.dev, 4, 0x4000, 1);
    CHECK_RC(iopf_viommu_pump(r.vtd, r.mem, 50), 1);
    iopf_viommu_free(r.vtd);
    r.vtd = NULL;
    CHECK_RC(iopf_compat_take_answers(r.dev, a, 8), 1);
    CHECK(a[0].grpid == 4 && a[0].code == 1);
    teardown(&r);
}

int main(void)
{
    serves_groups(0);
    serves_groups(1);
    unreachable_queue();
    held_groups_are_answered();
    return check_done("vtd");
}
