// SPDX-License-Identifier: GPL-2.0 or MIT

//! The garbage collector of CPU-address mirrors.
//!
//! When the CPU unmaps memory a mirror covers, drm_gpusvm's notifier zaps the GPU entries of
//! its ranges and marks them unmapped (`svm.rs`). The collector then, under the VM lock,
//! removes those ranges, and gives AUTORESET mirrors their default attributes back over the
//! span unmapped (xe's "reset VMA attributes to default in SVM garbage collector").
//!
//! The span comes from a notifier of the VM's own (the unmap watcher), not from the ranges:
//! memory that was madvised but never faulted in has no range, and xe never resets it (the
//! "rude user"). The watcher records UNMAP spans that overlap memory an unmap would reset
//! (AUTORESET mirrors with non-default attributes) in a fixed log, under a spinlock, and
//! queues the collector's work: it allocates nothing and takes no VM lock. If the log fills
//! up, the collector finds the unmapped parts of that memory from the CPU's mappings instead.
//!
//! The collector runs from its work, and at the start of every fault service, MADVISE and
//! query, so that nothing looks at a mirror's attributes before they follow the CPU. A
//! collector that fails leaves the tree and the CPU out of step: the VM becomes unusable, as
//! `xe_vm_kill` makes it.

use core::ops::Range;
use kernel::{
    drm::gpuvm::OpMapRequest,
    mm::{
        mmu_notifier::{Event, IntervalNotifier, IntervalNotifierOps, NotifierRange},
        MmWithUser,
    },
    new_spinlock, new_work,
    prelude::*,
    sync::{atomic::Relaxed, Arc, SpinLock},
    workqueue::{self, impl_has_work, Work, WorkItem},
};

use super::{
    stats::Clock, Attrs, Backend, SmCtx, VaAllocs, VaInfo, VmCore, VmState, MIRROR, VAS_PER_OP,
};
use crate::mmu::walker::SZ_4K;

/// Unmapped spans the log holds before the collector runs.
const LOG_SIZE: usize = 64;

/// What the watcher and the collector share, under the spinlock.
struct Log {
    spans: [(u64, u64); LOG_SIZE],
    len: usize,
    /// Spans were dropped: the log was full.
    overflow: bool,
    /// The hull of the memory an unmap resets; empty when there is none.
    watch: (u64, u64),
    /// Whether the watcher may queue the work and the work may reach the VM: until the VM
    /// goes.
    live: bool,
}

/// The collector's work and log.
///
/// # Invariants
///
/// `vm` is the VM whose mirror holds this: while `live` is set, the VM exists, and the VM
/// clears it and waits for the work ([`Gc::stop`]) before anything of it goes.
#[pin_data]
pub(crate) struct Gc<B: Backend> {
    #[pin]
    log: SpinLock<Log>,
    #[pin]
    work: Work<Gc<B>>,
    vm: *const VmCore<B>,
}

// SAFETY: `vm` is only used for shared access to a `VmCore`, which is `Send + Sync`.
unsafe impl<B: Backend> Send for Gc<B> {}
// SAFETY: As above.
unsafe impl<B: Backend> Sync for Gc<B> {}

impl_has_work! {
    impl{B: Backend} HasWork<Gc<B>> for Gc<B> { self.work }
}

impl<B: Backend> WorkItem for Gc<B> {
    type Pointer = Arc<Gc<B>>;

    fn run(this: Arc<Self>) {
        if !this.log.lock().live {
            return;
        }
        // SAFETY: `live` was set: the VM waits for this work before it goes (type invariants).
        let vm = unsafe { &*this.vm };
        if vm.gpu.gc_work_paused() {
            return;
        }
        let mut state = vm.state.lock();
        // A failure made the VM unusable; its next user learns it.
        let _ = vm.collect_locked(&mut state);
    }
}

impl<B: Backend> Gc<B> {
    /// The collector of `vm`, which must keep it and stop it before it goes.
    pub(super) fn new(vm: *const VmCore<B>) -> Result<Arc<Self>> {
        // INVARIANT: `live` starts set; the VM's mirror holds the collector, and stops it
        // first when it goes.
        Arc::pin_init(
            pin_init!(Self {
                log <- new_spinlock!(Log {
                    spans: [(0, 0); LOG_SIZE],
                    len: 0,
                    overflow: false,
                    watch: (0, 0),
                    live: true,
                }),
                work <- new_work!("mirage::svm_gc"),
                vm,
            }),
            GFP_KERNEL,
        )
    }

