//! What blkback takes from the host, through the `evtchn` and `gnttab` traits: a ring's event
//! channel ([`RingChannel`] over any [`EventChannel`]), and, for the test frontend
//! (feature `test-utils`), guests on the simulated host ([`XenSimGuest`]) or dom0 as its
//! own guest on real Xen ([`Dom0Front`]).

use std::time::Duration;

use evtchn::EventChannel;
use xen_types::{DomId, Errno, EvtchnPort};

use crate::Error;

/// One ring's event channel: a handle of its own (so its waits see only this ring's port)
/// and the local port bound through it.
#[derive(Debug)]
pub struct RingChannel<E: EventChannel> {
    handle: E,
    port: EvtchnPort,
}

pub(crate) fn ev(e: evtchn::Error) -> Error {
    match e.errno() {
        Errno::ENOTCONN => Error::Closed,
        errno => Error::Host(errno),
    }
}

impl<E: EventChannel> RingChannel<E> {
    /// Binds `handle` to port `port` of domain `remote` (`IOCTL_EVTCHN_BIND_INTERDOMAIN`):
    /// the backend's end.
    pub fn bind(handle: E, remote: DomId, port: EvtchnPort) -> Result<Self, Error> {
        let port = handle.bind_interdomain(remote, port).map_err(ev)?;
        Ok(RingChannel { handle, port })
    }

    /// Allocates a port of `handle` that `remote` may bind (`IOCTL_EVTCHN_BIND_UNBOUND_PORT`):
    /// the frontend's end.
    pub fn unbound(handle: E, remote: DomId) -> Result<Self, Error> {
        let port = handle.bind_unbound_port(remote).map_err(ev)?;
        Ok(RingChannel { handle, port })
    }

    /// The local port.
    pub fn port(&self) -> EvtchnPort {
        self.port
    }

    /// Signals the other end.
    #[inline]
    pub fn notify(&self) -> Result<(), Error> {
        self.handle.notify(self.port).map_err(ev)
    }

    /// Waits for a signal at most `timeout`: `Ok(true)` when one arrived (it is consumed and
    /// the port unmasked), `Ok(false)` on time-out, [`Error::Closed`] when the handle lost
    /// the port. For a caller that handled everything before (an empty ring, the event
    /// armed): it sleeps before reading ([`EventChannel::wait_idle`]).
    pub fn wait(&self, timeout: Duration) -> Result<bool, Error> {
        let mut buf = [EvtchnPort(0); 4];
        let n = self.handle.wait_idle(&mut buf, Some(timeout)).map_err(ev)?;
        if n == 0 {
            return Ok(false);
        }
        self.handle.unmask(self.port).map_err(ev)?;
        Ok(true)
    }
}

#[cfg(feature = "test-utils")]
pub use front_hosts::*;

#[cfg(feature = "test-utils")]
mod front_hosts {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use xen_sim::memory::PageMapping;
    use xen_types::{DomId, Errno, GrantRef, Pfn};

    use super::ev;
    use crate::Error;

    /// Guests on the simulated host (`xen-sim`), as the test frontend sees them: their
    /// memory, the grants their kernel makes (`gnttab_grant_foreign_access`), and event
    /// channels through `evtchn`'s simulated backend.
    ///
    /// By default [`FrontHost::create_guest`](crate::blkfront::FrontHost::create_guest)
    /// creates the domain itself, its memory the frontend's pages from frame 0. A domain that
    /// a toolstack created and built beforehand (through `xenctrl`, say) is
    /// [adopted](XenSimGuest::adopt) instead: the frontend then takes its pages from the
    /// guest's own free memory, as a guest kernel's driver allocates them.
    #[derive(Debug, Clone)]
    pub struct XenSimGuest {
        host: xen_sim::Host,
        state: Arc<parking_lot::Mutex<State>>,
    }

    #[derive(Debug, Default)]
    struct State {
        /// Grants made through this value and not ended.
        grants: BTreeSet<(DomId, GrantRef)>,
        /// Adopted domains and the frames behind their frontend's memory view, in order
        /// (empty until the frontend connects).
        adopted: BTreeMap<DomId, Vec<Pfn>>,
    }

    impl XenSimGuest {
        /// Guests of `host`.
        pub fn new(host: &xen_sim::Host) -> XenSimGuest {
            XenSimGuest {
                host: host.clone(),
                state: Arc::default(),
            }
        }

        /// Takes domain `domid`, which already exists on the host (created and built by a
        /// toolstack, with memory), as a guest: the test frontend that connects as it
        /// allocates its ring and data pages from the domain's free memory
        /// (`Host::alloc_pages`) rather than creating the domain. `ESRCH` for a domain the
        /// host does not have. One frontend per adopted domain.
        pub fn adopt(&self, domid: DomId) -> Result<(), Error> {
            self.host.domain_info(domid).map_err(Error::Host)?;
            self.state.lock().adopted.entry(domid).or_default();
            Ok(())
        }

        /// Grants of `domid` (made through this value) that some domain maps now: the
        /// host's grant table shows `GTF_reading`/`GTF_writing`. For leak checks.
        pub fn grants_in_use(&self, domid: DomId) -> usize {
            let busy = (xen_sys::GTF_reading | xen_sys::GTF_writing) as u16;
            let grants: Vec<GrantRef> = self
                .state
                .lock()
                .grants
                .range((domid, GrantRef(0))..=(domid, GrantRef(u32::MAX)))
                .map(|&(_, g)| g)
                .collect();
            grants
                .into_iter()
                .filter(|&g| {
                    self.host
                        .grant_entry(domid, g)
                        .is_ok_and(|e| e.flags & busy != 0)
                })
                .count()
        }

