// SPDX-License-Identifier: GPL-2.0 or MIT

//! MSI-X vector ownership and the device interrupt handler.

use core::ptr::NonNull;
use kernel::{
    device::Bound,
    dma_buf::fence::SignallingSection,
    io::Io,
    irq::{self, IrqReturn, ThreadedIrqReturn},
    pci::{self, IrqVectorRegistration},
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        Arc,
    },
};

use crate::{gpu::Gpu, regs};

pub(crate) type Bar0<'bound> = pci::Bar<'bound, { regs::BAR0_MAPPED }>;

/// Owns the device's MSI-X vector allocation at a stable heap address.
///
/// An [`irq::ThreadedRegistration`] borrows the allocation it was requested from. Keeping the
/// allocation behind a pointer lets the registration and the allocation live side by side in
/// the driver's data: the registration is declared first, so it is freed first.
///
/// # Invariants
///
/// `ptr` comes from [`KBox::into_raw`] and is freed only by [`Drop`].
pub(crate) struct Vectors<'bound> {
    ptr: NonNull<IrqVectorRegistration<'bound>>,
}

impl<'bound> Vectors<'bound> {
    /// Allocates between `min` and `max` MSI-X vectors.
    pub(crate) fn alloc_msix(pdev: &'bound pci::Device<Bound>, min: u32, max: u32) -> Result<Self> {
        let types = pci::IrqTypes::default().with(pci::IrqType::MsiX);
        let reg = KBox::new(pdev.alloc_irq_vectors(min, max, types)?, GFP_KERNEL)?;
        Ok(Self {
            ptr: NonNull::from(KBox::leak(reg)),
        })
    }

    /// Returns the IRQ request of vector `index`, valid as long as `self`.
    ///
    /// # Safety
    ///
    /// Every [`irq::ThreadedRegistration`] made from the returned request must be dropped before
    /// `self` is.
    pub(crate) unsafe fn request(&self, index: usize) -> Result<irq::IrqRequest<'bound>> {
        // SAFETY: By the type invariant `ptr` is a live `KBox` allocation that is only freed by
        // `Drop`, and the caller promises that users of the request are gone by then, so the
        // reference may carry `'bound`.
        let reg: &'bound IrqVectorRegistration<'bound> = unsafe { self.ptr.as_ref() };
        Ok(reg.index(index)?.into())
    }
}

impl Drop for Vectors<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant `ptr` came from `KBox::into_raw` and was not freed yet.
        drop(unsafe { KBox::from_raw(self.ptr.as_ptr()) });
    }
}

// SAFETY: `IrqVectorRegistration` only holds a reference to a bound device; freeing the
// vectors is allowed from any thread.
unsafe impl Send for Vectors<'_> {}
// SAFETY: `Vectors` offers no shared-reference operations besides `request`, which only reads
// the allocation.
unsafe impl Sync for Vectors<'_> {}

/// The interrupt sources the driver handles; the others stay masked.
pub(crate) fn handled_sources() -> regs::IRQ_MASK {
    regs::IRQ_MASK::zeroed()
        .with_ping(true)
        .with_dma(true)
        .with_job(true)
        .with_queue_error(true)
        .with_page_fault(true)
}

/// State shared between the two halves of the interrupt handler and process context.
///
/// The hard half runs with interrupts off and every register access is a round trip to the
/// device model (tens of microseconds under vfio-user), so it only reads and acknowledges
/// `IRQ_STATUS` and leaves the sources in `pending` for the thread. The thread reads no
/// register for a job completion: completion records are in memory, where their waiters read
/// them.
pub(crate) struct IrqHandler {
    gpu: Arc<Gpu>,
    /// Sources acknowledged by the hard half and not yet handled by the thread.
    pending: Atomic<u32>,
    pings: Atomic<u32>,
    dma_done: Atomic<u32>,
    jobs_done: Atomic<u32>,
    queue_errors: Atomic<u32>,
}

impl IrqHandler {
    pub(crate) fn new(gpu: Arc<Gpu>) -> Self {
        Self {
            gpu,
            pending: Atomic::new(0),
            pings: Atomic::new(0),
            dma_done: Atomic::new(0),
            jobs_done: Atomic::new(0),
            queue_errors: Atomic::new(0),
        }
    }

    /// Ping interrupts seen since the handler was registered.
    pub(crate) fn pings(&self) -> u32 {
        self.pings.load(Relaxed)
    }

    /// DMA-fill completion interrupts seen since the handler was registered.
    pub(crate) fn dma_done(&self) -> u32 {
        self.dma_done.load(Acquire)
    }

    /// Job completion interrupts seen since the handler was registered.
    pub(crate) fn jobs_done(&self) -> u32 {
        self.jobs_done.load(Acquire)
    }

    /// Queue error interrupts seen since the handler was registered.
    pub(crate) fn queue_errors(&self) -> u32 {
        self.queue_errors.load(Acquire)
    }
}

impl irq::ThreadedHandler for IrqHandler {
    fn handle(&self) -> ThreadedIrqReturn {
        let Some(bar) = self.gpu.try_bar() else {
            return ThreadedIrqReturn::None;
        };
        let status = bar.read(regs::IRQ_STATUS).into_raw();
        if status == 0 {
            return ThreadedIrqReturn::None;
        }
        // Ack before handling, so that an event arriving meanwhile raises a new interrupt.
        bar.write_reg(regs::IRQ_CLEAR::from(status));
        // Release: the thread that takes these bits also sees what the device wrote before it
        // raised them (the MMIO read above ordered those writes before us).
        let mut old = self.pending.load(Relaxed);
        while let Err(now) = self.pending.cmpxchg(old, old | status, Release) {
            old = now;
        }
        ThreadedIrqReturn::WakeThread
    }

    fn handle_threaded(&self) -> IrqReturn {
        // The thread is where job fences will signal: lockdep checks from now on that nothing
        // on this path allocates in a way that could wait for those fences.
        let _signalling = SignallingSection::begin();
        // Zero when an earlier run of the thread already took these bits: still handled, as
        // the hard half acknowledged them.
        let status = regs::IRQ_STATUS::from(self.pending.xchg(0, Acquire));
        if status.ping() {
            self.pings.fetch_add(1, Relaxed);
            self.gpu.pinged();
        }
        // Release on the counters: whoever sees a count also sees the device's writes.
        if status.dma() {
            self.dma_done.fetch_add(1, Release);
        }
        if status.job() {
            self.jobs_done.fetch_add(1, Release);
        }
        if status.queue_error() {
            // An error is rare, so reading which queue stopped costs nothing that matters.
            if let Some(bar) = self.gpu.try_bar() {
                let failed = bar.read(regs::QUEUE_ERROR_STATUS);
                bar.write_reg(regs::QUEUE_ERROR_CLEAR::from(failed.into_raw()));
            }
            self.queue_errors.fetch_add(1, Release);
        }
        if status.page_fault() {
            // Faults are resolved in process context: resolving one may sleep and allocate.
            self.gpu.page_faults_posted();
        }
        if status.job() || status.queue_error() {
            // Completion records are in memory: jobs end without a register read each.
            self.gpu.complete();
        }
        IrqReturn::Handled
    }
}
