/*
 * A guest's AMD IOMMU driver on the page request path, in C, for the C tests: what Linux
 * 6.12 does (drivers/iommu/amd/init.c, ppr.c, iommu.c) reduced to what peripheral page
 * requests need. The Rust model of the same driver is
 * crates/iopf-viommu/src/guest/amd_driver.rs.
 *
 * The "guest" calls the VMM's MMIO handler (iopf_viommu_mmio_read/write) directly and reads
 * and writes guest memory through the host mapping the VMM has of it.
 */
#ifndef AMD_GUEST_H
#define AMD_GUEST_H

#include <stdint.h>
#include "iopf.h"

/* Register offsets (amd_iommu_types.h, MMIO_*) and the bits used here. */
#define AMD_CMD_BUF 0x0008
#define AMD_EVT_BUF 0x0010
#define AMD_CONTROL 0x0018
#define AMD_EXT_FEATURES 0x0030
#define AMD_PPR_LOG 0x0038
#define AMD_CMD_HEAD 0x2000
#define AMD_CMD_TAIL 0x2008
#define AMD_EVT_HEAD 0x2010
#define AMD_EVT_TAIL 0x2018
#define AMD_STATUS 0x2020
#define AMD_PPR_HEAD 0x2030
#define AMD_PPR_TAIL 0x2038

#define AMD_CONTROL_IOMMU_EN 0
#define AMD_CONTROL_EVT_LOG_EN 2
#define AMD_CONTROL_EVT_INT_EN 3
#define AMD_CONTROL_CMDBUF_EN 12
#define AMD_CONTROL_PPRLOG_EN 13
#define AMD_CONTROL_PPRINT_EN 14
#define AMD_CONTROL_PPR_EN 15

#define AMD_STATUS_EVT_OVERFLOW (1u << 0)
#define AMD_STATUS_EVT_INT (1u << 1)
#define AMD_STATUS_CMDBUF_RUN (1u << 4)
#define AMD_STATUS_PPR_OVERFLOW (1u << 5)
#define AMD_STATUS_PPR_INT (1u << 6)
#define AMD_STATUS_PPR_RUN (1u << 7)

#define AMD_FEATURE_PPR (1ull << 1)
#define AMD_FEATURE_GT (1ull << 4)
#define AMD_FEATURE_EPHSUP (1ull << 50)

/* How the guest answers one request: 0 Success, 1 Invalid (PCIe's codes); a group is
 * answered Success only if every one of its requests is. */
typedef uint32_t (*amd_guest_resolve_fn)(void *opaque, uint32_t pasid, uint64_t addr);

#define AMD_GUEST_PARTIALS 64

struct amd_guest_partial {
    int used;
    uint16_t devid;
    uint16_t prg;
    uint32_t code;
};

struct amd_guest {
    /* Set by the caller before amd_guest_init(). */
    struct iopf_viommu *amd;
    struct iopf_guest_memory *mem;
    uint8_t *ram;          /* the host mapping of guest-physical 0 */
    uint64_t base;         /* 4 KiB aligned: command buffer (8 KiB), event log (8 KiB), the
                            * completion semaphore, PPR log (8 KiB) from here (0x7000 bytes) */
    int pri_tlp;           /* the device's PRG Response PASID Required: GN in completions */
    amd_guest_resolve_fn resolve;
    void *resolve_opaque;

    /* The driver's state. */
    uint32_t max_pasids;
    uint64_t cmd_tail;
    uint64_t sem_val;
    uint32_t pending[4 * 256]; /* COMPLETE_PPR_REQUESTs not yet submitted */
    size_t n_pending;
    struct amd_guest_partial partial[AMD_GUEST_PARTIALS];

    /* What it has done. */
    uint64_t answered;     /* groups answered */
    uint64_t ppr_entries;  /* PPR log entries read */
    uint64_t bad_entries;  /* of those answered FAILURE at once (no GN, bad PASID) */
    uint64_t events;       /* event log entries read */
    uint64_t waits;        /* COMPLETION_WAITs seen stored */
    uint64_t ppr_ints;     /* times the handler found STATUS.PPR_INT set */
    uint64_t restarts;     /* PPR log restarts after an overflow */
};

#define AMD_GUEST_BYTES 0x7000u

/* Programs the unit as Linux does at boot: the command buffer (512 entries), IOMMU_EN, the
 * event log, EVT_INT_EN and, when the EFR has GT, PPR and EPHSUP, PPR_EN, the PPR log (512
 * entries), PPRINT_EN, PPRLOG_EN. (The IOMMU's MSI is in its PCI configuration space:
 * the VMM passes it on with iopf_viommu_amd_set_msi.) 0, -ENODEV without PPR support, or a negative errno. */
int amd_guest_init(struct amd_guest *g, uint64_t now_ns);

/* amd_iommu_int_thread(): while STATUS has the event log's or the PPR log's INT or OVERFLOW
 * bit, clear them, poll the log (each entry zeroed, PPR_HEAD written after each; each group
 * answered when its last request arrives), restart it after an overflow; then the answers as
 * COMPLETE_PPR_REQUEST commands followed by a COMPLETION_WAIT storing to the semaphore.
 * Returns the groups answered, -EIO when the COMPLETION_WAIT did not store, or a negative
 * errno. */
int amd_guest_handle_event(struct amd_guest *g, uint64_t now_ns);

#endif