    /// Stops the watcher from queueing the work, and waits for it: the VM is going.
    pub(super) fn stop(&self) {
        self.log.lock().live = false;
        self.work.flush();
    }

    /// From the watcher (reclaim context): the CPU unmapped `span`.
    fn record(self: &Arc<Self>, span: Range<u64>) {
        let mut log = self.log.lock();
        let (ws, we) = log.watch;
        if !log.live || span.end <= ws || we <= span.start {
            return;
        }
        let clipped = (span.start.max(ws), span.end.min(we));
        if log.len < LOG_SIZE {
            let n = log.len;
            log.spans[n] = clipped;
            log.len += 1;
        } else {
            log.overflow = true;
        }
        drop(log);
        self.kick();
    }

    /// Queues the collector's work, unless the VM is going (reclaim context is fine: nothing
    /// is allocated).
    pub(super) fn kick(self: &Arc<Self>) {
        let log = self.log.lock();
        if log.live {
            // Queued already is fine: the work takes the whole log and every unmapped range.
            let _ = workqueue::system_unbound().enqueue(self.clone());
        }
    }

    /// Moves the logged spans to `out`, which has room for [`LOG_SIZE`]; returns whether some
    /// were dropped.
    fn take(&self, out: &mut KVec<Range<u64>>) -> bool {
        let mut log = self.log.lock();
        for &(s, e) in &log.spans[..log.len] {
            let _ = out.push_within_capacity(s..e);
        }
        log.len = 0;
        core::mem::replace(&mut log.overflow, false)
    }

    /// Adds `span` to the watched memory, ahead of a change that may give it non-default
    /// attributes: an unmap that comes before the change is done is logged too.
    pub(super) fn widen(&self, span: &Range<u64>) {
        let mut log = self.log.lock();
        let (s, e) = log.watch;
        log.watch = if s < e {
            (s.min(span.start), e.max(span.end))
        } else {
            (span.start, span.end)
        };
    }

    fn set_watch(&self, hull: Option<Range<u64>>) {
        self.log.lock().watch = hull.map_or((0, 0), |h| (h.start, h.end));
    }
}

/// The unmap watcher: an interval notifier over the whole mirrorable span.
pub(crate) struct Watcher<B: Backend>(Arc<Gc<B>>);

impl<B: Backend> IntervalNotifierOps for Watcher<B> {
    fn invalidate(n: &IntervalNotifier<Self>, r: &NotifierRange<'_>, cur_seq: u64) -> bool {
        // Nothing reads the sequence: the watcher guards no pages.
        n.set_seq(cur_seq);
        if r.event() == Event::Unmap {
            let span = r.range();
            n.data().0.record(span.start as u64..span.end as u64);
        }
        true
    }
}

/// The watcher of a mirror of `mm`'s `[0, len)`, for the collector `gc`.
pub(super) fn watch<B: Backend>(
    mm: &MmWithUser,
    len: usize,
    gc: Arc<Gc<B>>,
) -> Result<Pin<KBox<IntervalNotifier<Watcher<B>>>>> {
    KBox::pin_init(
        IntervalNotifier::insert(mm, 0, len, Ok::<_, Error>(Watcher(gc))),
        GFP_KERNEL,
    )
}

impl<B: Backend> VmCore<B> {
    /// The collector: removes the ranges the CPU unmapped, and resets the attributes of
    /// AUTORESET mirrors over the spans it unmapped. Runs under the VM lock, before anything
    /// looks at the mirrors. A failure makes the VM unusable.
    pub(super) fn collect_locked(&self, state: &mut VmState<B>) -> Result {
        let res = self.collect_inner(state);
        if res.is_err() {
            self.usable.store(false, Relaxed);
        }
        res
    }

    fn collect_inner(&self, state: &mut VmState<B>) -> Result {
        let Some(svm) = state.svm.as_mut() else {
            return Ok(());
        };
        let start = Clock::now();
        let mut spans = KVec::with_capacity(LOG_SIZE, GFP_KERNEL)?;
        let overflow = svm.gc.take(&mut spans);
        let removed = svm.collect()?;
        let mm = if overflow {
            svm.mm().mmget_not_zero()
        } else {
            None
        };
        // Spans were dropped: what the CPU no longer maps of the memory an unmap resets was
        // unmapped. (With no user left, the process is exiting, and nothing needs resetting.)
        if let Some(mm) = mm {
            let pieces = Self::watched(state)?;
            let guard = mm.mmap_read_lock();
            for p in pieces.iter() {
                let mut a = p.start;
                while a < p.end {
                    if let Some(vma) = guard.vma_lookup(a as usize) {
                        a = (vma.end() as u64).min(p.end);
                        continue;
                    }
                    let s = a;
                    while a < p.end && guard.vma_lookup(a as usize).is_none() {
                        a += SZ_4K;
                    }
                    spans.push(s..a, GFP_KERNEL)?;
                }
            }
        }
        if !spans.is_empty() {
            for s in spans.iter() {
                self.reset_span(state, s.clone())?;
            }
            self.rewatch(state);
        }
        if removed > 0 || !spans.is_empty() {
            self.stats.gc(removed, start.elapsed());
        }
        Ok(())
    }

