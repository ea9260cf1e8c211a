/* See smmuv3_guest.h. */
#include "smmuv3_guest.h"

#include <errno.h>
#include <string.h>

#define CMDQ_OFF 0x0000u
#define EVTQ_OFF 0x1000u
#define PRIQ_OFF 0x2000u
#define STRTAB_OFF 0x3000u

#define Q_BASE_RWA (1ull << 62)
#define STRTAB_BASE_RA (1ull << 62)
#define STE_0_V 1ull
#define STE_0_CFG_S1_TRANS (5ull << 1)
#define STE_1_PPAR (1ull << 18)
#define Q_OVF (1u << 31)

#define CMD_CFGI_ALL 0x04
#define CMD_TLBI_NSNH_ALL 0x30
#define CMD_PRI_RESP 0x41
#define CMD_RESUME 0x44
#define CMD_SYNC 0x46
#define SYNC_CS_NONE 0ull
#define SYNC_CS_IRQ 1ull
#define SYNC_MSH_ISH (3ull << 22)
#define SYNC_MSIATTR_OIWB (0xfull << 24)

/* PRI queue entry (PRIQ_0_*, PRIQ_1_*). */
#define PRIQ_0_SSID(d) (((d) >> 32) & 0xfffff)
#define PRIQ_0_PERM_READ (1ull << 60)
#define PRIQ_0_PERM_WRITE (1ull << 61)
#define PRIQ_0_LAST (1ull << 62)
#define PRIQ_0_SSID_V (1ull << 63)
/* Event record (EVTQ_0_*, EVTQ_1_*). */
#define EVTQ_0_SSV (1ull << 11)
#define EVTQ_1_STALL (1ull << 31)

#define MAX_ROUNDS 64
#define ACK_POLLS 10

static int w32(struct smmuv3_guest *g, uint64_t off, uint32_t v, uint64_t now)
{
    return iopf_viommu_mmio_write(g->smmu, g->mem, off, (const uint8_t *)&v, 4, now);
}

static int w64(struct smmuv3_guest *g, uint64_t off, uint64_t v, uint64_t now)
{
    return iopf_viommu_mmio_write(g->smmu, g->mem, off, (const uint8_t *)&v, 8, now);
}

static int r32(struct smmuv3_guest *g, uint64_t off, uint32_t *v)
{
    return iopf_viommu_mmio_read(g->smmu, off, (uint8_t *)v, 4);
}

#define TRY(x) do { int rc_ = (x); if (rc_ < 0) return rc_; } while (0)

/* arm_smmu_write_reg_sync(): write, poll the ACK register; -ETIMEDOUT if it never matches. */
static int reg_sync(struct smmuv3_guest *g, uint64_t off, uint32_t v, uint64_t ack, uint64_t now)
{
    TRY(w32(g, off, v, now));
    for (int i = 0; i < ACK_POLLS; i++) {
        uint32_t got;
        TRY(r32(g, ack, &got));
        if (got == v)
            return 0;
    }
    return -ETIMEDOUT;
}

static unsigned strtab_log2(const struct smmuv3_guest *g)
{
    unsigned max = 0, log2 = 0;
    for (size_t i = 0; i < g->n_streams; i++)
        if (g->streams[i] > max)
            max = g->streams[i];
    while (max >> log2)
        log2++;
    return log2;
}

uint64_t smmuv3_guest_bytes(uint16_t max_sid)
{
    unsigned log2 = 0;
    while ((unsigned)max_sid >> log2)
        log2++;
    return STRTAB_OFF + (64ull << log2);
}

/* Queue pointers: index and wrap bits below 2^(log2 + 1), the overflow flag in bit 31. */
static uint32_t q_inc(uint32_t p, unsigned log2)
{
    uint32_t mask = (2u << log2) - 1;
    return (p & Q_OVF) | (((p & mask) + 1) & mask);
}

