/* VT-d 3.x private data through the C API (from the second review). argv[1] = "compat" (the
 * compatible queue: no private data on the iommufd record, so the unit is 4.0) or a shared-queue
 * socket path (a Rust producer pushes one group with PRIV_DATA {0x1111..., 0x2222...}): the
 * guest sees PRIV_DATA_PRESENT and the data in qw2/qw3, echoes it with PDP, and the answer
 * goes back. Regression: over the shared queue the guest got no private data. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <poll.h>
#include <sys/mman.h>

#include "check.h"
#include "vtd_guest.h"

#define RAM (1u << 20)
static int msis;
static void on_msi(void *o, uint64_t a, uint32_t d) { (void)o; (void)a; (void)d; msis++; }
static uint32_t ok(void *o, uint32_t p, uint64_t a) { (void)o; (void)p; (void)a; return 0; }

static uint64_t seen_qw[4];
static int seen;

/* Like vtd_guest_handle_event, but a VT-d 3.x guest: echoes private data (PDP, qw2/qw3). */
static int handle(struct vtd_guest *g)
{
    uint64_t head, tail, iqh;
    uint32_t prs = VTD_PRS_PPR;
    int n = 0;
    iopf_viommu_mmio_write(g->vtd, g->mem, VTD_PRS, (uint8_t *)&prs, 4, 0);
    iopf_viommu_mmio_read(g->vtd, VTD_PQT, (uint8_t *)&tail, 8);
    iopf_viommu_mmio_read(g->vtd, VTD_PQH, (uint8_t *)&head, 8);
    while (head != tail) {
        uint64_t qw[4];
        memcpy(qw, g->ram + g->prq_base + head, 32);
        head = (head + 32) % 4096;
        memcpy(seen_qw, qw, sizeof qw);
        seen++;
        if (!(qw[1] & 4))
            continue;
        uint64_t resp[4] = {
            0x9 | (qw[0] & 0xffff0000ull) | (qw[0] & (0xfffffull << 32)) |
                ((qw[0] & (1u << 8)) ? (1u << 4) : 0),
            (qw[1] & (0x1ffull << 3)) | 4, 0, 0 };
        if (qw[0] & (1u << 9)) { /* Private Data Present: echo it (PDP) */
            resp[0] |= 1u << 5;
            resp[2] = qw[2];
            resp[3] = qw[3];
        }
        iopf_viommu_mmio_read(g->vtd, VTD_IQH, (uint8_t *)&iqh, 8);
        memcpy(g->ram + g->iq_base + g->iqt, resp, 32);
        g->iqt = (g->iqt + 32) % 4096;
        CHECK_RC(iopf_viommu_mmio_write(g->vtd, g->mem, VTD_IQT, (uint8_t *)&g->iqt, 8, 0), 0);
        n++;
    }
    iopf_viommu_mmio_write(g->vtd, g->mem, VTD_PQH, (uint8_t *)&tail, 8, 0);
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    int compat = !strcmp(argv[1], "compat");
    uint8_t *ram = mmap(NULL, RAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(ram != MAP_FAILED);
    struct iopf_guest_region reg = { .guest_addr = 0, .size = RAM, .host_addr = ram };
    struct iopf_guest_memory *mem = NULL;
    CHECK_RC(iopf_guest_memory_from_regions(&reg, 1, &mem), 0);

    struct iopf_compat_device *dev = NULL;
    struct iopf_host *host = NULL;
    if (compat)
        CHECK_RC(iopf_compat_new(5, 0, &dev, &host), 0);
    else
        CHECK_RC(iopf_host_attach(argv[1], 64, 30000, &host), 0);
    if (!host)
        return check_done("private_data");
    struct iopf_endpoint ep = { .host_dev_id = 5, .guest_rid = 8 };
    struct iopf_bridge_config cfg = { .endpoints = &ep, .n_endpoints = 1,
                                      .flags = IOPF_BRIDGE_PRIVATE_DATA };
    struct iopf_viommu *v = NULL;
    CHECK_RC(iopf_viommu_new_vtd(host, &cfg, on_msi, NULL, &v), 0);
    uint32_t ver = 0;
    CHECK_RC(iopf_viommu_mmio_read(v, 0, (uint8_t *)&ver, 4), 0);
    printf("VER %#x\n", ver);
    CHECK(ver == (compat ? 0x40u : 0x30u));
    struct vtd_guest g = { .vtd = v, .mem = mem, .ram = ram, .prq_base = 0x10000,
                           .iq_base = 0x20000, .status_addr = 0x21000, .resolve = ok };
    CHECK_RC(vtd_guest_init(&g, 0), 0);

    if (compat) {
        struct iopf_fault_page_request r = {
            .flags = IOPF_FAULT_PAGE_REQUEST_PASID_VALID | IOPF_FAULT_PAGE_REQUEST_LAST_PAGE |
                     IOPF_FAULT_PAGE_REQUEST_PRIV_DATA,
            .pasid = 3, .grpid = 7, .perm = IOPF_PERM_READ, .addr = 0x1000,
            .private_data = { 0x1111111111111111ull, 0x2222222222222222ull },
        };
        CHECK_RC(iopf_compat_report(dev, &r), 0);
    }
    int answered = 0;
    for (int turn = 0; turn < 300 && answered == 0; turn++) {
        int p = iopf_viommu_pump(v, mem, 0);
        if (p < 0) { printf("pump %d: %s\n", p, iopf_last_error()); break; }
        answered += handle(&g);
        if (answered)
            break;
        if (p == 0 && !compat) {
            struct pollfd pf = { .fd = iopf_viommu_host_fd(v), .events = POLLIN };
            if (iopf_viommu_host_arm(v, IOPF_READY_FAULTS) == 0)
                poll(&pf, 1, 100);
            continue;
        }
    }
    CHECK(answered == 1);
    printf("descriptor qw0 %#llx qw2 %#llx qw3 %#llx\n", (unsigned long long)seen_qw[0],
           (unsigned long long)seen_qw[2], (unsigned long long)seen_qw[3]);
    if (!compat) {
        CHECK(seen_qw[0] & (1u << 9));
        CHECK(seen_qw[2] == 0x1111111111111111ull && seen_qw[3] == 0x2222222222222222ull);
    } else {
        CHECK(!(seen_qw[0] & (1u << 9)) && seen_qw[2] == 0 && seen_qw[3] == 0);
    }
    struct iopf_bridge_stats st;
    CHECK_RC(iopf_viommu_stats(v, &st), 0);
    printf("stats read %llu posted %llu dropped %llu refused %llu outstanding %llu answers",
           (unsigned long long)st.groups_read, (unsigned long long)st.groups_posted,
           (unsigned long long)st.records_dropped, (unsigned long long)st.host_refused,
           (unsigned long long)st.outstanding);
    for (int i = 0; i < IOPF_HOST_ANSWER_KINDS; i++)
        printf(" %s=%llu", iopf_host_answer_name(i), (unsigned long long)st.host_answers[i]);
    printf("\n");
    struct iopf_host_stats hs;
    CHECK_RC(iopf_viommu_host_stats(v, &hs), 0);
    printf("host: read %llu sent %llu rejected %llu lost %llu corrupt %llu broken %llu gone %u\n",
           (unsigned long long)hs.records_read, (unsigned long long)hs.responses_sent,
           (unsigned long long)hs.rejected, (unsigned long long)hs.lost,
           (unsigned long long)hs.corrupt, (unsigned long long)hs.answered_broken, hs.peer_gone);
    CHECK(st.host_answers[0] == 1 && st.guest_codes[0] == 1 && st.host_refused == 0);
    if (compat) {
        struct iopf_device_response a[2];
        CHECK_RC(iopf_compat_take_answers(dev, a, 2), 1);
        printf("device response flags %#x pd %#llx %#llx code %u\n", a[0].flags,
               (unsigned long long)a[0].private_data[0], (unsigned long long)a[0].private_data[1], a[0].code);
        CHECK(a[0].grpid == 7 && a[0].code == 0);
        iopf_compat_device_free(dev);
    }
    iopf_viommu_free(v);
    iopf_guest_memory_free(mem);
    munmap(ram, RAM);
    return check_done("private_data");
}
