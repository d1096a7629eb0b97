//! MMU faults: the abort-mode latch of each address space, and the
//! page-fault queue with the driver's answers for stall mode.

use super::{lock, Gpu, Stats};
use crate::mmu::{Fault, LatchedFault};
use crate::regs::*;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// A stalled fault the driver has been told about, by id.
pub(super) struct Pending {
    pub queue: usize,
    /// The driver's answer once it came: `Some(true)` to abort.
    pub answer: Option<bool>,
}

/// Outstanding stalled faults. An id enters before its record is published
/// and leaves when its queue takes the answer or is reset, so an answer is
/// kept whatever state the queue is in when it arrives, and reaches only
/// the queue that stalled on that id.
pub(super) type Answers = HashMap<u32, Pending>;

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
        // Known before the driver can see the record, so an answer that
        // overtakes the engine is not lost.
        lock(&self.answers).insert(
            id,
            Pending {
                queue: q,
                answer: None,
            },
        );
        let posted = self.write_fault_record(q, as_idx, f, id);
        if !posted {
            lock(&self.answers).remove(&id);
            return None;
        }
        self.raise(IRQ_PAGE_FAULT);
        Some(id)
    }

    /// Writes the record for fault `id` and publishes it; false if the
    /// queue is off or full or the record cannot be written.
    fn write_fault_record(&self, q: usize, as_idx: u32, f: &Fault, id: u32) -> bool {
        {
            let mut g = lock(&self.globals);
            let fq = g.faultq;
            // Off, full, or with nowhere safe to publish the tail: the
            // fault cannot be reported.
            if !(2..=4096).contains(&fq.size)
                || !fq.size.is_power_of_two()
                || fq.tail.wrapping_sub(fq.head) >= fq.size
                || fq.tail_wb == 0
                || !fq.tail_wb.is_multiple_of(4)
                || !fq.base.is_multiple_of(FAULT_RECORD_SIZE)
            {
                return false;
            }
            let mut rec = [0u8; FAULT_RECORD_SIZE as usize];
            rec[0..8].copy_from_slice(&f.va.to_le_bytes());
            rec[8..12].copy_from_slice(&f.status(q as u32).to_le_bytes());
            rec[12..16].copy_from_slice(&as_idx.to_le_bytes());
            rec[16..20].copy_from_slice(&id.to_le_bytes());
            rec[20..24].copy_from_slice(&(q as u32).to_le_bytes());
            let Some(slot) = fq
                .base
                .checked_add(u64::from(fq.tail % fq.size) * FAULT_RECORD_SIZE)
            else {
                return false;
            };
            if self.bus.write(slot, &rec).is_err() {
                return false;
            }
            g.faultq.tail = fq.tail.wrapping_add(1);
            // The record is written before the producer index that publishes it.
            let _ = self.bus.write_u32(fq.tail_wb, g.faultq.tail);
        }
        true
    }

    /// DB_FAULT_RESPONSE: records the answer for the queue that stalled on
    /// `id`. Unknown ids (never posted, already answered and taken, or
    /// dropped by a reset) are ignored.
    pub(super) fn fault_response(&self, id: u32, abort: bool) {
        let queue = {
            let mut answers = lock(&self.answers);
            match answers.get_mut(&id) {
                Some(p) => {
                    // The first answer counts, as for a consumed doorbell.
                    p.answer.get_or_insert(abort);
                    p.queue
                }
                None => {
                    log::debug!("fault response for unknown id {id:#x} ignored");
                    return;
                }
            }
        };
        self.kick(queue);
    }

    /// The driver's answer to fault `id`, once; None while unanswered.
    pub(super) fn take_answer(&self, id: u32) -> Option<bool> {
        let mut answers = lock(&self.answers);
        let abort = answers.get(&id)?.answer?;
        answers.remove(&id);
        Some(abort)
    }

    /// Forgets the outstanding faults of queue `q` (queue reset).
    pub(super) fn drop_answers(&self, q: usize) {
        lock(&self.answers).retain(|_, p| p.queue != q);
    }
}
