//! Consoles of the simulated host: the hypervisor's console ring and a guest's PV console.
//!
//! - The hypervisor's ring (`conring` of `xen/drivers/char/console.c`): what Xen prints is
//!   appended with [`Host::hypervisor_print`], which raises `VIRQ_CON_RING` in dom0;
//!   [`Host::read_console_ring`] is `XEN_SYSCTL_readconsole` with Xen's index arithmetic
//!   (free-running 32-bit producer and consumer; an incremental read from an index that
//!   fell out of the ring starts at the oldest byte kept; `clear` moves the consumer).
//! - [`GuestConsole`] is a simulated guest's `hvc` driver: it writes its console output into
//!   the console page the domain builder set up (`console_pfn`, seeded as grant
//!   `GNTTAB_RESERVED_CONSOLE`) and reads what the backend sends, over the ring of
//!   `xen/io/console.h` ([`xen_ring::console`]), notifying the backend through the console
//!   event channel (`console_port`).

use std::time::{Duration, Instant};

use xen_ring::console::{ConsoleError, ConsoleRing, End};
use xen_types::{DomId, Errno, EvtchnPort};

use crate::evtchn::Handle;
use crate::host::Host;
use crate::memory::PageMapping;

/// Bytes the hypervisor's console ring keeps (Xen's default `conring_size`, 16 KiB).
pub const CONRING_SIZE: usize = 16 << 10;

/// The hypervisor's console ring.
#[derive(Debug)]
pub struct ConRing {
    buf: Vec<u8>,
    /// Oldest byte kept (`conringc`).
    cons: u32,
    /// Next byte written (`conringp`).
    prod: u32,
}

impl Default for ConRing {
    fn default() -> Self {
        ConRing {
            buf: vec![0; CONRING_SIZE],
            cons: 0,
            prod: 0,
        }
    }
}

impl ConRing {
    fn puts(&mut self, s: &[u8]) {
        let size = self.buf.len() as u32;
        for &b in s {
            let i = (self.prod & (size - 1)) as usize;
            self.buf[i] = b;
            self.prod = self.prod.wrapping_add(1);
        }
        if self.prod.wrapping_sub(self.cons) > size {
            self.cons = self.prod.wrapping_sub(size);
        }
    }

    /// `read_console_ring` of Xen's console.c.
    fn read(&mut self, index: Option<u32>, max: usize, clear: bool) -> (Vec<u8>, u32) {
        let size = self.buf.len() as u32;
        let (mut c, p) = (self.cons, self.prod);
        if let Some(i) = index {
            let inside = if c <= p {
                c < i && i <= p
            } else {
                c < i || i <= p
            };
            if inside {
                c = i;
            }
        }
        let mut out = Vec::with_capacity(max.min(p.wrapping_sub(c) as usize));
        while c != p && out.len() < max {
            let i = (c & (size - 1)) as usize;
            let len = (p.wrapping_sub(c) as usize)
                .min(self.buf.len() - i)
                .min(max - out.len());
            out.extend_from_slice(&self.buf[i..i + len]);
            c = c.wrapping_add(len as u32);
        }
        if clear {
            self.cons = if p.wrapping_sub(c) > size {
                p.wrapping_sub(size)
            } else {
                c
            };
        }
        (out, c)
    }
}

impl Host {
    /// The hypervisor prints `text` (`printk`): it goes into the console ring and
    /// `VIRQ_CON_RING` is raised in dom0.
    pub fn hypervisor_print(&self, text: &[u8]) {
        let mut st = self.lock();
        st.conring.puts(text);
        crate::evtchn::send_global_virq(&mut st, xen_types::Virq::CON_RING);
    }

    /// `XEN_SYSCTL_readconsole`: up to `max` bytes of the hypervisor's console ring, from
    /// the oldest byte kept, or with `Some(index)` (incremental) from `index` when it is
    /// still in the ring. Returns the bytes and the index after them; `clear` drops what
    /// was read. Only dom0 may read (`EPERM`).
    pub fn read_console_ring(
        &self,
        caller: DomId,
        index: Option<u32>,
        max: usize,
        clear: bool,
    ) -> Result<(Vec<u8>, u32), Errno> {
        if !caller.is_dom0() {
            return Err(Errno::EPERM);
        }
        Ok(self.lock().conring.read(index, max, clear))
    }
}

