//! The device-physical address space the MMU outputs into: guest RAM
//! (bus addresses below [`VRAM_BASE`]) and VRAM (from [`VRAM_BASE`]).
//!
//! Every device-initiated access goes through [`Bus`], which refuses them
//! all while Bus Master Enable is clear, as a PCI function must.

use crate::dma::{DmaFault, GuestMemory};
use crate::regs::VRAM_BASE;
use crate::vram::Vram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// Where a device-physical address lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    System,
    Vram,
}

/// Called on every device access, before it happens, with the address,
/// the length and whether it is a write: a test's window into timing.
pub type AccessHook = Arc<dyn Fn(u64, usize, bool) + Send + Sync>;

#[derive(Default)]
struct Injections {
    /// Any access touching one of these ranges fails.
    errors: Vec<(u64, u64)>,
    hook: Option<AccessHook>,
}

#[derive(Clone)]
pub struct Bus {
    pub mem: Arc<GuestMemory>,
    pub vram: Arc<Vram>,
    inject: Arc<RwLock<Injections>>,
    /// Bus Master Enable of the PCI command register: without it the
    /// device may not start a single memory transaction.
    master: Arc<AtomicBool>,
}

impl Bus {
    pub fn new(mem: Arc<GuestMemory>, vram: Arc<Vram>) -> Self {
        Bus {
            mem,
            vram,
            inject: Arc::default(),
            master: Arc::default(),
        }
    }

    /// Follows the command register's Bus Master Enable bit.
    pub fn set_master(&self, on: bool) {
        self.master.store(on, Ordering::SeqCst);
    }

    pub fn master(&self) -> bool {
        self.master.load(Ordering::SeqCst)
    }

    fn injections(&self) -> std::sync::RwLockWriteGuard<'_, Injections> {
        self.inject.write().expect("bus injection lock poisoned")
    }

    /// Makes every device access touching `[pa, pa + len)` fail.
    pub fn inject_error(&self, pa: u64, len: u64) {
        self.injections().errors.push((pa, len));
    }

    pub fn clear_errors(&self) {
        self.injections().errors.clear();
    }

    /// Installs (or removes) the hook run before every device access.
    pub fn set_access_hook(&self, hook: Option<AccessHook>) {
        self.injections().hook = hook;
    }

    /// Checks that the device may make this access at all.
    fn injected(&self, pa: u64, len: usize, write: bool) -> Result<(), DmaFault> {
        if !self.master() {
            return Err(DmaFault { iova: pa });
        }
        let hook = {
            let inj = self.inject.read().expect("bus injection lock poisoned");
            let end = pa.saturating_add(len as u64);
            if let Some(&(s, _)) = inj
                .errors
                .iter()
                .find(|(s, l)| pa < s.saturating_add(*l) && *s < end)
            {
                return Err(DmaFault { iova: s.max(pa) });
            }
            inj.hook.clone()
        };
        // Outside the lock: a hook may take its time.
        if let Some(h) = hook {
            h(pa, len, write);
        }
        Ok(())
    }

    pub fn target(&self, pa: u64) -> Target {
        if pa >= VRAM_BASE {
            Target::Vram
        } else {
            Target::System
        }
    }

    fn vram_off(&self, pa: u64, len: usize) -> Result<u64, DmaFault> {
        let off = pa - VRAM_BASE;
        if off
            .checked_add(len as u64)
            .is_none_or(|end| end > self.vram.size())
        {
            return Err(DmaFault { iova: pa });
        }
        Ok(off)
    }

    pub fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        self.injected(pa, buf.len(), false)?;
        match self.target(pa) {
            Target::System => self.mem.read(pa, buf),
            Target::Vram => {
                let off = self.vram_off(pa, buf.len())?;
                self.vram.read(off, buf);
                Ok(())
            }
        }
    }

    pub fn write(&self, pa: u64, buf: &[u8]) -> Result<(), DmaFault> {
        self.injected(pa, buf.len(), true)?;
        match self.target(pa) {
            Target::System => self.mem.write(pa, buf),
            Target::Vram => {
                let off = self.vram_off(pa, buf.len())?;
                self.vram.write(off, buf);
                Ok(())
            }
        }
    }

    /// Runs `f` with a host pointer to the `len` bytes at `pa`, for a
    /// single-operation access (an atomic). The pointer is valid for `len`
    /// bytes until `f` returns, and no longer.
    pub fn with_host_ptr<R>(
        &self,
        pa: u64,
        len: usize,
        f: impl FnOnce(*mut u8) -> R,
    ) -> Result<R, DmaFault> {
        self.injected(pa, len, true)?;
        match self.target(pa) {
            Target::System => self.mem.with_host_ptr(pa, len, f),
            // VRAM stays mapped as long as `self.vram` lives.
            Target::Vram => self
                .vram
                .host_ptr(pa - VRAM_BASE, len)
                .map(f)
                .ok_or(DmaFault { iova: pa }),
        }
    }

    pub fn read_u64(&self, pa: u64) -> Result<u64, DmaFault> {
        let mut b = [0u8; 8];
        self.read(pa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn write_u64(&self, pa: u64, v: u64) -> Result<(), DmaFault> {
        self.write(pa, &v.to_le_bytes())
    }

    pub fn read_u32(&self, pa: u64) -> Result<u32, DmaFault> {
        let mut b = [0u8; 4];
        self.read(pa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub fn write_u32(&self, pa: u64, v: u32) -> Result<(), DmaFault> {
        self.write(pa, &v.to_le_bytes())
    }
}
