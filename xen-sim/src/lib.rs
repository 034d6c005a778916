//! A simulated Xen host: domains, memory accounting, event channels and grant tables with Xen's rules, in one process.
