//! Interrupt delivery. The device decides *when* to interrupt; a sink
//! decides *how* (an eventfd for QEMU, a counter in tests).

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

pub trait IrqSink: Send + Sync {
    /// Raises MSI-X `vector`. Must never block: it runs on vfio-user handler threads.
    fn raise(&self, vector: u16);
}

/// MSI-X vectors backed by the eventfds QEMU hands over with SET_IRQS.
#[derive(Default)]
pub struct EventfdIrqs {
    fds: std::sync::Mutex<Vec<Option<File>>>,
    /// Raises that found no eventfd (vector not set up by the guest yet).
    pub lost: AtomicU64,
}

impl EventfdIrqs {
    /// Installs `fds` for vectors `start..start + fds.len()`; `None` disables a vector.
    pub fn set(&self, start: u32, fds: Vec<Option<File>>) {
        let mut v = self.fds.lock().expect("eventfd table lock poisoned");
        let end = start as usize + fds.len();
        if v.len() < end {
            v.resize_with(end, || None);
        }
        for (i, fd) in fds.into_iter().enumerate() {
            v[start as usize + i] = fd;
        }
    }

    /// Drops every vector (SET_IRQS with count 0, or device reset).
    pub fn clear(&self) {
        self.fds
            .lock()
            .expect("eventfd table lock poisoned")
            .clear();
    }
}

impl IrqSink for EventfdIrqs {
    fn raise(&self, vector: u16) {
        let mut v = self.fds.lock().expect("eventfd table lock poisoned");
        match v.get_mut(vector as usize).and_then(Option::as_mut) {
            // An eventfd write only fails when the counter would overflow,
            // which means the guest already has an interrupt pending.
            Some(f) => {
                let _ = f.write_all(&1u64.to_ne_bytes());
            }
            None => {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What a test runs when an interrupt is raised, as a driver's handler would.
pub type IrqHook = Box<dyn Fn(u16) + Send + Sync>;

/// Counts raises per vector; for tests.
#[derive(Default)]
pub struct CountingIrqs {
    pub count: [AtomicU64; 8],
    hook: std::sync::Mutex<Option<IrqHook>>,
}

impl CountingIrqs {
    pub fn get(&self, vector: u16) -> u64 {
        self.count[vector as usize].load(Ordering::SeqCst)
    }

    /// Runs `hook` on every raise, on the raising thread, which may hold
    /// device locks: the hook may only do what an interrupt handler may
    /// (register and memory accesses).
    pub fn set_hook(&self, hook: Option<IrqHook>) {
        *self.hook.lock().expect("IRQ hook lock poisoned") = hook;
    }
}

impl IrqSink for CountingIrqs {
    fn raise(&self, vector: u16) {
        self.count[vector as usize].fetch_add(1, Ordering::SeqCst);
        if let Some(h) = self.hook.lock().expect("IRQ hook lock poisoned").as_ref() {
            h(vector);
        }
    }
}
