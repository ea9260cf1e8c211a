/* iopf_host_read_faults / iopf_host_respond on the compatible queue against Linux 6.12's
 * iommufd_fault_fops_read/_write (drivers/iommu/iommufd/fault.c), from the second review. */
#define _DEFAULT_SOURCE
#include <errno.h>

#include "check.h"

static void report(struct iopf_compat_device *dev, uint32_t grpid, int last)
{
    struct iopf_fault_page_request r = {
        .flags = IOPF_FAULT_PAGE_REQUEST_PASID_VALID | (last ? IOPF_FAULT_PAGE_REQUEST_LAST_PAGE : 0),
        .pasid = 1, .grpid = grpid, .perm = IOPF_PERM_READ, .addr = 0x1000ull * grpid,
    };
    CHECK_RC(iopf_compat_report(dev, &r), 0);
}

int main(void)
{
    struct iopf_compat_device *dev = NULL;
    struct iopf_host *host = NULL;
    CHECK_RC(iopf_compat_new(1, 0, &dev, &host), 0);
    struct iopf_hwpt_pgfault f[8];
    /* Nothing waits: n = 0 and n > 0 read 0. */
    CHECK_RC(iopf_host_read_faults(host, f, 0), 0);
    CHECK_RC(iopf_host_read_faults(host, f, 8), 0);
    report(dev, 1, 0);
    report(dev, 1, 1); /* group 1: 2 records */
    report(dev, 2, 1); /* group 2: 1 record */
    report(dev, 3, 1);
    /* The kernel: a count that does not fit the first group is -EINVAL, count 0 included. */
    CHECK_RC(iopf_host_read_faults(host, f, 0), -EINVAL);
    CHECK_RC(iopf_host_read_faults(host, f, 1), -EINVAL);
    /* 3 fits group 1 and group 2 exactly. */
    CHECK_RC(iopf_host_read_faults(host, f, 3), 3);
    uint32_t c1 = f[1].cookie, c2 = f[2].cookie;
    CHECK(f[1].flags & IOPF_PGFAULT_FLAGS_LAST_PAGE);
    CHECK_RC(iopf_host_read_faults(host, f, 8), 1);
    uint32_t c3 = f[0].cookie;
    /* Write: n = 0 is 0. A bad first response (code or cookie) is -EINVAL, nothing taken. */
    CHECK_RC(iopf_host_respond(host, NULL, 0), 0);
    struct iopf_hwpt_page_response bad_code[2] = { { .cookie = c1, .code = 2 }, { .cookie = c2, .code = 0 } };
    CHECK_RC(iopf_host_respond(host, bad_code, 2), -EINVAL);
    struct iopf_hwpt_page_response unknown[2] = { { .cookie = 0xdead, .code = 0 }, { .cookie = c2, .code = 0 } };
    CHECK_RC(iopf_host_respond(host, unknown, 2), -EINVAL);
    CHECK_RC(iopf_compat_outstanding(dev), 3);
    /* Good, then unknown cookie: 1 taken; good, then bad code: 1 taken. */
    struct iopf_hwpt_page_response g_u[2] = { { .cookie = c1, .code = 0 }, { .cookie = 0xdead, .code = 0 } };
    CHECK_RC(iopf_host_respond(host, g_u, 2), 1);
    struct iopf_hwpt_page_response g_b[2] = { { .cookie = c2, .code = 1 }, { .cookie = c3, .code = 7 } };
    CHECK_RC(iopf_host_respond(host, g_b, 2), 1);
    /* A cookie answered already is unknown now. */
    CHECK_RC(iopf_host_respond(host, g_u, 1), -EINVAL);
    struct iopf_hwpt_page_response last = { .cookie = c3, .code = 0 };
    CHECK_RC(iopf_host_respond(host, &last, 1), 1);
    CHECK_RC(iopf_compat_outstanding(dev), 0);
    struct iopf_device_response a[8];
    CHECK_RC(iopf_compat_take_answers(dev, a, 8), 3);
    CHECK(a[0].grpid == 1 && a[0].code == 0 && a[1].grpid == 2 && a[1].code == 1 && a[2].grpid == 3);
    iopf_host_free(host);
    iopf_compat_device_free(dev);
    return check_done("kernel_rules");
}
