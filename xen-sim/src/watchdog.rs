//! Domain watchdogs: `SCHEDOP_watchdog` (Xen's `domain_watchdog` in `common/sched/core.c`).
//!
//! Each domain has [`NR_DOMAIN_WATCHDOG_TIMERS`] one-shot timers. Id 0 takes a free one and
//! starts it (the answer is its id, from 1; none free: `ENOSPC`); an id in use with a timeout
//! restarts it for that many seconds (a kick); with timeout 0 stops and frees it; an id out of
//! range or not in use is `EINVAL`. A timer that fires on a domain that is not shutting down
//! or dying shuts it down with `SHUTDOWN_watchdog`; for dom0, the hardware domain, Xen's
//! `hwdom_shutdown` reboots the machine ("watchdog rebooting machine"): here every domain is
//! destroyed (each raises its `Destroyed` exception), the memory returns to the host, the
//! console ring and the domid rover start again, dom0 boots afresh and [`Host::boots`]
//! counts one more.
//!
//! Timers run on the host's [`Clock`]: with a manual clock, [`Host::run_timers`] fires what is
//! due (tests call it after advancing the clock), so runs are deterministic; with the system
//! clock a thread of the host fires them on time while any is armed. Every `SCHEDOP_watchdog`
//! first fires what is due, so a kick cannot rescue a timer that already expired.
//!
//! ```
//! use std::time::Duration;
//! use xen_sim::{Clock, Host, HostConfig};
//! use xen_types::DomId;
//!
//! let host = Host::new(HostConfig { clock: Clock::manual(), ..HostConfig::default() });
//! let id = host.watchdog(DomId::DOM0, 0, 10).unwrap();
//! host.clock().advance(Duration::from_secs(9));
//! host.watchdog(DomId::DOM0, id, 10).unwrap(); // kicked: 10 s from now
//! host.clock().advance(Duration::from_secs(9));
//! assert!(host.run_timers().is_empty());
//! host.clock().advance(Duration::from_secs(1));
//! assert_eq!(host.run_timers().len(), 1); // dom0's: the host rebooted
//! assert_eq!(host.boots(), 2);
//! ```
//!
//! [`Clock`]: crate::Clock

use std::sync::Arc;
use std::time::Duration;

use xen_types::{DomId, Errno, Pages};

use crate::domain::{boot_dom0, raise_dom_exc, ExceptionKind};
use crate::host::{HostInner, HostState};
use crate::Host;

/// Watchdog timers per domain (`NR_DOMAIN_WATCHDOG_TIMERS` of `xen/sched.h`).
pub const NR_DOMAIN_WATCHDOG_TIMERS: usize = 2;

/// How often the system-clock timer thread looks again at most (a new, earlier timer may
/// have been armed meanwhile).
const TIMER_THREAD_TICK: Duration = Duration::from_millis(20);

/// One watchdog slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Slot {
    /// Not in use.
    #[default]
    Free,
    /// In use, firing at this clock reading.
    Armed(Duration),
    /// In use, its timer already run (it stays in use until stopped, as in Xen).
    Fired,
}

/// A domain's watchdog timers.
#[derive(Debug, Clone, Default)]
pub struct DomainWatchdogs {
    slots: [Slot; NR_DOMAIN_WATCHDOG_TIMERS],
}

impl DomainWatchdogs {
    /// Earliest pending expiry.
    fn next(&self) -> Option<Duration> {
        self.slots
            .iter()
            .filter_map(|s| match s {
                Slot::Armed(t) => Some(*t),
                _ => None,
            })
            .min()
    }
}

/// A watchdog timer that fired ([`Host::run_timers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogFired {
    /// The domain whose timer fired.
    pub dom: DomId,
    /// The timer's id (from 1).
    pub id: u32,
    /// True when it was dom0's: the host rebooted.
    pub rebooted: bool,
}

