//! How many host failures the pool can survive (`pool.ha_compute_max_host_failures_to_tolerate`).
//!
//! For `k` failures, every set of `k` hosts is tried: the `restart` VMs of the failed hosts
//! must fit, first-fit by decreasing memory, into the free memory of the others (best-effort
//! VMs do not count, as in xapi). The answer is the largest `k` for which every set fits. Sets
//! are enumerated up to [`MAX_SETS`] per `k`; past that the answer stops at the last `k`
//! fully checked, so it never overstates.

use super::{HaVm, Priority};

/// Most host sets tried for one number of failures.
pub const MAX_SETS: usize = 200_000;

/// One host as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCapacity {
    /// Memory free for VMs (bytes).
    pub free: u64,
    /// The protected VMs running on it.
    pub vms: Vec<HaVm>,
}

/// True when the restart VMs of the hosts in `failed` (a bit per host) fit on the others.
fn survives(hosts: &[HostCapacity], failed: u64) -> bool {
    let mut need: Vec<u64> = hosts
        .iter()
        .enumerate()
        .filter(|(i, _)| failed & (1 << i) != 0)
        .flat_map(|(_, h)| h.vms.iter())
        .filter(|v| v.priority == Priority::Restart)
        .map(|v| v.memory)
        .collect();
    need.sort_unstable_by(|a, b| b.cmp(a));
    let mut free: Vec<u64> = hosts
        .iter()
        .enumerate()
        .filter(|(i, _)| failed & (1 << i) == 0)
        .map(|(_, h)| h.free)
        .collect();
    need.into_iter()
        .all(|m| match free.iter_mut().find(|f| **f >= m) {
            Some(f) => {
                *f -= m;
                true
            }
            None => false,
        })
}

/// The next larger integer with as many bits set (Gosper's hack).
fn next_same_popcount(x: u64) -> u64 {
    let c = x & x.wrapping_neg();
    let r = x + c;
    (((r ^ x) >> 2) / c) | r
}

/// The most host failures after which every `restart` VM can still run (see the module docs).
pub fn max_host_failures_to_tolerate(hosts: &[HostCapacity]) -> u32 {
    let n = hosts.len().min(63);
    let mut tolerated = 0;
    for k in 1..n {
        let mut set: u64 = (1 << k) - 1;
        let mut tried = 0;
        while set < (1 << n) {
            if tried == MAX_SETS || !survives(hosts, set) {
                return tolerated;
            }
            tried += 1;
            set = next_same_popcount(set);
        }
        tolerated = k as u32;
    }
    tolerated
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn vm(p: Priority, gib: u64) -> HaVm {
        HaVm {
            vm: format!("{p:?}-{gib}"),
            priority: p,
            order: 0,
            memory: gib * GIB,
        }
    }

    fn host(free_gib: u64, vms: Vec<HaVm>) -> HostCapacity {
        HostCapacity {
            free: free_gib * GIB,
            vms,
        }
    }

    #[test]
    fn counts_failures_by_memory() {
        assert_eq!(max_host_failures_to_tolerate(&[]), 0);
        assert_eq!(max_host_failures_to_tolerate(&[host(8, vec![])]), 0);
        // Three hosts, 4 GiB each free, a 3 GiB restart VM on each: one failure fits (3 into
        // 4), two do not (6 into 4 with 3 + 3 needing two hosts: only one left).
        let r = |g| vm(Priority::Restart, g);
        let hosts = vec![
            host(4, vec![r(3)]),
            host(4, vec![r(3)]),
            host(4, vec![r(3)]),
        ];
        assert_eq!(max_host_failures_to_tolerate(&hosts), 1);
        // With room for both on any one host, two failures are fine.
        let hosts = vec![
            host(6, vec![r(3)]),
            host(6, vec![r(3)]),
            host(6, vec![r(3)]),
        ];
        assert_eq!(max_host_failures_to_tolerate(&hosts), 2);
        // Best-effort VMs do not count; an unplaceable restart VM makes it 0.
        let hosts = vec![
            host(1, vec![vm(Priority::BestEffort, 64)]),
            host(1, vec![r(2)]),
        ];
        assert_eq!(max_host_failures_to_tolerate(&hosts), 0);
        let hosts = vec![host(1, vec![vm(Priority::BestEffort, 64)]), host(1, vec![])];
        assert_eq!(max_host_failures_to_tolerate(&hosts), 1);
    }

    #[test]
    fn gosper_enumerates_every_set_of_a_size() {
        let mut set = 0b0011u64;
        let mut all = vec![];
        while set < 16 {
            all.push(set);
            set = next_same_popcount(set);
        }
        assert_eq!(all, vec![0b0011, 0b0101, 0b0110, 0b1001, 0b1010, 0b1100]);
    }
}
