//! Memory accounting against a model: random populate / increase / decrease sequences on two
//! domains, checked after every step against sets of frames and the host's free count.

use std::collections::{BTreeSet, HashSet};

use xen_sim::{Host, HostConfig};
use xen_types::{DomId, Errno, Pages, Pfn};

/// xorshift64*: deterministic, so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Model {
    pfns: BTreeSet<u64>,
    max: u64,
}

fn config() -> xen_sys::xen_domctl_createdomain {
    xen_sys::xen_domctl_createdomain {
        max_vcpus: 1,
        max_grant_frames: -1,
        max_maptrack_frames: -1,
        grant_opts: 1,
        ..Default::default()
    }
}

fn run(seed: u64) {
    let host = Host::new(HostConfig {
        memory: Pages(4096 + 600),
        dom0_memory: Pages(4096),
        ..HostConfig::default()
    });
    let mut rng = Rng(seed);
    let mut free = 600u64;
    let doms: Vec<DomId> = (0..2)
        .map(|_| host.create_domain(DomId::INVALID, &config()).unwrap())
        .collect();
    let mut models: Vec<Model> = doms
        .iter()
        .map(|_| Model {
            pfns: BTreeSet::new(),
            max: 0,
        })
        .collect();
    for step in 0..300 {
        let i = rng.below(2) as usize;
        let (d, m) = (doms[i], &mut models[i]);
        let ctx = format!("seed {seed} step {step} dom {d}");
        match rng.below(4) {
            0 => {
                let max = rng.below(500);
                host.set_max_mem_kb(d, Pages(max).kib()).unwrap();
                m.max = max;
            }
            1 => {
                let n = 1 + rng.below(40);
                let base = rng.below(700);
                let pfns: Vec<Pfn> = (0..n).map(|_| Pfn(base + rng.below(60))).collect();
                let new: BTreeSet<u64> = pfns
                    .iter()
                    .map(|p| p.0)
                    .filter(|p| !m.pfns.contains(p))
                    .collect();
                let want = new.len() as u64;
                let r = host.populate_physmap(d, &pfns);
                if m.pfns.len() as u64 + want > m.max || want > free {
                    assert_eq!(r, Err(Errno::ENOMEM), "{ctx}");
                } else {
                    assert_eq!(r, Ok(()), "{ctx}");
                    m.pfns.extend(new);
                    free -= want;
                }
            }
            2 => {
                let n = rng.below(80);
                let r = host.increase_reservation(d, Pages(n));
                if m.pfns.len() as u64 + n > m.max || n > free {
                    assert_eq!(r, Err(Errno::ENOMEM), "{ctx}");
                } else {
                    assert_eq!(r, Ok(()), "{ctx}");
                    let mut p = 0;
                    let mut added = 0;
                    while added < n {
                        if m.pfns.insert(p) {
                            added += 1;
                        }
                        p += 1;
                    }
                    free -= n;
                }
            }
            _ => {
                let n = 1 + rng.below(20);
                let pfns: Vec<Pfn> = (0..n).map(|_| Pfn(rng.below(700))).collect();
                let uniq: HashSet<u64> = pfns.iter().map(|p| p.0).collect();
                let valid = uniq.len() == pfns.len() && uniq.iter().all(|p| m.pfns.contains(p));
                let r = host.decrease_reservation(d, &pfns);
                if valid {
                    assert_eq!(r, Ok(()), "{ctx}");
                    for p in uniq {
                        m.pfns.remove(&p);
                    }
                    free += n;
                } else {
                    assert_eq!(r, Err(Errno::EINVAL), "{ctx}");
                }
            }
        }
        assert_eq!(host.physinfo().free_pages, free, "{ctx}");
        let st = host.lock();
        let dom = &st.domains[&d];
        assert_eq!(dom.tot_pages.0, m.pfns.len() as u64, "{ctx}");
        assert_eq!(dom.p2m.populated(), m.pfns.len() as u64, "{ctx}");
        // Every populated frame has a machine frame, all distinct.
        let mfns: HashSet<u64> = m
            .pfns
            .iter()
            .map(|&p| dom.p2m.lookup(Pfn(p)).expect(&ctx).0)
            .collect();
        assert_eq!(mfns.len(), m.pfns.len(), "{ctx}");
        assert!((0..700)
            .filter(|p| !m.pfns.contains(p))
            .all(|p| dom.p2m.lookup(Pfn(p)).is_none()));
    }
    for d in doms {
        host.destroy(d).unwrap();
    }
    assert_eq!(host.physinfo().free_pages, 600);
}

#[test]
fn memory_accounting_matches_a_model() {
    for seed in 1..=12u64 {
        run(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
}
