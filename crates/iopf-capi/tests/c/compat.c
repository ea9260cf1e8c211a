/* The compatible queue through the C API: the kernel fault fd's rules (whole groups, the
 * first group must fit, cookies, auto-responses on detach and release) and its descriptor in
 * a poll loop and a blocking wait on another thread. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>

#include "check.h"

static int readable(struct iopf_host *host)
{
    struct pollfd p = { .fd = iopf_host_fd(host), .events = POLLIN };
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void report(struct iopf_compat_device *dev, uint32_t grpid, uint64_t addr, int last)
{
    struct iopf_fault_page_request r = {
        .flags = IOPF_FAULT_PAGE_REQUEST_PASID_VALID | (last ? IOPF_FAULT_PAGE_REQUEST_LAST_PAGE : 0),
        .pasid = 9,
        .grpid = grpid,
        .perm = IOPF_PERM_READ | IOPF_PERM_WRITE,
        .addr = addr,
    };
    CHECK_RC(iopf_compat_report(dev, &r), 0);
}

static void *waiter(void *arg)
{
    struct iopf_host *host = arg;
    static int result;
    result = iopf_host_wait(host, -1);
    return &result;
}

int main(void)
{
    struct iopf_compat_device *dev = NULL;
    struct iopf_host *host = NULL;
    struct iopf_hwpt_pgfault f[8];
    struct iopf_device_response a[8];

    CHECK_RC(iopf_compat_new(3, IOPF_COMPAT_PASID_REQUIRED, &dev, &host), 0);
    CHECK(iopf_host_fd(host) >= 0);
    CHECK(!readable(host));
    CHECK_RC(iopf_host_arm(host, IOPF_READY_FAULTS), 0);

    /* A partial group is not delivered; its last request completes it. */
    report(dev, 5, 0x10000, 0);
    CHECK(!readable(host));
    report(dev, 5, 0x11000, 1);
    CHECK(readable(host));
    CHECK_RC(iopf_host_arm(host, IOPF_READY_FAULTS), IOPF_READY_FAULTS);
    CHECK_RC(iopf_host_wait(host, 0), 1);

    /* The first group must fit: -EINVAL, and it stays. */
    CHECK_RC(iopf_host_read_faults(host, f, 1), -EINVAL);
    CHECK_RC(iopf_host_read_faults(host, f, 8), 2);
    CHECK(f[0].dev_id == 3 && f[0].pasid == 9 && f[0].grpid == 5 && f[0].addr == 0x10000);
    CHECK((f[0].flags & IOPF_PGFAULT_FLAGS_LAST_PAGE) == 0);
    CHECK(f[1].flags & IOPF_PGFAULT_FLAGS_LAST_PAGE);
    CHECK(f[0].flags & IOPF_PGFAULT_FLAGS_PASID_VALID);
    CHECK(f[0].cookie == f[1].cookie);
    CHECK(f[0].perm == (IOPF_PERM_READ | IOPF_PERM_WRITE));
    CHECK(!readable(host));
    CHECK_RC(iopf_host_read_faults(host, f + 2, 6), 0);
    CHECK_RC(iopf_compat_outstanding(dev), 1);

    /* The answer reaches the device with the group's PASID (PRG Response PASID Required). */
    struct iopf_hwpt_page_response r = { .cookie = f[1].cookie, .code = IOPF_PAGE_RESP_SUCCESS };
    CHECK_RC(iopf_host_respond(host, &r, 1), 1);
    CHECK_RC(iopf_host_respond(host, &r, 1), -EINVAL); /* answered already */
    CHECK_RC(iopf_compat_take_answers(dev, a, 8), 1);
    CHECK(a[0].grpid == 5 && a[0].code == 0);
    CHECK(a[0].flags & IOPF_DEVICE_RESPONSE_PASID);
    CHECK(a[0].pasid == 9);
    CHECK_RC(iopf_compat_take_answers(dev, a, 8), 0);

    /* Detaching answers what the consumer held INVALID, and later groups at once; a late
     * response to such a group is refused (-EINVAL), not sent twice. */
    report(dev, 6, 0x20000, 1);
    CHECK_RC(iopf_host_read_faults(host, f, 8), 1);
    CHECK_RC(iopf_compat_set_attached(dev, false), 0);
    CHECK_RC(iopf_compat_take_answers(dev, a, 8), 1);
    CHECK(a[0].grpid == 6 && a[0].code == 1);
    r.cookie = f[0].cookie;
    CHECK_RC(iopf_host_respond(host, &r, 1), -EINVAL);
    report(dev, 7, 0x30000, 1);
    CHECK_RC(iopf_compat_take_answers(dev, a, 8), 1);
    CHECK(a[0].grpid == 7 && a[0].code == 1);
    CHECK_RC(iopf_compat_set_attached(dev, true), 0);

    /* A blocking wait on another thread returns when a group arrives. */
    pthread_t t;
    CHECK(pthread_create(&t, NULL, waiter, host) == 0);
    report(dev, 8, 0x40000, 1);
    void *res;
    CHECK(pthread_join(t, &res) == 0);
    CHECK(*(int *)res == 1);
    CHECK_RC(iopf_host_read_faults(host, f, 8), 1);

    /* Answers are taken in pieces as the caller's buffer allows, none lost. */
    for (uint32_t g = 10; g < 15; g++)
        report(dev, g, 0x50000 + g * 0x1000, 1);
    CHECK_RC(iopf_host_read_faults(host, f + 1, 7), 5);
    struct iopf_hwpt_page_response rs[5];
    for (int i = 0; i < 5; i++) {
        rs[i].cookie = f[1 + i].cookie;
        rs[i].code = i % 2 ? IOPF_PAGE_RESP_INVALID : IOPF_PAGE_RESP_SUCCESS;
    }
    CHECK_RC(iopf_host_respond(host, rs, 5), 5);
    CHECK_RC(iopf_compat_take_answers(dev, a, 2), 2);
    CHECK(a[0].grpid == 10 && a[0].code == 0 && a[1].grpid == 11 && a[1].code == 1);
    CHECK_RC(iopf_compat_take_answers(dev, a, 8), 3);
    CHECK(a[2].grpid == 14);

    struct iopf_host_stats st;
    CHECK_RC(iopf_host_stats(host, &st), 0);
    CHECK(st.kind == IOPF_HOST_COMPAT);
    CHECK(st.records_read == 9 && st.responses_sent == 6);

    /* Freeing the host end with a group outstanding (grpid 8) answers it INVALID, as the
     * kernel does when the fault fd's HWPT goes. */
    iopf_host_free(host);
    CHECK_RC(iopf_compat_take_answers(dev, a, 8), 1);
    CHECK(a[0].grpid == 8 && a[0].code == 1);
    iopf_compat_device_free(dev);
    return check_done("compat");
}
