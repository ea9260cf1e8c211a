/*
 * A guest's VT-d page request driver, in C, for the example VMM and the C tests: what Linux
 * 6.12 does (drivers/iommu/intel/prq.c, dmar.c) reduced to what the page request path needs.
 *
 * In a real VMM this is the guest kernel, behind MMIO traps: here the "guest" calls the VMM's
 * MMIO handler (iopf_viommu_mmio_read/write) directly, and reads and writes guest memory
 * through the same host mapping the vIOMMU was given.
 */
#ifndef VTD_GUEST_H
#define VTD_GUEST_H

#include <stdint.h>
#include "iopf.h"

/* VT-d register offsets (VT-d 4.1 §11.4) and the bits used here. */
#define VTD_GCMD 0x18
#define VTD_IQH 0x80
#define VTD_IQT 0x88
#define VTD_IQA 0x90
#define VTD_PQH 0xc0
#define VTD_PQT 0xc8
#define VTD_PQA 0xd0
#define VTD_PRS 0xdc
#define VTD_PECTL 0xe0
#define VTD_GCMD_QIE (1u << 26)
#define VTD_PRS_PPR 1u
#define VTD_PRS_PRO 2u

/* How the guest answers a group: its code for (pasid, address), IOPF_PAGE_RESP_*-like:
 * 0 Success, 1 Invalid Request. */
typedef uint32_t (*vtd_guest_resolve_fn)(void *opaque, uint32_t pasid, uint64_t addr);

struct vtd_guest {
    struct iopf_viommu *vtd;
    struct iopf_guest_memory *mem;
    uint8_t *ram;          /* the host mapping of guest-physical 0 */
    uint64_t prq_base;     /* page request queue: one page, 128 descriptors */
    uint64_t iq_base;      /* invalidation queue: one page, 128 256-bit descriptors */
    uint64_t status_addr;  /* the wait descriptor's status word */
    uint64_t iqt;
    uint32_t wait_seq;
    vtd_guest_resolve_fn resolve;
    void *resolve_opaque;
    uint64_t answered;     /* groups answered */
    uint64_t descriptors;  /* page request descriptors read */
};

/* Programs the unit as Linux does at boot: invalidation queue on, page request queue set up,
 * the page request event's MSI unmasked. 0 or a negative errno (iopf_last_error says why). */
int vtd_guest_init(struct vtd_guest *g, uint64_t now_ns);

/* The page request interrupt's handler (prq_event_thread()): reads every descriptor, answers
 * each group whose last request it sees through the invalidation queue, with a wait
 * descriptor, and moves PQH. Returns the groups answered, or a negative errno. */
int vtd_guest_handle_event(struct vtd_guest *g, uint64_t now_ns);

#endif
