//! Counters for introspection: the control socket's `stats` and the tests.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default, Debug)]
pub struct Stats {
    pub walks: AtomicU64,
    pub pte_reads: AtomicU64,
    pub tlb_hits: AtomicU64,
    pub tlb_misses: AtomicU64,
    pub faults: AtomicU64,
    pub jobs: AtomicU64,
    pub commands: AtomicU64,
    pub resets: AtomicU64,
    pub irqs: AtomicU64,
    pub irqs_dropped: AtomicU64,
}

impl Stats {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("walks", l(&self.walks)),
            ("pte_reads", l(&self.pte_reads)),
            ("tlb_hits", l(&self.tlb_hits)),
            ("tlb_misses", l(&self.tlb_misses)),
            ("faults", l(&self.faults)),
            ("jobs", l(&self.jobs)),
            ("commands", l(&self.commands)),
            ("resets", l(&self.resets)),
            ("irqs", l(&self.irqs)),
            ("irqs_dropped", l(&self.irqs_dropped)),
        ]
    }

    pub(super) fn bump(a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
    }
}
