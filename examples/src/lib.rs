//! Runnable examples of the Xen control stack.
