//! Interrupt sources: IRQ_RAWSTAT/IRQ_MASK, and dropping for fault injection.

use super::{lock, Globals, Gpu, Stats};

impl Gpu {
    /// Latches `bits` in IRQ_RAWSTAT and interrupts if any of them is unmasked.
    pub fn raise(&self, bits: u32) {
        let mut g = lock(&self.globals);
        g.irq_rawstat |= bits;
        let send = bits & g.irq_mask != 0 && self.should_send(&mut g);
        drop(g);
        if send {
            self.send_msi();
        }
    }

    /// Decides, under the globals lock, whether an interrupt goes out.
    pub(super) fn should_send(&self, g: &mut Globals) -> bool {
        // An MSI-X message is a memory write: no bus mastering, no message.
        // The source stays latched and signals when unmasked later.
        if !self.bus.master() {
            log::debug!("interrupt not sent: bus mastering is off");
            return false;
        }
        if self.cfg.inject.drop_irqs || g.drop_next > 0 {
            g.drop_next = g.drop_next.saturating_sub(1);
            Stats::bump(&self.stats.irqs_dropped);
            return false;
        }
        Stats::bump(&self.stats.irqs);
        true
    }

    /// Signals the vector. Called without device locks held: a handler
    /// (a test's hook, in-process) may access registers at once.
    pub(super) fn send_msi(&self) {
        self.irq.raise(0);
    }

    /// Drops the next `n` interrupts (control socket).
    pub fn drop_next_irqs(&self, n: u32) {
        lock(&self.globals).drop_next = n;
    }
}