impl Host {
    /// `SCHEDOP_watchdog` issued by `caller` (a domain arms its own watchdogs; `xc_watchdog`
    /// is dom0's): `id` 0 arms a new timer of `timeout` seconds and answers its id; an id in
    /// use restarts it with `timeout`, or stops and frees it when `timeout` is 0. Errors:
    /// unknown caller `ESRCH`, id out of range or not in use `EINVAL`, no free timer `ENOSPC`.
    pub fn watchdog(&self, caller: DomId, id: u32, timeout: u32) -> Result<u32, Errno> {
        self.run_timers();
        let mut st = self.lock();
        let now = st.clock.now();
        let d = st.domains.get_mut(&caller).ok_or(Errno::ESRCH)?;
        if id as usize > NR_DOMAIN_WATCHDOG_TIMERS {
            return Err(Errno::EINVAL);
        }
        let at = now + Duration::from_secs(u64::from(timeout));
        let answer = if id == 0 {
            let free = d
                .watchdogs
                .slots
                .iter()
                .position(|s| *s == Slot::Free)
                .ok_or(Errno(libc::ENOSPC))?;
            d.watchdogs.slots[free] = Slot::Armed(at);
            free as u32 + 1
        } else {
            let slot = &mut d.watchdogs.slots[id as usize - 1];
            if *slot == Slot::Free {
                return Err(Errno::EINVAL);
            }
            *slot = if timeout == 0 {
                Slot::Free
            } else {
                Slot::Armed(at)
            };
            0
        };
        if !self.clock().is_manual() && !st.timer_thread && timeout != 0 {
            st.timer_thread = true;
            spawn_timer_thread(Arc::downgrade(&self.inner));
        }
        Ok(answer)
    }

    /// `dom`'s watchdogs in use: each id with the time left before it fires (`None` once
    /// fired), as Xen's `q` debug key lists them. Unknown domain: `ESRCH`.
    pub fn watchdogs(&self, dom: DomId) -> Result<Vec<(u32, Option<Duration>)>, Errno> {
        let st = self.lock();
        let now = st.clock.now();
        let d = st.domains.get(&dom).ok_or(Errno::ESRCH)?;
        Ok(d.watchdogs
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Slot::Free => None,
                Slot::Armed(t) => Some((i as u32 + 1, Some(t.saturating_sub(now)))),
                Slot::Fired => Some((i as u32 + 1, None)),
            })
            .collect())
    }

    /// Fires every watchdog timer due by the clock's reading, earliest first, and answers
    /// what fired (see the module docs for what firing does).
    pub fn run_timers(&self) -> Vec<WatchdogFired> {
        let mut fired = Vec::new();
        let mut st = self.lock();
        loop {
            let now = st.clock.now();
            let due = st
                .domains
                .values()
                .flat_map(|d| {
                    d.watchdogs
                        .slots
                        .iter()
                        .enumerate()
                        .filter_map(move |(i, s)| match s {
                            Slot::Armed(t) if *t <= now => Some((*t, d.id, i)),
                            _ => None,
                        })
                })
                .min();
            let Some((_, dom, i)) = due else { break };
            let id = i as u32 + 1;
            let Some(d) = st.domains.get_mut(&dom) else {
                break;
            };
            d.watchdogs.slots[i] = Slot::Fired;
            // domain_watchdog_timeout(): nothing for a domain already going away.
            if d.shutdown.is_some() || d.dying {
                continue;
            }
            if dom.is_dom0() {
                reboot(&mut st, self.config());
                fired.push(WatchdogFired {
                    dom,
                    id,
                    rebooted: true,
                });
            } else {
                d.account(now.as_nanos() as u64);
                d.shutdown = Some(xen_sys::SHUTDOWN_watchdog);
                raise_dom_exc(
                    &mut st,
                    dom,
                    ExceptionKind::Shutdown(xen_sys::SHUTDOWN_watchdog),
                );
                fired.push(WatchdogFired {
                    dom,
                    id,
                    rebooted: false,
                });
            }
        }
        fired
    }
}

