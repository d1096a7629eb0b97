// SPDX-License-Identifier: GPL-2.0 or MIT

//! The device's 8 queues and 16 address spaces, shared by every VM and exec queue.
//!
//! Exec queues have one job on the device at a time (their job queues have one credit). A job
//! that is ready goes to [`Gpu::submit`], which runs it on a free device queue in its VM's
//! address space. A VM takes an address space when one of its jobs starts; address spaces are
//! reused least recently used first, and taken from a VM only when none of its jobs runs. A
//! device queue runs one job at a time, so that it can switch address spaces between jobs.
//!
//! Completions come from the completion records in memory ([`Gpu::complete`], from the
//! interrupt thread): no register is read per job. Everything here may run in a `dma_fence`
//! signalling section; nothing here allocates while holding the scheduler lock.

use kernel::{
    debugfs,
    device::{self, Bound},
    dma::{Coherent, DataDirection},
    dma_buf::fence::{FenceOps, OwnedDriverFence},
    io::{register::Array, Io},
    mm::hmm::{self, HmmPfn},
    new_mutex, new_spinlock, pci,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        Arc, Mutex, SpinLock,
    },
    time::{Delta, Instant, Monotonic},
    workqueue::{self, impl_has_work, new_work, Work, WorkItem},
};

use crate::{
    faults::{self, Fault, FaultQueue},
    irq::Bar0,
    regs,
    vm::Vm,
};

/// `ping_ns`: each read is one bare device round trip ([`Gpu::ping_round_trip`]), in ns.
pub(crate) struct Ping(pub(crate) Arc<Gpu>);

impl debugfs::Writer for Ping {
    fn write(&self, f: &mut kernel::fmt::Formatter<'_>) -> kernel::fmt::Result {
        match self.0.ping_round_trip() {
            Ok(ns) => writeln!(f, "{ns}"),
            Err(e) => writeln!(f, "error {}", e.to_errno()),
        }
    }
}

/// The BAR, revoked when the device is unbound.
pub(crate) type DevresBar0 = pci::DevresBar<{ regs::BAR0_MAPPED }>;

/// Access to [`DevresBar0`] while the device is bound (an RCU read-side section: no sleeping).
type BarGuard<'a> = kernel::devres::DevresGuard<'a, pci::Bar<'static, { regs::BAR0_MAPPED }>>;

/// The hardware fences of mirage jobs.
pub(crate) struct HwFenceOps;

impl FenceOps for HwFenceOps {
    const DRIVER_NAME: &'static CStr = c"mirage";
}

/// The fence the device signals when a job ends.
pub(crate) type HwFence = OwnedDriverFence<HwFenceOps, ()>;

/// Bytes of memory per device queue: a ring of two 64-byte descriptors, then the completion
/// record.
const QUEUE_MEM: usize = 256;
const RING_ENTRIES: u32 = 2;
const COMPLETION_OFFSET: usize = 128;
const JOB_FLAG_IRQ: u64 = 1;

/// What the device needs of a VM to run its jobs.
#[derive(Clone, Copy)]
pub(crate) struct VmHw {
    /// Identifies the VM; never 0.
    pub(crate) serial: u64,
    pub(crate) ttbr: u64,
    pub(crate) mair: u64,
    /// Stall and replay faults (a fault-mode VM) instead of aborting the job.
    pub(crate) stall: bool,
}

/// A job handed to the device.
pub(crate) struct Submission {
    pub(crate) vm: VmHw,
    /// GPU VA and length of the command buffer.
    pub(crate) addr: u64,
    pub(crate) len: u32,
    /// Signalled when the job ends: with `EIO` if it faulted or failed.
    pub(crate) done: HwFence,
    /// The VM that resolves the job's page faults, if it runs in stall mode.
    pub(crate) faults: Option<Arc<Vm>>,
}

