//! Event channels: real (libxenevtchn) and simulated-host backends behind one trait.
