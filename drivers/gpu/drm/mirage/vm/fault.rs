// SPDX-License-Identifier: GPL-2.0 or MIT

//! GPU page faults of a fault-mode VM.
//!
//! The device stalls a job of a fault-mode VM on a translation or access-flag fault, and the
//! fault work ([`crate::faults`]) asks the VM to resolve it. A fault the VM cannot resolve
//! aborts the job: its fence gets `-EIO`. Permission and attribute faults never get here: the
//! device aborts them at once.

use kernel::{prelude::*, sync::atomic::Relaxed};

use super::{
    stats::{Clock, Stages},
    Backend, VmCore,
};
use crate::faults::Fault;

impl<B: Backend> VmCore<B> {
    /// Resolves `f`: when this returns `Ok`, the access may be retried.
    ///
    /// Process context: it may sleep, allocate and take the VM lock.
    pub(crate) fn handle_fault(&self, f: &Fault) -> Result {
        let start = Clock::now();
        let mut stages = Stages::default();
        // Only mirrors are filled in on fault. With no mapping at the address, the access is a
        // bug of the job; a BO's or a userptr's mapping is in the page table once its bind
        // executed, which the job was ordered after, or not at all.
        let res = if self.is_usable() {
            self.resolve_mirror(f, &mut stages)
        } else {
            Err(ENOENT)
        };
        if let Ok(size) = res {
            self.stats.fault(size, start.elapsed(), &stages);
        }
        let count = if res.is_ok() {
            &self.faults_resolved
        } else {
            &self.faults_aborted
        };
        count.fetch_add(1, Relaxed);
        res.map(|_| ())
    }
}
