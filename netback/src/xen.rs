//! A queue's event channels through the `evtchn` trait: one port for both rings, or a tx
//! and an rx port (`feature-split-event-channels`), bound on one handle of the queue's own.

use std::os::fd::{AsFd, BorrowedFd};

use evtchn::EventChannel;
use xen_types::{DomId, Errno, EvtchnPort};

use crate::Error;

pub(crate) fn ev(e: evtchn::Error) -> Error {
    match e {
        evtchn::Error::NotXen { .. } => Error::NotXen(e.to_string()),
        e => match e.errno() {
            Errno::ENOTCONN => Error::Closed,
            errno => Error::Host(errno),
        },
    }
}

/// The event channels of one queue.
#[derive(Debug)]
pub struct QueueChannel<E: EventChannel> {
    handle: E,
    tx: EvtchnPort,
    rx: EvtchnPort,
}

impl<E: EventChannel> QueueChannel<E> {
    /// The backend's end: binds the frontend's `tx` port and, with split channels, its
    /// `rx` port (`IOCTL_EVTCHN_BIND_INTERDOMAIN`).
    pub fn bind(
        handle: E,
        remote: DomId,
        tx: EvtchnPort,
        rx: Option<EvtchnPort>,
    ) -> Result<Self, Error> {
        let txl = handle.bind_interdomain(remote, tx).map_err(ev)?;
        let rxl = match rx {
            Some(p) => handle.bind_interdomain(remote, p).map_err(ev)?,
            None => txl,
        };
        Ok(QueueChannel {
            handle,
            tx: txl,
            rx: rxl,
        })
    }

    /// The frontend's end: one unbound port for `remote`, or two when `split`.
    pub fn unbound(handle: E, remote: DomId, split: bool) -> Result<Self, Error> {
        let tx = handle.bind_unbound_port(remote).map_err(ev)?;
        let rx = if split {
            handle.bind_unbound_port(remote).map_err(ev)?
        } else {
            tx
        };
        Ok(QueueChannel { handle, tx, rx })
    }

    /// The tx port.
    pub fn tx_port(&self) -> EvtchnPort {
        self.tx
    }

    /// The rx port (the tx port without split channels).
    pub fn rx_port(&self) -> EvtchnPort {
        self.rx
    }

    /// True with separate tx and rx ports.
    pub fn split(&self) -> bool {
        self.tx != self.rx
    }

    /// Signals the tx port's other end.
    pub fn notify_tx(&self) -> Result<(), Error> {
        self.handle.notify(self.tx).map_err(ev)
    }

    /// Signals the rx port's other end.
    pub fn notify_rx(&self) -> Result<(), Error> {
        self.handle.notify(self.rx).map_err(ev)
    }

    /// Takes every pending event and unmasks its port; returns how many.
    pub fn drain(&self) -> Result<usize, Error> {
        let mut buf = [EvtchnPort(0); 4];
        let mut total = 0;
        loop {
            let n = self.handle.read_pending(&mut buf).map_err(ev)?;
            for p in &buf[..n] {
                self.handle.unmask(*p).map_err(ev)?;
            }
            total += n;
            if n < buf.len() {
                return Ok(total);
            }
        }
    }

    /// Waits up to `timeout` for an event, takes it and unmasks; false on time-out.
    pub fn wait(&self, timeout: std::time::Duration) -> Result<bool, Error> {
        let mut buf = [EvtchnPort(0); 4];
        let n = self.handle.wait(&mut buf, Some(timeout)).map_err(ev)?;
        for p in &buf[..n] {
            self.handle.unmask(*p).map_err(ev)?;
        }
        Ok(n > 0)
    }
}

impl<E: EventChannel> AsFd for QueueChannel<E> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.handle.as_fd()
    }
}
