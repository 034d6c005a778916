//! Grant tables: map, copy and share pages, real (libxengnttab) and simulated-host backends.