static int q_empty(uint32_t prod, uint32_t cons, unsigned log2)
{
    uint32_t mask = (2u << log2) - 1;
    return (prod & mask) == (cons & mask);
}

static void put_pending(struct smmuv3_guest *g, uint64_t dw0, uint64_t dw1)
{
    if (g->n_pending * 2 + 2 > sizeof(g->pending) / sizeof(g->pending[0]))
        return; /* more answers than the command queue holds: cannot happen here */
    g->pending[2 * g->n_pending] = dw0;
    g->pending[2 * g->n_pending + 1] = dw1;
    g->n_pending++;
}

static void put_cmd(struct smmuv3_guest *g, uint32_t prod, uint64_t dw0, uint64_t dw1)
{
    uint32_t idx = prod & ((1u << SMMU_GUEST_CMDQ_LOG2) - 1);
    uint8_t *at = g->ram + g->base + CMDQ_OFF + 16u * idx;
    memcpy(at, &dw0, 8);
    memcpy(at + 8, &dw1, 8);
}

/* Whether the last CMD_SYNC has completed: its first word reads 0 (MSI-poll), or CMDQ_CONS
 * has moved past it (SIG_NONE). */
static int sync_done(struct smmuv3_guest *g)
{
    if (g->sync_sig_none) {
        uint32_t cons, mask = (2u << SMMU_GUEST_CMDQ_LOG2) - 1;
        if (r32(g, SMMU_CMDQ_CONS, &cons) < 0)
            return 0;
        return (cons & mask) == (g->last_sync_prod & mask);
    }
    uint32_t w;
    memcpy(&w, g->ram + g->last_sync, 4);
    return w == 0;
}

/* Drops the first `n` pending commands (submitted). */
static void consumed(struct smmuv3_guest *g, size_t n)
{
    memmove(g->pending, g->pending + 2 * n, (g->n_pending - n) * 2 * sizeof(g->pending[0]));
    g->n_pending -= n;
}

/* arm_smmu_cmdq_issue_cmdlist() with sync: the pending commands in batches, each followed by
 * a CMD_SYNC; -EIO if a sync has not completed when PROD has been written, -EAGAIN if the
 * queue has no room (the rest stay pending). */
static int submit(struct smmuv3_guest *g, uint64_t now)
{
    const uint32_t entries = 1u << SMMU_GUEST_CMDQ_LOG2, mask = (entries << 1) - 1;
    size_t next = 0;
    while (next < g->n_pending) {
        uint32_t prod, cons;
        TRY(r32(g, SMMU_CMDQ_PROD, &prod));
        TRY(r32(g, SMMU_CMDQ_CONS, &cons));
        prod &= mask;
        cons &= mask;
        uint32_t used = (prod - cons) & mask;
        uint32_t free = entries - (used > entries ? entries : used);
        if (free < 2) {
            consumed(g, next);
            return -EAGAIN;
        }
        size_t n = g->n_pending - next;
        if (n > free - 1)
            n = free - 1;
        for (size_t i = 0; i < n; i++, next++) {
            put_cmd(g, prod, g->pending[2 * next], g->pending[2 * next + 1]);
            prod = (prod + 1) & mask;
        }
        uint64_t at = g->base + CMDQ_OFF + 16u * (prod & (entries - 1));
        uint64_t sync0 = CMD_SYNC | SYNC_MSH_ISH | SYNC_MSIATTR_OIWB;
        if (g->sync_sig_none) {
            put_cmd(g, prod, sync0 | (SYNC_CS_NONE << 12), 0);
        } else {
            /* MSI-poll: MSIADDR is the sync itself, MSIDATA 0. */
            put_cmd(g, prod, sync0 | (SYNC_CS_IRQ << 12), at & 0x000ffffffffffffcull);
        }
        g->last_sync = at;
        prod = (prod + 1) & mask;
        g->last_sync_prod = prod;
        int rc = w32(g, SMMU_CMDQ_PROD, prod, now);
        if (rc < 0 || !sync_done(g)) {
            consumed(g, next);
            return rc < 0 ? rc : -EIO;
        }
        g->syncs++;
    }
    g->n_pending = 0;
    return 0;
}