/// A simulated guest's PV console (the guest kernel's `hvc` driver): the console page and
/// event channel the domain builder gave it. Dropping it closes the guest's end of the
/// event channel.
#[derive(Debug)]
pub struct GuestConsole {
    ring: ConsoleRing<PageMapping>,
    evtchn: Handle,
    port: EvtchnPort,
    dom: DomId,
}

/// Errors of [`GuestConsole`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuestConsoleError {
    /// The host refused (unknown domain `ESRCH`, domain not built `EINVAL`, ...).
    #[error("console of domain {dom}: {errno}")]
    Host {
        /// The guest.
        dom: DomId,
        /// Why.
        errno: Errno,
    },
    /// The backend broke the ring.
    #[error(transparent)]
    Ring(#[from] ConsoleError),
    /// The backend did not make room (or send) in time.
    #[error("console of domain {0}: timed out")]
    Timeout(DomId),
}

impl GuestConsole {
    /// Domain `dom`'s console, once built (`EINVAL` before [`Host::build_pv`]): maps its
    /// console page and takes delivery of its console port.
    pub fn attach(host: &Host, dom: DomId) -> Result<GuestConsole, GuestConsoleError> {
        let e = |errno| GuestConsoleError::Host { dom, errno };
        let built = host
            .lock()
            .domains
            .get(&dom)
            .ok_or(Errno::ESRCH)
            .and_then(|d| d.built.clone().ok_or(Errno::EINVAL))
            .map_err(e)?;
        let page = host.guest_pages(dom, &[built.console_pfn]).map_err(e)?;
        let evtchn = host.evtchn_open(dom).map_err(e)?;
        evtchn.attach(built.console_port).map_err(e)?;
        Ok(GuestConsole {
            ring: ConsoleRing::new(page, End::Frontend)?,
            evtchn,
            port: built.console_port,
            dom,
        })
    }

    /// The guest's console port.
    pub fn port(&self) -> EvtchnPort {
        self.port
    }

    /// Writes what fits of `data` to the console and notifies the backend; returns how many
    /// bytes went in (0 when the ring is full).
    pub fn write(&self, data: &[u8]) -> Result<usize, GuestConsoleError> {
        let n = self.ring.write(data)?;
        if n > 0 {
            self.notify()?;
        }
        Ok(n)
    }

    /// Writes all of `data`, waiting for the backend to make room (as `hvc` blocks), up to
    /// `timeout`.
    pub fn write_all(&self, data: &[u8], timeout: Duration) -> Result<(), GuestConsoleError> {
        let deadline = Instant::now() + timeout;
        let mut done = 0;
        while done < data.len() {
            let n = self.write(&data[done..])?;
            done += n;
            if n == 0 && !self.wait_event(deadline) {
                return Err(GuestConsoleError::Timeout(self.dom));
            }
        }
        Ok(())
    }

    /// Reads what the backend sent (0 bytes when none); tells the backend the room it made.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, GuestConsoleError> {
        let n = self.ring.read(buf)?;
        if n > 0 {
            self.notify()?;
        }
        Ok(n)
    }

    /// Reads until `want` bytes arrived or `timeout` passed; returns what arrived.
    pub fn read_exact_timeout(
        &self,
        want: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, GuestConsoleError> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while out.len() < want {
            let n = self.read(&mut buf[..(want - out.len()).min(1024)])?;
            out.extend_from_slice(&buf[..n]);
            if n == 0 && !self.wait_event(deadline) {
                break;
            }
        }
        Ok(out)
    }

    fn notify(&self) -> Result<(), GuestConsoleError> {
        self.evtchn
            .notify(self.port)
            .map_err(|errno| GuestConsoleError::Host {
                dom: self.dom,
                errno,
            })
    }

    /// Waits for an event on the console port (or a short poll interval) until `deadline`.
    fn wait_event(&self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut ports = [EvtchnPort(0); 4];
        // Events can be missed between the ring check and the wait: bounded slices.
        let n = self
            .evtchn
            .wait(&mut ports, Some(left.min(Duration::from_millis(10))));
        for p in &ports[..n] {
            let _ = self.evtchn.unmask(*p);
        }
        true
    }
}
