/* SMMUv3 CMD_SYNC (CS = SIG_IRQ) whose MSIADDR is the unit's own CMDQ_PROD (second review):
 * with is_ram saying "not RAM" the completion goes to the MSI callback, which routes it to the
 * unit's MMIO; with is_ram NULL it is a write through ops->write, routed the same way. Both
 * nested calls are refused (-EDEADLK); the sync completes once; the queue works after. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <sys/mman.h>

#include "check.h"

#define RAM (1u << 20)
#define MMIO 0x09050000ull
static uint8_t *ram;
static struct iopf_viommu *v;
static struct iopf_guest_memory *mem;
static int nested, refused, msis, ram_flag;

static void route(uint64_t gpa, const void *buf, size_t len)
{
    nested++;
    if (iopf_viommu_mmio_write(v, mem, gpa - MMIO, buf, len >= 8 ? 8 : 4, 0) == -EDEADLK)
        refused++;
}
static int rd(void *o, uint64_t gpa, void *buf, size_t len)
{
    (void)o;
    if (gpa >= RAM || len > RAM - gpa) return -EFAULT;
    memcpy(buf, ram + gpa, len);
    return 0;
}
static int wr(void *o, uint64_t gpa, const void *buf, size_t len)
{
    (void)o;
    if (gpa >= MMIO && gpa < MMIO + 0x20000) { route(gpa, buf, len); return 0; }
    if (gpa >= RAM || len > RAM - gpa) return -EFAULT;
    memcpy(ram + gpa, buf, len);
    return 0;
}
static bool is_ram(void *o, uint64_t gpa, size_t len) { (void)o; return gpa < RAM && len <= RAM - gpa; }
static void on_msi(void *o, uint64_t a, uint32_t d)
{
    (void)o;
    msis++;
    if (a >= MMIO && a < MMIO + 0x20000) { uint32_t x = d; route(a, &x, 4); }
}

static void w32(uint64_t off, uint32_t x) { CHECK_RC(iopf_viommu_mmio_write(v, mem, off, (uint8_t *)&x, 4, 0), 0); }
static void w64(uint64_t off, uint64_t x) { CHECK_RC(iopf_viommu_mmio_write(v, mem, off, (uint8_t *)&x, 8, 0), 0); }
static uint32_t r32(uint64_t off) { uint32_t x = 0; CHECK_RC(iopf_viommu_mmio_read(v, off, (uint8_t *)&x, 4), 0); return x; }

static void run(int with_is_ram)
{
    nested = refused = msis = 0;
    ram_flag = with_is_ram;
    struct iopf_guest_memory_ops ops = { .read = rd, .write = wr, .is_ram = with_is_ram ? is_ram : NULL };
    CHECK_RC(iopf_guest_memory_from_callbacks(&ops, NULL, &mem), 0);
    struct iopf_compat_device *dev = NULL;
    struct iopf_host *host = NULL;
    CHECK_RC(iopf_compat_new(1, 0, &dev, &host), 0);
    struct iopf_endpoint ep = { .host_dev_id = 1, .guest_rid = 8 };
    struct iopf_bridge_config cfg = { .endpoints = &ep, .n_endpoints = 1 };
    CHECK_RC(iopf_viommu_new_smmuv3(host, &cfg, NULL, 0, on_msi, NULL, &v), 0);
    uint64_t cmdq = 0x30000;
    w64(0x90, cmdq | 5);      /* CMDQ_BASE, 32 entries */
    w32(0x98, 0);
    w32(0x9c, 0);
    w32(0x20, 1u << 3);       /* CR0.CMDQEN */
    CHECK(r32(0x24) & (1u << 3));
    /* CMD_SYNC, CS = SIG_IRQ (1), MSIDATA 0x1234, MSIADDR = MMIO + CMDQ_PROD. */
    uint64_t sync[2] = { 0x46 | (1ull << 12) | (0x1234ull << 32), MMIO + 0x98 };
    memcpy(ram + cmdq, sync, 16);
    w32(0x98, 1);
    printf("is_ram %s: CONS %#x, nested %d refused %d msis %d\n", with_is_ram ? "given" : "NULL",
           r32(0x9c), nested, refused, msis);
    CHECK(r32(0x9c) == 1);
    CHECK(nested == 1 && refused == 1);
    /* Still works: a sync into RAM. */
    uint64_t sync2[2] = { 0x46 | (1ull << 12) | (0x77ull << 32), 0x40000 };
    memcpy(ram + cmdq + 16, sync2, 16);
    w32(0x98, 2);
    CHECK(r32(0x9c) == 2);
    uint32_t got; memcpy(&got, ram + 0x40000, 4);
    CHECK(got == 0x77);
    iopf_viommu_free(v);
    iopf_compat_device_free(dev);
    iopf_guest_memory_free(mem);
}

int main(void)
{
    ram = mmap(NULL, RAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    run(1);
    memset(ram, 0, RAM);
    run(0);
    munmap(ram, RAM);
    return check_done("smmuv3_reentry");
}
