//! The queue engines: one step of a queue, the deterministic single-thread
//! loop the tests use, and the engine threads.

use super::exec::{exec_cmd, Cmd};
use super::queue::Running;
use super::vmem::VmCtx;
use super::{lock, Gpu, JobStatus, QStatus, Stats};
use crate::mmu::FaultKind;
use crate::regs::*;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar};
use std::time::{Duration, Instant};

/// What one engine step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do until the driver acts.
    Idle,
    /// Work was done; step again.
    Progress,
    /// Blocked (semaphore, delay, stalled fault); retry after the duration
    /// or when kicked.
    Waiting(Option<Duration>),
}

/// Longest pause between two attempts of a waiting command. A job that
/// completes kicks every queue, so a semaphore released by another queue's
/// job is seen at once; one released by the CPU within this.
pub const MAX_BACKOFF: Duration = Duration::from_millis(4);

/// The pause before attempt `waits` + 1 of a command whose first retry
/// comes after `first`: doubling, up to [`MAX_BACKOFF`].
fn backoff(first: Duration, waits: u32) -> Duration {
    let factor = 1u32 << waits.saturating_sub(1).min(16);
    first.saturating_mul(factor).min(MAX_BACKOFF)
}

impl Gpu {
    pub(super) fn kick(&self, q: usize) {
        lock(&self.qregs[q]).kick += 1;
        self.wake[q].notify_all();
    }

    pub(super) fn kick_all(&self) {
        (0..N_QUEUES).for_each(|q| self.kick(q));
    }

    /// Makes queue `q`'s engine panic at its next step (control socket):
    /// a stand-in for a model bug, to test that one is noticed.
    pub fn crash_engine(&self, q: usize) {
        self.crash.fetch_or(1 << q, Ordering::SeqCst);
        self.kick(q);
    }

