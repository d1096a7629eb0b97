// SPDX-License-Identifier: GPL-2.0

//! KUnit tests of the job queue, against a pretend device whose hardware fences the tests
//! signal by hand.

#[macros::kunit_tests(rust_drm_job_queue)]
mod kunit {
    use super::super::*;
    use crate::{
        dma_buf::fence::FenceContext,
        sync::atomic::{Atomic, Relaxed},
        time::delay::fsleep,
    };

    struct TestFences;

    impl FenceOps for TestFences {
        const DRIVER_NAME: &'static CStr = c"rust_drm_job_queue_test";
    }

    /// A timeline of the tests' own fences: dependencies and hardware fences.
    type Timeline = FenceContext<TestFences, ()>;

    /// The pretend device.
    struct Device {
        /// The ids of the jobs run, one hex digit each, first run first.
        order: Atomic<u64>,
        /// Calls of `run` and `timed_out` outside a signalling section.
        outside_section: Atomic<u32>,
        timeouts: Atomic<u32>,
        timed_out_id: Atomic<u64>,
        on_timeout: TimeoutAction,
    }

    struct TestJob {
        id: u64,
        hw: Option<ARef<Fence>>,
        run_error: Option<Error>,
        drops: Option<Arc<Atomic<u32>>>,
    }

    impl TestJob {
        fn new(id: u64, hw: &Fence) -> Self {
            Self {
                id,
                hw: Some(hw.into()),
                run_error: None,
                drops: None,
            }
        }
    }

    impl Drop for TestJob {
        fn drop(&mut self) {
            if let Some(drops) = &self.drops {
                drops.fetch_add(1, Relaxed);
            }
        }
    }

    impl Device {
        fn check_section(&self) {
            if !SignallingSection::active() {
                self.outside_section.fetch_add(1, Relaxed);
            }
        }
    }

    impl JobQueueOps for Device {
        type FenceOps = TestFences;
        type Job = TestJob;

        fn run(&self, job: &mut TestJob) -> Result<ARef<Fence>> {
            self.check_section();
            // Only the queue's worker runs jobs, one at a time.
            let order = self.order.load(Relaxed);
            self.order.store(order << 4 | job.id, Relaxed);
            if let Some(e) = job.run_error {
                return Err(e);
            }
            job.hw.take().ok_or(EINVAL)
        }

        fn timed_out(&self, job: &TestJob) -> TimeoutAction {
            self.check_section();
            self.timeouts.fetch_add(1, Relaxed);
            self.timed_out_id.store(job.id, Relaxed);
            self.on_timeout
        }
    }

    fn queue(
        credit_limit: u32,
        timeout: Delta,
        on_timeout: TimeoutAction,
    ) -> Result<JobQueue<Device>> {
        let device = Device {
            order: Atomic::new(0),
            outside_section: Atomic::new(0),
            timeouts: Atomic::new(0),
            timed_out_id: Atomic::new(0),
            on_timeout,
        };
        JobQueue::new(c"rust_drm_job_queue_test", device, credit_limit, timeout)
    }

    const LONG: Delta = Delta::from_secs(60);
    const WAIT: Delta = Delta::from_secs(10);

