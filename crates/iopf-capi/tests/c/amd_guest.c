/* See amd_guest.h. */
#include "amd_guest.h"

#include <errno.h>
#include <string.h>

#define CMD_OFF 0x0000u
#define EVT_OFF 0x2000u
#define SEM_OFF 0x4000u
#define PPR_OFF 0x5000u
#define BUF_BYTES 8192u /* 512 entries: Linux's CMD_BUFFER_SIZE, EVTLOG and PPRLOG defaults */
#define LEN_512 (9ull << 56)
#define ENTRY 16u

#define CMD_COMPL_WAIT 0x1u
#define CMD_COMPLETE_PPR 0x7u
#define CMD_COMPL_WAIT_STORE 0x1u
#define CMD_INV_IOMMU_PAGES_GN 0x4u
#define PPR_STATUS_SHIFT 12

#define PPR_REQ_FAULT 1u
#define PPR_FLAG_RSVD 0x080u
#define PPR_FLAG_GN 0x100u
#define PPR_TAG_LAST 0x200u

#define STATUS_LOOPS 16

static int w32(struct amd_guest *g, uint64_t off, uint32_t v, uint64_t now)
{
    return iopf_viommu_mmio_write(g->amd, g->mem, off, (const uint8_t *)&v, 4, now);
}

static int w64(struct amd_guest *g, uint64_t off, uint64_t v, uint64_t now)
{
    return iopf_viommu_mmio_write(g->amd, g->mem, off, (const uint8_t *)&v, 8, now);
}

static int r32(struct amd_guest *g, uint64_t off, uint32_t *v)
{
    return iopf_viommu_mmio_read(g->amd, off, (uint8_t *)v, 4);
}

static int r64(struct amd_guest *g, uint64_t off, uint64_t *v)
{
    return iopf_viommu_mmio_read(g->amd, off, (uint8_t *)v, 8);
}

#define TRY(x) do { int rc_ = (x); if (rc_ < 0) return rc_; } while (0)

/* iommu_feature_enable() / _disable(): read-modify-write of CONTROL. */
static int feature(struct amd_guest *g, unsigned bit, int on, uint64_t now)
{
    uint64_t c;
    TRY(r64(g, AMD_CONTROL, &c));
    c = on ? c | (1ull << bit) : c & ~(1ull << bit);
    return w64(g, AMD_CONTROL, c, now);
}

int amd_guest_init(struct amd_guest *g, uint64_t now)
{
    uint64_t efr;
    g->cmd_tail = 0;
    g->n_pending = 0;
    memset(g->partial, 0, sizeof(g->partial));
    /* A semaphore left from before (a reset) must not read as done. */
    memcpy(g->ram + g->base + SEM_OFF, &g->sem_val, 8);
    TRY(r64(g, AMD_EXT_FEATURES, &efr));
    uint64_t gt_ppr = AMD_FEATURE_GT | AMD_FEATURE_PPR | AMD_FEATURE_EPHSUP;
    if ((efr & gt_ppr) != gt_ppr)
        return -ENODEV;
    unsigned pasmax = (unsigned)((efr >> 32) & 0x1f);
    g->max_pasids = (uint32_t)((1ull << (pasmax + 1)) - 1);

    /* iommu_enable_command_buffer() with amd_iommu_reset_cmd_buffer(). */
    TRY(w64(g, AMD_CMD_BUF, (g->base + CMD_OFF) | LEN_512, now));
    TRY(feature(g, AMD_CONTROL_CMDBUF_EN, 0, now));
    TRY(w32(g, AMD_CMD_HEAD, 0, now));
    TRY(w32(g, AMD_CMD_TAIL, 0, now));
    TRY(feature(g, AMD_CONTROL_CMDBUF_EN, 1, now));
    TRY(feature(g, AMD_CONTROL_IOMMU_EN, 1, now));
    /* iommu_enable_event_buffer(). */
    TRY(w64(g, AMD_EVT_BUF, (g->base + EVT_OFF) | LEN_512, now));
    TRY(w32(g, AMD_EVT_HEAD, 0, now));
    TRY(w32(g, AMD_EVT_TAIL, 0, now));
    TRY(feature(g, AMD_CONTROL_EVT_LOG_EN, 1, now));
    /* iommu_init_irq(): the MSI capability (not reachable through the C API), EVT_INT_EN. */
    TRY(feature(g, AMD_CONTROL_EVT_INT_EN, 1, now));
    /* amd_iommu_enable_ppr_log(). */
    TRY(feature(g, AMD_CONTROL_PPR_EN, 1, now));
    TRY(w64(g, AMD_PPR_LOG, (g->base + PPR_OFF) | LEN_512, now));
    TRY(w32(g, AMD_PPR_HEAD, 0, now));
    TRY(w32(g, AMD_PPR_TAIL, 0, now));
    TRY(feature(g, AMD_CONTROL_PPRINT_EN, 1, now));
    TRY(feature(g, AMD_CONTROL_PPRLOG_EN, 1, now));
    return 0;
}