int smmuv3_guest_init(struct smmuv3_guest *g, uint64_t now)
{
    uint32_t idr0, enables;
    unsigned log2 = strtab_log2(g);
    uint64_t strtab = g->base + STRTAB_OFF;

    g->priq_cons = g->evtq_cons = 0;
    g->n_pending = 0;
    g->last_sync = 0;
    memset(g->partial, 0, sizeof(g->partial));
    TRY(r32(g, SMMU_IDR0, &idr0));
    if (!(idr0 & SMMU_IDR0_PRI))
        return -ENODEV;

    /* The stream table: zeroed, one STE per stream (V, stage-1 translate, PPAR). */
    memset(g->ram + strtab, 0, 64ull << log2);
    for (size_t i = 0; i < g->n_streams; i++) {
        uint64_t ste[2] = { STE_0_V | STE_0_CFG_S1_TRANS, g->ppar ? STE_1_PPAR : 0 };
        memcpy(g->ram + strtab + 64ull * g->streams[i], ste, sizeof(ste));
    }
    /* The queues start empty (and the driver reads nothing stale). */
    memset(g->ram + g->base, 0, STRTAB_OFF);

    TRY(reg_sync(g, SMMU_CR0, 0, SMMU_CR0ACK, now));
    /* CR1: ISH, write-back tables and queues; CR2: PTM | RECINVSID. */
    TRY(w32(g, SMMU_CR1, (3u << 10) | (1u << 8) | (1u << 6) | (3u << 4) | (1u << 2) | 1u, now));
    TRY(w32(g, SMMU_CR2, (1u << 2) | (1u << 1), now));
    TRY(w64(g, SMMU_STRTAB_BASE, strtab | STRTAB_BASE_RA, now));
    TRY(w32(g, SMMU_STRTAB_BASE_CFG, log2 /* FMT linear */, now));
    TRY(w64(g, SMMU_CMDQ_BASE, Q_BASE_RWA | (g->base + CMDQ_OFF) | SMMU_GUEST_CMDQ_LOG2, now));
    TRY(w32(g, SMMU_CMDQ_PROD, 0, now));
    TRY(w32(g, SMMU_CMDQ_CONS, 0, now));
    enables = SMMU_CR0_CMDQEN;
    TRY(reg_sync(g, SMMU_CR0, enables, SMMU_CR0ACK, now));
    /* Invalidate cached configuration (CMD_CFGI_ALL: SID range 31) and TLBs, each synced. */
    put_pending(g, CMD_CFGI_ALL, 31);
    TRY(submit(g, now));
    put_pending(g, CMD_TLBI_NSNH_ALL, 0);
    TRY(submit(g, now));

    TRY(w64(g, SMMU_EVTQ_BASE, Q_BASE_RWA | (g->base + EVTQ_OFF) | SMMU_GUEST_EVTQ_LOG2, now));
    TRY(w32(g, SMMU_EVTQ_PROD, 0, now));
    TRY(w32(g, SMMU_EVTQ_CONS, 0, now));
    enables |= SMMU_CR0_EVTQEN;
    TRY(reg_sync(g, SMMU_CR0, enables, SMMU_CR0ACK, now));

    TRY(w64(g, SMMU_PRIQ_BASE, Q_BASE_RWA | (g->base + PRIQ_OFF) | SMMU_GUEST_PRIQ_LOG2, now));
    TRY(w32(g, SMMU_PRIQ_PROD, 0, now));
    TRY(w32(g, SMMU_PRIQ_CONS, 0, now));
    enables |= SMMU_CR0_PRIQEN;
    TRY(reg_sync(g, SMMU_CR0, enables, SMMU_CR0ACK, now));

    /* arm_smmu_setup_irqs(): interrupts off, the MSIs (arm_smmu_write_msi_msg()), on. */
    TRY(reg_sync(g, SMMU_IRQ_CTRL, 0, SMMU_IRQ_CTRLACK, now));
    const uint64_t cfg0[3] = { SMMU_EVTQ_IRQ_CFG0, SMMU_GERROR_IRQ_CFG0, SMMU_PRIQ_IRQ_CFG0 };
    const uint32_t data[3] = { SMMU_GUEST_MSI_EVTQ, SMMU_GUEST_MSI_GERROR, SMMU_GUEST_MSI_PRIQ };
    for (int i = 0; i < 3; i++)
        TRY(w64(g, cfg0[i], 0, now));
    for (int i = 0; i < 3; i++) {
        TRY(w64(g, cfg0[i], SMMU_GUEST_DOORBELL & 0x000ffffffffffffcull, now));
        TRY(w32(g, cfg0[i] + 8, data[i], now));  /* IRQ_CFG1: data */
        TRY(w32(g, cfg0[i] + 12, 1, now));       /* IRQ_CFG2: Device-nGnRE */
    }
    TRY(reg_sync(g, SMMU_IRQ_CTRL, SMMU_IRQ_CTRL_GERROR | SMMU_IRQ_CTRL_PRIQ | SMMU_IRQ_CTRL_EVTQ,
                 SMMU_IRQ_CTRLACK, now));
    enables |= SMMU_CR0_SMMUEN;
    TRY(reg_sync(g, SMMU_CR0, enables, SMMU_CR0ACK, now));
    return 0;
}