        /// The frames of an adopted domain's memory view.
        fn take_pages(&self, domid: DomId, pages: usize) -> Result<PageMapping, Error> {
            let h = &self.host;
            let pfns = h.alloc_pages(domid, pages).map_err(Error::Host)?;
            let mut st = self.state.lock();
            let slot = st.adopted.entry(domid).or_default();
            if !slot.is_empty() {
                drop(st);
                let _ = h.free_pages(domid, &pfns);
                return Err(Error::Config(format!(
                    "domain {} already runs a test frontend",
                    domid.0
                )));
            }
            match h.guest_pages(domid, &pfns) {
                Ok(m) => {
                    *slot = pfns;
                    Ok(m)
                }
                Err(e) => {
                    drop(st);
                    let _ = h.free_pages(domid, &pfns);
                    Err(Error::Host(e))
                }
            }
        }
    }

    impl crate::blkfront::FrontHost for XenSimGuest {
        type Memory = PageMapping;
        type Evtchn = evtchn::SimEvtchn;

        fn create_guest(&self, domid: DomId, pages: usize) -> Result<Self::Memory, Error> {
            if self.state.lock().adopted.contains_key(&domid) {
                return self.take_pages(domid, pages);
            }
            let cfg = xen_sys::xen_domctl_createdomain {
                max_grant_frames: 64,
                ..xen_sim::domain::small_pv_guest(1023)
            };
            let h = &self.host;
            let d = h.create_domain(domid, &cfg).map_err(Error::Host)?;
            h.set_max_mem_kb(d, (pages as u64 + 16) * 4)
                .map_err(Error::Host)?;
            let pfns: Vec<Pfn> = (0..pages as u64).map(Pfn).collect();
            h.populate_physmap(d, &pfns).map_err(Error::Host)?;
            h.guest_pages(d, &pfns).map_err(Error::Host)
        }

        fn grant(
            &self,
            domid: DomId,
            pfn: usize,
            to: DomId,
            readonly: bool,
        ) -> Result<GrantRef, Error> {
            let mut st = self.state.lock();
            // Page `pfn` of the frontend's view: the same frame, or the adopted domain's.
            let frame = match st.adopted.get(&domid) {
                Some(pfns) => *pfns.get(pfn).ok_or(Error::Host(Errno::EINVAL))?,
                None => Pfn(pfn as u64),
            };
            let g = self
                .host
                .grant_access(domid, to, frame, readonly)
                .map_err(Error::Host)?;
            st.grants.insert((domid, g));
            Ok(g)
        }

        fn end_grant(&self, domid: DomId, gref: GrantRef) -> Result<(), Error> {
            self.host.end_access(domid, gref).map_err(Error::Host)?;
            self.state.lock().grants.remove(&(domid, gref));
            Ok(())
        }

        fn open_evtchn(&self, domid: DomId) -> Result<evtchn::SimEvtchn, Error> {
            evtchn::SimEvtchn::open(&self.host, domid).map_err(ev)
        }

        fn destroy_guest(&self, domid: DomId) {
            let _ = self.host.destroy(domid);
            let mut st = self.state.lock();
            st.grants.retain(|&(d, _)| d != domid);
            st.adopted.remove(&domid);
        }
    }

    /// dom0 as its own test frontend on real Xen: its "guest memory" is shared through
    /// gntalloc (`gnttab::GrantShare`; every page granted read-write to dom0 once, so
    /// [`FrontHost::grant`](crate::blkfront::FrontHost::grant) returns the existing grant and
    /// `end_grant` keeps it), its ports come from `/dev/xen/evtchn`. For loopback tests
    /// inside a dom0.
    #[derive(Debug, Clone, Default)]
    pub struct Dom0Front {
        refs: Arc<parking_lot::Mutex<Vec<GrantRef>>>,
    }

    impl crate::blkfront::FrontHost for Dom0Front {
        type Memory = gnttab::SharedPages;
        type Evtchn = evtchn::Evtchn;

        fn create_guest(&self, domid: DomId, pages: usize) -> Result<gnttab::SharedPages, Error> {
            use gnttab::GrantShare;
            if !domid.is_dom0() {
                return Err(Error::Config("Dom0Front serves dom0 only".into()));
            }
            let shr = gnttab::Gntshr::open().map_err(|e| Error::Host(e.errno()))?;
            let sp = shr
                .share(DomId::DOM0, pages, gnttab::Access::ReadWrite)
                .map_err(|e| Error::Host(e.errno()))?;
            *self.refs.lock() = sp.refs().to_vec();
            Ok(sp)
        }

        fn grant(
            &self,
            _domid: DomId,
            pfn: usize,
            _to: DomId,
            _ro: bool,
        ) -> Result<GrantRef, Error> {
            self.refs
                .lock()
                .get(pfn)
                .copied()
                .ok_or(Error::Host(Errno::EINVAL))
        }

        fn end_grant(&self, _domid: DomId, _gref: GrantRef) -> Result<(), Error> {
            Ok(())
        }

        fn open_evtchn(&self, _domid: DomId) -> Result<evtchn::Evtchn, Error> {
            evtchn::Evtchn::open().map_err(ev)
        }

        fn destroy_guest(&self, _domid: DomId) {}
    }
}
