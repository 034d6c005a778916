/*
 * LD_PRELOAD shim that lets Debian's C xenstored (xen-utils-4.17) run as a
 * dom0 daemon on plain Linux, without a hypervisor, so that it can serve as a
 * same-run peer in tests and benchmarks.
 *
 * It replaces the Xen library calls xenstored makes (libxenctrl,
 * libxenevtchn, libxengnttab) with in-process fakes, and redirects the two
 * files dom0 initialisation reads (/proc/xen/xsd_port, /proc/xen/xsd_kva) to
 * memfds. Nothing here talks to a hypervisor.
 *
 * Environment:
 *   XENSTORED_SHIM_MAX_DOMID  domains 0..=N "exist" for xc_domain_getinfo
 *                             (default: every ordinary domid exists).
 *   XENSTORED_SHIM_TRACE      if set, log every faked call to stderr.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <xenctrl.h>
#include <xenevtchn.h>
#include <xengnttab.h>

#define SHIM_XSD_KVA "/proc/xen/xsd_kva"
#define SHIM_XSD_PORT "/proc/xen/xsd_port"
/* Port the fake dom0 kernel "allocated" for xenstored's xenbus channel. */
#define SHIM_DOM0_XENBUS_PORT 1

static void shim_trace(const char *fmt, ...)
{
    va_list ap;

    if (!getenv("XENSTORED_SHIM_TRACE"))
        return;
    va_start(ap, fmt);
    fputs("xenstored_shim: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- /proc/xen redirection ---------------------------------------------- */

static int kva_fd = -1;

static int shim_memfd_with(const char *name, const void *data, size_t len,
                           size_t size)
{
    int fd = memfd_create(name, MFD_CLOEXEC);

    if (fd < 0)
        return -1;
    if (ftruncate(fd, (off_t)size) < 0 ||
        (len && pwrite(fd, data, len, 0) != (ssize_t)len)) {
        int err = errno;

        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

static int shim_redirect(const char *path)
{
    if (!path)
        return -2;
    if (strcmp(path, SHIM_XSD_PORT) == 0) {
        char buf[16];
        int len = snprintf(buf, sizeof(buf), "%d\n", SHIM_DOM0_XENBUS_PORT);

        shim_trace("open(%s) -> memfd", path);
        return shim_memfd_with("xsd_port", buf, (size_t)len, (size_t)len);
    }
    if (strcmp(path, SHIM_XSD_KVA) == 0) {
        /* One page shared by every open, like the kernel's xenbus page. */
        if (kva_fd < 0) {
            kva_fd = shim_memfd_with("xsd_kva", NULL, 0,
                                     (size_t)getpagesize());
            if (kva_fd < 0)
                return -1;
        }
        shim_trace("open(%s) -> memfd", path);
        return fcntl(kva_fd, F_DUPFD_CLOEXEC, 0);
    }
    return -2;
}

typedef int (*open_fn)(const char *, int, ...);

static int shim_open_common(const char *sym, const char *path, int flags,
                            va_list ap)
{
    mode_t mode = 0;
    int fd = shim_redirect(path);
    open_fn real;

    if (fd != -2)
        return fd;
    if (flags & (O_CREAT | O_TMPFILE))
        mode = va_arg(ap, mode_t);
    real = (open_fn)dlsym(RTLD_NEXT, sym);
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    return real(path, flags, mode);
}

int open(const char *path, int flags, ...)
{
    va_list ap;
    int fd;

    va_start(ap, flags);
    fd = shim_open_common("open", path, flags, ap);
    va_end(ap);
    return fd;
}

int open64(const char *path, int flags, ...)
{
    va_list ap;
    int fd;

    va_start(ap, flags);
    fd = shim_open_common("open64", path, flags, ap);
    va_end(ap);
    return fd;
}

/* ---- libxenctrl ------------------------------------------------------------ */

/* Opaque handles: any distinct non-NULL pointer will do. */
static char xc_token, gnttab_token;

xc_interface *xc_interface_open(xentoollog_logger *logger,
                                xentoollog_logger *dombuild_logger,
                                unsigned open_flags)
{
    (void)logger;
    (void)dombuild_logger;
    (void)open_flags;
    shim_trace("xc_interface_open");
    return (xc_interface *)&xc_token;
}

int xc_interface_close(xc_interface *xch)
{
    (void)xch;
    return 0;
}

static uint32_t shim_max_domid(void)
{
    const char *s = getenv("XENSTORED_SHIM_MAX_DOMID");

    if (s && *s)
        return (uint32_t)strtoul(s, NULL, 0);
    return DOMID_FIRST_RESERVED - 1;
}

int xc_domain_getinfo(xc_interface *xch, uint32_t first_domid,
                      unsigned int max_doms, xc_dominfo_t *info)
{
    uint32_t max = shim_max_domid();
    unsigned int n = 0;

    (void)xch;
    for (uint32_t d = first_domid; d <= max && n < max_doms; d++, n++) {
        memset(&info[n], 0, sizeof(info[n]));
        info[n].domid = d;
        info[n].running = 1;
        info[n].max_vcpu_id = 0;
        info[n].nr_online_vcpus = 1;
    }
    shim_trace("xc_domain_getinfo(%u, %u) -> %u", first_domid, max_doms, n);
    return (int)n;
}

/* ---- libxenevtchn ---------------------------------------------------------- */

struct xenevtchn_handle {
    int pipe_rd;
    int pipe_wr;
    evtchn_port_t next_port;
};

static xenevtchn_handle *shim_evtchn_new(void)
{
    int p[2];
    xenevtchn_handle *h;

    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
        return NULL;
    h = calloc(1, sizeof(*h));
    if (!h) {
        close(p[0]);
        close(p[1]);
        errno = ENOMEM;
        return NULL;
    }
    h->pipe_rd = p[0];
    h->pipe_wr = p[1];
    /* Leave room for the dom0 xenbus port the "kernel" handed out. */
    h->next_port = SHIM_DOM0_XENBUS_PORT + 1;
    return h;
}

xenevtchn_handle *xenevtchn_open(xentoollog_logger *logger,
                                 unsigned open_flags)
{
    (void)logger;
    (void)open_flags;
    shim_trace("xenevtchn_open");
    return shim_evtchn_new();
}

xenevtchn_handle *xenevtchn_fdopen(xentoollog_logger *logger, int fd,
                                   unsigned open_flags)
{
    (void)logger;
    (void)fd;
    (void)open_flags;
    shim_trace("xenevtchn_fdopen");
    return shim_evtchn_new();
}

int xenevtchn_close(xenevtchn_handle *xce)
{
    if (!xce)
        return 0;
    close(xce->pipe_rd);
    close(xce->pipe_wr);
    free(xce);
    return 0;
}

/* Never readable: no event ever arrives on the fake channels. */
int xenevtchn_fd(xenevtchn_handle *xce)
{
    return xce->pipe_rd;
}

int xenevtchn_notify(xenevtchn_handle *xce, evtchn_port_t port)
{
    (void)xce;
    (void)port;
    return 0;
}

xenevtchn_port_or_error_t xenevtchn_bind_interdomain(xenevtchn_handle *xce,
                                                     uint32_t domid,
                                                     evtchn_port_t remote_port)
{
    evtchn_port_t port = xce->next_port++;

    shim_trace("xenevtchn_bind_interdomain(%u, %u) -> %u", domid,
               remote_port, port);
    return (xenevtchn_port_or_error_t)port;
}

xenevtchn_port_or_error_t xenevtchn_bind_virq(xenevtchn_handle *xce,
                                              unsigned int virq)
{
    evtchn_port_t port = xce->next_port++;

    shim_trace("xenevtchn_bind_virq(%u) -> %u", virq, port);
    return (xenevtchn_port_or_error_t)port;
}

int xenevtchn_unbind(xenevtchn_handle *xce, evtchn_port_t port)
{
    (void)xce;
    (void)port;
    return 0;
}

xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle *xce)
{
    char c;

    /* Drain the (never written) pipe and report that nothing is pending. */
    (void)!read(xce->pipe_rd, &c, 1);
    errno = EAGAIN;
    return -1;
}

int xenevtchn_unmask(xenevtchn_handle *xce, evtchn_port_t port)
{
    (void)xce;
    (void)port;
    return 0;
}

/* ---- libxengnttab ---------------------------------------------------------- */

xengnttab_handle *xengnttab_open(xentoollog_logger *logger,
                                 unsigned open_flags)
{
    (void)logger;
    (void)open_flags;
    shim_trace("xengnttab_open");
    return (xengnttab_handle *)&gnttab_token;
}

int xengnttab_close(xengnttab_handle *xgt)
{
    (void)xgt;
    return 0;
}

int xengnttab_set_max_grants(xengnttab_handle *xgt, uint32_t nr_grants)
{
    (void)xgt;
    (void)nr_grants;
    return 0;
}

/*
 * An introduced guest's xenstore ring: a private zeroed page. The guest never
 * writes to it, so its connection stays idle, but XS_INTRODUCE, XS_RELEASE
 * and @introduceDomain/@releaseDomain watches behave as on Xen.
 */
void *xengnttab_map_grant_ref(xengnttab_handle *xgt, uint32_t domid,
                              uint32_t ref, int prot)
{
    void *p;

    (void)xgt;
    p = mmap(NULL, (size_t)getpagesize(), prot, MAP_SHARED | MAP_ANONYMOUS,
             -1, 0);
    shim_trace("xengnttab_map_grant_ref(%u, %u) -> %p", domid, ref, p);
    return p == MAP_FAILED ? NULL : p;
}

int xengnttab_unmap(xengnttab_handle *xgt, void *start_address,
                    uint32_t count)
{
    (void)xgt;
    return munmap(start_address, (size_t)count * (size_t)getpagesize());
}
