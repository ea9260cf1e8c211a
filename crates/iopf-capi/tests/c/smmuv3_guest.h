/*
 * A guest's SMMUv3 driver on the page request path, in C, for the C tests: what Linux 6.12's
 * arm-smmu-v3 driver does (arm_smmu_device_reset(), arm_smmu_setup_irqs(),
 * arm_smmu_priq_thread(), arm_smmu_evtq_thread(), arm_smmu_page_response()) reduced to what
 * PRI and stalls need. The Rust model of the same driver is
 * crates/iopf-viommu/src/guest/smmuv3_driver.rs.
 *
 * The "guest" calls the VMM's MMIO handler (iopf_viommu_mmio_read/write) directly and reads
 * and writes guest memory through the host mapping the VMM has of it.
 */
#ifndef SMMUV3_GUEST_H
#define SMMUV3_GUEST_H

#include <stddef.h>
#include <stdint.h>
#include "iopf.h"

/* Register offsets (SMMUv3 spec chapter 6; Linux's arm-smmu-v3.h). Page 1 at 0x10000. */
#define SMMU_IDR0 0x0
#define SMMU_IDR1 0x4
#define SMMU_CR0 0x20
#define SMMU_CR0ACK 0x24
#define SMMU_CR1 0x28
#define SMMU_CR2 0x2c
#define SMMU_IRQ_CTRL 0x50
#define SMMU_IRQ_CTRLACK 0x54
#define SMMU_GERROR 0x60
#define SMMU_GERRORN 0x64
#define SMMU_GERROR_IRQ_CFG0 0x68
#define SMMU_STRTAB_BASE 0x80
#define SMMU_STRTAB_BASE_CFG 0x88
#define SMMU_CMDQ_BASE 0x90
#define SMMU_CMDQ_PROD 0x98
#define SMMU_CMDQ_CONS 0x9c
#define SMMU_EVTQ_BASE 0xa0
#define SMMU_EVTQ_IRQ_CFG0 0xb0
#define SMMU_PRIQ_BASE 0xc0
#define SMMU_PRIQ_IRQ_CFG0 0xd0
#define SMMU_EVTQ_PROD 0x100a8
#define SMMU_EVTQ_CONS 0x100ac
#define SMMU_PRIQ_PROD 0x100c8
#define SMMU_PRIQ_CONS 0x100cc

#define SMMU_CR0_SMMUEN (1u << 0)
#define SMMU_CR0_PRIQEN (1u << 1)
#define SMMU_CR0_EVTQEN (1u << 2)
#define SMMU_CR0_CMDQEN (1u << 3)
#define SMMU_IRQ_CTRL_GERROR (1u << 0)
#define SMMU_IRQ_CTRL_PRIQ (1u << 1)
#define SMMU_IRQ_CTRL_EVTQ (1u << 2)
#define SMMU_IDR0_PRI (1u << 16)

/* The MSI doorbell the driver programs (outside guest RAM) and each interrupt's data. */
#define SMMU_GUEST_DOORBELL 0x08090040ull
#define SMMU_GUEST_MSI_EVTQ 0u
#define SMMU_GUEST_MSI_GERROR 1u
#define SMMU_GUEST_MSI_PRIQ 2u

/* How the guest answers one request: 0 Success, 1 Invalid (PCIe's codes); a group is
 * answered Success only if every one of its requests is. `pasid` is -1 without a PASID. */
typedef uint32_t (*smmuv3_guest_resolve_fn)(void *opaque, int64_t pasid, uint64_t addr);

#define SMMU_GUEST_PARTIALS 64
#define SMMU_GUEST_CMDQ_LOG2 8 /* 256 commands */
#define SMMU_GUEST_EVTQ_LOG2 7 /* 128 events */
#define SMMU_GUEST_PRIQ_LOG2 7 /* 128 PRI requests */

struct smmuv3_guest_partial {
    int used;
    uint32_t sid;
    uint16_t prg;
    uint32_t code;
};

struct smmuv3_guest {
    /* Set by the caller before smmuv3_guest_init(). */
    struct iopf_viommu *smmu;
    struct iopf_guest_memory *mem;
    uint8_t *ram;              /* the host mapping of guest-physical 0 */
    uint64_t base;             /* 4 KiB aligned: command queue, event queue, PRI queue,
                                * stream table from here (smmuv3_guest_bytes()) */
    const uint16_t *streams;   /* StreamIDs whose STEs are written */
    size_t n_streams;
    int ppar;                  /* STE.PPAR: Linux 6.12 leaves it 0 */
    int sync_sig_none;         /* CMD_SYNC with CS = SIG_NONE, completion by CMDQ_CONS;
                                * 0: MSI-poll (CS = SIG_IRQ at the sync itself), as Linux */
    smmuv3_guest_resolve_fn resolve;
    void *resolve_opaque;

    /* The driver's state. */
    uint32_t priq_cons, evtq_cons;
    uint64_t last_sync;        /* guest-physical address of the last MSI-poll CMD_SYNC */
    uint32_t last_sync_prod;   /* CMDQ_PROD after the last CMD_SYNC */
    uint64_t pending[2 * 256]; /* commands not yet submitted: two dwords each */
    size_t n_pending;
    struct smmuv3_guest_partial partial[SMMU_GUEST_PARTIALS];

    /* What it has done. */
    uint64_t answered;         /* groups answered (CMD_PRI_RESP + CMD_RESUME) */
    uint64_t pri_entries;      /* PRI queue entries read */
    uint64_t stop_markers;     /* of those, Stop markers */
    uint64_t stall_events;     /* stall records read (answered by CMD_RESUME) */
    uint64_t other_events;     /* other event records */
    uint64_t syncs;            /* CMD_SYNCs seen complete */
    uint64_t gerrors;          /* global errors acknowledged */
    uint64_t overflows;        /* PRI queue overflows acknowledged */
};

/* Bytes of guest memory from `base` the driver uses (queues and a stream table that covers
 * `max_sid`). */
uint64_t smmuv3_guest_bytes(uint16_t max_sid);

/* Programs the unit as Linux does at boot: CR0 = 0; CR1, CR2; the linear stream table; the
 * command queue, CMDQEN, CMD_CFGI_ALL and CMD_TLBI_NSNH_ALL each with a CMD_SYNC; the event
 * queue, EVTQEN; the PRI queue, PRIQEN; IRQ_CTRL = 0, the three MSIs, IRQ_CTRL = all;
 * SMMUEN. Each CR0 and IRQ_CTRL write polls its ACK. 0 or a negative errno. */
int smmuv3_guest_init(struct smmuv3_guest *g, uint64_t now_ns);

/* The interrupt handlers: the global errors (acknowledged), the event queue (stall records
 * answered with CMD_RESUME) and the PRI queue (each group answered with CMD_PRI_RESP when its
 * last request arrives; Stop markers dropped), then the answers submitted with a CMD_SYNC.
 * Returns the groups answered, -EIO when a CMD_SYNC did not complete, or a negative errno. */
int smmuv3_guest_handle_event(struct smmuv3_guest *g, uint64_t now_ns);

#endif
