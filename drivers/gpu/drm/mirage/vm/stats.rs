// SPDX-License-Identifier: GPL-2.0 or MIT

//! What the fault service and the collector cost, by stage (xe's gt stats): for the VM's
//! debugfs file, which the benchmark reads.

use kernel::{
    fmt,
    sync::atomic::{Atomic, Relaxed},
    time::{Delta, Instant, Monotonic},
};

use crate::mmu::walker::{SZ_2M, SZ_4K};

/// The clock of the stages.
pub(crate) type Clock = Instant<Monotonic>;

/// The stages of one fault service.
pub(crate) struct Stages {
    /// Finding or making the range, faulting its pages in with hmm, and copying their bus
    /// addresses out.
    pub(crate) get_pages: Delta,
    /// Budgeting and reserving the page tables, and writing the entries.
    pub(crate) bind: Delta,
    /// Invalidating the TLB, when a block replaced a table.
    pub(crate) tlb: Delta,
}

impl Default for Stages {
    fn default() -> Self {
        Self {
            get_pages: Delta::ZERO,
            bind: Delta::ZERO,
            tlb: Delta::ZERO,
        }
    }
}

/// Sums over the faults of one range size, in nanoseconds.
struct Sums {
    count: Atomic<u64>,
    service: Atomic<u64>,
    get_pages: Atomic<u64>,
    bind: Atomic<u64>,
    tlb: Atomic<u64>,
}

impl Sums {
    const fn new() -> Self {
        Self {
            count: Atomic::new(0),
            service: Atomic::new(0),
            get_pages: Atomic::new(0),
            bind: Atomic::new(0),
            tlb: Atomic::new(0),
        }
    }
}

fn ns(d: Delta) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(0)
}

/// The range sizes the fault statistics tell apart: drm_gpusvm's chunks.
const SIZES: [(u64, &str); 3] = [(SZ_4K, "4k"), (64 << 10, "64k"), (SZ_2M, "2m")];

/// A VM's fault-service and collector statistics.
pub(crate) struct Stats {
    faults: [Sums; 3],
    /// Collector passes that removed ranges or reset attributes, the ranges they removed, and
    /// what they took.
    gc_passes: Atomic<u64>,
    gc_ranges: Atomic<u64>,
    gc_ns: Atomic<u64>,
}

impl Stats {
    pub(crate) const fn new() -> Self {
        Self {
            faults: [Sums::new(), Sums::new(), Sums::new()],
            gc_passes: Atomic::new(0),
            gc_ranges: Atomic::new(0),
            gc_ns: Atomic::new(0),
        }
    }

    /// A fault resolved by mapping a range of `size` bytes, which took `service` in all.
    pub(crate) fn fault(&self, size: u64, service: Delta, st: &Stages) {
        let Some(i) = SIZES.iter().position(|&(s, _)| s == size) else {
            return;
        };
        let s = &self.faults[i];
        s.count.fetch_add(1, Relaxed);
        s.service.fetch_add(ns(service), Relaxed);
        s.get_pages.fetch_add(ns(st.get_pages), Relaxed);
        s.bind.fetch_add(ns(st.bind), Relaxed);
        s.tlb.fetch_add(ns(st.tlb), Relaxed);
    }

    /// A collector pass that removed `ranges` ranges (and maybe reset attributes).
    pub(crate) fn gc(&self, ranges: usize, took: Delta) {
        self.gc_passes.fetch_add(1, Relaxed);
        self.gc_ranges.fetch_add(ranges as u64, Relaxed);
        self.gc_ns.fetch_add(ns(took), Relaxed);
    }

    /// One line per range size, then the collector's.
    pub(crate) fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (s, &(_, name)) in self.faults.iter().zip(SIZES.iter()) {
            writeln!(
                f,
                "fault {} count {} service_ns {} get_pages_ns {} bind_ns {} tlb_ns {}",
                name,
                s.count.load(Relaxed),
                s.service.load(Relaxed),
                s.get_pages.load(Relaxed),
                s.bind.load(Relaxed),
                s.tlb.load(Relaxed)
            )?;
        }
        writeln!(
            f,
            "gc passes {} ranges {} ns {}",
            self.gc_passes.load(Relaxed),
            self.gc_ranges.load(Relaxed),
            self.gc_ns.load(Relaxed)
        )
    }
}
