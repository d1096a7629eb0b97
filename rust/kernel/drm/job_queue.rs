// SPDX-License-Identifier: GPL-2.0

//! A job queue for firmware- or ring-scheduled GPUs.
//!
//! A [`JobQueue`] takes jobs from userspace submissions, waits until the fences each job depends
//! on have signalled and the device has room for it, runs it through the driver, and signals the
//! job's fence when the device is done with it. One queue feeds one device queue (a ring): there
//! is no scheduler picking between queues.
//!
//! Submitting is split in two, so that nothing that can fail happens once the job's fence is
//! visible to others:
//!
//! - [`JobQueue::prepare`] may sleep and fail: it allocates the job, its fence, the memory to
//!   wait for each dependency and for the hardware fence, and checks the job's credits.
//! - [`JobQueue::commit`] cannot fail: it numbers the fence (commit order is fence order and run
//!   order), registers the waits, queues the job and returns the fence for syncobjs and
//!   reservation objects.
//!
//! Jobs run in commit order, each once all its dependencies signalled and its credits fit under
//! the queue's limit with the jobs running on the device. [`JobQueueOps::run`] starts a job and
//! returns the *hardware fence* that the driver signals (say, from its interrupt thread) when
//! the device has finished it. The queue waits on that fence with a callback registered in
//! memory allocated by `prepare`, then signals the job's fence with the hardware fence's result.
//! So the driver never holds the job's fence, and only the queue can signal it.
//!
//! Job fences signal in commit order, including the fences of jobs that fail: a consumer that
//! sees one fence of the queue signalled may rely on the earlier ones having signalled.
//!
//! A job whose dependency failed does not run: its fence gets the dependency's error, as with
//! `drm_sched`, unless the queue says otherwise ([`JobQueueOps::RUN_AFTER_FAILED_DEPENDENCY`]).
//! A job whose `run` fails gets `run`'s error.
//!
//! If the job at the head of the device makes no progress for the queue's timeout,
//! [`JobQueueOps::timed_out`] decides: let it run on, or kill it (the driver has stopped it on
//! the device), whereupon its fence signals `ETIME`, or kill it and ban the queue.
//!
//! A banned queue ([`JobQueue::ban`]) refuses new jobs with `ECANCELED` and cancels the jobs
//! that have not run with `ECANCELED`, after the jobs already on the device have finished.
//! Dropping the queue bans it and waits until every job's fence has signalled.
//!
//! Everything that leads to signalling a fence runs on an ordered, reclaim-safe workqueue of the
//! queue, inside a [`SignallingSection`]: `run`, `timed_out`, and the queue's own bookkeeping,
//! which neither allocates nor takes a lock that is held around an allocation. Jobs are dropped
//! on the same workqueue, after their fences signalled and outside the section.

mod job;
mod wq;

#[cfg(CONFIG_KUNIT = "y")]
mod tests;

use self::{job::Job, wq::ReclaimQueue};
use crate::{
    bindings,
    dma_buf::fence::{Fence, FenceContext, FenceOps, PreparedFence, SignallingSection},
    list::{List, ListArc},
    prelude::*,
    sync::{aref::ARef, Arc, LockClassKey, SpinLock, UniqueArc},
    time::{msecs_to_jiffies, Delta, Instant, Monotonic},
    workqueue::{impl_has_delayed_work, impl_has_work, DelayedWork, Work, WorkItem},
};

/// What the driver does for a [`JobQueue`].
pub trait JobQueueOps: Send + Sync + Sized + 'static {
    /// The driver's side of the job fences.
    type FenceOps: FenceOps;

    /// The driver's data of one job: what it needs to run it, and the resources the job keeps
    /// until its fence signals.
    type Job: Send + Sync;

    /// Starts `job` on the device, and returns the fence that signals when the device has
    /// finished it; the job's fence then signals with that fence's result. An error ends the
    /// job with that error.
    ///
    /// Called once per job, in commit order, on the queue's workqueue inside a
    /// [`SignallingSection`]: it must not allocate memory except from what `prepare` reserved,
    /// nor wait for anything that may wait for memory.
    fn run(&self, job: &mut Self::Job) -> Result<ARef<Fence>>;

    /// Whether a job whose dependency signalled an error still runs.
    ///
    /// By default it does not, and its fence gets the dependency's error. A queue whose jobs
    /// must run once committed, because others already rely on their effects (the page-table
    /// updates of asynchronous binds, say), sets it: the job then runs as if the dependency had
    /// succeeded.
    const RUN_AFTER_FAILED_DEPENDENCY: bool = false;

    /// Called when the job at the head of the device has made no progress for the queue's
    /// timeout, in the same context as [`JobQueueOps::run`].
    ///
    /// To kill the job, the driver stops it on the device (resetting the device queue, say)
    /// before returning; the queue then stops waiting for its hardware fence.
    fn timed_out(&self, job: &Self::Job) -> TimeoutAction;
}

