//! Newtypes for the numbers of the Xen ABI (domain ids, ports, grant references, frames) and shared-memory access.