struct Running {
    queue: u64,
    seqno: u64,
    space: usize,
    sub: Submission,
    /// Faults of the job the driver resolved: its progress while it stalls on them.
    resumed: u64,
}

struct AddressSpace {
    /// The serial of the VM in it, or 0.
    vm: u64,
    /// Jobs of that VM on the device.
    running: u32,
    last_used: u64,
}

/// # Invariants
///
/// - `pending` has room for one entry per exec queue ([`Gpu::add_exec_queue`]): each exec
///   queue has at most one job pending or running.
/// - `spaces[i].running` counts the entries of `running` with `space == i`.
struct Sched {
    pending: KVec<(u64, Submission)>,
    running: [Option<Running>; regs::NUM_QUEUES],
    /// The last tail written to each queue's doorbell (0 after a soft reset).
    tails: [u32; regs::NUM_QUEUES],
    spaces: [AddressSpace; regs::NUM_AS],
    exec_queues: usize,
    clock: u64,
    next_seqno: u64,
}

/// The device's queues and address spaces.
#[pin_data]
pub(crate) struct Gpu {
    bar: DevresBar0,
    /// The PCI device, for the DMA mappings of userptr pages.
    dev: ARef<device::Device>,
    /// `/sys/kernel/debug/mirage`: one file per VM, and the knobs below.
    debugfs: debugfs::Dir,
    /// `fail_next_reserve`: how many of the next page-table reservations fail with `ENOMEM`, to
    /// test that a bind that cannot get its memory leaves its VM as it was.
    fail_reserve: Pin<KBox<debugfs::File<Atomic<u32>>>>,
    /// `alloc_in_signalling` (`CONFIG_DRM_MIRAGE_TEST_HOOKS` only): how many of the next binds
    /// allocate inside their signalling section, a violation lockdep must report.
    alloc_in_signalling: Option<Pin<KBox<debugfs::File<Atomic<u32>>>>>,
    /// `fail_next_bind_run` (`CONFIG_DRM_MIRAGE_TEST_HOOKS` only): how many of the next binds
    /// fail when they execute, after their ioctl returned, to test the error contract.
    fail_bind_run: Option<Pin<KBox<debugfs::File<Atomic<u32>>>>>,
    /// `exec_check_delay_ms` (`CONFIG_DRM_MIRAGE_TEST_HOOKS` only): the next EXEC sleeps this
    /// long between faulting its userptrs in and its final check, so that a test can
    /// invalidate one in between.
    exec_check_delay: Option<Pin<KBox<debugfs::File<Atomic<u32>>>>>,
    /// `pause_gc_work` (`CONFIG_DRM_MIRAGE_TEST_HOOKS` only): while nonzero, the SVM
    /// collector's work item does nothing (fault services, MADVISE and the query still collect),
    /// so that a test can fill the unmap log past its end.
    pause_gc_work: Option<Pin<KBox<debugfs::File<Atomic<u32>>>>>,
    /// `fault_delay_ms` (`CONFIG_DRM_MIRAGE_TEST_HOOKS` only): each fault service sleeps this
    /// long first, so that a job that faults often outlives the job timeout.
    fault_delay: Option<Pin<KBox<debugfs::File<Atomic<u32>>>>>,
    /// Rings and completion records, `QUEUE_MEM` bytes per device queue.
    mem: Coherent<[u64]>,
    #[pin]
    sched: Mutex<Sched>,
    /// Where stalled jobs' faults arrive.
    faultq: FaultQueue,
    /// Whether page-fault interrupts may queue `fault_work`; off from unbind on, so that the
    /// work can be waited for once and for all.
    #[pin]
    faults_on: SpinLock<bool>,
    /// Takes the faults from `faultq` and answers them.
    #[pin]
    fault_work: Work<Gpu>,
    /// Ping interrupts the handler's thread has seen.
    pings: Atomic<u32>,
}

impl_has_work! {
    impl HasWork<Gpu> for Gpu { self.fault_work }
}

impl WorkItem for Gpu {
    type Pointer = Arc<Gpu>;

