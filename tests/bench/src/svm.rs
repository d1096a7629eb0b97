//! Fault-mode VMs: what servicing a GPU page fault costs, by stage (the
//! driver's sums, xe's gt stats), next to a bare device round trip (the
//! ping doorbell, its interrupt and its acknowledgement, timed by the
//! driver); faults of 2 MiB ranges, also where a table of pages was (the
//! TLB stage); and a collector pass, per range it removes. Each figure comes from the same run.

use crate::anon::Anon;
use crate::debugfs::{self, FaultSums, SvmStats};
use crate::{median_p90, Stat, DEBUGFS, SZ_4K};
use mirage::cmd::CmdBuf;
use mirage::uapi::*;
use mirage::{Bo, Device};
use std::path::Path;

const SZ_2M: u64 = 2 << 20;
/// Reads of `ping_ns`.
const PINGS: usize = 200;
/// 4 KiB faults: pages, each its own CPU mapping, so each its own range.
pub const PAGES: u64 = 256;
/// 2 MiB faults.
pub const BIG: u64 = 16;
const MIRROR_START: u64 = 1 << 32;
const MIRROR_END: u64 = 1 << 47;
const CMD_VA: u64 = 0x1000_0000;
const CMD_SIZE: u64 = 64 << 10;

/// What the fault figures came to.
pub struct Figures {
    /// One bare device round trip, in ns.
    pub ping: Stat,
    /// Sums over the 4 KiB and the 2 MiB faults (count, service,
    /// get_pages, bind, TLB).
    pub fault_4k: FaultSums,
    pub fault_2m: FaultSums,
    /// 2 MiB faults where a table of 4 KiB pages was.
    pub fault_2m_over_table: FaultSums,
    /// The collector pass after the 4 KiB pages were unmapped: passes,
    /// ranges removed, ns.
    pub gc: [u64; 3],
}

/// A fault-mode VM whose addresses above 4 GiB mirror the process's, with
/// an exec queue and a command BO below them.
struct FaultVm<'d> {
    d: &'d Device,
    vm: u32,
    queue: u32,
    cmd: Bo<'d>,
}

impl<'d> FaultVm<'d> {
    fn new(d: &'d Device) -> Result<Self, String> {
        let e = |w: &'static str| move |e: std::io::Error| format!("{w}: {e}");
        let vm = d
            .vm_create(DRM_MIRAGE_VM_CREATE_FLAG_FAULT_MODE)
            .map_err(e("VM_CREATE (fault mode)"))?;
        let queue = d
            .exec_queue_create(
                vm,
                DRM_MIRAGE_ENGINE_CLASS_COMPUTE,
                DRM_MIRAGE_EXEC_QUEUE_PRIORITY_NORMAL,
            )
            .map_err(e("EXEC_QUEUE_CREATE"))?;
        let cmd =
            Bo::new(d, CMD_SIZE, DRM_MIRAGE_GEM_CREATE_FLAG_SYSTEM, vm).map_err(e("GEM_CREATE"))?;
        let ops = [
            DrmMirageVmBindOp::map(cmd.handle(), 0, CMD_VA, CMD_SIZE),
            DrmMirageVmBindOp::map_mirror(MIRROR_START, MIRROR_END - MIRROR_START),
        ];
        d.vm_bind(vm, 0, &ops, &[]).map_err(e("VM_BIND"))?;
        Ok(Self { d, vm, queue, cmd })
    }

    /// Runs `cb` to its end; `Err` unless it ended well.
    fn run(&self, cb: &CmdBuf) -> Result<(), String> {
        let e = |w: &'static str| move |e: std::io::Error| format!("{w}: {e}");
        self.cmd
            .mmap()
            .map_err(e("mmap of the command BO"))?
            .write(0, &cb.to_bytes())
            .map_err(e("writing the commands"))?;
        let out = self.d.syncobj_create(0).map_err(e("SYNCOBJ_CREATE"))?;
        self.d
            .exec(
                self.queue,
                CMD_VA,
                cb.len_bytes(),
                &[DrmMirageSync::signal(out)],
            )
            .map_err(e("EXEC"))?;
        self.d
            .syncobj_wait(out, 0, crate::deadline_in(60_000))
            .map_err(e("the job did not end"))?;
        self.d.syncobj_destroy(out).map_err(e("SYNCOBJ_DESTROY"))?;
        Ok(())
    }

