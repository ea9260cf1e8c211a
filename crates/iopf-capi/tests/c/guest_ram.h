/* Guest RAM for the C tests: an anonymous mapping of `size` bytes at guest-physical 0, given
 * to iopf as a mapped region or through callbacks that count their calls; with callbacks,
 * accesses at or above `unreachable_from` fail, as for memory that is not there. */
#ifndef IOPF_TEST_GUEST_RAM_H
#define IOPF_TEST_GUEST_RAM_H

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>

#include "check.h"

struct guest_ram {
    uint8_t *ram;
    uint64_t size;
    uint64_t unreachable_from;
    uint64_t reads, writes, is_ram_calls;
};

enum guest_ram_kind {
    GUEST_RAM_REGION,          /* iopf_guest_memory_from_regions */
    GUEST_RAM_CALLBACKS,       /* iopf_guest_memory_from_callbacks, no is_ram */
    GUEST_RAM_CALLBACKS_IS_RAM /* ... with is_ram */
};

static inline int guest_ram_reaches(const struct guest_ram *g, uint64_t gpa, size_t len)
{
    return gpa < g->unreachable_from && len <= g->size && gpa <= g->size - len;
}

static inline int guest_ram_read(void *opaque, uint64_t gpa, void *buf, size_t len)
{
    struct guest_ram *g = opaque;
    g->reads++;
    if (!guest_ram_reaches(g, gpa, len))
        return -EFAULT;
    memcpy(buf, g->ram + gpa, len);
    return 0;
}

static inline int guest_ram_write(void *opaque, uint64_t gpa, const void *buf, size_t len)
{
    struct guest_ram *g = opaque;
    g->writes++;
    if (!guest_ram_reaches(g, gpa, len))
        return -EFAULT;
    memcpy(g->ram + gpa, buf, len);
    return 0;
}

static inline bool guest_ram_is_ram(void *opaque, uint64_t gpa, size_t len)
{
    struct guest_ram *g = opaque;
    g->is_ram_calls++;
    return len <= g->size && gpa <= g->size - len;
}

/* Maps the RAM and makes iopf's guest memory of the kind asked for (NULL on failure, with a
 * failed check). */
static inline struct iopf_guest_memory *guest_ram_open(struct guest_ram *g, uint64_t size,
                                                       enum guest_ram_kind kind)
{
    struct iopf_guest_memory *mem = NULL;
    memset(g, 0, sizeof(*g));
    g->size = size;
    g->unreachable_from = size;
    g->ram = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(g->ram != MAP_FAILED);
    if (kind == GUEST_RAM_REGION) {
        struct iopf_guest_region reg = { .guest_addr = 0, .size = size, .host_addr = g->ram };
        CHECK_RC(iopf_guest_memory_from_regions(&reg, 1, &mem), 0);
    } else {
        struct iopf_guest_memory_ops ops = {
            .read = guest_ram_read,
            .write = guest_ram_write,
            .is_ram = kind == GUEST_RAM_CALLBACKS_IS_RAM ? guest_ram_is_ram : NULL,
        };
        CHECK_RC(iopf_guest_memory_from_callbacks(&ops, g, &mem), 0);
    }
    return mem;
}

static inline void guest_ram_close(struct guest_ram *g, struct iopf_guest_memory *mem)
{
    iopf_guest_memory_free(mem);
    munmap(g->ram, g->size);
}

#endif
