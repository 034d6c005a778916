//! Counters of a backend's queues: packets and bytes, and where a queue thread spends its
//! passes (wake-ups, system calls, grant-copy batches) and its time.
//!
//! The time counters are in CPU timestamp ticks ([`ticks`]: `rdtsc` on x86-64, no system
//! call), so they can stay on in production: [`Profile`] turns them into shares of the
//! queue threads' time, which `netbackd` logs when a device disconnects.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A timestamp in CPU ticks (`rdtsc`); 0 where there is no cheap counter.
#[inline]
pub fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `rdtsc` has no preconditions on x86-64 (it only reads the time-stamp
        // counter).
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// Where a queue thread's time goes (indexes of [`Stats`]' tick counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Phase {
    /// Taking and validating tx requests, answering them.
    TxRing,
    /// Grant copies out of the guest (tx).
    TxCopy,
    /// Writes of frames to the packet side (tx).
    PortWrite,
    /// Reads of frames from the packet side (rx).
    PortRead,
    /// Grant copies into the guest (rx).
    RxCopy,
    /// Taking rx requests, answering them.
    RxRing,
    /// Event-channel notifications and unmasks.
    Notify,
    /// Polling the tx ring before sleeping.
    Spin,
    /// Sleeping (`poll`).
    Sleep,
}

const PHASES: usize = 9;
const PHASE_NAMES: [&str; PHASES] = [
    "tx-ring",
    "tx-copy",
    "port-write",
    "port-read",
    "rx-copy",
    "rx-ring",
    "notify",
    "spin",
    "sleep",
];

/// Counters of a backend's queues.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) queues_running: AtomicUsize,
    pub(crate) queues_broken: AtomicUsize,
    pub(crate) tx_packets: AtomicU64,
    pub(crate) tx_bytes: AtomicU64,
    pub(crate) tx_errors: AtomicU64,
    pub(crate) rx_packets: AtomicU64,
    pub(crate) rx_bytes: AtomicU64,
    pub(crate) rx_dropped: AtomicU64,
    pub(crate) passes: AtomicU64,
    pub(crate) sleeps: AtomicU64,
    pub(crate) spins_won: AtomicU64,
    pub(crate) tx_copy_calls: AtomicU64,
    pub(crate) tx_copy_segs: AtomicU64,
    pub(crate) tx_map_calls: AtomicU64,
    pub(crate) tx_map_pages: AtomicU64,
    pub(crate) rx_copy_calls: AtomicU64,
    pub(crate) rx_copy_segs: AtomicU64,
    pub(crate) port_reads: AtomicU64,
    pub(crate) port_writes: AtomicU64,
    pub(crate) notifies: AtomicU64,
    pub(crate) ticks: [AtomicU64; PHASES],
}

