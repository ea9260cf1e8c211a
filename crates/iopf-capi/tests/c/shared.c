/* iopf's shared queue from C: attach to the producer at argv[1] (the Rust test serves it),
 * serve its groups from a poll loop on the queue's descriptor (arm, then sleep), answer
 * SUCCESS below 1 MiB and INVALID above, and leave when the producer has gone. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <poll.h>

#include "check.h"

#define GROUPS 3

int main(int argc, char **argv)
{
    struct iopf_host *host = NULL;
    struct iopf_hwpt_pgfault f[16];
    int answered = 0, records = 0, peer_gone = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: shared SOCKET\n");
        return 2;
    }
    CHECK_RC(iopf_host_attach(argv[1], 64, 30000, &host), 0);
    if (!host)
        return check_done("shared");

    for (int turns = 0; turns < 1000 && !peer_gone; turns++) {
        int ready = iopf_host_arm(host, IOPF_READY_FAULTS);
        CHECK(ready >= 0);
        if (ready == 0) {
            struct pollfd p = { .fd = iopf_host_fd(host), .events = POLLIN };
            CHECK(poll(&p, 1, 30000) == 1);
            continue;
        }
        if (ready & IOPF_READY_PEER_GONE) {
            peer_gone = 1;
            break;
        }
        int n = iopf_host_read_faults(host, f, 16);
        CHECK(n >= 0);
        for (int i = 0; i < n; i++) {
            records++;
            CHECK(f[i].dev_id == 5);
            if (!(f[i].flags & IOPF_PGFAULT_FLAGS_LAST_PAGE))
                continue;
            struct iopf_hwpt_page_response r = {
                .cookie = f[i].cookie,
                .code = f[i].addr < 0x100000 ? IOPF_PAGE_RESP_SUCCESS : IOPF_PAGE_RESP_INVALID,
            };
            if (answered == 0) {
                /* Response Failure is not the fault fd's to send: refused, nothing sent. */
                struct iopf_hwpt_page_response failure = { .cookie = f[i].cookie, .code = 2 };
                CHECK_RC(iopf_host_respond(host, &failure, 1), -EINVAL);
            }
            CHECK_RC(iopf_host_respond(host, &r, 1), 1);
            answered++;
        }
    }
    CHECK(answered == GROUPS);
    CHECK(records == GROUPS + 1);
    CHECK(peer_gone);
    struct iopf_host_stats st;
    CHECK_RC(iopf_host_stats(host, &st), 0);
    CHECK(st.kind == IOPF_HOST_SHARED && st.peer_gone == 1);
    CHECK(st.records_read == GROUPS + 1 && st.responses_sent == GROUPS);
    CHECK(st.rejected == 0);
    iopf_host_free(host);
    return check_done("shared");
}