static void put(struct amd_guest *g, const uint32_t d[4])
{
    memcpy(g->ram + g->base + CMD_OFF + g->cmd_tail, d, ENTRY);
    g->cmd_tail = (g->cmd_tail + ENTRY) % BUF_BYTES;
}

/* Whether the last COMPLETION_WAIT has stored its value (wait_on_sem()). */
static int wait_done(struct amd_guest *g)
{
    uint64_t sem;
    memcpy(&sem, g->ram + g->base + SEM_OFF, 8);
    return (int64_t)(sem - g->sem_val) >= 0;
}

/* The pending completions, each batch followed by a COMPLETION_WAIT that stores the next
 * semaphore value (iommu_completion_wait()); CMD_TAIL written once per batch. */
static int submit(struct amd_guest *g, uint64_t now)
{
    size_t next = 0;
    uint64_t tail;
    TRY(r64(g, AMD_CMD_TAIL, &tail));
    g->cmd_tail = (tail % BUF_BYTES) & ~0xfull;
    while (next < g->n_pending) {
        uint64_t head;
        TRY(r64(g, AMD_CMD_HEAD, &head));
        head = (head % BUF_BYTES) & ~0xfull;
        /* __iommu_queue_command_sync(): keep more than 0x20 bytes free. */
        uint64_t free = (head + BUF_BYTES - g->cmd_tail - ENTRY) % BUF_BYTES / ENTRY;
        if (free < 3)
            break;
        size_t n = g->n_pending - next;
        if (n > free - 2)
            n = (size_t)free - 2;
        for (size_t i = 0; i < n; i++, next++)
            put(g, &g->pending[4 * next]);
        g->sem_val++;
        uint64_t sem = g->base + SEM_OFF;
        uint32_t wait[4] = {
            ((uint32_t)sem & ~7u) | CMD_COMPL_WAIT_STORE,
            ((uint32_t)(sem >> 32) & 0xfffff) | (CMD_COMPL_WAIT << 28),
            (uint32_t)g->sem_val,
            (uint32_t)(g->sem_val >> 32),
        };
        put(g, wait);
        TRY(w32(g, AMD_CMD_TAIL, (uint32_t)g->cmd_tail, now));
        if (!wait_done(g))
            break;
        g->waits++;
    }
    memmove(g->pending, g->pending + 4 * next, (g->n_pending - next) * 4 * sizeof(uint32_t));
    g->n_pending -= next;
    return g->n_pending == 0 && wait_done(g) ? 0 : -EIO;
}

/* amd_iommu_complete_ppr(): Linux's code (IOMMU_PAGE_RESP_*: 0 Success, 1 Invalid,
 * 2 Failure) in the status field; GN and the PASID with pri_tlp. */
static void respond(struct amd_guest *g, uint16_t devid, uint32_t pasid, uint16_t tag,
                    uint32_t code)
{
    if ((g->n_pending + 1) * 4 > sizeof(g->pending) / sizeof(g->pending[0]))
        return; /* more answers than the command buffer holds: cannot happen here */
    uint32_t *d = &g->pending[4 * g->n_pending++];
    d[0] = devid;
    d[1] = (g->pri_tlp ? pasid & 0xfffff : 0) | (CMD_COMPLETE_PPR << 28);
    d[2] = g->pri_tlp ? CMD_INV_IOMMU_PAGES_GN : 0;
    d[3] = (tag & 0x1ffu) | ((code & 0xfu) << PPR_STATUS_SHIFT);
    g->answered++;
}

static struct amd_guest_partial *partial(struct amd_guest *g, uint16_t devid, uint16_t prg)
{
    struct amd_guest_partial *free = NULL;
    for (int i = 0; i < AMD_GUEST_PARTIALS; i++) {
        struct amd_guest_partial *p = &g->partial[i];
        if (p->used && p->devid == devid && p->prg == prg)
            return p;
        if (!p->used && !free)
            free = p;
    }
    if (free)
        *free = (struct amd_guest_partial){ .used = 1, .devid = devid, .prg = prg };
    return free;
}