    /// The mirrors an unmap resets: AUTORESET ones with non-default attributes.
    fn watched(state: &VmState<B>) -> Result<KVec<Range<u64>>> {
        let mut out = KVec::new();
        let mut res = Ok(());
        state.gpuvm.for_each_va(0..u64::MAX, |va| {
            if let (Ok(()), Some(a)) = (&res, va.data().mirror) {
                if a.autoreset && !a.is_default() {
                    let r = va.addr()..va.addr() + va.length();
                    res = out.push(r, GFP_KERNEL).map_err(Error::from);
                }
            }
        });
        res.map(|()| out)
    }

    /// Points the watcher at the memory an unmap resets now.
    pub(super) fn rewatch(&self, state: &VmState<B>) {
        let Some(svm) = state.svm.as_ref() else {
            return;
        };
        let mut hull: Option<Range<u64>> = None;
        state.gpuvm.for_each_va(0..u64::MAX, |va| {
            if let Some(a) = va.data().mirror {
                if a.autoreset && !a.is_default() {
                    let end = va.addr() + va.length();
                    hull = Some(hull.take().map_or(va.addr(), |h| h.start)..end);
                }
            }
        });
        svm.gc.set_watch(hull);
    }

    /// Gives the AUTORESET mirrors in `span` their default attributes there. A mirror that
    /// `span` covers exactly is reset in place; otherwise the span becomes a mirror of its
    /// own, merged with the neighbours that have those defaults already, and the parts of the
    /// mirror outside it keep their attributes. Changes the VA tree only: the ranges of the
    /// span were removed, and the neighbours' pages keep their (default) attributes.
    pub(super) fn reset_span(&self, state: &mut VmState<B>, span: Range<u64>) -> Result {
        // The parts to reset, each inside one mirror, with its defaults.
        let mut parts: KVec<(Range<u64>, Range<u64>, Attrs)> = KVec::new();
        let mut res = Ok(());
        state.gpuvm.for_each_va(span.clone(), |va| {
            if let (Ok(()), Some(a)) = (&res, va.data().mirror) {
                if a.autoreset && !a.is_default() {
                    let whole = va.addr()..va.addr() + va.length();
                    let part = whole.start.max(span.start)..whole.end.min(span.end);
                    res = parts
                        .push((part, whole, a.defaults()), GFP_KERNEL)
                        .map_err(Error::from);
                }
            }
        });
        res?;
        for (part, whole, defaults) in parts.into_iter() {
            if part == whole {
                state.gpuvm.for_each_va_mut(part.clone(), |va| {
                    va.data_mut().get_mut().mirror = Some(defaults);
                });
                continue;
            }
            // Grow the part over neighbours that have the defaults already.
            let mut merged = part.clone();
            loop {
                let Some(prev) = merged.start.checked_sub(1) else {
                    break;
                };
                let Some(va) = state.gpuvm.find_va(prev) else {
                    break;
                };
                if va.data().mirror != Some(defaults) {
                    break;
                }
                merged.start = va.addr();
            }
            while let Some(va) = state.gpuvm.find_va(merged.end) {
                if va.data().mirror != Some(defaults) {
                    break;
                }
                merged.end = va.addr() + va.length();
            }
            let mut vas = VaAllocs::new(VAS_PER_OP)?;
            let mut ctx = SmCtx {
                vas: &mut vas,
                held: None,
                added: 0,
                data: VaInfo {
                    userptr: None,
                    mirror: Some(defaults),
                },
                madvise: false,
            };
            let res = state.gpuvm.sm_map(OpMapRequest {
                addr: merged.start,
                range: merged.end - merged.start,
                gem_offset: merged.start,
                vm_bo: None,
                flags: MIRROR,
                context: &mut ctx,
            });
            state.vas = state.vas.saturating_add_signed(ctx.added);
            if res.is_err() {
                // Nodes were reserved for a map: the tree is not what it was.
                kernel::warn_on!(true);
                return res;
            }
        }
        Ok(())
    }
}
