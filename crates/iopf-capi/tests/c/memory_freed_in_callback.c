/* Regression (second review of the C API): a guest memory accessor (or the MSI callback) that
 * frees the iopf_guest_memory a running vIOMMU call uses was a use after free (memcheck: an
 * invalid read in read_guest). Now the call holds a lease on the memory and the free is
 * refused with a message; memcheck stays clean. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <sys/mman.h>

#include "check.h"
#include "vtd_guest.h"

#define RAM (1u << 20)
static uint8_t *ram;
static struct iopf_guest_memory *mem;
static int armed, freed;

static int cb_read(void *o, uint64_t gpa, void *buf, size_t len)
{
    (void)o;
    if (gpa >= RAM || len > RAM - gpa)
        return -EFAULT;
    memcpy(buf, ram + gpa, len);
    if (armed && !freed) {
        /* The VMM tears the memory down (a hot-unplug handler, say) from inside an access. */
        iopf_guest_memory_free(mem);
        freed = 1;
        printf("freed from the read callback; last error: \"%s\"\n", iopf_last_error());
    }
    return 0;
}

static int cb_write(void *o, uint64_t gpa, const void *buf, size_t len)
{
    (void)o;
    if (gpa >= RAM || len > RAM - gpa)
        return -EFAULT;
    memcpy(ram + gpa, buf, len);
    return 0;
}

static void on_msi(void *o, uint64_t a, uint32_t d) { (void)o; (void)a; (void)d; }
static uint32_t ok(void *o, uint32_t p, uint64_t a) { (void)o; (void)p; (void)a; return 0; }

int main(void)
{
    ram = mmap(NULL, RAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct iopf_guest_memory_ops ops = { .read = cb_read, .write = cb_write };
    CHECK_RC(iopf_guest_memory_from_callbacks(&ops, NULL, &mem), 0);
    struct iopf_compat_device *dev = NULL;
    struct iopf_host *host = NULL;
    CHECK_RC(iopf_compat_new(1, 0, &dev, &host), 0);
    struct iopf_endpoint ep = { .host_dev_id = 1, .guest_rid = 8 };
    struct iopf_bridge_config cfg = { .endpoints = &ep, .n_endpoints = 1 };
    struct iopf_viommu *v = NULL;
    CHECK_RC(iopf_viommu_new_vtd(host, &cfg, on_msi, NULL, &v), 0);
    struct vtd_guest g = { .vtd = v, .mem = mem, .ram = ram, .prq_base = 0x10000,
                           .iq_base = 0x20000, .status_addr = 0x21000, .resolve = ok };
    CHECK_RC(vtd_guest_init(&g, 0), 0);
    struct iopf_fault_page_request r = {
        .flags = IOPF_FAULT_PAGE_REQUEST_PASID_VALID | IOPF_FAULT_PAGE_REQUEST_LAST_PAGE,
        .pasid = 1, .grpid = 1, .perm = IOPF_PERM_READ, .addr = 0x1000,
    };
    CHECK_RC(iopf_compat_report(dev, &r), 0);
    CHECK(iopf_viommu_pump(v, mem, 0) == 1);
    armed = 1;
    /* The guest's handler: response + wait descriptor; IQT's write reads both (the first read
     * frees the memory, the next access goes through the freed object). */
    vtd_guest_handle_event(&g, 0);
    CHECK(freed);
    iopf_viommu_free(v);
    iopf_compat_device_free(dev);
    if (!freed)
        iopf_guest_memory_free(mem);
    munmap(ram, RAM);
    return check_done("memory_freed_in_callback");
}
