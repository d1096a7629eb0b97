//! Job queues: the per-queue registers, the status state machine, the
//! descriptor fetch, and how a job ends (complete, fail, reset, resume).

use super::{lock, set_hi, set_lo, Gpu, Stats};
use crate::isa::{JobDesc, JOB_DESC_USED, JOB_FLAG_IRQ};
use crate::mmu::Fault;
use crate::regs::*;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Q_STATUS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QStatus {
    Idle,
    Running,
    Stalled,
    Faulted,
    #[default]
    Disabled,
}

impl QStatus {
    pub fn reg(self) -> u32 {
        match self {
            QStatus::Idle => Q_STATUS_IDLE,
            QStatus::Running => Q_STATUS_RUNNING,
            QStatus::Stalled => Q_STATUS_STALLED,
            QStatus::Faulted => Q_STATUS_FAULTED,
            QStatus::Disabled => Q_STATUS_DISABLED,
        }
    }
}

/// How a job ended: the status word of its completion record and Q_ERROR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStatus {
    Ok,
    MmuFault,
    InvalidCommand,
    DmaError,
    /// Q_ERROR only: TAIL - HEAD exceeded RING_SIZE.
    RingOverrun,
    /// Q_ERROR only: ENABLE refused, COMPLETION is 0 or misaligned.
    BadCompletion,
}

impl JobStatus {
    pub fn code(self) -> u32 {
        match self {
            JobStatus::Ok => JOB_OK,
            JobStatus::MmuFault => JOB_MMU_FAULT,
            JobStatus::InvalidCommand => JOB_INVALID_COMMAND,
            JobStatus::DmaError => JOB_DMA_ERROR,
            JobStatus::RingOverrun => Q_ERROR_RING_OVERRUN,
            JobStatus::BadCompletion => Q_ERROR_BAD_COMPLETION,
        }
    }
}

/// A queue's registers and the state the MMIO side shares with its engine.
#[derive(Default)]
pub(super) struct QueueRegs {
    pub ring_base: u64,
    pub ring_size: u32,
    pub as_idx: u32,
    pub completion: u64,
    pub enabled: bool,
    pub status: QStatus,
    pub head: u32,
    pub tail: u32,
    pub error: u32,
    pub delay_ms: u32,
    /// Bumped by resets: the engine drops its job when it sees a new value.
    pub generation: u64,
    /// Bumped by anything that may let a waiting engine go on.
    pub kick: u64,
}

/// The job a queue's engine is running, with the queue registers it uses
/// latched when it started: a job never sees them change under it.
pub(super) struct Running {
    pub desc: JobDesc,
    pub as_idx: usize,
    pub completion: u64,
    pub pc: u64,
    /// Stalled on this fault id, with this fault.
    pub stalled: Option<(u32, Fault)>,
    pub not_before: Option<Instant>,
    /// Consecutive attempts of the current command that had to wait
    /// (SEM_WAIT, HANG): the retry interval doubles with each.
    pub waits: u32,
}

/// Engine-side state of a queue; its mutex is held while a command runs.
#[derive(Default)]
pub(super) struct Exec {
    pub generation: u64,
    pub running: Option<Running>,
}

/// Registers that only change while CONTROL.ENABLE is clear: writes while
/// it is set are ignored, so the engine never sees a half-written 64-bit
/// address or a ring that moves under it.
const LATCHED: [u64; 6] = [
    Q_RING_BASE_LO,
    Q_RING_BASE_HI,
    Q_RING_SIZE,
    Q_AS,
    Q_COMPLETION_LO,
    Q_COMPLETION_HI,
];

/// A usable completion record address: not 0, 16-byte aligned.
fn completion_ok(addr: u64) -> bool {
    addr != 0 && addr.is_multiple_of(COMPLETION_SIZE)
}

impl Gpu {
    pub(super) fn read_queue_reg(&self, q: usize, reg: u64) -> u32 {
        let r = lock(&self.qregs[q]);
        match reg {
            Q_RING_BASE_LO => r.ring_base as u32,
            Q_RING_BASE_HI => (r.ring_base >> 32) as u32,
            Q_RING_SIZE => r.ring_size,
            Q_AS => r.as_idx,
            Q_COMPLETION_LO => r.completion as u32,
            Q_COMPLETION_HI => (r.completion >> 32) as u32,
            Q_CONTROL => u32::from(r.enabled),
            Q_STATUS => r.status.reg(),
            Q_HEAD => r.head,
            Q_TAIL => r.tail,
            Q_ERROR => r.error,
            Q_DELAY_MS => r.delay_ms,
            _ => 0,
        }
    }

