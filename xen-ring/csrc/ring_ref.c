/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Reference peer for the xen-ring tests and benches: front and back ends written with the
 * C macros of Debian's <xen/io/ring.h> (libxen-dev, Xen 4.17), exactly as a C driver
 * (blkfront, blkback, netback) uses them. The Rust side runs the other end of the same
 * shared page.
 */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The latest interface, as the tools and Linux use (older ones map xen_mb to mb()). */
#define __XEN_TOOLS__ 1

/* ring.h leaves the barriers to the includer (as Linux, mini-os and the tools do). */
#define xen_mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)

#include <xen/io/ring.h>
#include <xen/io/blkif.h>
#include <xen/io/netif.h>

/* ---- The test ring type: 64-byte request, 16-byte response. -------------------------- */

#define XRT_PAYLOAD 48

struct xrt_req {
    uint64_t id;
    uint32_t len;  /* payload bytes that count, 1..=48 */
    uint32_t csum; /* fnv1a32 of id and payload[..len] */
    uint8_t payload[XRT_PAYLOAD];
};

struct xrt_rsp {
    uint64_t id;
    uint32_t csum;  /* the checksum the back end computed */
    int32_t status; /* 0 when the request's checksum matched, -1 otherwise */
};

DEFINE_RING_TYPES(xrt, struct xrt_req, struct xrt_rsp);

_Static_assert(sizeof(struct xrt_req) == 64, "xrt_req is 64 bytes");
_Static_assert(sizeof(struct xrt_rsp) == 16, "xrt_rsp is 16 bytes");