macro_rules! getters {
    ($($(#[$m:meta])* $name:ident: $t:ty),*) => { $(
        $(#[$m])*
        pub fn $name(&self) -> $t {
            self.$name.load(Ordering::SeqCst)
        }
    )* };
}

impl Stats {
    getters!(
        /// Queues served now.
        queues_running: usize,
        /// Queues stopped because the frontend broke the protocol (fatal errors).
        queues_broken: usize,
        /// Packets the guests sent and the packet side took.
        tx_packets: u64,
        /// Their bytes.
        tx_bytes: u64,
        /// Packets the guests sent that were answered `NETIF_RSP_ERROR`.
        tx_errors: u64,
        /// Packets given to the guests.
        rx_packets: u64,
        /// Their bytes.
        rx_bytes: u64,
        /// Packets from the packet side that no guest could take (offloads it did not
        /// accept, grant failures).
        rx_dropped: u64,
        /// Passes of the queue threads' loops (each serves tx, then rx).
        passes: u64,
        /// Times a queue thread went to sleep (`poll`) for lack of work.
        sleeps: u64,
        /// Times polling the tx ring found requests before sleeping.
        spins_won: u64,
        /// Grant-copy calls of the tx paths.
        tx_copy_calls: u64,
        /// Their segments.
        tx_copy_segs: u64,
        /// Grant-map calls of the tx paths (data slots of large packets).
        tx_map_calls: u64,
        /// Their pages.
        tx_map_pages: u64,
        /// Grant-copy calls of the rx paths.
        rx_copy_calls: u64,
        /// Their segments.
        rx_copy_segs: u64,
        /// Reads from the packet side (those that found nothing too).
        port_reads: u64,
        /// Writes to the packet side.
        port_writes: u64,
        /// Event-channel notifications sent.
        notifies: u64
    );

    pub(crate) fn add(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds the ticks since `since` to `phase`; returns now.
    pub(crate) fn lap(&self, phase: Phase, since: u64) -> u64 {
        let now = ticks();
        self.ticks[phase as usize].fetch_add(now.wrapping_sub(since), Ordering::Relaxed);
        now
    }

    /// The time counters, as a profile of the queue threads.
    pub fn profile(&self) -> Profile {
        Profile {
            ticks: std::array::from_fn(|i| self.ticks[i].load(Ordering::Relaxed)),
        }
    }
}

/// Where the queue threads' time went: ticks per [`Phase`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Profile {
    ticks: [u64; PHASES],
}

impl Profile {
    /// Ticks spent in `phase`.
    pub fn ticks(&self, phase: Phase) -> u64 {
        self.ticks[phase as usize]
    }

    /// Ticks in all phases.
    pub fn total(&self) -> u64 {
        self.ticks.iter().sum()
    }
}

impl fmt::Display for Profile {
    /// `tx-ring 3% tx-copy 20% ...`, shares of the total.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total().max(1) as f64;
        for (i, name) in PHASE_NAMES.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name} {:.1}%", 100.0 * self.ticks[i] as f64 / total)?;
        }
        Ok(())
    }
}

impl fmt::Display for Stats {
    /// One line: packets, bytes, and the loop's counters per packet.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (txp, rxp) = (self.tx_packets(), self.rx_packets());
        let per = |n: u64, d: u64| n as f64 / d.max(1) as f64;
        write!(
            f,
            "tx {txp} pkts {} B ({:.0} B/pkt, {} errors, {:.1} pkts/copy call, {:.1} segs/pkt, \
             {} map calls of {:.1} pages), rx {rxp} pkts {} B ({:.0} B/pkt, {} dropped, {:.1} pkts/copy call, {:.1} segs/pkt, \
             {:.2} reads/pkt), passes {} sleeps {} spins-won {} notifies {} writes {}; time: {}",
            self.tx_bytes(),
            per(self.tx_bytes(), txp),
            self.tx_errors(),
            per(txp, self.tx_copy_calls()),
            per(self.tx_copy_segs(), txp),
            self.tx_map_calls(),
            per(self.tx_map_pages(), self.tx_map_calls()),
            self.rx_bytes(),
            per(self.rx_bytes(), rxp),
            self.rx_dropped(),
            per(rxp, self.rx_copy_calls()),
            per(self.rx_copy_segs(), rxp),
            per(self.port_reads(), rxp),
            self.passes(),
            self.sleeps(),
            self.spins_won(),
            self.notifies(),
            self.port_writes(),
            self.profile()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_shares_add_up() {
        let s = Stats::default();
        s.ticks[Phase::TxCopy as usize].store(300, Ordering::Relaxed);
        s.ticks[Phase::Sleep as usize].store(100, Ordering::Relaxed);
        let p = s.profile();
        assert_eq!(p.total(), 400);
        assert_eq!(p.ticks(Phase::TxCopy), 300);
        let line = p.to_string();
        assert!(line.contains("tx-copy 75.0%"), "{line}");
        assert!(line.contains("sleep 25.0%"), "{line}");
    }
}
