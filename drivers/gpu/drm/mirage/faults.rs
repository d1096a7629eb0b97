// SPDX-License-Identifier: GPL-2.0 or MIT

//! The device's page-fault queue: where address spaces in stall mode post the faults of their
//! jobs, and where the driver answers them.
//!
//! A job of a fault-mode VM that takes a translation or access-flag fault stalls: the device
//! writes a 32-byte record to the queue, writes its producer index back to memory and raises
//! `PAGE_FAULT`. The interrupt thread queues [`Gpu`]'s fault work, which takes every record
//! posted so far: it returns the record's slot (`DB_FAULTQ_HEAD`) at once, asks the VM of the
//! job to resolve the fault, and answers `DB_FAULT_RESPONSE` with RESUME (the command retries)
//! or ABORT (the job ends with `MMU_FAULT`, and its fence with `-EIO`).
//!
//! Several faults may be outstanding, one per stalled device queue: the queue has a slot for
//! each of them many times over. The work runs in process context and may sleep, allocate and
//! take the VM's locks: it is not a `dma_fence` signalling section. A job's fence still signals
//! in bounded time, whatever the fault service waits for: the job timeout kills a job that
//! stays stalled on a fault nobody resolves, and gives one whose faults were resolved at most
//! nine more periods.

use core::sync::atomic::{fence, Ordering};
use kernel::{
    device::{self, Bound},
    dma::Coherent,
    io::Io,
    prelude::*,
    sync::atomic::{Atomic, Relaxed},
};

use crate::{gpu::Gpu, irq::Bar0, regs};

/// Records the queue holds: far more than the faults that can be outstanding, one per device
/// queue.
const ENTRIES: u32 = 64;
/// Bytes of a record.
const RECORD: usize = 32;
/// Where, after the records, the device writes its producer index back.
const TAIL_WB: usize = ENTRIES as usize * RECORD;

/// How a job accessed memory, from a fault status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Atomic,
    Execute,
    Read,
    Write,
}

/// A fault record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fault {
    /// The virtual address of the access.
    pub(crate) addr: u64,
    /// The fault status (`FAULTSTATUS` format).
    pub(crate) status: u32,
    /// The address space.
    pub(crate) space: u32,
    /// What the answer names.
    pub(crate) id: u32,
    /// The device queue that stalled.
    pub(crate) queue: u32,
}

impl Fault {
    pub(crate) fn access(&self) -> Access {
        match (self.status >> 8) & 3 {
            regs::FAULT_ACCESS_ATOMIC => Access::Atomic,
            regs::FAULT_ACCESS_EXECUTE => Access::Execute,
            regs::FAULT_ACCESS_READ => Access::Read,
            _ => Access::Write,
        }
    }

    /// The exception type, without the table level.
    pub(crate) fn kind(&self) -> u32 {
        self.status & regs::FAULT_TYPE_MASK
    }
}

/// The page-fault queue's memory and the driver's consumer index.
pub(crate) struct FaultQueue {
    /// The records, then the producer index the device writes back.
    mem: Coherent<[u64]>,
    /// The index of the next record to take; only the fault work uses it.
    head: Atomic<u32>,
}

impl FaultQueue {
    pub(crate) fn new(dev: &device::Device<Bound>) -> Result<Self> {
        Ok(Self {
            mem: Coherent::<u64>::zeroed_slice(dev, (TAIL_WB + 8) / 8, GFP_KERNEL)?,
            head: Atomic::new(0),
        })
    }

    /// Points the device at the queue, empty. The device must be quiet (after a soft reset,
    /// which turns the queue off).
    pub(crate) fn start(&self, bar: &Bar0<'_>) {
        let base = self.mem.dma_address();
        let wb = base + TAIL_WB as u64;
        // The size goes last: while it is nonzero the addresses ignore writes.
        bar.write_reg(regs::FAULTQ_SIZE::from(0));
        bar.write_reg(regs::FAULTQ_BASE_LO::from(base as u32));
        bar.write_reg(regs::FAULTQ_BASE_HI::from((base >> 32) as u32));
        bar.write_reg(regs::FAULTQ_TAIL_WB_LO::from(wb as u32));
        bar.write_reg(regs::FAULTQ_TAIL_WB_HI::from((wb >> 32) as u32));
        // SAFETY: The device does not write the queue while it is off, and the pointer is the
        // write-back word inside `mem`.
        unsafe { core::ptr::write_volatile(self.tail_ptr(), 0) };
        self.head.store(0, Relaxed);
        bar.write_reg(regs::FAULTQ_SIZE::from(ENTRIES));
    }

    fn tail_ptr(&self) -> *mut u32 {
        // SAFETY: `TAIL_WB` is inside the allocation, 8-byte aligned.
        unsafe {
            self.mem
                .as_mut_ptr()
                .cast::<u8>()
                .add(TAIL_WB)
                .cast::<u32>()
        }
    }

    /// Takes the oldest record the device posted and gives its slot back; `None` if there is
    /// none. For the fault work only.
    pub(crate) fn pop(&self, gpu: &Gpu) -> Option<Fault> {
        let head = self.head.load(Relaxed);
        // SAFETY: The write-back word is inside `mem`; the device writes it with single
        // aligned stores.
        let tail = unsafe { core::ptr::read_volatile(self.tail_ptr()) };
        if tail == head {
            return None;
        }
        // The device writes a record before the index that publishes it.
        fence(Ordering::Acquire);
        let slot = (head % ENTRIES) as usize * RECORD / 8;
        // SAFETY: The slot is inside `mem`, and the device does not write it again until the
        // driver gives it back below.
        let w = unsafe {
            let p = self.mem.as_mut_ptr().cast::<u64>().add(slot);
            [
                core::ptr::read_volatile(p),
                core::ptr::read_volatile(p.add(1)),
                core::ptr::read_volatile(p.add(2)),
            ]
        };
        let next = head.wrapping_add(1);
        self.head.store(next, Relaxed);
        if let Some(bar) = gpu.try_bar() {
            bar.write_reg(regs::DB_FAULTQ_HEAD::from(next));
        }
        Some(Fault {
            addr: w[0],
            status: w[1] as u32,
            space: (w[1] >> 32) as u32,
            id: w[2] as u32,
            queue: (w[2] >> 32) as u32,
        })
    }
}

/// Answers fault `id`: RESUME (`resume`) or ABORT.
pub(crate) fn answer(gpu: &Gpu, id: u32, resume: bool) {
    if let Some(bar) = gpu.try_bar() {
        let abort = if resume { 0 } else { 1 << 31 };
        bar.write_reg(regs::DB_FAULT_RESPONSE::from(id & 0x7fff_ffff | abort));
    }
}