static uint32_t fnv1a(uint32_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

uint32_t xrt_checksum(uint64_t id, const uint8_t *payload, uint32_t len)
{
    uint8_t idb[8];
    for (int i = 0; i < 8; i++)
        idb[i] = (uint8_t)(id >> (8 * i));
    uint32_t h = fnv1a(2166136261u, idb, 8);
    if (len > XRT_PAYLOAD)
        len = XRT_PAYLOAD;
    return fnv1a(h, payload, len);
}

static void xrt_fill(struct xrt_req *r, uint64_t i)
{
    r->id = i;
    r->len = 1 + (uint32_t)(i % XRT_PAYLOAD);
    for (uint32_t k = 0; k < XRT_PAYLOAD; k++)
        r->payload[k] = (uint8_t)(i * 31 + k * 7);
    r->csum = xrt_checksum(i, r->payload, r->len);
}

static int xrt_serve(const struct xrt_req *q, struct xrt_rsp *s)
{
    uint32_t c = xrt_checksum(q->id, q->payload, q->len);
    s->id = q->id;
    s->csum = c;
    s->status = (c == q->csum && q->len >= 1 && q->len <= XRT_PAYLOAD) ? 0 : -1;
    return s->status == 0;
}

static int xrt_check(const struct xrt_rsp *s, uint64_t i)
{
    struct xrt_req q;
    xrt_fill(&q, i);
    return s->id == i && s->status == 0 && s->csum == q.csum;
}

/* ---- The echo workload on the same ring type: next to no work per request, so the ring
 * operations dominate (benches). */

DEFINE_RING_TYPES(xecho, struct xrt_req, struct xrt_rsp);

static void echo_fill(struct xrt_req *r, uint64_t i)
{
    r->id = i;
    r->len = 1;
    r->csum = (uint32_t)i * 2654435761u;
    memset(r->payload, (uint8_t)i, XRT_PAYLOAD);
}

static int echo_serve(const struct xrt_req *q, struct xrt_rsp *s)
{
    s->id = q->id;
    s->csum = q->csum ^ q->payload[XRT_PAYLOAD - 1];
    s->status = 0;
    return 1;
}

static int echo_check(const struct xrt_rsp *s, uint64_t i)
{
    return s->id == i && s->status == 0 && s->csum == (((uint32_t)i * 2654435761u) ^ (uint8_t)i);
}

/* ---- blkif: requests as blkfront sends them, responses as blkback answers. ------------ */

static void blkif_fill(blkif_request_t *r, uint64_t i)
{
    memset(r, 0, sizeof(*r));
    r->operation = (i & 1) ? BLKIF_OP_WRITE : BLKIF_OP_READ;
    r->nr_segments = 1 + (uint8_t)(i % BLKIF_MAX_SEGMENTS_PER_REQUEST);
    r->handle = (blkif_vdev_t)(i & 0xffff);
    r->id = i ^ 0x5a5a5a5a5a5a5a5aull;
    r->sector_number = i * 8;
    for (int k = 0; k < r->nr_segments; k++) {
        r->seg[k].gref = (grant_ref_t)(i + (uint64_t)k);
        r->seg[k].first_sect = 0;
        r->seg[k].last_sect = 7;
    }
}

static int blkif_serve(const blkif_request_t *q, blkif_response_t *s)
{
    uint64_t i = q->id ^ 0x5a5a5a5a5a5a5a5aull;
    int ok = q->sector_number == i * 8 &&
             q->nr_segments == 1 + (uint8_t)(i % BLKIF_MAX_SEGMENTS_PER_REQUEST) &&
             q->operation == ((i & 1) ? BLKIF_OP_WRITE : BLKIF_OP_READ);
    for (int k = 0; ok && k < q->nr_segments && k < BLKIF_MAX_SEGMENTS_PER_REQUEST; k++)
        ok = q->seg[k].gref == (grant_ref_t)(i + (uint64_t)k) && q->seg[k].last_sect == 7;
    memset(s, 0, sizeof(*s));
    s->id = q->id;
    s->operation = q->operation;
    s->status = ok ? BLKIF_RSP_OKAY : BLKIF_RSP_ERROR;
    return ok;
}

static int blkif_check(const blkif_response_t *s, uint64_t i)
{
    return s->id == (i ^ 0x5a5a5a5a5a5a5a5aull) && s->status == BLKIF_RSP_OKAY &&
           s->operation == ((i & 1) ? BLKIF_OP_WRITE : BLKIF_OP_READ);
}

/* ---- Doorbells: eventfds, or spinning when the fd is negative. ------------------------ */

struct xrt_stats {
    uint64_t notifies; /* check-notify said yes: the peer was kicked */
    uint64_t waits;    /* times this end slept (or spun) for the peer */
    int32_t err;       /* 0, or a negative XRT_E* code */
    uint32_t _pad;
};

#define XRT_EBADRSP -1 /* a response/request failed its check */
#define XRT_EOVERFLOW -2 /* the peer's producer index is impossible */
#define XRT_ETIMEDOUT -3 /* no doorbell within the timeout */
#define XRT_EIO -4       /* an eventfd call failed */

static int kick(int fd)
{
    uint64_t one = 1;
    if (fd < 0)
        return 0;
    return write(fd, &one, sizeof(one)) == sizeof(one) ? 0 : XRT_EIO;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits for a kick on `fd`; with fd < 0 returns at once (the caller spins). */
static int wait_bell(int fd, int timeout_ms)
{
    if (fd < 0) {
#if defined(__x86_64__) || defined(__i386__)
        __asm__ __volatile__("pause" ::: "memory"); /* as Rust's spin_loop() */
#else
        __asm__ __volatile__("" ::: "memory");
#endif
        return 0;
    }
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    do {
        r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    if (r == 0)
        return XRT_ETIMEDOUT;
    if (r < 0)
        return XRT_EIO;
    uint64_t v;
    return read(fd, &v, sizeof(v)) == sizeof(v) ? 0 : XRT_EIO;
}

/*
 * A spinning end's idle rounds since its last progress (`mark`: entries sent plus received,
 * or served): it yields the CPU every 64th idle round in a row, and fails once it made no
 * progress for timeout_ms (counted from the 4096th idle round in a row), so a slow exchange
 * on a loaded machine does not time out and a stuck one does (as the Rust drivers' `Idle`).
 */
struct idle {
    uint64_t mark, rounds, since_ms;
};

static int idle_spin(struct idle *s, uint64_t mark, int timeout_ms)
{
    if (mark != s->mark) {
        s->mark = mark;
        s->rounds = 0;
    }
    if (++s->rounds % 64 != 0)
        return 0;
    sched_yield(); /* two cores shared with other work: let the peer run */
    if (s->rounds % 4096 != 0)
        return 0;
    uint64_t now = now_ms();
    if (s->rounds == 4096)
        s->since_ms = now;
    else if (now - s->since_ms > (uint64_t)timeout_ms)
        return XRT_ETIMEDOUT;
    return 0;
}

/*
 * One front end and one back end per ring type, the loops of a C driver:
 *  front: queue requests while there is room, RING_PUSH_REQUESTS_AND_CHECK_NOTIFY, consume
 *         responses, RING_FINAL_CHECK_FOR_RESPONSES, sleep on the doorbell when idle.
 *  back:  consume requests (RING_REQUEST_PROD_OVERFLOW / RING_REQUEST_CONS_OVERFLOW as
 *         Linux blkback), respond, RING_PUSH_RESPONSES_AND_CHECK_NOTIFY,
 *         RING_FINAL_CHECK_FOR_REQUESTS, sleep when idle.
 * With spinning doorbells (fd < 0) timeout_ms still bounds the time without progress.
 */
#define DEFINE_RUNNERS(P, REQ_T, RSP_T, FILL, SERVE, CHECK)                                    \
    int xrt_##P##_front_run(void *mem, size_t bytes, uint64_t n, int kick_fd, int wait_fd,     \
                            int timeout_ms, struct xrt_stats *st)                              \
    {                                                                                          \
        struct P##_front_ring fr;                                                              \
        FRONT_RING_INIT(&fr, (struct P##_sring *)mem, bytes);                                  \
        uint64_t sent = 0, recv = 0;                                                           \
        struct idle idle = {0};                                                                \
        memset(st, 0, sizeof(*st));                                                            \
        while (recv < n) {                                                                     \
            int progressed = 0, queued = 0, notify, more;                                      \
            while (sent < n && !RING_FULL(&fr)) {                                              \
                FILL(RING_GET_REQUEST(&fr, fr.req_prod_pvt), sent);                            \
                fr.req_prod_pvt++;                                                             \
                sent++;                                                                        \
                queued = 1;                                                                    \
            }                                                                                  \
            if (queued) {                                                                      \
                RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&fr, notify);                              \
                if (notify) {                                                                  \
                    st->notifies++;                                                            \
                    if ((st->err = kick(kick_fd)))                                             \
                        return st->err;                                                        \
                }                                                                              \
                progressed = 1;                                                                \
            }                                                                                  \
            RING_IDX rp = fr.sring->rsp_prod;                                                  \
            xen_rmb();                                                                         \
            if ((RING_IDX)(rp - fr.rsp_cons) > (RING_IDX)(fr.req_prod_pvt - fr.rsp_cons))      \
                return st->err = XRT_EOVERFLOW;                                                \
            while (fr.rsp_cons != rp) {                                                        \
                RSP_T s;                                                                       \
                RING_COPY_RESPONSE(&fr, fr.rsp_cons, &s);                                      \
                if (!CHECK(&s, recv))                                                          \
                    return st->err = XRT_EBADRSP;                                              \
                fr.rsp_cons++;                                                                 \
                recv++;                                                                        \
                progressed = 1;                                                                \
            }                                                                                  \
            if (progressed || recv == n)                                                       \
                continue;                                                                      \
            RING_FINAL_CHECK_FOR_RESPONSES(&fr, more);                                         \
            if (more || (sent < n && !RING_FULL(&fr)))                                         \
                continue;                                                                      \
            st->waits++;                                                                       \
            if ((st->err = wait_bell(wait_fd, timeout_ms)))                                    \
                return st->err;                                                                \
            if (wait_fd < 0 && (st->err = idle_spin(&idle, sent + recv, timeout_ms)))          \
                return st->err;                                                                \
        }                                                                                      \
        return 0;                                                                              \
    }                                                                                          \
                                                                                               \
    int xrt_##P##_back_run(void *mem, size_t bytes, uint64_t n, int kick_fd, int wait_fd,      \
                           int timeout_ms, struct xrt_stats *st)                               \
    {                                                                                          \
        struct P##_back_ring br;                                                               \
        BACK_RING_INIT(&br, (struct P##_sring *)mem, bytes);                                   \
        uint64_t done = 0;                                                                     \
        struct idle idle = {0};                                                                \
        memset(st, 0, sizeof(*st));                                                            \
        while (done < n) {                                                                     \
            int progressed = 0, notify, more;                                                  \
            RING_IDX rp = br.sring->req_prod;                                                  \
            xen_rmb();                                                                         \
            if (RING_REQUEST_PROD_OVERFLOW(&br, rp) ||                                         \
                (RING_IDX)(rp - br.req_cons) > RING_SIZE(&br))                                 \
                return st->err = XRT_EOVERFLOW;                                                \
            while (br.req_cons != rp && !RING_REQUEST_CONS_OVERFLOW(&br, br.req_cons)) {       \
                REQ_T q;                                                                       \
                RING_COPY_REQUEST(&br, br.req_cons, &q);                                       \
                br.req_cons++;                                                                 \
                RSP_T s;                                                                       \
                if (!SERVE(&q, &s))                                                            \
                    return st->err = XRT_EBADRSP;                                              \
                *RING_GET_RESPONSE(&br, br.rsp_prod_pvt) = s;                                  \
                br.rsp_prod_pvt++;                                                             \
                done++;                                                                        \
                progressed = 1;                                                                \
            }                                                                                  \
            if (progressed) {                                                                  \
                RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&br, notify);                             \
                if (notify) {                                                                  \
                    st->notifies++;                                                            \
                    if ((st->err = kick(kick_fd)))                                             \
                        return st->err;                                                        \
                }                                                                              \
                continue;                                                                      \
            }                                                                                  \
            RING_FINAL_CHECK_FOR_REQUESTS(&br, more);                                          \
            if (more)                                                                          \
                continue;                                                                      \
            st->waits++;                                                                       \
            if ((st->err = wait_bell(wait_fd, timeout_ms)))                                    \
                return st->err;                                                                \
            if (wait_fd < 0 && (st->err = idle_spin(&idle, done, timeout_ms)))                 \
                return st->err;                                                                \
        }                                                                                      \
        return 0;                                                                              \
    }

DEFINE_RUNNERS(xrt, struct xrt_req, struct xrt_rsp, xrt_fill, xrt_serve, xrt_check)
DEFINE_RUNNERS(blkif, blkif_request_t, blkif_response_t, blkif_fill, blkif_serve, blkif_check)
DEFINE_RUNNERS(xecho, struct xrt_req, struct xrt_rsp, echo_fill, echo_serve, echo_check)

/* SHARED_RING_INIT on any ring type (the header does not depend on the entry type). */
void xrt_shared_ring_init(void *mem)
{
    SHARED_RING_INIT((struct xrt_sring *)mem);
}

/*
 * One thread, both ends: queue a batch, push, consume it on the back, respond, push,
 * consume the responses. The per-request cost of the macros themselves. Returns the number
 * of good responses (n on success).
 */
#define DEFINE_LOOPBACK(NAME, P, REQ_T, RSP_T, FILL, SERVE, CHECK)                             \
    uint64_t NAME(void *mem, size_t bytes, uint64_t n, uint32_t batch)                         \
    {                                                                                          \
        struct P##_front_ring fr;                                                              \
        struct P##_back_ring br;                                                               \
        int notify, more;                                                                      \
        uint64_t sent = 0, good = 0;                                                           \
        SHARED_RING_INIT((struct P##_sring *)mem);                                             \
        FRONT_RING_INIT(&fr, (struct P##_sring *)mem, bytes);                                  \
        BACK_RING_INIT(&br, (struct P##_sring *)mem, bytes);                                   \
        while (good < n) {                                                                     \
            for (uint32_t b = 0; b < batch && sent < n && !RING_FULL(&fr); b++) {              \
                FILL(RING_GET_REQUEST(&fr, fr.req_prod_pvt), sent++);                          \
                fr.req_prod_pvt++;                                                             \
            }                                                                                  \
            RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&fr, notify);                                  \
            RING_IDX rp = br.sring->req_prod;                                                  \
            xen_rmb();                                                                         \
            while (br.req_cons != rp) {                                                        \
                REQ_T q;                                                                       \
                RSP_T s;                                                                       \
                RING_COPY_REQUEST(&br, br.req_cons, &q);                                       \
                br.req_cons++;                                                                 \
                SERVE(&q, &s);                                                                 \
                *RING_GET_RESPONSE(&br, br.rsp_prod_pvt) = s;                                  \
                br.rsp_prod_pvt++;                                                             \
            }                                                                                  \
            RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&br, notify);                                 \
            RING_FINAL_CHECK_FOR_REQUESTS(&br, more);                                          \
            rp = fr.sring->rsp_prod;                                                           \
            xen_rmb();                                                                         \
            while (fr.rsp_cons != rp) {                                                        \
                RSP_T s;                                                                       \
                RING_COPY_RESPONSE(&fr, fr.rsp_cons, &s);                                      \
                if (CHECK(&s, good))                                                           \
                    good++;                                                                    \
                else                                                                           \
                    return good;                                                               \
                fr.rsp_cons++;                                                                 \
            }                                                                                  \
            RING_FINAL_CHECK_FOR_RESPONSES(&fr, more);                                         \
            (void)more;                                                                        \
            (void)notify;                                                                      \
        }                                                                                      \
        return good;                                                                           \
    }

DEFINE_LOOPBACK(xrt_loopback, xrt, struct xrt_req, struct xrt_rsp, xrt_fill, xrt_serve, xrt_check)
DEFINE_LOOPBACK(xrt_echo_loopback, xecho, struct xrt_req, struct xrt_rsp, echo_fill, echo_serve,
                echo_check)

/* ---- Layout, for comparison with the Rust computation. ------------------------------- */

struct xrt_layout {
    uint64_t sring_size;  /* sizeof(struct X_sring) (with its one-entry ring) */
    uint64_t ring_offset; /* offsetof(struct X_sring, ring) */
    uint64_t entry_size;  /* sizeof(union X_sring_entry) */
    uint64_t offsets[5];  /* req_prod, req_event, rsp_prod, rsp_event, pvt */
};

#define LAYOUT(P, out)                                                                         \
    do {                                                                                       \
        (out)->sring_size = sizeof(struct P##_sring);                                          \
        (out)->ring_offset = offsetof(struct P##_sring, ring);                                 \
        (out)->entry_size = sizeof(union P##_sring_entry);                                     \
        (out)->offsets[0] = offsetof(struct P##_sring, req_prod);                              \
        (out)->offsets[1] = offsetof(struct P##_sring, req_event);                             \
        (out)->offsets[2] = offsetof(struct P##_sring, rsp_prod);                              \
        (out)->offsets[3] = offsetof(struct P##_sring, rsp_event);                             \
        (out)->offsets[4] = offsetof(struct P##_sring, pvt);                                   \
    } while (0)

/* which: 0 = xrt, 1 = blkif, 2 = netif_tx, 3 = netif_rx, 4 = xecho. Returns -1 for an unknown kind. */
int xrt_layout(int which, struct xrt_layout *out)
{
    switch (which) {
    case 0: LAYOUT(xrt, out); return 0;
    case 1: LAYOUT(blkif, out); return 0;
    case 2: LAYOUT(netif_tx, out); return 0;
    case 3: LAYOUT(netif_rx, out); return 0;
    case 4: LAYOUT(xecho, out); return 0;
    default: return -1;
    }
}

/* __RING_SIZE(s, bytes) for a ring of `which` kind at `mem`, and __CONST_RING_SIZE. */
int64_t xrt_ring_size(int which, void *mem, size_t bytes)
{
    switch (which) {
    case 0: return __RING_SIZE((struct xrt_sring *)mem, bytes);
    case 1: return __RING_SIZE((struct blkif_sring *)mem, bytes);
    case 2: return __RING_SIZE((struct netif_tx_sring *)mem, bytes);
    case 3: return __RING_SIZE((struct netif_rx_sring *)mem, bytes);
    case 4: return __RING_SIZE((struct xecho_sring *)mem, bytes);
    default: return -1;
    }
}

int64_t xrt_const_ring_size(int which, size_t bytes)
{
    switch (which) {
    case 0: return __CONST_RING_SIZE(xrt, bytes);
    case 1: return __CONST_RING_SIZE(blkif, bytes);
    case 2: return __CONST_RING_SIZE(netif_tx, bytes);
    case 3: return __CONST_RING_SIZE(netif_rx, bytes);
    case 4: return __CONST_RING_SIZE(xecho, bytes);
    default: return -1;
    }
}

/* ---- Single macros on given private indexes, for differential tests. ----------------- */

/* RING_PUSH_REQUESTS_AND_CHECK_NOTIFY with req_prod_pvt = pvt. */
int xrt_push_requests_check_notify(void *mem, size_t bytes, uint32_t pvt)
{
    struct xrt_front_ring fr;
    int notify;
    FRONT_RING_ATTACH(&fr, (struct xrt_sring *)mem, pvt, bytes);
    RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&fr, notify);
    return notify;
}

/* RING_PUSH_RESPONSES_AND_CHECK_NOTIFY with rsp_prod_pvt = pvt. */
int xrt_push_responses_check_notify(void *mem, size_t bytes, uint32_t pvt)
{
    struct xrt_back_ring br;
    int notify;
    BACK_RING_ATTACH(&br, (struct xrt_sring *)mem, pvt, bytes);
    RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&br, notify);
    return notify;
}

/* RING_FINAL_CHECK_FOR_REQUESTS with the given back-ring private indexes; returns the
 * (non-boolean) work count as the macro computes it. */
uint32_t xrt_final_check_for_requests(void *mem, size_t bytes, uint32_t req_cons,
                                      uint32_t rsp_prod_pvt)
{
    struct xrt_back_ring br;
    unsigned int work;
    BACK_RING_INIT(&br, (struct xrt_sring *)mem, bytes);
    br.req_cons = req_cons;
    br.rsp_prod_pvt = rsp_prod_pvt;
    RING_FINAL_CHECK_FOR_REQUESTS(&br, work);
    return work;
}

/* RING_FINAL_CHECK_FOR_RESPONSES with rsp_cons given. */
uint32_t xrt_final_check_for_responses(void *mem, size_t bytes, uint32_t rsp_cons)
{
    struct xrt_front_ring fr;
    unsigned int work;
    FRONT_RING_ATTACH(&fr, (struct xrt_sring *)mem, rsp_cons, bytes);
    RING_FINAL_CHECK_FOR_RESPONSES(&fr, work);
    return work;
}

/* RING_FREE_REQUESTS / RING_FULL, RING_REQUEST_PROD_OVERFLOW, RING_REQUEST_CONS_OVERFLOW,
 * RING_RESPONSE_PROD_OVERFLOW on a ring of `size` entries. Bit 0..: see the Rust test. */
uint32_t xrt_predicates(uint32_t size, uint32_t req_prod_pvt, uint32_t rsp_cons,
                        uint32_t rsp_prod_pvt, uint32_t prod, uint32_t cons,
                        uint32_t *free_requests)
{
    struct xrt_front_ring fr = {.req_prod_pvt = req_prod_pvt, .rsp_cons = rsp_cons, .nr_ents = size};
    struct xrt_back_ring br = {.rsp_prod_pvt = rsp_prod_pvt, .nr_ents = size};
    struct xrt_front_ring fr2 = {.rsp_cons = rsp_cons, .nr_ents = size};
    *free_requests = RING_FREE_REQUESTS(&fr);
    return (uint32_t)(!!RING_FULL(&fr)) | (uint32_t)(!!RING_REQUEST_PROD_OVERFLOW(&br, prod)) << 1 |
           (uint32_t)(!!RING_REQUEST_CONS_OVERFLOW(&br, cons)) << 2 |
           (uint32_t)(!!RING_RESPONSE_PROD_OVERFLOW(&fr2, prod)) << 3;
}
