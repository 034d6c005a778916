//! Safe domain and host control over libxenctrl/libxenguest, with a simulated-host backend.
