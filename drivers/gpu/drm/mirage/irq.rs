// SPDX-License-Identifier: GPL-2.0 or MIT

//! MSI-X vector ownership and the device interrupt handler.

use core::ptr::NonNull;
use kernel::{
    device::Bound,
    io::Io,
    irq::{self, IrqReturn},
    pci::{self, IrqVectorRegistration},
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        Arc,
    },
};

use crate::regs;

pub(crate) type Bar0<'bound> = pci::Bar<'bound, { regs::BAR0_SIZE }>;

/// Owns the device's MSI-X vector allocation at a stable heap address.
///
/// An [`irq::Registration`] borrows the allocation it was requested from. Keeping the
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
    /// Every [`irq::Registration`] made from the returned request must be dropped before
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

/// State shared between the hard-IRQ handler and process context.
pub(crate) struct IrqHandler<'bound> {
    bar: Arc<Bar0<'bound>>,
    pings: Atomic<u32>,
    dma_done: Atomic<u32>,
    jobs_done: Atomic<u32>,
    queue_errors: Atomic<u32>,
}

impl<'bound> IrqHandler<'bound> {
    pub(crate) fn new(bar: Arc<Bar0<'bound>>) -> Self {
        Self {
            bar,
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

impl irq::Handler for IrqHandler<'_> {
    fn handle(&self) -> IrqReturn {
        let bar = &*self.bar;
        let status = bar.read32(regs::IRQ_STATUS);
        if status == 0 {
            return IrqReturn::None;
        }
        // Ack before handling, so that an event arriving meanwhile raises a new interrupt.
        bar.write32(status, regs::IRQ_CLEAR);
        if status & regs::IRQ_PING != 0 {
            self.pings.fetch_add(1, Relaxed);
        }
        // Release on the counters: whoever sees a count also sees the device's writes.
        if status & regs::IRQ_DMA != 0 {
            self.dma_done.fetch_add(1, Release);
        }
        if status & regs::IRQ_JOB != 0 {
            let done = bar.read32(regs::JOB_DONE_STATUS);
            bar.write32(done, regs::JOB_DONE_CLEAR);
            self.jobs_done.fetch_add(1, Release);
        }
        if status & regs::IRQ_QUEUE_ERROR != 0 {
            let failed = bar.read32(regs::QUEUE_ERROR_STATUS);
            bar.write32(failed, regs::QUEUE_ERROR_CLEAR);
            self.queue_errors.fetch_add(1, Release);
        }
        IrqReturn::Handled
    }
}
