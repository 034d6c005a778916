//! A console's pseudo-terminal (io.c's `console_create_tty`): `openpty`, the slave in raw
//! mode and kept open by the daemon for the console's life (so the master never reads
//! end-of-file or hangs up while no client is attached, as the C daemon does on Linux),
//! the master non-blocking.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};

/// An open pty pair.
#[derive(Debug)]
pub(crate) struct Pty {
    master: OwnedFd,
    _slave: OwnedFd,
    name: String,
}

fn io_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl Pty {
    /// A new pty, raw, master non-blocking.
    pub(crate) fn open() -> io::Result<Pty> {
        let p = nix::pty::openpty(None, None).map_err(io_err)?;
        let mut term = tcgetattr(&p.slave).map_err(io_err)?;
        cfmakeraw(&mut term);
        tcsetattr(&p.slave, SetArg::TCSANOW, &term).map_err(io_err)?;
        let name = nix::unistd::ttyname(p.slave.as_fd())
            .map_err(io_err)?
            .to_string_lossy()
            .into_owned();
        let flags = fcntl(p.master.as_raw_fd(), FcntlArg::F_GETFL).map_err(io_err)?;
        fcntl(
            p.master.as_raw_fd(),
            FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(io_err)?;
        for fd in [&p.master, &p.slave] {
            fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(io_err)?;
        }
        Ok(Pty {
            master: p.master,
            _slave: p.slave,
            name,
        })
    }

    /// The slave's path (`/dev/pts/N`): what goes into `console/tty`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The master's descriptor (for poll).
    pub(crate) fn fd(&self) -> RawFd {
        self.master.as_raw_fd()
    }

    /// Reads from the master (non-blocking).
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        nix::unistd::read(self.master.as_raw_fd(), buf).map_err(io_err)
    }

    /// Writes to the master (non-blocking).
    pub(crate) fn write(&self, buf: &[u8]) -> io::Result<usize> {
        nix::unistd::write(&self.master, buf).map_err(io_err)
    }
}
