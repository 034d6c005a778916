//! XenStore wire protocol and clients (unix socket, /dev/xen/xenbus, domain ring), blocking and async.
