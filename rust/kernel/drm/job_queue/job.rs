// SPDX-License-Identifier: GPL-2.0

//! Jobs: what [`JobQueue::prepare`] allocates, and what the queue owns from
//! [`JobQueue::commit`] until the job's fence signals.
//!
//! [`JobQueue::prepare`]: super::JobQueue::prepare
//! [`JobQueue::commit`]: super::JobQueue::commit

use super::{Inner, JobQueueOps};
use crate::{
    dma_buf::fence::{Fence, FenceCallback, FenceCallbackRegistration, OwnedDriverFence},
    list::{impl_list_arc_safe, impl_list_item, ListArc, ListLinks},
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Acquire, Atomic, Release},
        Arc, UniqueArc,
    },
};
use core::mem::{self, MaybeUninit};

/// Wakes the queue's worker when the fence it waits on signals.
pub(super) struct Wake<D: JobQueueOps> {
    queue: Arc<Inner<D>>,
    fired: Atomic<bool>,
}

impl<D: JobQueueOps> FenceCallback for Wake<D> {
    fn called(&self, _fence: &Fence) {
        self.fired.store(true, Release);
        // This runs under the fence's lock, maybe in hard-interrupt context: only queue work.
        Inner::kick(&self.queue);
    }
}

type Registration<D> = FenceCallbackRegistration<Wake<D>>;
type Memory<D> = KBox<MaybeUninit<Registration<D>>>;

/// Registers a wake-up of `queue` on `fence` in memory allocated earlier. Cannot fail.
fn arm<D: JobQueueOps>(
    memory: Memory<D>,
    fence: &Fence,
    queue: &Arc<Inner<D>>,
) -> Pin<KBox<Registration<D>>> {
    let wake = Wake {
        queue: queue.clone(),
        fired: Atomic::new(false),
    };
    match memory.write_pin_init(FenceCallbackRegistration::new(fence, wake)) {
        Ok(registration) => registration,
        Err(never) => match never {},
    }
}

/// Whether the fence of `registration` has signalled: it had when the wake-up was registered,
/// or the wake-up has run. Takes no lock.
fn signalled<D: JobQueueOps>(registration: &Registration<D>) -> bool {
    !registration.armed() || registration.data().fired.load(Acquire)
}

/// A fence the job waits for, and the memory to wait for it with.
enum Dependency<D: JobQueueOps> {
    Prepared(ARef<Fence>, Memory<D>),
    Armed(Pin<KBox<Registration<D>>>),
    /// Only while arming.
    Gone,
}

/// Where a job is in its life.
enum Stage<D: JobQueueOps> {
    /// Not run yet: the memory to wait for the hardware fence with.
    Queued(Memory<D>),
    /// Run: waiting for the hardware fence.
    Running(Pin<KBox<Registration<D>>>),
    /// Done without the device: skipped, failed to run, or killed. The error for its fence.
    Ended(Error),
}

/// A job of a [`JobQueue`](super::JobQueue).
///
/// # Invariants
///
/// - A job committed to a queue has exactly one [`Arc`], made from its [`UniqueArc`] by
///   [`ListArc::from`]; nothing clones it, so [`Job::unlist`] gets the `UniqueArc` back.
/// - `out` is `Some` from commit until the job's fence signals.
/// - Every wake-up registration of the job is dropped before its fence signals.
#[pin_data]
pub(super) struct Job<D: JobQueueOps> {
    #[pin]
    links: ListLinks,
    pub(super) data: D::Job,
    pub(super) credits: u32,
    out: Option<OwnedDriverFence<D::FenceOps, ()>>,
    deps: KVec<Dependency<D>>,
    stage: Stage<D>,
}

impl_list_arc_safe! {
    impl{D: JobQueueOps} ListArcSafe<0> for Job<D> { untracked; }
}
impl_list_item! {
    impl{D: JobQueueOps} ListItem<0> for Job<D> { using ListLinks { self.links }; }
}

impl<D: JobQueueOps> Job<D> {
    /// Allocates a job and the memory to wait for each of `deps` and for its hardware fence.
    pub(super) fn new(
        data: D::Job,
        credits: u32,
        deps: &[ARef<Fence>],
    ) -> Result<Pin<UniqueArc<Self>>> {
        let mut job_deps = KVec::with_capacity(deps.len(), GFP_KERNEL)?;
        for fence in deps {
            job_deps.push(
                Dependency::Prepared(fence.clone(), KBox::new_uninit(GFP_KERNEL)?),
                GFP_KERNEL,
            )?;
        }
        let stage = Stage::Queued(KBox::new_uninit(GFP_KERNEL)?);
        UniqueArc::pin_init(
            pin_init!(Self {
                links <- ListLinks::new(),
                data,
                credits,
                out: None,
                deps: job_deps,
                stage,
            }),
            GFP_KERNEL,
        )
    }

