//! Memory as a command sees it: translation through an address space, then
//! data accesses on the bus; and the address-space commands.
//!
//! A command uses the translations it made until it ends, so it holds its
//! address space's in-flight guard (a read lock) from its first
//! translation to its last access. UPDATE and the FLUSH commands take the
//! guard exclusively: when the MMIO write returns, no command still uses a
//! translation that the command removed. Commands that wait (SEM_WAIT,
//! HANG, a delay, a stalled fault) return to the engine between attempts
//! and hold no guard while waiting.

use super::exec::{AtomicOp, MemCtx, Segs};
use super::{lock, Gpu, Stats};
use crate::mmu::{Access, Fault, FaultKind, XlateStats};
use crate::regs::*;
use std::sync::atomic::Ordering;
use std::sync::RwLockReadGuard;

/// One command's view of memory: address space `as_idx` of `gpu`.
pub(super) struct VmCtx<'a> {
    gpu: &'a Gpu,
    as_idx: usize,
    _inflight: RwLockReadGuard<'a, ()>,
}

impl<'a> VmCtx<'a> {
    /// Enters address space `as_idx`; waits for an UPDATE or flush in
    /// progress there to finish.
    pub fn new(gpu: &'a Gpu, as_idx: usize) -> Self {
        let guard = gpu.inflight[as_idx]
            .read()
            .expect("in-flight guard poisoned by a panic");
        VmCtx {
            gpu,
            as_idx,
            _inflight: guard,
        }
    }
}

fn data_fault(va: u64, access: Access) -> Fault {
    Fault {
        kind: FaultKind::DataBus,
        level: 0,
        va,
        access,
    }
}

impl MemCtx for VmCtx<'_> {
    /// Translates page by page; returns merged PA segments.
    fn xlate(&self, va: u64, len: u64, access: Access) -> Result<Segs, Fault> {
        let gpu = self.gpu;
        let mut segs: Segs = Vec::new();
        let mut a = lock(&gpu.aspaces[self.as_idx]);
        let mut at = va;
        let end = va.checked_add(len).ok_or(Fault {
            kind: FaultKind::AddressSizeIn,
            level: 0,
            va,
            access,
        })?;
        while at < end {
            let mut st = XlateStats::default();
            let r = a.translate(&gpu.bus, at, access, &mut st);
            if st.hit {
                Stats::bump(&gpu.stats.tlb_hits);
            } else {
                Stats::bump(&gpu.stats.tlb_misses);
            }
            if st.walked {
                Stats::bump(&gpu.stats.walks);
                gpu.stats
                    .pte_reads
                    .fetch_add(u64::from(st.reads), Ordering::Relaxed);
            }
            let pa = r?;
            let n = (at | 0xfff).saturating_add(1).min(end) - at;
            match segs.last_mut() {
                Some((p, l)) if p.checked_add(*l as u64) == Some(pa) => *l += n as usize,
                _ => segs.push((pa, n as usize)),
            }
            at += n;
        }
        Ok(segs)
    }

    fn read(&self, segs: &Segs, va: u64, access: Access) -> Result<Vec<u8>, Fault> {
        let mut out = vec![0u8; segs.iter().map(|s| s.1).sum()];
        let mut at = 0;
        for &(pa, n) in segs {
            self.gpu
                .bus
                .read(pa, &mut out[at..at + n])
                .map_err(|_| data_fault(va.wrapping_add(at as u64), access))?;
            at += n;
        }
        Ok(out)
    }

    fn write(&self, segs: &Segs, va: u64, data: &[u8]) -> Result<(), Fault> {
        let mut at = 0;
        for &(pa, n) in segs {
            self.gpu
                .bus
                .write(pa, &data[at..at + n])
                .map_err(|_| data_fault(va.wrapping_add(at as u64), Access::Write))?;
            at += n;
        }
        Ok(())
    }

    fn atomic(&self, segs: &Segs, va: u64, op: AtomicOp) -> Result<u64, Fault> {
        let fault = || data_fault(va, Access::Atomic);
        let (&[(pa, n)], Some(width)) = (segs.as_slice(), op.width()) else {
            return Err(fault());
        };
        if n != width {
            return Err(fault());
        }
        self.gpu
            .bus
            // SAFETY: with_host_ptr keeps `p` valid for `n` bytes until the
            // closure returns, and `n` is the operation's width.
            .with_host_ptr(pa, n, |p| unsafe { op.apply(p) })
            .ok()
            .flatten()
            .ok_or_else(fault)
    }

    fn now_ns(&self) -> u64 {
        self.gpu.start.elapsed().as_nanos() as u64
    }

    fn command_started(&self) {
        Stats::bump(&self.gpu.stats.commands);
    }
}

impl Gpu {
    /// AS_COMMAND of address space `n`. UPDATE and the flushes return once
    /// every command that entered the address space before has ended.
    pub(super) fn as_command(&self, n: usize, cmd: u32) {
        if !matches!(
            cmd,
            AS_CMD_UPDATE | AS_CMD_FLUSH_RANGE | AS_CMD_FLUSH_PT | AS_CMD_FLUSH_MEM
        ) {
            return;
        }
        let _quiet = self.inflight[n]
            .write()
            .expect("in-flight guard poisoned by a panic");
        lock(&self.aspaces[n]).command(cmd);
    }
}