/// The machine reboots: every domain goes, dom0 boots again.
fn reboot(st: &mut HostState, cfg: &crate::HostConfig) {
    let guests: Vec<DomId> = st
        .domains
        .keys()
        .copied()
        .filter(|d| !d.is_dom0())
        .collect();
    for dom in guests {
        st.domains.remove(&dom);
        raise_dom_exc(st, dom, ExceptionKind::Destroyed);
    }
    st.domains.remove(&DomId::DOM0);
    st.free = cfg.memory;
    st.outstanding = Pages::ZERO;
    st.next_domid = 1;
    st.conring = crate::console::ConRing::default();
    st.booted = st.clock.now();
    st.boots += 1;
    boot_dom0(st, cfg);
}

/// Fires a system-clock host's timers on time; ends with the host or when none is armed.
fn spawn_timer_thread(host: std::sync::Weak<HostInner>) {
    std::thread::Builder::new()
        .name("xen-sim-watchdog".into())
        .spawn(move || loop {
            let Some(inner) = host.upgrade() else { return };
            let host = Host { inner };
            host.run_timers();
            let wait = {
                let mut st = host.lock();
                let now = st.clock.now();
                match st.domains.values().filter_map(|d| d.watchdogs.next()).min() {
                    Some(t) => t.saturating_sub(now).min(TIMER_THREAD_TICK),
                    None => {
                        st.timer_thread = false;
                        return;
                    }
                }
            };
            drop(host);
            std::thread::sleep(wait.max(Duration::from_millis(1)));
        })
        .expect("spawning the watchdog timer thread");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::small_pv_guest;
    use crate::{Clock, HostConfig};

    fn host() -> Host {
        Host::new(HostConfig {
            clock: Clock::manual(),
            ..HostConfig::default()
        })
    }

    fn secs(host: &Host, s: u64) {
        host.clock().advance(Duration::from_secs(s));
    }

    #[test]
    fn ids_errors_and_slots_follow_xen() {
        let host = host();
        assert_eq!(host.watchdog(DomId::DOM0, 3, 5), Err(Errno::EINVAL));
        assert_eq!(host.watchdog(DomId::DOM0, 1, 5), Err(Errno::EINVAL));
        assert_eq!(host.watchdog(DomId(9), 0, 5), Err(Errno::ESRCH));
        assert_eq!(host.watchdog(DomId::DOM0, 0, 30), Ok(1));
        assert_eq!(host.watchdog(DomId::DOM0, 0, 30), Ok(2));
        assert_eq!(host.watchdog(DomId::DOM0, 0, 30), Err(Errno(libc::ENOSPC)));
        // Stopping frees the slot for the next arm.
        assert_eq!(host.watchdog(DomId::DOM0, 1, 0), Ok(0));
        assert_eq!(host.watchdog(DomId::DOM0, 1, 0), Err(Errno::EINVAL));
        assert_eq!(
            host.watchdogs(DomId::DOM0).unwrap(),
            vec![(2, Some(Duration::from_secs(30)))]
        );
        assert_eq!(host.watchdog(DomId::DOM0, 0, 30), Ok(1));
    }

    #[test]
    fn a_disarmed_or_kicked_watchdog_never_fires() {
        let host = host();
        let id = host.watchdog(DomId::DOM0, 0, 5).unwrap();
        for _ in 0..10 {
            secs(&host, 4);
            assert_eq!(host.watchdog(DomId::DOM0, id, 5), Ok(0));
        }
        host.watchdog(DomId::DOM0, id, 0).unwrap();
        secs(&host, 100);
        assert!(host.run_timers().is_empty());
        assert_eq!(host.boots(), 1);
    }

    #[test]
    fn dom0_expiry_destroys_every_domain_and_reboots() {
        let host = host();
        let free = host.physinfo().free_pages;
        let mut guests = Vec::new();
        for _ in 0..3 {
            let d = host.create_domain(DomId(0), &small_pv_guest(63)).unwrap();
            host.set_max_mem_kb(d, 16 << 10).unwrap();
            host.increase_reservation(d, Pages(1024)).unwrap();
            guests.push(d);
        }
        let seq = host.dom_exc_seq();
        let id = host.watchdog(DomId::DOM0, 0, 10).unwrap();
        secs(&host, 9);
        assert!(host.run_timers().is_empty());
        assert_eq!(host.domain_info_list(DomId(0), 10).len(), 4);
        secs(&host, 1);
        assert_eq!(
            host.run_timers(),
            vec![WatchdogFired {
                dom: DomId::DOM0,
                id,
                rebooted: true
            }]
        );
        let left: Vec<u16> = host
            .domain_info_list(DomId(0), 10)
            .iter()
            .map(|i| i.domain)
            .collect();
        assert_eq!(left, vec![0]);
        assert_eq!(host.physinfo().free_pages, free);
        assert_eq!(host.boots(), 2);
        assert_eq!(host.uptime(), Duration::ZERO);
        let gone: Vec<DomId> = host
            .dom_exc_since(seq)
            .iter()
            .filter(|e| e.kind == ExceptionKind::Destroyed)
            .map(|e| e.dom)
            .collect();
        assert_eq!(gone, guests);
        // The rebooted dom0 has no watchdog; the old id is gone with it.
        assert_eq!(host.watchdogs(DomId::DOM0).unwrap(), vec![]);
        assert_eq!(host.watchdog(DomId::DOM0, id, 10), Err(Errno::EINVAL));
        // The domid rover starts again.
        assert_eq!(
            host.create_domain(DomId(0), &small_pv_guest(63)).unwrap(),
            DomId(1)
        );
    }

    #[test]
    fn a_kick_after_expiry_is_too_late() {
        let host = host();
        let id = host.watchdog(DomId::DOM0, 0, 2).unwrap();
        secs(&host, 3);
        assert_eq!(host.watchdog(DomId::DOM0, id, 2), Err(Errno::EINVAL));
        assert_eq!(host.boots(), 2);
    }

    #[test]
    fn a_guest_watchdog_shuts_only_that_guest_down() {
        let host = host();
        let a = host.create_domain(DomId(0), &small_pv_guest(63)).unwrap();
        let b = host.create_domain(DomId(0), &small_pv_guest(63)).unwrap();
        let id = host.watchdog(a, 0, 1).unwrap();
        secs(&host, 1);
        assert_eq!(host.run_timers().len(), 1);
        let info = host.domain_info(a).unwrap();
        assert_ne!(info.flags & xen_sys::XEN_DOMINF_shutdown, 0);
        assert_eq!(
            (info.flags >> xen_sys::XEN_DOMINF_shutdownshift) & xen_sys::XEN_DOMINF_shutdownmask,
            xen_sys::SHUTDOWN_watchdog
        );
        assert_eq!(
            host.domain_info(b).unwrap().flags & xen_sys::XEN_DOMINF_shutdown,
            0
        );
        // Still in use (fired), so a kick is accepted, but a shut-down domain stays as it is.
        assert_eq!(host.watchdogs(a).unwrap(), vec![(id, None)]);
        host.watchdog(a, id, 1).unwrap();
        secs(&host, 1);
        assert!(host.run_timers().is_empty());
        assert_eq!(host.boots(), 1);
    }

    #[test]
    fn the_system_clock_fires_without_being_asked() {
        let host = Host::default();
        let d = host.create_domain(DomId(0), &small_pv_guest(63)).unwrap();
        host.watchdog(DomId::DOM0, 0, 1).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while host.boots() == 1 {
            assert!(std::time::Instant::now() < deadline, "never fired");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(host.domain_info(d).err(), Some(Errno::ESRCH));
    }
}