    fn run(this: Arc<Gpu>) {
        while let Some(f) = this.faultq.pop(&this) {
            let resume = this.resolve(&f);
            faults::answer(&this, f.id, resume);
        }
    }
}

impl Gpu {
    pub(crate) fn new(
        pdev: &pci::Device<Bound>,
        bar: DevresBar0,
    ) -> Result<impl PinInit<Self, Error>> {
        let mem = Coherent::<u64>::zeroed_slice(
            pdev.as_ref(),
            regs::NUM_QUEUES * QUEUE_MEM / 8,
            GFP_KERNEL,
        )?;
        let dev = ARef::<device::Device>::from(pdev.as_ref());
        let debugfs = debugfs::Dir::new(c"mirage");
        let fail_reserve = KBox::pin_init(
            debugfs.read_write_file(c"fail_next_reserve", Atomic::new(0u32)),
            GFP_KERNEL,
        )?;
        let hook = |name: &'static CStr| -> Result<_> {
            if !cfg!(CONFIG_DRM_MIRAGE_TEST_HOOKS) {
                return Ok(None);
            }
            Ok(Some(KBox::pin_init(
                debugfs.read_write_file(name, Atomic::new(0u32)),
                GFP_KERNEL,
            )?))
        };
        let alloc_in_signalling = hook(c"alloc_in_signalling")?;
        let fail_bind_run = hook(c"fail_next_bind_run")?;
        let exec_check_delay = hook(c"exec_check_delay_ms")?;
        let pause_gc_work = hook(c"pause_gc_work")?;
        let fault_delay = hook(c"fault_delay_ms")?;
        let faultq = FaultQueue::new(pdev.as_ref())?;
        Ok(try_pin_init!(Self {
            bar,
            dev,
            debugfs,
            fail_reserve,
            alloc_in_signalling,
            fail_bind_run,
            exec_check_delay,
            pause_gc_work,
            fault_delay,
            mem,
            sched <- new_mutex!(Sched {
                pending: KVec::new(),
                running: [const { None }; regs::NUM_QUEUES],
                tails: [0; regs::NUM_QUEUES],
                spaces: [const {
                    AddressSpace {
                        vm: 0,
                        running: 0,
                        last_used: 0,
                    }
                }; regs::NUM_AS],
                exec_queues: 0,
                clock: 0,
                next_seqno: 1,
            }),
            faultq,
            faults_on <- new_spinlock!(false),
            fault_work <- new_work!("mirage::fault_work"),
            pings: Atomic::new(0),
        }))
    }

    /// From the interrupt thread: the device answered a ping.
    pub(crate) fn pinged(&self) {
        self.pings.fetch_add(1, Relaxed);
    }

    /// One bare device round trip, the benchmark's baseline for the fault service: rings the
    /// ping doorbell and spins until the interrupt handler's thread has seen the answer (the
    /// hard half read and acknowledged it). Nanoseconds.
    pub(crate) fn ping_round_trip(&self) -> Result<i64> {
        let before = self.pings.load(Relaxed);
        let start = Instant::<Monotonic>::now();
        self.try_bar()
            .ok_or(ENODEV)?
            .write_reg(regs::DB_PING::zeroed().with_value(0x5e1f_7e57u32));
        // The handler's thread is a real-time one: it preempts this spin.
        while self.pings.load(Relaxed) == before {
            if start.elapsed() > Delta::from_secs(1) {
                return Err(ETIMEDOUT);
            }
            core::hint::spin_loop();
        }
        Ok(start.elapsed().as_nanos())
    }

    /// Points the device at the fault queue and lets page-fault interrupts queue the fault
    /// work. The device is quiet.
    pub(crate) fn start_faults(&self, bar: &Bar0<'_>) {
        self.faultq.start(bar);
        *self.faults_on.lock() = true;
    }

    /// From the interrupt thread: the device posted fault records.
    pub(crate) fn page_faults_posted(self: &Arc<Self>) {
        let on = self.faults_on.lock();
        if *on {
            // Already queued is fine: the work takes every record posted before it runs.
            let _ = workqueue::system_unbound().enqueue(self.clone());
        }
    }

    /// Stops the fault work for good and waits for it: for unbind, once the device is quiet.
    pub(crate) fn stop_faults(&self) {
        *self.faults_on.lock() = false;
        self.fault_work.flush();
    }

    /// Whether the job that stalled on `f` may retry: its VM resolved the fault. A fault of a
    /// job that is no longer on its queue (killed by the timeout) is answered ABORT, which the
    /// device ignores.
    fn resolve(&self, f: &Fault) -> bool {
        // The device stalls on these only; anything else is aborted.
        if !matches!(f.kind(), regs::FAULT_TRANSLATION | regs::FAULT_ACCESS_FLAG) {
            return false;
        }
        let Some((seqno, vm)) = ({
            let s = self.sched.lock();
            s.running
                .get(f.queue as usize)
                .and_then(Option::as_ref)
                .filter(|r| r.space == f.space as usize)
                .and_then(|r| Some((r.seqno, r.sub.faults.clone()?)))
        }) else {
            return false;
        };
        if let Some(ms) = self.fault_delay.as_ref().map(|k| (***k).load(Relaxed)) {
            if ms != 0 {
                kernel::time::delay::fsleep(Delta::from_millis(i64::from(ms)));
            }
        }
        if vm.handle_fault(f).is_err() {
            return false;
        }
        let mut s = self.sched.lock();
        if let Some(r) = s.running[f.queue as usize].as_mut() {
            if r.seqno == seqno {
                r.resumed += 1;
            }
        }
        true
    }

    /// How many faults of the job exec queue `queue` has on the device the driver resolved,
    /// if it has one there.
    pub(crate) fn resumed(&self, queue: u64) -> Option<u64> {
        let s = self.sched.lock();
        s.running
            .iter()
            .flatten()
            .find(|r| r.queue == queue)
            .map(|r| r.resumed)
    }

    /// Maps a userptr's page for the device to read, and to write if `write`; returns its bus
    /// address.
    ///
    /// # Safety
    ///
    /// As [`HmmPfn::dma_map`]'s.
    pub(crate) unsafe fn dma_map_page(&self, page: HmmPfn, write: bool) -> Result<u64> {
        // SAFETY: The caller's requirements are `dma_map`'s.
        unsafe { page.dma_map(&self.dev, dma_dir(write)) }
    }

    /// Unmaps a page [`Self::dma_map_page`] mapped with the same `write`.
    ///
    /// # Safety
    ///
    /// As [`hmm::dma_unmap`]'s.
    pub(crate) unsafe fn dma_unmap_page(&self, addr: u64, write: bool) {
        // SAFETY: The caller's requirements are `dma_unmap`'s.
        unsafe { hmm::dma_unmap(&self.dev, addr, dma_dir(write)) };
    }

    /// `/sys/kernel/debug/mirage`.
    pub(crate) fn debugfs(&self) -> &debugfs::Dir {
        &self.debugfs
    }

    /// Whether the page-table reservation about to be made must fail (`fail_next_reserve`).
    pub(crate) fn inject_reserve_failure(&self) -> bool {
        take_one(&self.fail_reserve)
    }

    /// Whether the bind about to execute must allocate in its signalling section
    /// (`alloc_in_signalling`).
    pub(crate) fn inject_alloc_in_signalling(&self) -> bool {
        self.alloc_in_signalling.as_ref().is_some_and(take_one)
    }

    /// How long the EXEC about to check its userptrs must sleep first (`exec_check_delay_ms`),
    /// in ms; the knob goes back to 0.
    pub(crate) fn take_exec_check_delay(&self) -> u32 {
        self.exec_check_delay
            .as_ref()
            .map_or(0, |k| (***k).xchg(0, Relaxed))
    }

    /// Whether the SVM collector's work item must do nothing (`pause_gc_work`).
    pub(crate) fn test_pauses_gc_work(&self) -> bool {
        self.pause_gc_work
            .as_ref()
            .is_some_and(|k| (***k).load(Relaxed) != 0)
    }

    /// Whether the bind about to execute must fail (`fail_next_bind_run`).
    pub(crate) fn inject_bind_run_failure(&self) -> bool {
        self.fail_bind_run.as_ref().is_some_and(take_one)
    }

    /// The BAR, while the device is bound; for probe and unbind.
    pub(crate) fn bar<'a>(
        &'a self,
        dev: &'a kernel::device::Device<Bound>,
    ) -> Result<&'a Bar0<'a>> {
        self.bar.access(dev)
    }

    /// The BAR, for code that runs without a bound device at hand; `None` once unbound.
    pub(crate) fn try_bar(&self) -> Option<BarGuard<'_>> {
        self.bar.try_access()
    }

    /// Records that something else (the probe self-test) rang queue `q` up to `tail`, so that
    /// the next job goes in the slot after it.
    pub(crate) fn set_tail(&self, q: usize, tail: u32) {
        if let Some(t) = self.sched.lock().tails.get_mut(q) {
            *t = tail;
        }
    }

    /// Makes room for one more exec queue's job.
    pub(crate) fn add_exec_queue(&self) -> Result {
        let (len, want) = {
            let s = self.sched.lock();
            (s.pending.len(), s.exec_queues + 1)
        };
        // Allocated without the lock; the lock is never held while allocating.
        let mut bigger = KVec::with_capacity(want.max(len), GFP_KERNEL)?;
        let mut s = self.sched.lock();
        if s.pending.capacity() < want {
            if s.pending.len() > bigger.capacity() {
                return Err(EAGAIN);
            }
            for e in s.pending.drain_all() {
                let _ = bigger.push_within_capacity(e);
            }
            s.pending = bigger;
        }
        s.exec_queues += 1;
        Ok(())
    }

    /// Gives back what [`Gpu::add_exec_queue`] made room for, once the exec queue's last job
    /// ended.
    pub(crate) fn remove_exec_queue(&self) {
        let mut s = self.sched.lock();
        s.exec_queues -= 1;
    }

    /// Queues the job of exec queue `queue` and starts it if the device has room.
    pub(crate) fn submit(&self, queue: u64, sub: Submission) {
        let mut s = self.sched.lock();
        if let Err(e) = s.pending.push_within_capacity((queue, sub)) {
            // Cannot happen: one entry per exec queue has room.
            kernel::warn_on!(true);
            let (_, sub) = e.0;
            drop(s);
            sub.done.signal(Err(ENOSPC));
            return;
        }
        self.dispatch(&mut s);
    }

    /// Starts pending jobs while a device queue and an address space are free.
    fn dispatch(&self, s: &mut Sched) {
        let Some(bar) = self.try_bar() else {
            return;
        };
        while !s.pending.is_empty() {
            let Some(q) = s.running.iter().position(Option::is_none) else {
                return;
            };
            let vm = s.pending[0].1.vm;
            let Some(space) = Self::space_for(s, &bar, vm) else {
                return;
            };
            let Ok((queue, sub)) = s.pending.remove(0) else {
                return;
            };
            let seqno = s.next_seqno;
            s.next_seqno += 1;
            s.clock += 1;
            let clock = s.clock;
            let a = &mut s.spaces[space];
            a.running += 1;
            a.last_used = clock;
            let tail = s.tails[q];
            s.tails[q] = tail.wrapping_add(1);
            // Cannot fail: `q` and `space` index the device's arrays.
            let _ = self.start(&bar, q, space, tail, seqno, &sub);
            s.running[q] = Some(Running {
                queue,
                seqno,
                space,
                sub,
                resumed: 0,
            });
        }
    }

    /// The address space of `vm`, given one if it has none: a free one, else the least
    /// recently used one whose VM has no job running.
    fn space_for(s: &mut Sched, bar: &Bar0<'_>, vm: VmHw) -> Option<usize> {
        if let Some(i) = s.spaces.iter().position(|a| a.vm == vm.serial) {
            return Some(i);
        }
        let i = s
            .spaces
            .iter()
            .enumerate()
            .filter(|(_, a)| a.running == 0)
            .min_by_key(|(_, a)| (a.vm != 0, a.last_used))
            .map(|(i, _)| i)?;
        // Programming it invalidates its whole TLB: nothing of the previous VM stays.
        bar.write(
            regs::AS_TRANSTAB_LO::try_at(i)?,
            regs::AS_TRANSTAB_LO::from(vm.ttbr as u32),
        );
        bar.write(
            regs::AS_TRANSTAB_HI::try_at(i)?,
            regs::AS_TRANSTAB_HI::from((vm.ttbr >> 32) as u32),
        );
        bar.write(
            regs::AS_MEMATTR_LO::try_at(i)?,
            regs::AS_MEMATTR_LO::from(vm.mair as u32),
        );
        bar.write(
            regs::AS_MEMATTR_HI::try_at(i)?,
            regs::AS_MEMATTR_HI::from((vm.mair >> 32) as u32),
        );
        bar.write(
            regs::AS_TRANSCFG::try_at(i)?,
            regs::AS_TRANSCFG::zeroed()
                .with_enable(true)
                .with_stall(vm.stall),
        );
        bar.write(
            regs::AS_COMMAND::try_at(i)?,
            regs::AS_COMMAND::zeroed().with_command(regs::AS_CMD_UPDATE),
        );
        s.spaces[i].vm = vm.serial;
        Some(i)
    }

    fn queue_mem(&self, q: usize) -> (u64, *mut u64) {
        let off = q * QUEUE_MEM;
        // SAFETY: `off` is inside the allocation, `NUM_QUEUES * QUEUE_MEM` bytes.
        let cpu = unsafe { self.mem.as_mut_ptr().cast::<u64>().add(off / 8) };
        (self.mem.dma_address() + off as u64, cpu)
    }

    /// Points device queue `q` at address space `space` and rings it for one job, whose
    /// descriptor goes in the ring slot of `tail`.
    fn start(
        &self,
        bar: &Bar0<'_>,
        q: usize,
        space: usize,
        tail: u32,
        seqno: u64,
        sub: &Submission,
    ) -> Option<()> {
        let (dma, cpu) = self.queue_mem(q);
        let done = dma + COMPLETION_OFFSET as u64;
        // The queue is idle (it ran its last job to the end, or was reset): stop it, program
        // it, start it, so that the job latches this address space and an empty ring.
        bar.write(regs::Q_CONTROL::try_at(q)?, regs::Q_CONTROL::zeroed());
        bar.write(
            regs::Q_COMMAND::try_at(q)?,
            regs::Q_COMMAND::zeroed().with_command(regs::Q_CMD_RESET),
        );
        bar.write(
            regs::Q_RING_BASE_LO::try_at(q)?,
            regs::Q_RING_BASE_LO::from(dma as u32),
        );
        bar.write(
            regs::Q_RING_BASE_HI::try_at(q)?,
            regs::Q_RING_BASE_HI::from((dma >> 32) as u32),
        );
        bar.write(
            regs::Q_RING_SIZE::try_at(q)?,
            regs::Q_RING_SIZE::from(RING_ENTRIES),
        );
        bar.write(regs::Q_AS::try_at(q)?, regs::Q_AS::from(space as u32));
        bar.write(
            regs::Q_COMPLETION_LO::try_at(q)?,
            regs::Q_COMPLETION_LO::from(done as u32),
        );
        bar.write(
            regs::Q_COMPLETION_HI::try_at(q)?,
            regs::Q_COMPLETION_HI::from((done >> 32) as u32),
        );
        // SAFETY: The queue is stopped and reset (head = tail): the device reads nothing of this
        // memory until the doorbell below; the slot is inside this queue's `QUEUE_MEM` bytes.
        unsafe {
            let desc = cpu.add((tail % RING_ENTRIES) as usize * 8);
            core::ptr::write_volatile(desc, sub.addr);
            core::ptr::write_volatile(desc.add(1), u64::from(sub.len) | (JOB_FLAG_IRQ << 32));
            core::ptr::write_volatile(desc.add(2), seqno);
            for i in 3..8 {
                core::ptr::write_volatile(desc.add(i), 0);
            }
        }
        bar.write(
            regs::Q_CONTROL::try_at(q)?,
            regs::Q_CONTROL::zeroed().with_enable(true),
        );
        // The doorbell's write orders the descriptor's before it (writel).
        bar.write(
            regs::DB_QUEUE::try_at(q)?,
            regs::DB_QUEUE::from(tail.wrapping_add(1)),
        );
        Some(())
    }

    /// Ends the jobs whose completion records are written, and starts pending ones. From the
    /// interrupt thread.
    pub(crate) fn complete(&self) {
        let mut ended: [Option<(HwFence, Result)>; regs::NUM_QUEUES] =
            [const { None }; regs::NUM_QUEUES];
        {
            let mut s = self.sched.lock();
            let Some(bar) = self.try_bar() else {
                return;
            };
            let mut faulted = 0u32;
            for (q, end) in ended.iter_mut().enumerate() {
                let Some(r) = &s.running[q] else {
                    continue;
                };
                let (_, cpu) = self.queue_mem(q);
                // SAFETY: The completion record is this queue's; the device writes it once,
                // after all the job's writes.
                let (seqno, status) = unsafe {
                    (
                        core::ptr::read_volatile(cpu.add(COMPLETION_OFFSET / 8)),
                        core::ptr::read_volatile(cpu.add(COMPLETION_OFFSET / 8 + 1)) as u32,
                    )
                };
                if seqno != r.seqno {
                    continue;
                }
                let Some(r) = s.running[q].take() else {
                    continue;
                };
                s.spaces[r.space].running -= 1;
                let res = if status == regs::JOB_STATUS_OK {
                    Ok(())
                } else {
                    // The queue stopped (FAULTED) and, on an MMU fault, the address space
                    // latched it: clear both, the VM stays usable.
                    faulted |= 1 << r.space;
                    if let Some(reg) = regs::Q_COMMAND::try_at(q) {
                        bar.write(
                            reg,
                            regs::Q_COMMAND::zeroed().with_command(regs::Q_CMD_RESET),
                        );
                    }
                    Err(EIO)
                };
                *end = Some((r.sub.done, res));
            }
            if faulted != 0 {
                bar.write_reg(regs::MMU_FAULT_CLEAR::zeroed().with_spaces(faulted as u16));
            }
            drop(bar);
            self.dispatch(&mut s);
        }
        // Signalled without the lock: their callbacks may submit the next job.
        for (fence, res) in ended.into_iter().flatten() {
            fence.signal(res);
        }
    }

    /// Stops the job of exec queue `queue`, which ran too long: the device queue is reset,
    /// and the job's hardware fence signals `ETIME`.
    pub(crate) fn kill(&self, queue: u64) {
        let fence = {
            let mut s = self.sched.lock();
            let mut fence = None;
            if let Some(i) = s.pending.iter().position(|(q, _)| *q == queue) {
                if let Ok((_, sub)) = s.pending.remove(i) {
                    fence = Some(sub.done);
                }
            }
            if let Some(q) = s
                .running
                .iter()
                .position(|r| r.as_ref().is_some_and(|r| r.queue == queue))
            {
                if let (Some(bar), Some(control), Some(command)) = (
                    self.try_bar(),
                    regs::Q_CONTROL::try_at(q),
                    regs::Q_COMMAND::try_at(q),
                ) {
                    bar.write(control, regs::Q_CONTROL::zeroed());
                    bar.write(
                        command,
                        regs::Q_COMMAND::zeroed().with_command(regs::Q_CMD_RESET),
                    );
                }
                if let Some(r) = s.running[q].take() {
                    s.spaces[r.space].running -= 1;
                    fence = Some(r.sub.done);
                }
            }
            self.dispatch(&mut s);
            fence
        };
        if let Some(f) = fence {
            f.signal(Err(ETIME));
        }
    }

    /// Invalidates the TLB for `[start, end)` of VM `serial`, if it is in an address space;
    /// when this returns, the device no longer uses what was there.
    pub(crate) fn flush(&self, serial: u64, start: u64, end: u64) {
        let s = self.sched.lock();
        let _ = Self::flush_locked(&s, &self.try_bar(), serial, start, end);
    }

    fn flush_locked(
        s: &Sched,
        bar: &Option<BarGuard<'_>>,
        serial: u64,
        start: u64,
        end: u64,
    ) -> Option<()> {
        let i = s.spaces.iter().position(|a| a.vm == serial)?;
        let bar = bar.as_ref()?;
        // The smallest naturally aligned power-of-two region that covers the range.
        let mut size: u64 = 1 << 12;
        while (start & !(size - 1)) + size < end && size < 1 << 48 {
            size <<= 1;
        }
        let base = start & !(size - 1);
        let w = u64::from(size.trailing_zeros() - 1);
        let lock = base | w;
        bar.write(
            regs::AS_LOCKADDR_LO::try_at(i)?,
            regs::AS_LOCKADDR_LO::from(lock as u32),
        );
        bar.write(
            regs::AS_LOCKADDR_HI::try_at(i)?,
            regs::AS_LOCKADDR_HI::from((lock >> 32) as u32),
        );
        bar.write(
            regs::AS_COMMAND::try_at(i)?,
            regs::AS_COMMAND::zeroed().with_command(regs::AS_CMD_FLUSH_RANGE),
        );
        // Writes are posted: a read returns once the flush has completed.
        let _ = bar.read(regs::AS_FAULTSTATUS::try_at(i)?);
        Some(())
    }

    /// Takes VM `serial` out of its address space; it has no job running. For VM teardown,
    /// before its page table goes.
    pub(crate) fn evict(&self, serial: u64) {
        let mut s = self.sched.lock();
        let Some(i) = s.spaces.iter().position(|a| a.vm == serial) else {
            return;
        };
        kernel::warn_on!(s.spaces[i].running != 0);
        if let (Some(bar), Some(cfg), Some(cmd), Some(fault)) = (
            self.try_bar(),
            regs::AS_TRANSCFG::try_at(i),
            regs::AS_COMMAND::try_at(i),
            regs::AS_FAULTSTATUS::try_at(i),
        ) {
            bar.write(cfg, regs::AS_TRANSCFG::zeroed());
            bar.write(
                cmd,
                regs::AS_COMMAND::zeroed().with_command(regs::AS_CMD_UPDATE),
            );
            let _ = bar.read(fault);
        }
        s.spaces[i].vm = 0;
    }
}

/// Takes one from a debugfs counter of injections; whether there was one.
fn take_one(knob: &Pin<KBox<debugfs::File<Atomic<u32>>>>) -> bool {
    let left = &***knob;
    let mut n = left.load(Relaxed);
    while n != 0 {
        match left.cmpxchg(n, n - 1, Relaxed) {
            Ok(_) => return true,
            Err(now) => n = now,
        }
    }
    false
}

/// The DMA direction of a page the device reads, and writes if `write`.
fn dma_dir(write: bool) -> DataDirection {
    if write {
        DataDirection::Bidirectional
    } else {
        DataDirection::ToDevice
    }
}
