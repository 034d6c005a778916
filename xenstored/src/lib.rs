//! A native XenStore daemon: drop-in for C xenstored.