/// What to do with a job that timed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutAction {
    /// It is making progress: wait for another timeout period.
    Continue,
    /// The driver stopped it: signal its fence with `ETIME`.
    Kill,
    /// As [`TimeoutAction::Kill`], and [ban](JobQueue::ban) the queue.
    KillAndBan,
}

/// A queue of jobs that run on one device queue once their dependencies have signalled.
///
/// See the [module documentation](self). Dropping the queue waits for the jobs on the device:
/// [`JobQueueOps::timed_out`] must eventually kill a job that never finishes.
///
/// # Invariants
///
/// `inner` is the only reference to the queue's state outside the queue's own work items and
/// fence callbacks, all of which are gone when `drop` returns.
pub struct JobQueue<D: JobQueueOps> {
    inner: Arc<Inner<D>>,
}

/// A job allocated by [`JobQueue::prepare`], not committed yet.
///
/// Dropping it frees the job, and leaves no trace in the queue or its fence timeline.
pub struct PreparedJob<D: JobQueueOps> {
    job: Pin<UniqueArc<Job<D>>>,
    fence: PreparedFence<()>,
    /// The fence context of the queue that prepared the job.
    queue: u64,
}

impl<D: JobQueueOps> PreparedJob<D> {
    /// Makes the job wait for `fence` too, e.g. for a fence found in a reservation object once
    /// it is locked.
    pub fn add_dependency(&mut self, fence: &Fence) -> Result {
        self.job.as_mut().add_dependency(fence)
    }

    /// The driver's data of the job.
    pub fn data(&self) -> &D::Job {
        &self.job.data
    }

    /// The driver's data of the job, to change until it is committed.
    pub fn data_mut(&mut self) -> &mut D::Job {
        self.job.as_mut().project().data
    }
}

/// The queue's state, shared with its work items and fence callbacks.
#[pin_data]
struct Inner<D: JobQueueOps> {
    ops: D,
    fences: Arc<FenceContext<D::FenceOps, ()>>,
    wq: ReclaimQueue,
    credit_limit: u32,
    timeout: Delta,
    #[pin]
    state: SpinLock<State<D>>,
    /// Runs [`Inner::process`].
    #[pin]
    work: Work<Inner<D>, 0>,
    /// Runs [`Inner::check_timeout`].
    #[pin]
    timeout_work: DelayedWork<Inner<D>, 1>,
}

/// # Invariants
///
/// - `pending` holds the committed jobs that have not started, in commit order; `running` the
///   started ones whose fences have not signalled, in commit order. Every job of `pending` was
///   committed after every job of `running`.
/// - `credits` is the sum of the credits of the jobs in `running`, at most `credit_limit`.
/// - Only the queue's work items take jobs off `running`, or add jobs to it, and they run one
///   at a time.
struct State<D: JobQueueOps> {
    pending: List<Job<D>>,
    running: List<Job<D>>,
    credits: u32,
    banned: bool,
    /// When the job at the head of `running` started, or the one before it finished.
    progress: Instant<Monotonic>,
    /// The fence of the last committed job: when it signals, all have.
    last: Option<ARef<Fence>>,
}

impl_has_work! {
    impl{D: JobQueueOps} HasWork<Inner<D>, 0> for Inner<D> { self.work }
}
impl_has_delayed_work! {
    impl{D: JobQueueOps} HasDelayedWork<Inner<D>, 1> for Inner<D> { self.timeout_work }
}