/* iommu_call_iopf_notifier(). */
static void take(struct amd_guest *g, const uint64_t qw[2])
{
    g->ppr_entries++;
    if ((qw[0] >> 60) != PPR_REQ_FAULT)
        return; /* "Unknown PPR request received" */
    uint16_t devid = (uint16_t)qw[0];
    uint32_t pasid = (uint32_t)((qw[0] >> 16) & 0xffff) | (uint32_t)(((qw[0] >> 42) & 0xf) << 16);
    uint16_t tag = (uint16_t)((qw[0] >> 32) & 0x3ff);
    uint16_t prg = tag & 0x1ff;
    uint32_t flags = (uint32_t)((qw[0] >> 48) & 0xfff);
    /* ppr_is_valid() and the PASID check: FAILURE at once, last or not. */
    if (!(flags & PPR_FLAG_GN) || (flags & PPR_FLAG_RSVD) || pasid == 0 || pasid >= g->max_pasids) {
        g->bad_entries++;
        respond(g, devid, pasid, prg, 2);
        return;
    }
    struct amd_guest_partial *p = partial(g, devid, prg);
    uint32_t code = g->resolve(g->resolve_opaque, pasid, qw[1] & ~0xfffull);
    if (p && code)
        p->code = code;
    if (!(tag & PPR_TAG_LAST))
        return;
    code = p ? p->code : 1;
    if (p)
        p->used = 0;
    respond(g, devid, pasid, prg, code);
}

/* amd_iommu_poll_ppr_log(): each entry read, zeroed (erratum 733), PPR_HEAD written. */
static int poll_ppr_log(struct amd_guest *g, uint64_t now)
{
    uint32_t head, tail;
    TRY(r32(g, AMD_PPR_HEAD, &head));
    TRY(r32(g, AMD_PPR_TAIL, &tail));
    head %= BUF_BYTES;
    tail %= BUF_BYTES;
    while (head != tail) {
        uint64_t qw[2];
        uint8_t *at = g->ram + g->base + PPR_OFF + head;
        memcpy(qw, at, ENTRY);
        memset(at, 0, ENTRY);
        head = (head + ENTRY) % BUF_BYTES;
        TRY(w32(g, AMD_PPR_HEAD, head, now));
        take(g, qw);
    }
    return 0;
}

/* iommu_poll_events(): each event counted and zeroed. */
static int poll_events(struct amd_guest *g, uint64_t now)
{
    uint32_t head, tail;
    TRY(r32(g, AMD_EVT_HEAD, &head));
    TRY(r32(g, AMD_EVT_TAIL, &tail));
    head %= BUF_BYTES;
    tail %= BUF_BYTES;
    while (head != tail) {
        memset(g->ram + g->base + EVT_OFF + head, 0, ENTRY);
        g->events++;
        head = (head + ENTRY) % BUF_BYTES;
        TRY(w32(g, AMD_EVT_HEAD, head, now));
    }
    return 0;
}

/* amd_iommu_restart_log() for the PPR log: only if PPR_RUN is clear. */
static int restart_ppr_log(struct amd_guest *g, uint64_t now)
{
    uint32_t status;
    TRY(r32(g, AMD_STATUS, &status));
    if (status & AMD_STATUS_PPR_RUN)
        return 0;
    g->restarts++;
    TRY(feature(g, AMD_CONTROL_PPRLOG_EN, 0, now));
    TRY(feature(g, AMD_CONTROL_PPRINT_EN, 0, now));
    TRY(w32(g, AMD_STATUS, AMD_STATUS_PPR_OVERFLOW, now));
    TRY(feature(g, AMD_CONTROL_PPRINT_EN, 1, now));
    return feature(g, AMD_CONTROL_PPRLOG_EN, 1, now);
}

int amd_guest_handle_event(struct amd_guest *g, uint64_t now)
{
    uint64_t before = g->answered;
    uint32_t status, mask = AMD_STATUS_EVT_INT | AMD_STATUS_EVT_OVERFLOW;
    TRY(r32(g, AMD_STATUS, &status));
    for (int i = 0; i < STATUS_LOOPS && (status & mask); i++) {
        TRY(w32(g, AMD_STATUS, mask, now));
        TRY(poll_events(g, now));
        TRY(r32(g, AMD_STATUS, &status));
    }
    mask = AMD_STATUS_PPR_INT | AMD_STATUS_PPR_OVERFLOW;
    TRY(r32(g, AMD_STATUS, &status));
    for (int i = 0; i < STATUS_LOOPS && (status & mask); i++) {
        if (status & AMD_STATUS_PPR_INT)
            g->ppr_ints++;
        TRY(w32(g, AMD_STATUS, mask, now));
        TRY(poll_ppr_log(g, now));
        if (status & AMD_STATUS_PPR_OVERFLOW)
            TRY(restart_ppr_log(g, now));
        TRY(r32(g, AMD_STATUS, &status));
    }
    TRY(submit(g, now));
    return (int)(g->answered - before);
}
