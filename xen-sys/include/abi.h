/* The Xen public ABI and the toolstack library headers that xen-sys binds.
 * Read by xen-sys-gen (bindgen); not compiled into anything. */
#define __XEN_TOOLS__ 1
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/ioctl.h>
#include <xen/xen.h>
#include <xen/grant_table.h>
#include <xen/event_channel.h>
#include <xen/io/ring.h>
#include <xen/io/blkif.h>
#include <xen/io/netif.h>
#include <xen/io/xs_wire.h>
#include <xen/io/xenbus.h>
#include <xen/io/console.h>
#include <xen/io/protocols.h>
#include <xen/sys/evtchn.h>
#include <xen/sys/gntdev.h>
#include <xen/sys/gntalloc.h>
#include <xen/sys/privcmd.h>
#include <xentoollog.h>
#include <xenctrl.h>
#include <xenguest.h>
#include <xenevtchn.h>
#include <xengnttab.h>
#include <xenforeignmemory.h>
