/* See vtd_guest.h. */
#include "vtd_guest.h"

#include <errno.h>
#include <string.h>

#define PRQ_BYTES 4096u
#define IQ_BYTES 4096u
#define DESC 32u

static int w32(struct vtd_guest *g, uint64_t off, uint32_t v, uint64_t now)
{
    return iopf_viommu_mmio_write(g->vtd, g->mem, off, (const uint8_t *)&v, 4, now);
}

static int w64(struct vtd_guest *g, uint64_t off, uint64_t v, uint64_t now)
{
    return iopf_viommu_mmio_write(g->vtd, g->mem, off, (const uint8_t *)&v, 8, now);
}

static int r64(struct vtd_guest *g, uint64_t off, uint64_t *v)
{
    return iopf_viommu_mmio_read(g->vtd, off, (uint8_t *)v, 8);
}

static int r32(struct vtd_guest *g, uint64_t off, uint32_t *v)
{
    return iopf_viommu_mmio_read(g->vtd, off, (uint8_t *)v, 4);
}

#define TRY(x) do { int rc_ = (x); if (rc_ < 0) return rc_; } while (0)

int vtd_guest_init(struct vtd_guest *g, uint64_t now)
{
    g->iqt = 0;
    g->wait_seq = 0;
    memset(g->ram + g->status_addr, 0, 4);
    TRY(w64(g, VTD_IQT, 0, now));
    /* IQA: base, DW = 1 (256-bit descriptors, scalable mode), QS = 0 (one page). */
    TRY(w64(g, VTD_IQA, g->iq_base | (1u << 11), now));
    TRY(w32(g, VTD_GCMD, VTD_GCMD_QIE, now));
    TRY(w64(g, VTD_PQH, 0, now));
    TRY(w64(g, VTD_PQT, 0, now));
    TRY(w64(g, VTD_PQA, g->prq_base | 0 /* PQS: one page */, now));
    TRY(w32(g, VTD_PECTL + 4, 0x40, now));        /* PEDATA: vector 0x40 */
    TRY(w32(g, VTD_PECTL + 8, 0xfee00000u, now)); /* PEADDR */
    TRY(w32(g, VTD_PECTL + 12, 0, now));          /* PEUADDR */
    TRY(w32(g, VTD_PECTL, 0, now));               /* unmask */
    return 0;
}

static void put_desc(struct vtd_guest *g, const uint64_t qw[4])
{
    memcpy(g->ram + g->iq_base + g->iqt, qw, DESC);
    g->iqt = (g->iqt + DESC) % IQ_BYTES;
}

int vtd_guest_handle_event(struct vtd_guest *g, uint64_t now)
{
    uint64_t head, tail, iqh;
    uint32_t prs;
    int answered = 0;

    TRY(w32(g, VTD_PRS, VTD_PRS_PPR, now));
    TRY(r64(g, VTD_PQT, &tail));
    TRY(r64(g, VTD_PQH, &head));
    tail &= PRQ_BYTES - DESC;
    head &= PRQ_BYTES - DESC;
    while (head != tail) {
        uint64_t qw[4];
        memcpy(qw, g->ram + g->prq_base + head, DESC);
        g->descriptors++;
        head = (head + DESC) % PRQ_BYTES;
        if ((qw[0] & 0xff) != 1)
            continue; /* not a page request */
        /* Last Page In Group: the group is complete (requests before it need no answer). */
        if (!(qw[1] & (1u << 2)))
            continue;
        uint16_t rid = (uint16_t)(qw[0] >> 16);
        int pasid_present = (qw[0] >> 8) & 1;
        uint32_t pasid = (uint32_t)(qw[0] >> 32) & 0xfffff;
        uint16_t prg = (uint16_t)(qw[1] >> 3) & 0x1ff;
        uint64_t addr = qw[1] & ~0xfffull;
        /* Linux answers a request without a PASID INVALID (handle_bad_prq_event()). */
        uint32_t code = pasid_present ? g->resolve(g->resolve_opaque, pasid, addr) : 1;
        /* Page group response (type 9): code in bits 12-15 (0 Success, 1 Invalid). */
        uint64_t resp[4] = {
            0x9 | ((uint64_t)(code & 0xf) << 12) | ((uint64_t)rid << 16),
            ((uint64_t)prg << 3) | (1u << 2),
            0, 0,
        };
        if (pasid_present)
            resp[0] |= (1u << 4) | ((uint64_t)pasid << 32);
        /* Room for this response and a wait descriptor, as qi_submit_sync() waits for. */
        TRY(r64(g, VTD_IQH, &iqh));
        if ((iqh % IQ_BYTES + 2 * IQ_BYTES - g->iqt - DESC) % IQ_BYTES / DESC < 2)
            return -EAGAIN;
        put_desc(g, resp);
        g->wait_seq++;
        uint64_t wait[4] = {
            0x5 | (1u << 5) /* SW */ | (1u << 6) /* FN */ | ((uint64_t)g->wait_seq << 32),
            g->status_addr,
            0, 0,
        };
        put_desc(g, wait);
        TRY(w64(g, VTD_IQT, g->iqt, now));
        uint32_t status;
        memcpy(&status, g->ram + g->status_addr, 4);
        if (status != g->wait_seq)
            return -EIO; /* the unit did not complete the wait descriptor */
        answered++;
        g->answered++;
    }
    TRY(w64(g, VTD_PQH, tail, now));
    TRY(r32(g, VTD_PRS, &prs));
    if (prs & VTD_PRS_PRO)
        TRY(w32(g, VTD_PRS, VTD_PRS_PRO, now));
    return answered;
}