impl<D: JobQueueOps> WorkItem<0> for Inner<D> {
    type Pointer = Arc<Inner<D>>;

    fn run(this: Arc<Inner<D>>) {
        Self::process(&this);
    }
}

impl<D: JobQueueOps> WorkItem<1> for Inner<D> {
    type Pointer = Arc<Inner<D>>;

    fn run(this: Arc<Inner<D>>) {
        Self::check_timeout(&this);
    }
}

/// The lockdep classes of every job queue's lock and work items, with their names.
struct LockClasses {
    names: [&'static CStr; 4],
    state: Pin<&'static LockClassKey>,
    work: Pin<&'static LockClassKey>,
    timeout_work: Pin<&'static LockClassKey>,
    timeout_timer: Pin<&'static LockClassKey>,
}

/// Returns the [`LockClasses`] of job queues.
///
/// Not generic on purpose: a `static_lock_class!()` in the generic `JobQueue::new` would be one
/// key for every instantiation, but each crate that instantiates it would bring its own copy of
/// the class *name*, and lockdep refuses one key with two names (it compares the pointers).
fn lock_classes() -> LockClasses {
    LockClasses {
        names: [
            c"JobQueue::state",
            c"JobQueue::work",
            c"JobQueue::timeout_work",
            c"JobQueue::timeout_work_timer",
        ],
        state: crate::static_lock_class!(),
        work: crate::static_lock_class!(),
        timeout_work: crate::static_lock_class!(),
        timeout_timer: crate::static_lock_class!(),
    }
}

impl<D: JobQueueOps> JobQueue<D> {
    /// Makes a queue called `name` (its workqueue and its fence timeline) whose jobs share
    /// `credit_limit` credits, and time out after `timeout` without progress.
    pub fn new(name: &'static CStr, ops: D, credit_limit: u32, timeout: Delta) -> Result<Self> {
        if credit_limit == 0 || timeout <= Delta::from_nanos(0) {
            return Err(EINVAL);
        }
        let fences = Arc::new(FenceContext::new(name), GFP_KERNEL)?;
        let wq = ReclaimQueue::new_ordered(name)?;
        let classes = lock_classes();
        let inner = Arc::pin_init(
            pin_init!(Inner {
                ops,
                fences,
                wq,
                credit_limit,
                timeout,
                state <- SpinLock::new(
                    State {
                        pending: List::new(),
                        running: List::new(),
                        credits: 0,
                        banned: false,
                        progress: Instant::now(),
                        last: None,
                    },
                    classes.names[0],
                    classes.state,
                ),
                work <- Work::new(classes.names[1], classes.work),
                timeout_work <- DelayedWork::new(
                    classes.names[2],
                    classes.timeout_work,
                    classes.names[3],
                    classes.timeout_timer,
                ),
            }),
            GFP_KERNEL,
        )?;
        Ok(Self { inner })
    }

    /// The driver's data of the queue.
    pub fn ops(&self) -> &D {
        &self.inner.ops
    }

    /// Allocates a job that needs `credits` of the queue's credits and waits for `deps`.
    ///
    /// Fails with `ECANCELED` if the queue is banned, and `EINVAL` if `credits` is zero or above
    /// the queue's limit. May sleep.
    pub fn prepare(
        &self,
        data: D::Job,
        credits: u32,
        deps: &[ARef<Fence>],
    ) -> Result<PreparedJob<D>> {
        if self.is_banned() {
            return Err(ECANCELED);
        }
        if credits == 0 || credits > self.inner.credit_limit {
            return Err(EINVAL);
        }
        Ok(PreparedJob {
            job: Job::new(data, credits, deps)?,
            fence: self.inner.fences.prepare((), GFP_KERNEL)?,
            queue: self.inner.fences.nr(),
        })
    }