    #[test]
    fn jobs_run_in_commit_order_once_their_dependencies_signal() -> Result {
        let deps = Timeline::new(c"deps");
        let hw = Timeline::new(c"hw");
        let q = queue(8, LONG, TimeoutAction::Continue)?;
        let (dep1, dep1_fence) = deps.publish(deps.prepare((), GFP_KERNEL)?);
        let (dep2, dep2_fence) = deps.publish(deps.prepare((), GFP_KERNEL)?);
        let (hw1, hw1_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let (hw2, hw2_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let (hw3, hw3_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let out1 = q.commit(q.prepare(TestJob::new(1, &hw1_fence), 1, &[dep1_fence])?);
        let out2 = q.commit(q.prepare(TestJob::new(2, &hw2_fence), 1, &[dep2_fence])?);
        let out3 = q.commit(q.prepare(TestJob::new(3, &hw3_fence), 1, &[])?);
        assert_eq!((out1.seqno(), out2.seqno(), out3.seqno()), (1, 2, 3));
        assert_eq!(out1.context(), out3.context());

        // The second dependency signals first: job 1 still waits, and the others wait behind it.
        dep2.signal(Ok(()));
        q.flush();
        assert_eq!(q.ops().order.load(Relaxed), 0);
        dep1.signal(Ok(()));
        q.flush();
        assert_eq!(q.ops().order.load(Relaxed), 0x123);
        assert_eq!(q.ops().outside_section.load(Relaxed), 0);

        // The device finishes them backwards; their fences still signal in order.
        hw3.signal(Ok(()));
        hw2.signal(Ok(()));
        q.flush();
        assert!(!out1.is_signaled() && !out2.is_signaled() && !out3.is_signaled());
        hw1.signal(Ok(()));
        q.flush();
        for out in [&out1, &out2, &out3] {
            assert_eq!(out.status(), Some(Ok(())));
        }
        Ok(())
    }

    #[test]
    fn a_signalled_dependency_does_not_hold_a_job() -> Result {
        let deps = Timeline::new(c"deps");
        let hw = Timeline::new(c"hw");
        let q = queue(1, LONG, TimeoutAction::Continue)?;
        let (dep, dep_fence) = deps.publish(deps.prepare((), GFP_KERNEL)?);
        dep.signal(Ok(()));
        let (hw1, hw1_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let mut job = q.prepare(TestJob::new(1, &hw1_fence), 1, &[])?;
        job.add_dependency(&dep_fence)?;
        let out = q.commit(job);
        q.flush();
        assert_eq!(q.ops().order.load(Relaxed), 0x1);
        assert!(!out.is_signaled());
        hw1.signal(Ok(()));
        assert_eq!(out.wait(false, WAIT), Ok(()));
        assert_eq!(out.status(), Some(Ok(())));
        Ok(())
    }

    #[test]
    fn a_dropped_prepared_job_leaves_no_trace() -> Result {
        let hw = Timeline::new(c"hw");
        let q = queue(1, LONG, TimeoutAction::Continue)?;
        let (hw1, hw1_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let drops = Arc::new(Atomic::new(0u32), GFP_KERNEL)?;
        let mut dropped = q.prepare(TestJob::new(7, &hw1_fence), 1, &[])?;
        dropped.data_mut().drops = Some(drops.clone());
        let kept = q.prepare(TestJob::new(1, &hw1_fence), 1, &[])?;
        assert_eq!(dropped.data().id, 7);
        drop(dropped);
        assert_eq!(drops.load(Relaxed), 1);
        let out = q.commit(kept);
        assert_eq!(out.seqno(), 1);
        hw1.signal(Ok(()));
        assert_eq!(out.wait(false, WAIT), Ok(()));
        assert_eq!(q.ops().order.load(Relaxed), 0x1);
        Ok(())
    }

    #[test]
    fn a_job_committed_to_another_queue_does_not_run() -> Result {
        let hw = Timeline::new(c"hw");
        let q = queue(1, LONG, TimeoutAction::Continue)?;
        let other = queue(1, LONG, TimeoutAction::Continue)?;
        let (_hw1, hw1_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let out = other.commit(q.prepare(TestJob::new(1, &hw1_fence), 1, &[])?);
        assert_eq!(out.status(), Some(Err(EINVAL)));
        q.flush();
        other.flush();
        assert_eq!(q.ops().order.load(Relaxed), 0);
        assert_eq!(other.ops().order.load(Relaxed), 0);
        Ok(())
    }

    #[test]
    fn credits_limit_the_jobs_on_the_device() -> Result {
        let hw = Timeline::new(c"hw");
        let q = queue(3, LONG, TimeoutAction::Continue)?;
        let (hw1, hw1_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        for credits in [0, 4] {
            let job = TestJob::new(9, &hw1_fence);
            assert_eq!(q.prepare(job, credits, &[]).err(), Some(EINVAL));
        }
        let (hw2, hw2_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let (hw3, hw3_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let (hw4, hw4_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let _out1 = q.commit(q.prepare(TestJob::new(1, &hw1_fence), 2, &[])?);
        let _out2 = q.commit(q.prepare(TestJob::new(2, &hw2_fence), 1, &[])?);
        let _out3 = q.commit(q.prepare(TestJob::new(3, &hw3_fence), 2, &[])?);
        let out4 = q.commit(q.prepare(TestJob::new(4, &hw4_fence), 1, &[])?);
        q.flush();
        // 2 + 1 credits are in use: job 3 needs 2, and job 4 waits behind it.
        assert_eq!(q.ops().order.load(Relaxed), 0x12);
        hw2.signal(Ok(()));
        q.flush();
        // Job 2's credit is back only once job 1 retires: fences signal in order.
        assert_eq!(q.ops().order.load(Relaxed), 0x12);
        hw1.signal(Ok(()));
        q.flush();
        assert_eq!(q.ops().order.load(Relaxed), 0x1234);
        hw3.signal(Ok(()));
        hw4.signal(Ok(()));
        assert_eq!(out4.wait(false, WAIT), Ok(()));
        Ok(())
    }

    #[test]
    fn failures_reach_the_job_fences_in_order() -> Result {
        let deps = Timeline::new(c"deps");
        let hw = Timeline::new(c"hw");
        let q = queue(8, LONG, TimeoutAction::Continue)?;
        let (dep, dep_fence) = deps.publish(deps.prepare((), GFP_KERNEL)?);
        let (hw1, hw1_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let (hw2, hw2_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let (_hw3, hw3_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let (hw4, hw4_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let out1 = q.commit(q.prepare(TestJob::new(1, &hw1_fence), 1, &[])?);
        // A failed dependency: the job does not run, and its fence gets the error.
        let out2 = q.commit(q.prepare(TestJob::new(2, &hw2_fence), 1, &[dep_fence])?);
        let mut fails = TestJob::new(3, &hw3_fence);
        fails.run_error = Some(ENOSPC);
        let out3 = q.commit(q.prepare(fails, 1, &[])?);
        let out4 = q.commit(q.prepare(TestJob::new(4, &hw4_fence), 1, &[])?);
        dep.signal(Err(EIO));
        hw4.signal(Err(EFAULT));
        q.flush();
        assert_eq!(q.ops().order.load(Relaxed), 0x134);
        // Job 1 is still on the device: nothing after it has signalled.
        assert!(!out2.is_signaled() && !out3.is_signaled() && !out4.is_signaled());
        hw1.signal(Ok(()));
        q.flush();
        assert_eq!(out1.status(), Some(Ok(())));
        assert_eq!(out2.status(), Some(Err(EIO)));
        assert_eq!(out3.status(), Some(Err(ENOSPC)));
        assert_eq!(out4.status(), Some(Err(EFAULT)));
        drop(hw2);
        Ok(())
    }

    /// The pretend device, for jobs that run even after a dependency failed.
    struct RunsAnyway(Device);

    impl JobQueueOps for RunsAnyway {
        type FenceOps = TestFences;
        type Job = TestJob;
        const RUN_AFTER_FAILED_DEPENDENCY: bool = true;

        fn run(&self, job: &mut TestJob) -> Result<ARef<Fence>> {
            self.0.run(job)
        }

        fn timed_out(&self, job: &TestJob) -> TimeoutAction {
            self.0.timed_out(job)
        }
    }

    #[test]
    fn a_queue_may_run_jobs_whose_dependency_failed() -> Result {
        let deps = Timeline::new(c"deps");
        let hw = Timeline::new(c"hw");
        let device = Device {
            order: Atomic::new(0),
            outside_section: Atomic::new(0),
            timeouts: Atomic::new(0),
            timed_out_id: Atomic::new(0),
            on_timeout: TimeoutAction::Continue,
        };
        let q = JobQueue::new(c"rust_drm_job_queue_test", RunsAnyway(device), 1, LONG)?;
        let (dep, dep_fence) = deps.publish(deps.prepare((), GFP_KERNEL)?);
        let (hw1, hw1_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let out = q.commit(q.prepare(TestJob::new(1, &hw1_fence), 1, &[dep_fence])?);
        dep.signal(Err(EIO));
        q.flush();
        // It ran, and its fence has its own result, not the dependency's.
        assert_eq!(q.ops().0.order.load(Relaxed), 0x1);
        hw1.signal(Ok(()));
        q.flush();
        assert_eq!(out.status(), Some(Ok(())));
        assert_eq!(q.ops().0.outside_section.load(Relaxed), 0);
        Ok(())
    }

    #[test]
    fn a_killed_job_ends_with_etime() -> Result {
        let hw = Timeline::new(c"hw");
        let q = queue(1, Delta::from_millis(20), TimeoutAction::Kill)?;
        let (hung, hung_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let (hw2, hw2_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        // Done before it runs, so that it cannot time out.
        hw2.signal(Ok(()));
        let out1 = q.commit(q.prepare(TestJob::new(1, &hung_fence), 1, &[])?);
        let out2 = q.commit(q.prepare(TestJob::new(2, &hw2_fence), 1, &[])?);
        assert_eq!(out1.wait(false, WAIT), Ok(()));
        assert_eq!(out1.status(), Some(Err(ETIME)));
        assert_eq!(q.ops().timed_out_id.load(Relaxed), 1);
        // The queue goes on with the next job.
        assert_eq!(out2.wait(false, WAIT), Ok(()));
        assert_eq!(out2.status(), Some(Ok(())));
        assert_eq!(q.ops().timeouts.load(Relaxed), 1);
        assert_eq!(q.ops().outside_section.load(Relaxed), 0);
        assert!(!q.is_banned());
        // The queue no longer waits for the killed job's hardware fence.
        hung.signal(Ok(()));
        q.flush();
        Ok(())
    }

    #[test]
    fn a_job_that_makes_progress_is_left_running() -> Result {
        let hw = Timeline::new(c"hw");
        let q = queue(1, Delta::from_millis(10), TimeoutAction::Continue)?;
        let (hw1, hw1_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let out = q.commit(q.prepare(TestJob::new(1, &hw1_fence), 1, &[])?);
        let mut tries = 0;
        while q.ops().timeouts.load(Relaxed) < 2 && tries < 1000 {
            fsleep(Delta::from_millis(5));
            tries += 1;
        }
        assert!(q.ops().timeouts.load(Relaxed) >= 2);
        assert!(!out.is_signaled());
        hw1.signal(Ok(()));
        assert_eq!(out.wait(false, WAIT), Ok(()));
        assert_eq!(out.status(), Some(Ok(())));
        Ok(())
    }

    #[test]
    fn a_ban_cancels_the_jobs_that_did_not_run() -> Result {
        let deps = Timeline::new(c"deps");
        let hw = Timeline::new(c"hw");
        let q = queue(8, LONG, TimeoutAction::Continue)?;
        let (never, never_fence) = deps.publish(deps.prepare((), GFP_KERNEL)?);
        let (hw1, hw1_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let (_hw2, hw2_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let (_hw3, hw3_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let out1 = q.commit(q.prepare(TestJob::new(1, &hw1_fence), 1, &[])?);
        let out2 = q.commit(q.prepare(TestJob::new(2, &hw2_fence), 1, &[never_fence])?);
        let late = q.prepare(TestJob::new(3, &hw3_fence), 1, &[])?;
        q.flush();
        q.ban();
        assert!(q.is_banned());
        assert_eq!(
            q.prepare(TestJob::new(4, &hw1_fence), 1, &[]).err(),
            Some(ECANCELED)
        );
        let out3 = q.commit(late);
        q.flush();
        // Job 1 is on the device: the cancelled fences wait for it.
        assert!(!out2.is_signaled() && !out3.is_signaled());
        hw1.signal(Ok(()));
        q.flush();
        assert_eq!(out1.status(), Some(Ok(())));
        assert_eq!(out2.status(), Some(Err(ECANCELED)));
        assert_eq!(out3.status(), Some(Err(ECANCELED)));
        assert_eq!(q.ops().order.load(Relaxed), 0x1);
        // The cancelled job no longer waits for its dependency.
        never.signal(Ok(()));
        Ok(())
    }

    #[test]
    fn a_timeout_can_ban_the_queue() -> Result {
        let hw = Timeline::new(c"hw");
        let q = queue(1, Delta::from_millis(20), TimeoutAction::KillAndBan)?;
        let (_hung, hung_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let (_hw2, hw2_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let out1 = q.commit(q.prepare(TestJob::new(1, &hung_fence), 1, &[])?);
        let out2 = q.commit(q.prepare(TestJob::new(2, &hw2_fence), 1, &[])?);
        assert_eq!(out2.wait(false, WAIT), Ok(()));
        assert_eq!(out1.status(), Some(Err(ETIME)));
        assert_eq!(out2.status(), Some(Err(ECANCELED)));
        assert!(q.is_banned());
        assert_eq!(q.ops().order.load(Relaxed), 0x1);
        Ok(())
    }

    #[test]
    fn dropping_the_queue_cancels_blocked_jobs_and_frees_them() -> Result {
        let deps = Timeline::new(c"deps");
        let hw = Timeline::new(c"hw");
        let drops = Arc::new(Atomic::new(0u32), GFP_KERNEL)?;
        let (never1, never1_fence) = deps.publish(deps.prepare((), GFP_KERNEL)?);
        let (never2, never2_fence) = deps.publish(deps.prepare((), GFP_KERNEL)?);
        let (_hw1, hw1_fence) = hw.publish(hw.prepare((), GFP_KERNEL)?);
        let q = queue(8, LONG, TimeoutAction::Continue)?;
        let mut outs = KVec::new();
        for (id, deps) in [
            (1, &[never1_fence][..]),
            (2, &[never2_fence][..]),
            (3, &[][..]),
        ] {
            let mut job = TestJob::new(id, &hw1_fence);
            job.drops = Some(drops.clone());
            outs.push(q.commit(q.prepare(job, 1, deps)?), GFP_KERNEL)?;
        }
        q.flush();
        assert_eq!(q.ops().order.load(Relaxed), 0);
        drop(q);
        for out in &outs {
            assert_eq!(out.status(), Some(Err(ECANCELED)));
        }
        assert_eq!(drops.load(Relaxed), 3);
        // Nothing waits on the dependencies any more: KASAN checks that no callback runs.
        never1.signal(Ok(()));
        never2.signal(Ok(()));
        Ok(())
    }
}
