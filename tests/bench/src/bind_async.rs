//! Asynchronous VM_BIND (`struct drm_mirage_vm_bind` in `mirage_drm.h`):
//! the map + unmap pairs of the sync figures, submitted as async binds to
//! one bind queue (the VM's default one), each with a wait entry and a
//! signal entry. Once with the wait entry's fence already signalled, so
//! that binds execute while later ones are submitted; once with it held
//! until every bind is queued, so that submission runs against a queue of
//! pending binds and execution drains it in one go.

use crate::{deadline_in, err, median_p90, pair_budgets, pool, timed, Stat, Tables};
use crate::{PAIRS, PAIR_VA, SYSTEM, SZ_4K};
use mirage::cmd::{CmdBuf, SemCond};
use mirage::uapi::*;
use mirage::{Bo, Device, Mapping};
use std::io;
use std::time::{Duration, Instant};

/// Binds of a sequence: the pairs' maps and unmaps.
pub const BINDS: usize = 2 * PAIRS;
/// How many of a sequence's first and of its last binds have their
/// submission reported apart.
pub const TENTH: usize = BINDS / 10;
/// How long binds that nothing holds back may take to execute, in ms.
const DONE_MS: i64 = 60_000;

/// What one async sequence cost.
pub struct Sequence {
    /// Each VM_BIND ioctl, submission only.
    pub submit: Stat,
    /// The same, of the first and of the last [`TENTH`] binds: whether
    /// submission costs more with more binds pending.
    pub first: Stat,
    pub last: Stat,
    /// ns until the last bind's out-fence signalled: from the first
    /// submission if the fence was signalled, from the gate's opening if it
    /// was held.
    pub run_ns: u64,
    pub tables: Tables,
}

/// Submits [`PAIRS`] async map + unmap pairs of `bo`'s page at
/// [`PAIR_VA`] to the default bind queue of `vm`, each bind waiting for
/// binary syncobj `dep` and signalling point `i` of timeline syncobj
/// `timeline` (1 to [`BINDS`], in submission order). `between` runs
/// before each bind, outside its timing. Returns each ioctl's ns.
fn submit_pairs(
    d: &Device,
    vm: u32,
    bo: &Bo,
    dep: u32,
    timeline: u32,
    mut between: impl FnMut() -> Result<(), String>,
) -> Result<Vec<u64>, String> {
    let ops = [
        DrmMirageVmBindOp::map(bo.handle(), 0, PAIR_VA, SZ_4K),
        DrmMirageVmBindOp::unmap(PAIR_VA, SZ_4K),
    ];
    let mut times = Vec::with_capacity(BINDS);
    for (point, op) in (1..).zip(ops.iter().cycle().take(BINDS)) {
        between()?;
        let syncs = [
            DrmMirageSync::wait(dep),
            DrmMirageSync::signal_point(timeline, point),
        ];
        let (ns, r) = timed(|| d.vm_bind(vm, 0, std::slice::from_ref(op), &syncs));
        r.map_err(|e| {
            let what = if op.op == DRM_MIRAGE_VM_BIND_OP_MAP {
                "map"
            } else {
                "unmap"
            };
            format!("async VM_BIND {point} of {BINDS} ({what}): {e}")
        })?;
        times.push(ns);
    }
    Ok(times)
}

/// The [`Stat`]s of the first and of the last `n` of `v`, which must hold
/// at least one.
fn ends(v: &[u64], n: usize) -> (Stat, Stat) {
    let n = n.clamp(1, v.len());
    (
        median_p90(&mut v[..n].to_vec()),
        median_p90(&mut v[v.len() - n..].to_vec()),
    )
}

/// Waits for the last bind of a sequence.
fn wait_last(d: &Device, timeline: u32) -> Result<(), String> {
    d.syncobj_wait(timeline, BINDS as u64, deadline_in(DONE_MS))
        .map_err(err("waiting for the last async bind"))
}

