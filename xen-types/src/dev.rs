//! Opening the Xen device nodes (`/dev/xen/evtchn`, `gntdev`, `gntalloc`, `privcmd`, ...).

use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::Errno;

/// Opens a Xen device node read-write and close-on-exec, with `extra_flags` (e.g.
/// `libc::O_NONBLOCK`) added. On failure the errno is returned; [`Errno::means_no_device`]
/// tells "this is not a Xen dom0 (or the driver is not loaded)" apart from other failures.
pub fn open_device(path: &str, extra_flags: i32) -> Result<OwnedFd, Errno> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(extra_flags)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)))
}

impl Errno {
    /// True for the errnos `open` gives when a device node or its driver is absent
    /// (`ENOENT`, `ENODEV`, `ENXIO`): the machine is not a Xen dom0.
    pub fn means_no_device(self) -> bool {
        [Errno::ENOENT, Errno::ENODEV, Errno::ENXIO].contains(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_present_devices() {
        let e = open_device("/dev/xen/no-such-device", 0).unwrap_err();
        assert!(e.means_no_device(), "{e}");
        assert!(open_device("/dev/null", libc::O_NONBLOCK).is_ok());
        assert!(!Errno::EACCES.means_no_device());
    }
}