    /// Advances queue `q` by at most one command.
    pub fn step_queue(&self, q: usize) -> Step {
        if self.crash.load(Ordering::SeqCst) & (1 << q) != 0 {
            panic!("queue {q}: engine crash requested on the control socket");
        }
        let mut ex = lock(&self.execs[q]);
        let (ring_base, ring_size, as_idx, completion, head, tail, enabled, status, delay_ms) = {
            let r = lock(&self.qregs[q]);
            if ex.generation != r.generation {
                ex.generation = r.generation;
                ex.running = None;
            }
            (
                r.ring_base,
                r.ring_size,
                r.as_idx as usize,
                r.completion,
                r.head,
                r.tail,
                r.enabled,
                r.status,
                r.delay_ms
                    .max(self.injected_delay_ms[q].load(Ordering::Relaxed)),
            )
        };
        if !enabled || status == QStatus::Faulted {
            return Step::Idle;
        }
        if ex.running.is_none() {
            if head == tail {
                return Step::Idle;
            }
            if !(2..=4096).contains(&ring_size)
                || !ring_size.is_power_of_two()
                || !ring_base.is_multiple_of(JOB_DESC_SIZE)
            {
                // No slot can be located: the job fails unread (seqno 0).
                self.fail_unstarted(q, &mut ex, None, JobStatus::InvalidCommand);
                return Step::Progress;
            }
            if tail.wrapping_sub(head) > ring_size {
                // Slots would be reused before they run: refuse to guess.
                self.stop_queue(q, JobStatus::RingOverrun);
                return Step::Progress;
            }
            if as_idx < N_AS && lock(&self.aspaces[as_idx]).fault.is_some() {
                return Step::Waiting(None);
            }
            // The slot is read now, when the job starts, not at the doorbell.
            let desc = match self.read_desc(ring_base, ring_size, head) {
                Some((desc, true)) => desc,
                Some((desc, false)) => {
                    // Readable, but a reserved bit is set: fail with its seqno.
                    self.fail_unstarted(q, &mut ex, Some(desc), JobStatus::InvalidCommand);
                    return Step::Progress;
                }
                None => {
                    self.fail_unstarted(q, &mut ex, None, JobStatus::DmaError);
                    return Step::Progress;
                }
            };
            if as_idx >= N_AS {
                // A misprogrammed queue fails its jobs without running them.
                self.fail_unstarted(q, &mut ex, Some(desc), JobStatus::InvalidCommand);
                return Step::Progress;
            }
            ex.running = Some(Running {
                desc,
                as_idx,
                completion,
                pc: 0,
                stalled: None,
                waits: 0,
                not_before: (delay_ms > 0)
                    .then(|| Instant::now() + Duration::from_millis(u64::from(delay_ms))),
            });
            lock(&self.qregs[q]).status = QStatus::Running;
        }
        let Some(run) = ex.running.as_mut() else {
            return Step::Idle;
        };
        if let Some(t) = run.not_before {
            let now = Instant::now();
            if now < t {
                return Step::Waiting(Some(t - now));
            }
            run.not_before = None;
        }
        if let Some((id, f)) = run.stalled {
            let Some(abort) = self.take_answer(id) else {
                return Step::Waiting(None);
            };
            run.stalled = None;
            lock(&self.qregs[q]).status = QStatus::Running;
            if abort {
                self.complete(q, &mut ex, JobStatus::MmuFault, f.status(q as u32));
                return Step::Progress;
            }
        }
        let Some(run) = ex.running.as_ref() else {
            return Step::Idle;
        };
        // The job's own address space, latched at its start.
        let as_idx = run.as_idx;
        if run.pc >= u64::from(run.desc.cmdbuf_len) {
            self.complete(q, &mut ex, JobStatus::Ok, 0);
            return Step::Progress;
        }
        let cmd = exec_cmd(
            &VmCtx::new(self, as_idx),
            run.desc.cmdbuf_va,
            run.desc.cmdbuf_len,
            run.pc,
        );
        match cmd {
            Cmd::Next(n) => {
                if let Some(run) = ex.running.as_mut() {
                    run.pc += n;
                    run.waits = 0;
                }
                Step::Progress
            }
            Cmd::End => {
                self.complete(q, &mut ex, JobStatus::Ok, 0);
                Step::Progress
            }
            Cmd::Wait(first) => {
                let waits = ex.running.as_mut().map_or(0, |run| {
                    run.waits = run.waits.saturating_add(1);
                    run.waits
                });
                Step::Waiting(Some(backoff(first, waits)))
            }
            Cmd::Invalid => {
                self.complete(q, &mut ex, JobStatus::InvalidCommand, 0);
                Step::Progress
            }
            Cmd::Fault(f) => {
                let stall = lock(&self.aspaces[as_idx]).stall_mode()
                    && matches!(f.kind, FaultKind::Translation | FaultKind::AccessFlag);
                if stall {
                    Stats::bump(&self.stats.faults);
                    if let Some(id) = self.post_fault(q, as_idx as u32, &f) {
                        if let Some(run) = ex.running.as_mut() {
                            run.stalled = Some((id, f));
                        }
                        lock(&self.qregs[q]).status = QStatus::Stalled;
                        return Step::Waiting(None);
                    }
                    // No room to report it: the fault cannot be serviced.
                    self.complete(q, &mut ex, JobStatus::MmuFault, f.status(q as u32));
                    return Step::Progress;
                }
                self.latch_fault(q, as_idx, &f);
                self.complete(q, &mut ex, JobStatus::MmuFault, f.status(q as u32));
                Step::Progress
            }
        }
    }

    /// Runs every queue on the caller's thread until none can progress
    /// without the driver or time passing. Deterministic: queues take
    /// turns one command at a time, in index order.
    pub fn run_until_idle(&self, max_steps: usize) -> usize {
        let mut steps = 0;
        while steps < max_steps {
            let mut progressed = false;
            for q in 0..N_QUEUES {
                if self.step_queue(q) == Step::Progress {
                    progressed = true;
                    steps += 1;
                }
            }
            if !progressed {
                break;
            }
        }
        steps
    }

    /// Starts one engine thread per queue. They run until [`Gpu::stop`].
    pub fn start_engines(self: &Arc<Self>) -> Vec<std::thread::JoinHandle<()>> {
        (0..N_QUEUES)
            .map(|q| {
                let gpu = Arc::clone(self);
                std::thread::Builder::new()
                    .name(format!("mirage-q{q}"))
                    .spawn(move || gpu.engine(q))
                    .expect("spawning an engine thread")
            })
            .collect()
    }

    fn engine(&self, q: usize) {
        while !self.stop.load(Ordering::Relaxed) {
            let kick = lock(&self.qregs[q]).kick;
            let wait = match self.step_queue(q) {
                Step::Progress => continue,
                Step::Idle => Duration::from_millis(100),
                Step::Waiting(d) => d.unwrap_or(Duration::from_millis(10)),
            };
            let r = lock(&self.qregs[q]);
            if r.kick == kick {
                let _ = self.wake[q].wait_timeout(r, wait);
            }
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.iter().for_each(Condvar::notify_all);
    }
}
