//! A wake-up a thread can sleep on in `poll` beside its event channel and packet queue: an
//! `eventfd`. Used to stop queue threads (no timed wake-ups to look at a flag) and to hand
//! frames from one queue's thread to another's.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// An `eventfd` (non-blocking, close-on-exec).
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    /// A new, unsignalled one (`eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)`).
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker { fd })
    }

    /// Signals it: it stays readable until [`take`](Waker::take)n.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one`, which lives across the call. It can only
        // fail when the counter would overflow, and then the descriptor is readable anyway.
        unsafe {
            libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8);
        }
    }

    /// Clears the signal; true if it was signalled.
    pub fn take(&self) -> bool {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into `v`, which lives across the call.
        let r = unsafe { libc::read(self.fd.as_raw_fd(), (&raw mut v).cast(), 8) };
        r == 8
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_then_take_once() {
        let w = Waker::new().unwrap();
        assert!(!w.take());
        w.wake();
        w.wake();
        assert!(w.take());
        assert!(!w.take());
    }
}
