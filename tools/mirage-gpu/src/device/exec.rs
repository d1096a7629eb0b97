//! The command set ("ISA", `crate::isa`), run over a [`MemCtx`]: the memory
//! one command sees. Nothing here knows about queues or registers.

use crate::isa::*;
use crate::mmu::{Access, Fault, FaultKind};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Pieces of device-physical memory backing a virtual range, in order.
pub(super) type Segs = Vec<(u64, usize)>;

/// The memory a command runs against: one address space's translations and
/// the bus behind them.
pub(super) trait MemCtx {
    /// Translates `[va, va + len)` for `access`.
    fn xlate(&self, va: u64, len: u64, access: Access) -> Result<Segs, Fault>;
    /// Reads what `xlate` returned for `va`.
    fn read(&self, segs: &Segs, va: u64, access: Access) -> Result<Vec<u8>, Fault>;
    /// Writes what `xlate` returned for `va`.
    fn write(&self, segs: &Segs, va: u64, data: &[u8]) -> Result<(), Fault>;
    /// Runs `op` on the 4 or 8 bytes of an atomic's target (`segs` from
    /// `xlate` for `va`), as one host atomic operation; returns the old
    /// value.
    fn atomic(&self, segs: &Segs, va: u64, op: AtomicOp) -> Result<u64, Fault>;
    /// The device clock, in nanoseconds.
    fn now_ns(&self) -> u64;
    /// Counts a command whose header and operands were fetched.
    fn command_started(&self);

    fn read_va(&self, va: u64, len: u64, access: Access) -> Result<Vec<u8>, Fault> {
        let segs = self.xlate(va, len, access)?;
        self.read(&segs, va, access)
    }
}

/// One atomic read-modify-write, as OP_ATOMIC encodes it.
#[derive(Clone, Copy, Debug)]
pub(super) struct AtomicOp {
    pub op: u64,
    pub operand: u64,
    pub compare: u64,
}

impl AtomicOp {
    /// 8 for the 64-bit operations, 4 for the 32-bit ones; None if unknown.
    pub fn width(&self) -> Option<usize> {
        match self.op {
            ATOMIC_ADD32 | ATOMIC_INC32 | ATOMIC_CMPXCHG32 => Some(4),
            ATOMIC_ADD64 | ATOMIC_INC64 | ATOMIC_CMPXCHG64 => Some(8),
            _ => None,
        }
    }

    /// Applies the operation to the naturally aligned location at `p`;
    /// returns the old value, or None if `p` is not aligned to the width.
    ///
    /// # Safety
    ///
    /// `p` must be valid for reads and writes of `self.width()` bytes for
    /// the duration of the call.
    pub unsafe fn apply(&self, p: *mut u8) -> Option<u64> {
        let n = self.width()?;
        if p.align_offset(n) != 0 {
            return None;
        }
        let (operand, compare) = (self.operand, self.compare);
        Some(if n == 8 {
            // SAFETY: valid for 8 bytes (the caller) and 8-byte aligned
            // (checked above); every device access to it here is atomic.
            let a = unsafe { AtomicU64::from_ptr(p.cast()) };
            match self.op {
                ATOMIC_ADD64 => a.fetch_add(operand, Ordering::SeqCst),
                ATOMIC_INC64 => a.fetch_add(1, Ordering::SeqCst),
                _ => a
                    .compare_exchange(compare, operand, Ordering::SeqCst, Ordering::SeqCst)
                    .unwrap_or_else(|v| v),
            }
        } else {
            // SAFETY: as above, for 4 bytes and 4-byte alignment.
            let a = unsafe { AtomicU32::from_ptr(p.cast()) };
            u64::from(match self.op {
                ATOMIC_ADD32 => a.fetch_add(operand as u32, Ordering::SeqCst),
                ATOMIC_INC32 => a.fetch_add(1, Ordering::SeqCst),
                _ => a
                    .compare_exchange(
                        compare as u32,
                        operand as u32,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    )
                    .unwrap_or_else(|v| v),
            })
        })
    }
}

/// What one command did.
pub(super) enum Cmd {
    /// Advance the program counter by this many bytes.
    Next(u64),
    End,
    /// Not done; run the same command again after the duration.
    Wait(Duration),
    Fault(Fault),
    Invalid,
}

/// Runs the command at byte `pc` of the command buffer `[cmdbuf_va,
/// cmdbuf_va + cmdbuf_len)`. Every address a command touches is translated
/// before it writes anything, so a command that faults has had no effect
/// and may be replayed after a stall.
pub(super) fn exec_cmd(m: &dyn MemCtx, cmdbuf_va: u64, cmdbuf_len: u32, pc: u64) -> Cmd {
    // The header must lie inside the buffer before it is fetched: a byte
    // past the end is not the job's to fault on.
    if pc + 8 > u64::from(cmdbuf_len) {
        return Cmd::Invalid;
    }
    let Some(va) = cmdbuf_va.checked_add(pc) else {
        return Cmd::Fault(Fault {
            kind: FaultKind::AddressSizeIn,
            level: 0,
            va: cmdbuf_va,
            access: Access::Execute,
        });
    };
    let fetch = |va, len| m.read_va(va, len, Access::Execute);
    let hdr = match fetch(va, 8) {
        Ok(b) => u64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
        Err(f) => return Cmd::Fault(f),
    };
    let op = hdr as u8;
    let words = (hdr >> 16) & 0xffff;
    let Some(nops) = operands(op) else {
        return Cmd::Invalid;
    };
    if (hdr >> 8) & 0xff != 0 || hdr >> 32 != 0 || words != nops as u64 + 1 {
        return Cmd::Invalid;
    }
    if pc + words * 8 > u64::from(cmdbuf_len) {
        return Cmd::Invalid;
    }
    // Saturating: an address that high is out of range and faults anyway.
    let o: Vec<u64> = match fetch(va.saturating_add(8), nops as u64 * 8) {
        Ok(b) => b
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
        Err(f) => return Cmd::Fault(f),
    };
    m.command_started();
    run(m, op, &o, words * 8).unwrap_or_else(Cmd::Fault)
}