    /// Allocates the memory to wait for one more fence.
    pub(super) fn add_dependency(self: Pin<&mut Self>, fence: &Fence) -> Result {
        let memory = KBox::new_uninit(GFP_KERNEL)?;
        self.project()
            .deps
            .push(Dependency::Prepared(fence.into(), memory), GFP_KERNEL)?;
        Ok(())
    }

    /// Registers the wake-ups on the dependencies. Cannot fail.
    pub(super) fn arm(self: Pin<&mut Self>, queue: &Arc<Inner<D>>) {
        for dep in self.project().deps.iter_mut() {
            // Every dependency is `Prepared` until now: leave an armed one as it is.
            if let Dependency::Prepared(fence, memory) = mem::replace(dep, Dependency::Gone) {
                *dep = Dependency::Armed(arm(memory, &fence, queue));
            }
        }
    }

    /// Gives the job the fence to signal when it is done.
    pub(super) fn set_fence(self: Pin<&mut Self>, out: OwnedDriverFence<D::FenceOps, ()>) {
        *self.project().out = Some(out);
    }

    /// Whether every dependency has signalled. Takes no lock and runs no foreign code.
    pub(super) fn ready(&self) -> bool {
        self.deps.iter().all(|dep| match dep {
            Dependency::Armed(registration) => signalled(registration),
            Dependency::Prepared(..) | Dependency::Gone => false,
        })
    }

    /// Whether the job is done, on the device or not, so that its fence can signal. Takes no
    /// lock and runs no foreign code.
    pub(super) fn finished(&self) -> bool {
        match &self.stage {
            Stage::Queued(_) => false,
            Stage::Running(registration) => signalled(registration),
            Stage::Ended(_) => true,
        }
    }

    /// Whether the job runs on the device.
    pub(super) fn running(&self) -> bool {
        matches!(self.stage, Stage::Running(_))
    }

    /// Runs the job through `ops`, unless a dependency failed: then the job is skipped and its
    /// fence gets the dependency's error, as `drm_sched` does (unless
    /// [`JobQueueOps::RUN_AFTER_FAILED_DEPENDENCY`]). Call once, in process context.
    pub(super) fn start(self: Pin<&mut Self>, ops: &D, queue: &Arc<Inner<D>>) {
        let this = self.project();
        let failed = this.deps.iter().find_map(|dep| match dep {
            Dependency::Armed(_) if D::RUN_AFTER_FAILED_DEPENDENCY => None,
            Dependency::Armed(registration) => registration.fence().status()?.err(),
            Dependency::Prepared(..) | Dependency::Gone => None,
        });
        // All signalled: nothing to remove, only memory to give back.
        this.deps.clear();
        let stage = mem::replace(this.stage, Stage::Ended(EINVAL));
        *this.stage = match (stage, failed) {
            (_, Some(e)) => Stage::Ended(e),
            (Stage::Queued(memory), None) => match ops.run(this.data) {
                Ok(hw) => Stage::Running(arm(memory, &hw, queue)),
                Err(e) => Stage::Ended(e),
            },
            // Started twice: cannot happen, the queue starts a job once.
            (stage, None) => stage,
        };
    }

    /// Stops waiting for the device: the fence will signal with `error`.
    pub(super) fn end(self: Pin<&mut Self>, error: Error) {
        // Removes the wake-up on the hardware fence, if any.
        *self.project().stage = Stage::Ended(error);
    }

    /// Signals the job's fence with its outcome. The job must be `finished`, or `error` given.
    pub(super) fn signal(self: Pin<&mut Self>, error: Option<Error>) {
        let this = self.project();
        // Dependencies are dropped when the job starts; a job cancelled before that still has
        // them. No wake-up may outlive the fence (type invariant).
        this.deps.clear();
        let stage = mem::replace(this.stage, Stage::Ended(ECANCELED));
        let result = match (error, stage) {
            (Some(e), _) => Err(e),
            (None, Stage::Ended(e)) => Err(e),
            // The hardware fence signalled: it had when the wake-up was armed, or it ran.
            (None, Stage::Running(hw)) => hw.fence().status().unwrap_or(Ok(())),
            (None, Stage::Queued(_)) => Err(ECANCELED),
        };
        if let Some(out) = this.out.take() {
            out.signal(result);
        }
    }

    /// Gets a job taken off a list back for changes.
    ///
    /// Returns `None` only if the job had a second `Arc`, which its type invariant rules out.
    pub(super) fn unlist(job: ListArc<Self>) -> Option<Pin<UniqueArc<Self>>> {
        Arc::into_unique_or_drop(job.into_arc())
    }
}