/// The sequence's VM, checked and destroyed: a bind that failed after its
/// ioctl returned would have made the VM unusable, and its figures
/// meaningless.
fn finish(d: &Device, vm: u32, syncobjs: &[u32]) -> Result<(), String> {
    let state = d.vm_get_state(vm).map_err(err("VM_GET_STATE"))?;
    if state != DRM_MIRAGE_VM_STATE_USABLE {
        return Err("an async bind failed: the VM is unusable".into());
    }
    for &s in syncobjs {
        d.syncobj_destroy(s).map_err(err("SYNCOBJ_DESTROY"))?;
    }
    d.vm_destroy(vm).map_err(err("VM_DESTROY"))
}

fn tables(what: &'static str, mirage: Result<crate::debugfs::Pool, String>) -> Tables {
    let (panthor, msm) = pair_budgets(PAIRS);
    Tables {
        what,
        ops: BINDS,
        mirage,
        panthor,
        msm,
    }
}

/// The sequence with every bind's in-fence signalled before it is
/// submitted (a syncobj created signalled): binds execute as fast as the
/// queue runs them, while later ones are submitted.
pub fn signalled(d: &Device) -> Result<Sequence, String> {
    let vm = d.vm_create(0).map_err(err("VM_CREATE"))?;
    let bo = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(err("GEM_CREATE"))?;
    let dep = d
        .syncobj_create(DRM_SYNCOBJ_CREATE_SIGNALED)
        .map_err(err("SYNCOBJ_CREATE"))?;
    let timeline = d.syncobj_create(0).map_err(err("SYNCOBJ_CREATE"))?;
    let before = pool(vm);
    let start = Instant::now();
    let mut times = submit_pairs(d, vm, &bo, dep, timeline, || Ok(()))?;
    wait_last(d, timeline)?;
    let run_ns = start.elapsed().as_nanos() as u64;
    let mirage = before.and_then(|b| pool(vm).map(|a| a.since(&b)));
    finish(d, vm, &[dep, timeline])?;
    let (first, last) = ends(&times, TENTH);
    Ok(Sequence {
        first,
        last,
        submit: median_p90(&mut times),
        run_ns,
        tables: tables("  async, in-fence signalled", mirage),
    })
}

/// The sequence with every bind waiting for one fence that only the CPU
/// signals ([`Gate`]), opened once all of them are queued.
pub fn held(d: &Device) -> Result<Sequence, String> {
    let mut gate = Gate::new(d)?;
    let vm = d.vm_create(0).map_err(err("VM_CREATE"))?;
    let bo = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(err("GEM_CREATE"))?;
    let timeline = d.syncobj_create(0).map_err(err("SYNCOBJ_CREATE"))?;
    let before = pool(vm);
    let mut times = submit_pairs(d, vm, &bo, gate.out, timeline, || gate.hold())?;
    // The figures are those of binds held back: none may have run yet.
    let ran = d.syncobj_query(timeline).map_err(err("SYNCOBJ_QUERY"))?;
    if ran != 0 {
        return Err(format!(
            "the async binds up to point {ran} executed before the gate opened"
        ));
    }
    gate.release()?;
    // The gate opens when the last job of its relay ends, once the jobs
    // after the one spinning have run too: time the drain from there.
    d.syncobj_wait(gate.out, 0, deadline_in(DONE_MS))
        .map_err(err("waiting for the gate"))?;
    let start = Instant::now();
    wait_last(d, timeline)?;
    let run_ns = start.elapsed().as_nanos() as u64;
    let mirage = before.and_then(|b| pool(vm).map(|a| a.since(&b)));
    finish(d, vm, &[timeline])?;
    let (first, last) = ends(&times, TENTH);
    Ok(Sequence {
        first,
        last,
        submit: median_p90(&mut times),
        run_ns,
        tables: tables("  async, in-fence held", mirage),
    })
}

// --- the gate ------------------------------------------------------------

