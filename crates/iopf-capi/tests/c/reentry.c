/* Regression (review of the C API): a guest pointed its VT-d page request queue at the unit's
 * own registers; the VMM's guest memory accessors route DMA writes to MMIO, as QEMU's do, so
 * the unit's descriptor write called iopf_viommu_mmio_write on the same vIOMMU from inside
 * iopf_viommu_pump: aliased mutable state, and an unbounded re-entry that overflowed the
 * stack (SIGSEGV). Now a call on a vIOMMU from within one of its own callbacks is refused
 * with -EDEADLK and changes nothing; the group is answered once; a free of the vIOMMU or of
 * the guest memory it is using, from inside a callback, is refused too. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <sys/mman.h>

#include "check.h"
#include "vtd_guest.h"

#define RAM (1u << 20)
#define MMIO_BASE 0xfed90000ull /* where the VMM maps the unit's registers */

static uint8_t *ram;
static struct iopf_viommu *v;
static struct iopf_guest_memory *mem;
static int nested, nested_refused, free_tried;

static void route(uint64_t gpa, const void *buf, size_t len)
{
    for (size_t off = 0; off + 8 <= len; off += 8) {
        nested++;
        int rc = iopf_viommu_mmio_write(v, mem, gpa - MMIO_BASE + off, (const uint8_t *)buf + off, 8, 0);
        if (rc == -EDEADLK)
            nested_refused++;
    }
}

static int cb_read(void *o, uint64_t gpa, void *buf, size_t len)
{
    (void)o;
    if (gpa >= RAM || len > RAM - gpa)
        return -EFAULT;
    memcpy(buf, ram + gpa, len);
    return 0;
}

static int cb_write(void *o, uint64_t gpa, const void *buf, size_t len)
{
    (void)o;
    if (gpa >= MMIO_BASE && gpa < MMIO_BASE + 0x1000) {
        route(gpa, buf, len);
        return 0;
    }
    if (gpa >= RAM || len > RAM - gpa)
        return -EFAULT;
    memcpy(ram + gpa, buf, len);
    return 0;
}

static void on_msi(void *o, uint64_t addr, uint32_t data)
{
    (void)o;
    uint8_t b[4];
    /* A read of the unit from inside its own interrupt callback: refused. */
    CHECK_RC(iopf_viommu_mmio_read(v, VTD_PQT, b, 4), -EDEADLK);
    CHECK_MSG("called into it");
    /* And frees of the vIOMMU and of the memory the running call uses: refused, nothing
     * freed (valgrind would see the use after free). */
    iopf_viommu_free(v);
    CHECK_MSG("iopf_viommu_free from within");
    iopf_guest_memory_free(mem);
    CHECK_MSG("iopf_guest_memory_free while a vIOMMU call uses it");
    free_tried++;
    if (addr >= MMIO_BASE && addr < MMIO_BASE + 0x1000) {
        uint64_t d = data;
        route(addr, &d, 8);
    }
}

static uint32_t resolve(void *o, uint32_t p, uint64_t a)
{
    (void)o; (void)p; (void)a;
    return 0;
}

int main(void)
{
    ram = mmap(NULL, RAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(ram != MAP_FAILED);
    struct iopf_guest_memory_ops ops = { .read = cb_read, .write = cb_write };
    CHECK_RC(iopf_guest_memory_from_callbacks(&ops, NULL, &mem), 0);
    struct iopf_compat_device *dev = NULL;
    struct iopf_host *host = NULL;
    CHECK_RC(iopf_compat_new(1, 0, &dev, &host), 0);
    struct iopf_endpoint ep = { .host_dev_id = 1, .guest_rid = 8 };
    struct iopf_bridge_config cfg = { .endpoints = &ep, .n_endpoints = 1 };
    CHECK_RC(iopf_viommu_new_vtd(host, &cfg, on_msi, NULL, &v), 0);
    struct vtd_guest g = {
        .vtd = v, .mem = mem, .ram = ram, .prq_base = 0x10000, .iq_base = 0x20000,
        .status_addr = 0x21000, .resolve = resolve,
    };
    CHECK_RC(vtd_guest_init(&g, 0), 0);

    /* The hostile guest: the page request queue on the register page (tail at PQH's offset),
     * the page request event's message address on PQA. */
    uint64_t pqa = MMIO_BASE, pqh = 0xc0, pqt = 0xc0;
    CHECK_RC(iopf_viommu_mmio_write(v, mem, VTD_PQH, (const uint8_t *)&pqh, 8, 0), 0);
    CHECK_RC(iopf_viommu_mmio_write(v, mem, VTD_PQT, (const uint8_t *)&pqt, 8, 0), 0);
    CHECK_RC(iopf_viommu_mmio_write(v, mem, VTD_PQA, (const uint8_t *)&pqa, 8, 0), 0);
    uint32_t peaddr = (uint32_t)(MMIO_BASE + VTD_PQA);
    CHECK_RC(iopf_viommu_mmio_write(v, mem, VTD_PECTL + 8, (const uint8_t *)&peaddr, 4, 0), 0);

    struct iopf_fault_page_request r = {
        .flags = IOPF_FAULT_PAGE_REQUEST_PASID_VALID | IOPF_FAULT_PAGE_REQUEST_LAST_PAGE,
        .pasid = 1, .grpid = 1, .perm = IOPF_PERM_READ, .addr = 0x1000,
    };
    CHECK_RC(iopf_compat_report(dev, &r), 0);
    CHECK(iopf_viommu_pump(v, mem, 0) >= 0);
    CHECK(nested > 0);
    CHECK(nested_refused == nested);
    /* The vIOMMU still works after the refused calls. */
    uint64_t now_pqa = 0;
    CHECK_RC(iopf_viommu_mmio_read(v, VTD_PQA, (uint8_t *)&now_pqa, 8), 0);
    CHECK(now_pqa == MMIO_BASE);

    iopf_viommu_free(v);
    struct iopf_device_response a[4];
    CHECK_RC(iopf_compat_take_answers(dev, a, 4), 1);
    CHECK(a[0].grpid == 1);
    CHECK_RC(iopf_compat_outstanding(dev), 0);
    iopf_compat_device_free(dev);
    iopf_guest_memory_free(mem);
    munmap(ram, RAM);
    printf("nested calls %d, refused %d, frees from a callback %d\n", nested, nested_refused, free_tried);
    return check_done("reentry");
}
