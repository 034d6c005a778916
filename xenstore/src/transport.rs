//! Byte-stream transports under the clients: the unix socket, `/dev/xen/xenbus`, and (see
//! [`crate::ring`]) a domain's ring page.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default path of xenstored's unix socket.
pub const DEFAULT_SOCKET: &str = "/var/run/xenstored/socket";
/// The kernel's xenbus device (same framing, one message per `write`).
pub const XENBUS_DEVICE: &str = "/dev/xen/xenbus";

/// The socket path clients use: `XENSTORED_PATH` if set, else [`DEFAULT_SOCKET`].
pub fn socket_path() -> PathBuf {
    std::env::var_os("XENSTORED_PATH").map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// The sending half of a transport.
pub trait SendHalf: Send {
    /// Sends all of `bytes` (one whole message).
    fn send(&mut self, bytes: &[u8]) -> io::Result<()>;
}

/// The receiving half of a transport.
pub trait RecvHalf: Send {
    /// Receives some bytes into `buf`, waiting at most `timeout` (`None`: forever).
    /// `Ok(0)` means the peer closed; a timeout is an error of kind
    /// [`io::ErrorKind::TimedOut`].
    fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize>;
}

/// A bidirectional byte stream that can be split for concurrent use.
pub trait Transport {
    /// Splits into independently usable halves.
    fn split(self) -> io::Result<(Box<dyn SendHalf>, Box<dyn RecvHalf>)>;
}

/// A transport over a file descriptor: a unix socket or the xenbus character device.
#[derive(Debug)]
pub struct FdTransport {
    fd: OwnedFd,
}

impl FdTransport {
    /// Connects to xenstored's unix socket at `path`.
    pub fn connect(path: impl AsRef<Path>) -> io::Result<FdTransport> {
        Ok(FdTransport::from(UnixStream::connect(path)?))
    }

    /// Opens the xenbus device at `path` (normally [`XENBUS_DEVICE`]).
    pub fn open_device(path: impl AsRef<Path>) -> io::Result<FdTransport> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(FdTransport { fd: f.into() })
    }
}

impl From<UnixStream> for FdTransport {
    fn from(s: UnixStream) -> FdTransport {
        FdTransport { fd: s.into() }
    }
}

struct FdHalf(File);

impl SendHalf for FdHalf {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }
}

impl RecvHalf for FdHalf {
    fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        if let Some(t) = timeout {
            // Rounded up: a timeout under a millisecond must not become `poll(0)`, which
            // returns at once and turns the caller's wait into a busy loop.
            let ms = u16::try_from(t.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
            loop {
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(0) => return Err(io::ErrorKind::TimedOut.into()),
                    Ok(_) => break,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

impl Transport for FdTransport {
    fn split(self) -> io::Result<(Box<dyn SendHalf>, Box<dyn RecvHalf>)> {
        let rx = File::from(self.fd.try_clone()?);
        let tx = File::from(self.fd);
        Ok((Box::new(FdHalf(tx)), Box::new(FdHalf(rx))))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_timeout_under_a_millisecond_still_waits() {
        let (a, _b) = UnixStream::pair().unwrap();
        let (_, mut rx) = FdTransport::from(a).split().unwrap();
        let mut buf = [0u8; 16];
        let t = Duration::from_micros(300);
        let start = Instant::now();
        let e = rx.recv(&mut buf, Some(t)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        // poll slept (at least the timeout), instead of returning at once.
        assert!(start.elapsed() >= t, "returned after {:?}", start.elapsed());
    }
}
