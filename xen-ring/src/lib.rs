//! Shared rings as in xen/io/ring.h, generic over request/response types and over shared memory.