    /// Queues a prepared job and returns its fence. Cannot fail.
    ///
    /// Jobs run, and their fences are numbered, in commit order. If the queue was banned since
    /// `prepare`, the job does not run, and its fence signals `ECANCELED` after the jobs before
    /// it. A job prepared by another queue does not run either: its fence signals `EINVAL`.
    pub fn commit(&self, prepared: PreparedJob<D>) -> ARef<Fence> {
        let inner = &self.inner;
        let PreparedJob {
            mut job,
            fence,
            queue,
        } = prepared;
        // Not under the lock: registering may call into the dependencies' drivers. A wake-up may
        // run at once; it only queues the worker, which is queued again below.
        job.as_mut().arm(inner);
        let mut state = inner.state.lock();
        // Numbered under the lock, so that fence order is queue order.
        let (out, consumer) = FenceContext::publish_owned(&inner.fences, fence);
        job.as_mut().set_fence(out);
        state.last = Some(consumer.clone());
        if queue == inner.fences.nr() {
            // On a banned queue the worker cancels the job, in order.
            state.pending.push_back(ListArc::from(job));
            drop(state);
            Inner::kick(inner);
        } else {
            drop(state);
            job.as_mut().signal(Some(EINVAL));
        }
        consumer
    }

    /// Bans the queue: [`JobQueue::prepare`] fails with `ECANCELED` from now on, and every job
    /// that has not run is cancelled with `ECANCELED` once the jobs on the device have finished.
    pub fn ban(&self) {
        Inner::ban(&self.inner);
    }

    /// Whether the queue is banned.
    pub fn is_banned(&self) -> bool {
        self.inner.state.lock().banned
    }

    /// Waits until the queue's worker has handled every event that came before the call.
    #[cfg(CONFIG_KUNIT = "y")]
    fn flush(&self) {
        self.inner.wq.flush();
    }
}

impl<D: JobQueueOps> Drop for JobQueue<D> {
    fn drop(&mut self) {
        let inner = &self.inner;
        let last = {
            let mut state = inner.state.lock();
            state.banned = true;
            state.last.take()
        };
        Inner::kick(inner);
        if let Some(last) = last {
            // Jobs on the device finish or time out; the others are cancelled after them. Fences
            // signal in order, so when the last one has, all have.
            while last.wait(false, Delta::from_secs(10)).is_err() {
                pr_warn!("job queue: waiting for a job that does not finish\n");
            }
        }
        // No wake-up registration is left: each was dropped before its job's fence signalled.
        // Only the queue's own work items can still hold a reference to `inner`.
        let dwork = inner.timeout_work_raw();
        // SAFETY: `dwork` is the queue's initialised delayed work, alive while `inner` is.
        if unsafe { bindings::cancel_delayed_work_sync(dwork) } {
            // SAFETY: A queued `Arc` work item owns one reference, which `Queue::enqueue_delayed`
            // made with `Arc::into_raw`; the item will not run, so the reference is ours to drop.
            drop(unsafe { Arc::from_raw(Arc::as_ptr(inner)) });
        }
        // The worker drops the last jobs after their fences signalled.
        inner.wq.flush();
    }
}

impl<D: JobQueueOps> Inner<D> {
    /// Queues the worker, unless it is queued already. Callable in any context.
    fn kick(this: &Arc<Self>) {
        // The reference returned when the worker is already queued is not the last one: the
        // caller holds another.
        let _ = this.wq.enqueue::<Arc<Self>, 0>(this.clone());
    }

    /// Checks the job at the head of the device after `delay`, unless a check is queued.
    fn arm_timeout(this: &Arc<Self>, delay: Delta) {
        let msecs = u32::try_from(delay.as_millis_ceil()).unwrap_or(u32::MAX);
        // As in `kick`, a returned reference is not the last one.
        let _ = this
            .wq
            .enqueue_delayed::<Arc<Self>, 1>(this.clone(), msecs_to_jiffies(msecs));
    }

    fn ban(this: &Arc<Self>) {
        this.state.lock().banned = true;
        Self::kick(this);
    }

    /// The `delayed_work` of `timeout_work`.
    fn timeout_work_raw(&self) -> *mut bindings::delayed_work {
        // SAFETY: The pointer comes from a reference, so it is aligned and not dangling.
        let work = unsafe { DelayedWork::raw_as_work(&self.timeout_work) };
        // SAFETY: `raw_as_work` points at the `work` field of the `delayed_work`.
        unsafe { crate::container_of!(Work::raw_get(work), bindings::delayed_work, work) }
    }