    fn stats(&self) -> Result<SvmStats, String> {
        let f = debugfs::find(Path::new(DEBUGFS), self.vm, std::process::id())?;
        f.svm
            .ok_or_else(|| "the VM's debugfs file has no svm lines".to_string())
    }
}

impl Drop for FaultVm<'_> {
    fn drop(&mut self) {
        let _ = self.d.exec_queue_destroy(self.queue);
        let _ = self.d.vm_destroy(self.vm);
    }
}

fn since(after: &FaultSums, before: &FaultSums) -> FaultSums {
    let mut d = [0; 5];
    for (i, v) in d.iter_mut().enumerate() {
        *v = after[i] - before[i];
    }
    d
}

pub fn figures(d: &Device) -> Result<Figures, String> {
    let path = Path::new(DEBUGFS).join("ping_ns");
    let mut pings = Vec::with_capacity(PINGS);
    for _ in 0..PINGS {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let ns = text
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("{}: {text:?}", path.display()))?;
        pings.push(ns);
    }

    let f = FaultVm::new(d)?;
    // Every other page unmapped: each page left is a CPU mapping of its own,
    // which only a 4 KiB range fits.
    let pages = Anon::new(2 * PAGES * SZ_4K)?;
    for i in 0..PAGES {
        pages.unmap(pages.addr() + (2 * i + 1) * SZ_4K, SZ_4K)?;
    }
    let mut cb = CmdBuf::new();
    for i in 0..PAGES {
        cb.store32(pages.addr() + 2 * i * SZ_4K, i as u32);
    }
    cb.end();
    let before = f.stats()?;
    f.run(&cb)?;
    let after = f.stats()?;
    let fault_4k = since(&after.faults[0], &before.faults[0]);

    // The collector removes the ranges of the pages as it finds them
    // unmapped: the attribute query runs it.
    pages.unmap(pages.addr(), 2 * PAGES * SZ_4K)?;
    d.mem_range_attrs(f.vm, MIRROR_START, SZ_4K)
        .map_err(|e| format!("VM_QUERY_MEM_RANGE_ATTRS: {e}"))?;
    let collected = f.stats()?;
    let mut gc = [0; 3];
    for (i, g) in gc.iter_mut().enumerate() {
        *g = collected.gc[i] - after.gc[i];
    }

    // 2 MiB ranges: one store in each 2 MiB of an aligned mapping.
    let big = Anon::new((BIG + 1) * SZ_2M)?;
    let base = (big.addr() + SZ_2M - 1) & !(SZ_2M - 1);
    let mut cb = CmdBuf::new();
    for i in 0..BIG {
        cb.store32(base + i * SZ_2M, i as u32);
    }
    cb.end();
    let before = f.stats()?;
    f.run(&cb)?;
    let after = f.stats()?;
    let fault_2m = since(&after.faults[2], &before.faults[2]);

    // 2 MiB ranges where 4 KiB ones were: the first page of each 2 MiB is
    // a CPU mapping of its own (the page after it unmapped), so a 4 KiB
    // range, which leaves a table of pages; then a new 2 MiB mapping
    // replaces the lot, and its range's block replaces the table, which the
    // TLB may still cache: the fault invalidates it.
    let over = Anon::new((BIG + 1) * SZ_2M)?;
    let base = (over.addr() + SZ_2M - 1) & !(SZ_2M - 1);
    for i in 0..BIG {
        over.unmap(base + i * SZ_2M + SZ_4K, SZ_4K)?;
    }
    let mut cb = CmdBuf::new();
    for i in 0..BIG {
        cb.store32(base + i * SZ_2M, i as u32);
    }
    cb.end();
    f.run(&cb)?;
    for i in 0..BIG {
        over.remap(base + i * SZ_2M, SZ_2M)?;
    }
    let before = f.stats()?;
    f.run(&cb)?;
    let after = f.stats()?;
    let fault_2m_over_table = since(&after.faults[2], &before.faults[2]);
    Ok(Figures {
        ping: median_p90(&mut pings),
        fault_4k,
        fault_2m,
        fault_2m_over_table,
        gc,
    })
}
