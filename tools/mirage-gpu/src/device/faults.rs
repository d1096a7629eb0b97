//! MMU faults: the abort-mode latch of each address space, and the
//! page-fault queue with the driver's answers for stall mode.

use super::{lock, Gpu, QStatus, Stats};
use crate::mmu::{Fault, LatchedFault};
use crate::regs::*;
use std::sync::atomic::Ordering;

impl Gpu {
    /// Latches an abort-mode fault in the address space and reports it.
    pub(super) fn latch_fault(&self, q: usize, as_idx: usize, f: &Fault) {
        Stats::bump(&self.stats.faults);
        let mut a = lock(&self.aspaces[as_idx]);
        if a.fault.is_none() {
            a.fault = Some(LatchedFault {
                status: f.status(q as u32),
                address: f.va,
            });
        }
        drop(a);
        self.raise(IRQ_MMU);
    }

    pub(super) fn mmu_fault_status(&self) -> u32 {
        (0..N_AS).fold(0, |acc, n| {
            acc | (u32::from(lock(&self.aspaces[n]).fault.is_some()) << n)
        })
    }

    pub(super) fn mmu_fault_clear(&self, val: u32) {
        for n in (0..N_AS).filter(|n| val & (1 << n) != 0) {
            lock(&self.aspaces[n]).fault = None;
        }
        self.kick_all();
    }

    /// Posts a stalled fault to the fault queue. None if the queue is off or full.
    pub(super) fn post_fault(&self, q: usize, as_idx: u32, f: &Fault) -> Option<u32> {
        let id = self.next_fault_id.fetch_add(1, Ordering::Relaxed) & !FAULT_RESPONSE_ABORT;
        {
            let mut g = lock(&self.globals);
            let fq = g.faultq;
            if fq.size < 2 || !fq.size.is_power_of_two() || fq.tail.wrapping_sub(fq.head) >= fq.size
            {
                return None;
            }
            let mut rec = [0u8; FAULT_RECORD_SIZE as usize];
            rec[0..8].copy_from_slice(&f.va.to_le_bytes());
            rec[8..12].copy_from_slice(&f.status(q as u32).to_le_bytes());
            rec[12..16].copy_from_slice(&as_idx.to_le_bytes());
            rec[16..20].copy_from_slice(&id.to_le_bytes());
            rec[20..24].copy_from_slice(&(q as u32).to_le_bytes());
            let slot = fq.base + u64::from(fq.tail % fq.size) * FAULT_RECORD_SIZE;
            if self.bus.write(slot, &rec).is_err() {
                return None;
            }
            g.faultq.tail = fq.tail.wrapping_add(1);
            // The record is written before the producer index that publishes it.
            let _ = self.bus.write_u32(fq.tail_wb, g.faultq.tail);
        }
        self.raise(IRQ_PAGE_FAULT);
        Some(id)
    }

    /// DB_FAULT_RESPONSE.
    pub(super) fn fault_response(&self, id: u32, abort: bool) {
        for q in 0..N_QUEUES {
            let mut r = lock(&self.qregs[q]);
            if r.status == QStatus::Stalled {
                r.fault_response = Some((id, abort));
                r.kick += 1;
                self.wake[q].notify_all();
            }
        }
    }
}