    /// The worker: signals the fences of the jobs that finished, and starts the jobs that can
    /// run, in order, until neither is possible.
    fn process(this: &Arc<Self>) {
        let mut done = List::new();
        {
            let _section = SignallingSection::begin();
            while this.retire_one(&mut done) || Self::start_one(this, &mut done) {}
        }
        // The driver's data of the jobs goes outside the section.
        drop(done);
    }

    /// Signals the fence of the job at the head of `running` if it finished, and moves it to
    /// `done`. Returns whether it did.
    fn retire_one(&self, done: &mut List<Job<D>>) -> bool {
        let job = {
            let mut state = self.state.lock();
            if !state
                .running
                .iter()
                .next()
                .is_some_and(|job| job.finished())
            {
                return false;
            }
            let Some(job) = state.running.pop_front() else {
                return false;
            };
            state.credits -= job.credits;
            state.progress = Instant::now();
            job
        };
        if let Some(mut job) = Job::unlist(job) {
            job.as_mut().signal(None);
            done.push_back(ListArc::from(job));
        }
        true
    }

    /// Starts the job at the head of `pending` if it can run, or cancels it if the queue is
    /// banned and no job before it is left. Returns whether it did either.
    fn start_one(this: &Arc<Self>, done: &mut List<Job<D>>) -> bool {
        let mut state = this.state.lock();
        let Some(head) = state.pending.iter().next() else {
            return false;
        };
        if state.banned {
            // Cancelled fences signal after the fences of the jobs before them.
            if !state.running.is_empty() {
                return false;
            }
            let job = state.pending.pop_front();
            drop(state);
            if let Some(mut job) = job.and_then(Job::unlist) {
                job.as_mut().signal(Some(ECANCELED));
                done.push_back(ListArc::from(job));
            }
            return true;
        }
        let credits = head.credits;
        // Both terms are at most `credit_limit` (type invariant and `prepare`).
        if !head.ready() || state.credits.saturating_add(credits) > this.credit_limit {
            return false;
        }
        let Some(job) = state.pending.pop_front() else {
            return false;
        };
        state.credits += credits;
        drop(state);
        let Some(mut job) = Job::unlist(job) else {
            this.state.lock().credits -= credits;
            return true;
        };
        job.as_mut().start(&this.ops, this);
        let on_device = job.running();
        let mut state = this.state.lock();
        if state.running.is_empty() {
            state.progress = Instant::now();
        }
        state.running.push_back(ListArc::from(job));
        drop(state);
        if on_device {
            Self::arm_timeout(this, this.timeout);
        }
        true
    }

    /// The timeout: asks the driver about the job at the head of the device if it made no
    /// progress for `timeout`, and checks again later while jobs run.
    fn check_timeout(this: &Arc<Self>) {
        let mut done = List::new();
        {
            let _section = SignallingSection::begin();
            let job = {
                let mut state = this.state.lock();
                let Some(head) = state.running.iter().next() else {
                    return;
                };
                // A finished job is the worker's, which is queued to retire it; time the next.
                if !head.running() {
                    drop(state);
                    Self::arm_timeout(this, this.timeout);
                    return;
                }
                let waited = state.progress.elapsed();
                if waited < this.timeout {
                    drop(state);
                    Self::arm_timeout(this, this.timeout - waited);
                    return;
                }
                // Put back, or ended, before the worker can run again (type invariant of
                // `State`), so the worker never misses it.
                let Some(job) = state.running.pop_front() else {
                    return;
                };
                job
            };
            let action = this.ops.timed_out(&job.data);
            let mut state = this.state.lock();
            state.progress = Instant::now();
            if action == TimeoutAction::Continue {
                state.running.push_front(job);
                drop(state);
                Self::arm_timeout(this, this.timeout);
                return;
            }
            state.credits -= job.credits;
            if action == TimeoutAction::KillAndBan {
                state.banned = true;
            }
            let more = !state.running.is_empty();
            drop(state);
            if let Some(mut job) = Job::unlist(job) {
                job.as_mut().end(ETIME);
                job.as_mut().signal(None);
                done.push_back(ListArc::from(job));
            }
            // The next jobs may fit now, or were cancelled by a ban.
            Self::kick(this);
            if more {
                Self::arm_timeout(this, this.timeout);
            }
        }
        drop(done);
    }
}