/* arm_smmu_gerror_handler(): every active error acknowledged (GERRORN = GERROR). */
static int gerror_handler(struct smmuv3_guest *g, uint64_t now)
{
    uint32_t gerror, gerrorn;
    TRY(r32(g, SMMU_GERROR, &gerror));
    TRY(r32(g, SMMU_GERRORN, &gerrorn));
    if (!((gerror ^ gerrorn) & 0x1fdu))
        return 0;
    g->gerrors++;
    return w32(g, SMMU_GERRORN, gerror, now);
}

/* The group's partial entry: found, or a free one taken. */
static struct smmuv3_guest_partial *partial(struct smmuv3_guest *g, uint32_t sid, uint16_t prg)
{
    struct smmuv3_guest_partial *free = NULL;
    for (int i = 0; i < SMMU_GUEST_PARTIALS; i++) {
        struct smmuv3_guest_partial *p = &g->partial[i];
        if (p->used && p->sid == sid && p->prg == prg)
            return p;
        if (!p->used && !free)
            free = p;
    }
    if (free)
        *free = (struct smmuv3_guest_partial){ .used = 1, .sid = sid, .prg = prg, .code = 0 };
    return free;
}

/* One PRI queue entry, as a PRI-capable driver with io-pgfault takes it. */
static void take_ppr(struct smmuv3_guest *g, const uint64_t dw[2])
{
    uint32_t sid = (uint32_t)dw[0];
    int ssv = (dw[0] & PRIQ_0_SSID_V) != 0;
    uint32_t ssid = (uint32_t)PRIQ_0_SSID(dw[0]);
    int last = (dw[0] & PRIQ_0_LAST) != 0;
    uint16_t prg = (uint16_t)(dw[1] & 0x1ff);
    uint64_t addr = dw[1] & ~0xfffull;

    g->pri_entries++;
    if (last && ssv && !(dw[0] & (PRIQ_0_PERM_READ | PRIQ_0_PERM_WRITE))) {
        g->stop_markers++; /* a Stop PASID marker: no response */
        return;
    }
    struct smmuv3_guest_partial *p = partial(g, sid, prg);
    uint32_t code = g->resolve(g->resolve_opaque, ssv ? (int64_t)ssid : -1, addr);
    if (p && code != 0)
        p->code = code;
    if (!last)
        return;
    code = p ? p->code : 1;
    if (p)
        p->used = 0;
    /* CMD_PRI_RESP: RESP DENY 0 (Invalid), FAIL 1, SUCC 2. */
    uint64_t resp = code == 0 ? 2 : code == 1 ? 0 : 1;
    uint64_t dw0 = CMD_PRI_RESP | ((uint64_t)sid << 32);
    if (ssv)
        dw0 |= (1ull << 11) | ((uint64_t)ssid << 12);
    put_pending(g, dw0, prg | (resp << 12));
    g->answered++;
}