    pub(super) fn write_queue_reg(&self, q: usize, reg: u64, val: u32) {
        if reg == Q_COMMAND {
            match val {
                Q_CMD_RESET => self.queue_reset(q),
                Q_CMD_RESUME => self.queue_resume(q),
                _ => {}
            }
            return;
        }
        let mut r = lock(&self.qregs[q]);
        if r.enabled && LATCHED.contains(&reg) {
            log::debug!("queue {q}: write {val:#x} to register {reg:#x} ignored: queue enabled");
            return;
        }
        match reg {
            Q_RING_BASE_LO => set_lo(&mut r.ring_base, val),
            Q_RING_BASE_HI => set_hi(&mut r.ring_base, val),
            Q_RING_SIZE => r.ring_size = val,
            Q_AS => r.as_idx = val,
            Q_COMPLETION_LO => set_lo(&mut r.completion, val),
            Q_COMPLETION_HI => set_hi(&mut r.completion, val),
            Q_DELAY_MS => r.delay_ms = val,
            Q_CONTROL
                if val & Q_CONTROL_ENABLE != 0 && !r.enabled && !completion_ok(r.completion) =>
            {
                // The device would have nowhere to report a job; bus
                // address 0 is somebody's memory.
                log::debug!("queue {q}: ENABLE refused, COMPLETION {:#x}", r.completion);
                r.error = JobStatus::BadCompletion.code();
            }
            Q_CONTROL => {
                r.enabled = val & Q_CONTROL_ENABLE != 0;
                if r.enabled && r.error == JobStatus::BadCompletion.code() {
                    // That refusal is answered.
                    r.error = 0;
                }
                if matches!(r.status, QStatus::Disabled | QStatus::Idle) {
                    r.status = if r.enabled {
                        QStatus::Idle
                    } else {
                        QStatus::Disabled
                    };
                }
            }
            _ => {}
        }
        drop(r);
        self.kick(q);
    }

    pub(super) fn queue_reset(&self, q: usize) {
        let mut ex = lock(&self.execs[q]);
        ex.running = None;
        let mut r = lock(&self.qregs[q]);
        r.generation += 1;
        ex.generation = r.generation;
        r.head = r.tail;
        r.error = 0;
        r.status = if r.enabled {
            QStatus::Idle
        } else {
            QStatus::Disabled
        };
        r.kick += 1;
        drop(r);
        self.drop_answers(q);
        drop(ex);
        lock(&self.globals).queue_error &= !(1 << q);
        self.wake[q].notify_all();
    }

    fn queue_resume(&self, q: usize) {
        let mut r = lock(&self.qregs[q]);
        if r.status == QStatus::Faulted {
            r.status = QStatus::Idle;
            r.error = 0;
        }
        drop(r);
        lock(&self.globals).queue_error &= !(1 << q);
        self.kick(q);
    }

    /// Reads the descriptor in the ring slot of `head`; also says whether
    /// its reserved flags and bytes are all zero.
    pub(super) fn read_desc(
        &self,
        ring_base: u64,
        ring_size: u32,
        head: u32,
    ) -> Option<(JobDesc, bool)> {
        let mut b = [0u8; JOB_DESC_SIZE as usize];
        let slot = ring_base.checked_add(u64::from(head % ring_size) * JOB_DESC_SIZE)?;
        self.bus.read(slot, &mut b).ok()?;
        let desc = JobDesc::from_bytes(&b);
        let clean = desc.flags & !JOB_FLAG_IRQ == 0 && b[JOB_DESC_USED..].iter().all(|&x| x == 0);
        Some((desc, clean))
    }

    /// Stops the queue on an error that belongs to no job: STATUS FAULTED,
    /// ERROR `status`, QUEUE_ERROR; HEAD does not move and no completion
    /// record is written.
    pub(super) fn stop_queue(&self, q: usize, status: JobStatus) {
        {
            let mut r = lock(&self.qregs[q]);
            r.status = QStatus::Faulted;
            r.error = status.code();
        }
        lock(&self.globals).queue_error |= 1 << q;
        self.raise(IRQ_QUEUE_ERROR);
    }

    /// Ends the running job: writes its completion record, then interrupts.
    pub(super) fn complete(&self, q: usize, ex: &mut Exec, status: JobStatus, fault_status: u32) {
        let Some(run) = ex.running.take() else { return };
        // Its writes may be what another queue's SEM_WAIT waits for.
        (0..N_QUEUES).filter(|&o| o != q).for_each(|o| self.kick(o));
        let mut r = lock(&self.qregs[q]);
        let mut rec = [0u8; COMPLETION_SIZE as usize];
        rec[0..8].copy_from_slice(&run.desc.seqno.to_le_bytes());
        rec[8..12].copy_from_slice(&status.code().to_le_bytes());
        rec[12..16].copy_from_slice(&fault_status.to_le_bytes());
        // The job's writes happened before this point; the record publishes them.
        std::sync::atomic::fence(Ordering::SeqCst);
        let status = match self.bus.write(run.completion, &rec) {
            Ok(()) => status,
            // The driver cannot learn of the job from memory: the queue
            // stops and says why.
            Err(_) => JobStatus::DmaError,
        };
        r.head = r.head.wrapping_add(1);
        Stats::bump(&self.stats.jobs);
        if status == JobStatus::Ok {
            r.status = QStatus::Idle;
            drop(r);
            if run.desc.flags & JOB_FLAG_IRQ != 0 {
                lock(&self.globals).job_done |= 1 << q;
                self.raise(IRQ_JOB);
            }
        } else {
            r.status = QStatus::Faulted;
            r.error = status.code();
            drop(r);
            lock(&self.globals).queue_error |= 1 << q;
            self.raise(IRQ_QUEUE_ERROR);
        }
    }

    /// Consumes the job at the head without running it, reporting `status`
    /// and the descriptor's seqno if it could be read (else 0).
    pub(super) fn fail_unstarted(
        &self,
        q: usize,
        ex: &mut Exec,
        desc: Option<JobDesc>,
        status: JobStatus,
    ) {
        let (as_idx, completion) = {
            let r = lock(&self.qregs[q]);
            (r.as_idx as usize, r.completion)
        };
        ex.running = Some(Running {
            desc: desc.unwrap_or_default(),
            as_idx,
            completion,
            pc: 0,
            stalled: None,
            not_before: None,
            waits: 0,
        });
        self.complete(q, ex, status, 0);
    }
}
