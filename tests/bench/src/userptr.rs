//! Userptrs (`DRM_MIRAGE_VM_BIND_OP_MAP_USERPTR`): what their MMU notifier
//! adds to a munmap, what bound userptrs add to an EXEC that has none to
//! revalidate, and what revalidating one costs an EXEC. Each figure is
//! measured against its baseline in the same run, interleaved.

use crate::anon::Anon;
use crate::empty_job::EmptyJob;
use crate::{median_p90, Stat, SZ_4K};
use mirage::uapi::*;
use mirage::Device;

const SZ_2M: u64 = 2 << 20;
/// Rounds of each measurement.
const ROUNDS: usize = 40;
/// EXECs per VM per round of the EXEC latency.
const JOBS: usize = 5;
/// Userptrs of the crowded VM.
pub const MANY: usize = 10_000;
const UP_VA: u64 = 0x4000_0000;

/// What the userptr figures came to.
pub struct Figures {
    /// munmap of 2 MiB: bound as an idle userptr, and plain.
    pub munmap_bound: Stat,
    pub munmap_plain: Stat,
    /// An empty job: in a VM with [`MANY`] userptrs, and in one with none.
    pub exec_many: Stat,
    pub exec_none: Stat,
    /// An empty job after MADV_DONTNEED of a bound 2 MiB userptr, and
    /// without the invalidation, in the same VM.
    pub exec_revalidate: Stat,
    pub exec_valid: Stat,
}

pub fn figures(d: &Device) -> Result<Figures, String> {
    // munmap: a bound, idle userptr's notifier waits for no job, and takes
    // the notifier lock once.
    let vm = EmptyJob::new(d)?;
    let (mut bound, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let a = Anon::touched(SZ_2M)?;
        vm.bind(&[DrmMirageVmBindOp::map_userptr(a.addr(), UP_VA, SZ_2M)])?;
        bound.push(a.munmap()?);
        vm.bind(&[DrmMirageVmBindOp::unmap(UP_VA, SZ_2M)])?;
        plain.push(Anon::touched(SZ_2M)?.munmap()?);
    }
    drop(vm);

    // EXEC: a VM of MANY userptrs of a page each, none invalidated, against
    // a VM of none.
    let crowded = EmptyJob::new(d)?;
    let pages = Anon::touched(MANY as u64 * SZ_4K)?;
    let ops: Vec<_> = (0..MANY as u64)
        .map(|i| {
            DrmMirageVmBindOp::map_userptr(pages.addr() + i * SZ_4K, UP_VA + 2 * i * SZ_4K, SZ_4K)
        })
        .collect();
    for chunk in ops.chunks(DRM_MIRAGE_MAX_BIND_OPS as usize) {
        crowded.bind(chunk)?;
    }
    let empty = EmptyJob::new(d)?;
    let (mut many, mut none) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for _ in 0..JOBS {
            many.push(crowded.exec()?);
        }
        for _ in 0..JOBS {
            none.push(empty.exec()?);
        }
    }
    drop((crowded, empty, pages));

    // Revalidation of one 2 MiB userptr: MADV_DONTNEED, then the EXEC
    // faults 512 new pages in, maps them for DMA and rebinds them.
    let vm = EmptyJob::new(d)?;
    let a = Anon::touched(SZ_2M)?;
    vm.bind(&[DrmMirageVmBindOp::map_userptr(a.addr(), UP_VA, SZ_2M)])?;
    let (mut reval, mut valid) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        a.dontneed()?;
        reval.push(vm.exec()?);
        valid.push(vm.exec()?);
    }
    drop((vm, a));

    Ok(Figures {
        munmap_bound: median_p90(&mut bound),
        munmap_plain: median_p90(&mut plain),
        exec_many: median_p90(&mut many),
        exec_none: median_p90(&mut none),
        exec_revalidate: median_p90(&mut reval),
        exec_valid: median_p90(&mut valid),
    })
}