fn run(m: &dyn MemCtx, op: u8, o: &[u64], len: u64) -> Result<Cmd, Fault> {
    let next = Cmd::Next(len);
    Ok(match op {
        OP_NOP => next,
        OP_END => Cmd::End,
        OP_HANG => Cmd::Wait(Duration::from_millis(1)),
        OP_STORE32 | OP_STORE64 | OP_FENCE_WRITE | OP_TIMESTAMP => {
            let (n, v) = match op {
                OP_STORE32 => (4, o[1] & 0xffff_ffff),
                OP_TIMESTAMP => (8, m.now_ns()),
                _ => (8, o[1]),
            };
            let segs = m.xlate(o[0], n, Access::Write)?;
            if op == OP_FENCE_WRITE {
                std::sync::atomic::fence(Ordering::SeqCst);
            }
            m.write(&segs, o[0], &v.to_le_bytes()[..n as usize])?;
            next
        }
        OP_COPY => {
            let (dst, src, len) = (o[0], o[1], o[2]);
            if len > MAX_LEN {
                return Ok(Cmd::Invalid);
            }
            let ssegs = m.xlate(src, len, Access::Read)?;
            let dsegs = m.xlate(dst, len, Access::Write)?;
            let data = m.read(&ssegs, src, Access::Read)?;
            m.write(&dsegs, dst, &data)?;
            next
        }
        OP_FILL => {
            let (dst, len) = (o[0], o[1]);
            if len > MAX_LEN || !len.is_multiple_of(4) {
                return Ok(Cmd::Invalid);
            }
            let segs = m.xlate(dst, len, Access::Write)?;
            let pat = (o[2] as u32).to_le_bytes();
            let data: Vec<u8> = pat.into_iter().cycle().take(len as usize).collect();
            m.write(&segs, dst, &data)?;
            next
        }
        OP_CHECKSUM => {
            let (src, len, dst) = (o[0], o[1], o[2]);
            if len > MAX_LEN {
                return Ok(Cmd::Invalid);
            }
            let ssegs = m.xlate(src, len, Access::Read)?;
            let dsegs = m.xlate(dst, 8, Access::Write)?;
            let data = m.read(&ssegs, src, Access::Read)?;
            m.write(&dsegs, dst, &fnv1a64(&data).to_le_bytes())?;
            next
        }
        OP_ATOMIC => {
            if atomic(m, o)? {
                next
            } else {
                Cmd::Invalid
            }
        }
        OP_SEM_WAIT => {
            let (va, want, cond) = (o[0], o[1], o[2]);
            let n = match cond {
                SEM_GE32 | SEM_EQ32 => 4,
                SEM_GE64 | SEM_EQ64 => 8,
                _ => return Ok(Cmd::Invalid),
            };
            let b = m.read_va(va, n, Access::Read)?;
            let mut w = [0u8; 8];
            w[..n as usize].copy_from_slice(&b);
            let v = u64::from_le_bytes(w);
            let want = if n == 4 { want & 0xffff_ffff } else { want };
            let met = match cond {
                SEM_GE32 | SEM_GE64 => v >= want,
                _ => v == want,
            };
            if met {
                next
            } else {
                Cmd::Wait(Duration::from_micros(50))
            }
        }
        OP_SAXPY => {
            let (x, y, n, a) = (o[0], o[1], o[2], f32::from_bits(o[3] as u32));
            let Some(bytes) = n.checked_mul(4).filter(|&b| b <= MAX_LEN) else {
                return Ok(Cmd::Invalid);
            };
            let xsegs = m.xlate(x, bytes, Access::Read)?;
            let ysegs = m.xlate(y, bytes, Access::Write)?;
            let xs = m.read(&xsegs, x, Access::Read)?;
            let mut ys = m.read(&ysegs, y, Access::Write)?;
            for (yc, xc) in ys.chunks_exact_mut(4).zip(xs.chunks_exact(4)) {
                let xv = f32::from_le_bytes([xc[0], xc[1], xc[2], xc[3]]);
                let yv = f32::from_le_bytes([yc[0], yc[1], yc[2], yc[3]]);
                yc.copy_from_slice(&a.mul_add(xv, yv).to_le_bytes());
            }
            m.write(&ysegs, y, &ys)?;
            next
        }
        _ => Cmd::Invalid,
    })
}

/// Runs OP_ATOMIC; Ok(false) for a malformed one.
fn atomic(m: &dyn MemCtx, o: &[u64]) -> Result<bool, Fault> {
    let (va, result_va) = (o[0], o[4]);
    let op = AtomicOp {
        op: o[1],
        operand: o[2],
        compare: o[3],
    };
    let Some(n) = op.width() else {
        return Ok(false);
    };
    if !va.is_multiple_of(n as u64) {
        return Ok(false);
    }
    let segs = m.xlate(va, n as u64, Access::Atomic)?;
    let rsegs = if result_va != 0 {
        Some(m.xlate(result_va, n as u64, Access::Write)?)
    } else {
        None
    };
    let old = m.atomic(&segs, va, op)?;
    if let Some(rsegs) = rsegs {
        m.write(&rsegs, result_va, &old.to_le_bytes()[..n])?;
    }
    Ok(true)
}
