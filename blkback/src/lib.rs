//! A userspace block backend (blkif) that Linux's xen-blkfront accepts.