/// Jobs in the gate's relay: it holds for up to [`STAGES`] x [`STAGE`].
/// Under TCG, with the debug kernel and a busy host, queueing a sequence's
/// binds has taken over a minute.
const STAGES: u32 = 256;
/// How long each job of the relay holds the gate: well inside the job
/// timeout (5 s by default, 2 s as `make check` loads the driver).
const STAGE: Duration = Duration::from_secs(1);
const GATE_VA: u64 = 0x1000_0000;
/// Room for one job's command buffer; job `k`'s is at `k * SLOT`.
const SLOT: u64 = 64;
/// The relay's semaphore, in the page after the command buffers.
const GATE_SEM: u64 = STAGES as u64 * SLOT;
const GATE_BO_SIZE: u64 = GATE_SEM + SZ_4K;

/// The command buffer of relay job `k` (from 0): it spins until the
/// semaphore reaches `k + 1`.
fn stage_cmd(k: u32) -> CmdBuf {
    let mut cb = CmdBuf::new();
    cb.sem_wait(GATE_VA + GATE_SEM, u64::from(k) + 1, SemCond::Ge32)
        .end();
    cb
}

/// A fence only the CPU signals, as in the guest tests: the out-fence of a
/// GPU job that spins on a semaphore in a BO, in a VM of its own so that no
/// bind of the VM under test waits for it implicitly.
///
/// Queueing every bind of a sequence takes longer under TCG than the job
/// timeout lets one job spin, after which the job is killed and its fence
/// signals an error. So the gate is a relay of [`STAGES`] jobs on one exec
/// queue, job `k` spinning until the semaphore reaches `k + 1`, and the
/// gate's fence is the last job's: [`Gate::hold`] ends the spinning job
/// every [`STAGE`] and the next one starts (the timeout counts from a job's
/// start), [`Gate::release`] ends them all.
struct Gate<'d> {
    d: &'d Device,
    vm: u32,
    queue: u32,
    /// The CPU's view of the BO: the jobs' command buffers, the semaphore.
    map: Mapping,
    /// The BO, which the VM maps until it is destroyed.
    _bo: Bo<'d>,
    /// The binary syncobj that holds the last job's fence.
    out: u32,
    /// The semaphore's value: job `sem` spins now.
    sem: u32,
    /// When job `sem` started spinning, about.
    since: Instant,
}

impl<'d> Gate<'d> {
    fn new(d: &'d Device) -> Result<Self, String> {
        let (vm, queue) = crate::empty_job::vm_with_queue(d)?;
        let bo = Bo::new(d, GATE_BO_SIZE, SYSTEM, vm).map_err(err("GEM_CREATE"))?;
        d.vm_bind(
            vm,
            0,
            &[DrmMirageVmBindOp::map(
                bo.handle(),
                0,
                GATE_VA,
                GATE_BO_SIZE,
            )],
            &[],
        )
        .map_err(err("VM_BIND of the gate"))?;
        let map = bo.mmap().map_err(err("mapping the gate"))?;
        let out = d.syncobj_create(0).map_err(err("SYNCOBJ_CREATE"))?;
        let mut gate = Gate {
            d,
            vm,
            queue,
            map,
            _bo: bo,
            out,
            sem: 0,
            since: Instant::now(),
        };
        let write = |e: io::Error| format!("writing the gate: {e}");
        gate.map.write_u32(GATE_SEM as usize, 0).map_err(write)?;
        for k in 0..STAGES {
            let cb = stage_cmd(k);
            gate.map
                .write((u64::from(k) * SLOT) as usize, &cb.to_bytes())
                .map_err(write)?;
        }
        gate.since = Instant::now();
        for k in 0..STAGES {
            // Submitting the relay takes a while too: the first jobs may
            // have to hand over already.
            gate.hold()?;
            let last = [DrmMirageSync::signal(out)];
            let syncs: &[DrmMirageSync] = if k + 1 == STAGES { &last } else { &[] };
            d.exec(
                queue,
                GATE_VA + u64::from(k) * SLOT,
                stage_cmd(k).len_bytes(),
                syncs,
            )
            .map_err(err("EXEC of the gate"))?;
        }
        Ok(gate)
    }