/* One event record: a stall goes to io-pgfault as a one-page group, answered by CMD_RESUME
 * (arm_smmu_page_response(): Success RETRY 1, otherwise ABORT 2). */
static void take_event(struct smmuv3_guest *g, const uint64_t dw[4])
{
    uint8_t id = (uint8_t)dw[0];
    if (id < 0x10 || id > 0x13 || !(dw[1] & EVTQ_1_STALL)) {
        g->other_events++;
        return;
    }
    g->stall_events++;
    uint32_t sid = (uint32_t)(dw[0] >> 32);
    int64_t pasid = dw[0] & EVTQ_0_SSV ? (int64_t)((dw[0] >> 12) & 0xfffff) : -1;
    uint16_t stag = (uint16_t)dw[1];
    uint32_t code = g->resolve(g->resolve_opaque, pasid, dw[2] & ~0xfffull);
    uint64_t resp = code == 0 ? 1 : 2;
    put_pending(g, CMD_RESUME | (resp << 12) | ((uint64_t)sid << 32), stag);
    g->answered++;
}

/* arm_smmu_evtq_thread() / arm_smmu_priq_thread(): consume to PROD, writing CONS after each
 * entry, read PROD again until empty, then acknowledge an overflow (queue_sync_cons_ovf()). */
static int drain(struct smmuv3_guest *g, int pri, uint64_t now)
{
    const unsigned log2 = pri ? SMMU_GUEST_PRIQ_LOG2 : SMMU_GUEST_EVTQ_LOG2;
    const uint64_t prod_reg = pri ? SMMU_PRIQ_PROD : SMMU_EVTQ_PROD;
    const uint64_t cons_reg = pri ? SMMU_PRIQ_CONS : SMMU_EVTQ_CONS;
    const uint64_t qbase = g->base + (pri ? PRIQ_OFF : EVTQ_OFF);
    const unsigned bytes = pri ? 16 : 32;
    uint32_t *cons = pri ? &g->priq_cons : &g->evtq_cons;
    uint32_t prod;

    for (int round = 0; round < MAX_ROUNDS; round++) {
        TRY(r32(g, prod_reg, &prod));
        if (q_empty(prod, *cons, log2))
            break;
        while (!q_empty(prod, *cons, log2)) {
            uint64_t dw[4];
            uint32_t idx = *cons & ((1u << log2) - 1);
            memcpy(dw, g->ram + qbase + (uint64_t)bytes * idx, bytes);
            if (pri)
                take_ppr(g, dw);
            else
                take_event(g, dw);
            *cons = q_inc(*cons, log2);
            TRY(w32(g, cons_reg, *cons, now));
        }
    }
    TRY(r32(g, prod_reg, &prod));
    if ((prod & Q_OVF) != (*cons & Q_OVF)) {
        g->overflows++;
        /* The groups whose last request was lost are answered by the SMMU (spec §8.1.1). */
        if (pri)
            memset(g->partial, 0, sizeof(g->partial));
        *cons = (prod & Q_OVF) | (*cons & ~Q_OVF);
        TRY(w32(g, cons_reg, *cons, now));
    }
    return 0;
}

int smmuv3_guest_handle_event(struct smmuv3_guest *g, uint64_t now)
{
    uint64_t before = g->answered;
    TRY(gerror_handler(g, now));
    TRY(drain(g, 0, now));
    TRY(drain(g, 1, now));
    TRY(submit(g, now));
    return (int)(g->answered - before);
}