    /// Keeps the gate closed: hands over to the next job of the relay if
    /// the one spinning has done so for [`STAGE`].
    fn hold(&mut self) -> Result<(), String> {
        let Some(sem) = next_stage(self.sem, self.since.elapsed())? else {
            return Ok(());
        };
        self.sem = sem;
        self.since = Instant::now();
        self.map
            .write_u32(GATE_SEM as usize, sem)
            .map_err(|e| format!("writing the gate: {e}"))
    }

    /// Opens the gate, after checking that it was still closed: a job of
    /// the relay that the job timeout killed would have opened it, with an
    /// error, behind the bench's back.
    fn release(&self) -> Result<(), String> {
        match self.d.syncobj_wait(self.out, 0, 0) {
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
            Ok(()) => return Err("the gate opened before its release: the job timeout?".into()),
            Err(e) => return Err(format!("polling the gate: {e}")),
        }
        self.map
            .write_u32(GATE_SEM as usize, STAGES)
            .map_err(|e| format!("writing the gate: {e}"))
    }
}

/// The semaphore value that hands the gate over to the next job of the
/// relay, if job `sem` has spun for [`STAGE`]; an error once the last job
/// spins, which only [`Gate::release`] may end.
fn next_stage(sem: u32, spun: Duration) -> Result<Option<u32>, String> {
    if spun < STAGE {
        Ok(None)
    } else if sem + 1 < STAGES {
        Ok(Some(sem + 1))
    } else {
        Err(format!(
            "the gate was held for {STAGES} stages of {STAGE:?}, its longest"
        ))
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        // A bench that failed early must not leave jobs spinning behind it.
        let _ = self.map.write_u32(GATE_SEM as usize, STAGES);
        let _ = self.d.syncobj_wait(self.out, 0, deadline_in(DONE_MS));
        let _ = self.d.exec_queue_destroy(self.queue);
        let _ = self.d.vm_destroy(self.vm);
        let _ = self.d.syncobj_destroy(self.out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_are_the_first_and_last_n_in_submission_order() {
        let v = [5, 1, 3, 9, 7, 8, 2, 6, 4, 10];
        let (first, last) = ends(&v, 3);
        assert_eq!(first, Stat { median: 3, p90: 5 });
        assert_eq!(last, Stat { median: 6, p90: 10 });
        // Never empty, never past the ends.
        assert_eq!(ends(&v, 0).0, Stat { median: 5, p90: 5 });
        assert_eq!(ends(&v, 99).1, median_p90(&mut v.to_vec()));
    }

    #[test]
    fn every_stage_of_the_relay_fits_its_slot() {
        for k in [0, 1, STAGES - 1] {
            let cb = stage_cmd(k);
            assert!(
                cb.len_bytes() <= SLOT,
                "stage {k}: {} bytes",
                cb.len_bytes()
            );
        }
    }

    #[test]
    fn the_relay_hands_over_after_a_stage_until_the_last_job() {
        let ms = Duration::from_millis;
        assert_eq!(next_stage(0, ms(0)), Ok(None));
        assert_eq!(next_stage(0, STAGE - ms(1)), Ok(None));
        assert_eq!(next_stage(0, STAGE), Ok(Some(1)));
        assert_eq!(next_stage(5, STAGE * 3), Ok(Some(6)));
        assert_eq!(next_stage(STAGES - 2, STAGE), Ok(Some(STAGES - 1)));
        // The last job spins until the release, however long.
        assert_eq!(next_stage(STAGES - 1, ms(0)), Ok(None));
        assert!(next_stage(STAGES - 1, STAGE).is_err());
    }
}
