//! A VM whose exec queue runs an empty job: what EXEC costs with nothing to
//! do on the GPU.

use crate::{err, timed, SYSTEM, SZ_4K};
use mirage::cmd::CmdBuf;
use mirage::uapi::*;
use mirage::{Bo, Device};
use std::io;

/// Where the empty job's command buffer is mapped.
pub const CMD_VA: u64 = 0x1000_0000;

/// A new VM and a COMPUTE exec queue of normal priority in it.
pub fn vm_with_queue(d: &Device) -> Result<(u32, u32), String> {
    let vm = d.vm_create(0).map_err(err("VM_CREATE"))?;
    let queue = d
        .exec_queue_create(
            vm,
            DRM_MIRAGE_ENGINE_CLASS_COMPUTE,
            DRM_MIRAGE_EXEC_QUEUE_PRIORITY_NORMAL,
        )
        .map_err(err("EXEC_QUEUE_CREATE"))?;
    Ok((vm, queue))
}

/// A VM with an exec queue and an empty job at [`CMD_VA`], which [`EmptyJob::exec`] runs.
pub struct EmptyJob<'d> {
    d: &'d Device,
    vm: u32,
    queue: u32,
    out: u32,
    _cmd: Bo<'d>,
    len: u64,
}

impl<'d> EmptyJob<'d> {
    pub fn new(d: &'d Device) -> Result<Self, String> {
        let (vm, queue) = vm_with_queue(d)?;
        let cmd = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(err("GEM_CREATE"))?;
        let end = CmdBuf::new().end().to_bytes();
        cmd.mmap()
            .and_then(|m| m.write(0, &end))
            .map_err(err("writing the command buffer"))?;
        let op = DrmMirageVmBindOp::map(cmd.handle(), 0, CMD_VA, SZ_4K);
        d.vm_bind(vm, 0, &[op], &[]).map_err(err("VM_BIND"))?;
        let out = d.syncobj_create(0).map_err(err("SYNCOBJ_CREATE"))?;
        Ok(Self {
            d,
            vm,
            queue,
            out,
            _cmd: cmd,
            len: end.len() as u64,
        })
    }

    /// A sync VM_BIND of `ops`.
    pub fn bind(&self, ops: &[DrmMirageVmBindOp]) -> Result<(), String> {
        self.d.vm_bind(self.vm, 0, ops, &[]).map_err(err("VM_BIND"))
    }

    /// An empty job, from EXEC to its fence: ns.
    pub fn exec(&self) -> Result<u64, String> {
        let (ns, r) = timed(|| -> io::Result<()> {
            self.d.exec(
                self.queue,
                CMD_VA,
                self.len,
                &[DrmMirageSync::signal(self.out)],
            )?;
            self.d.syncobj_wait(self.out, 0, i64::MAX)
        });
        r.map_err(err("EXEC"))?;
        Ok(ns)
    }
}

impl Drop for EmptyJob<'_> {
    fn drop(&mut self) {
        let _ = self.d.syncobj_destroy(self.out);
        let _ = self.d.exec_queue_destroy(self.queue);
        let _ = self.d.vm_destroy(self.vm);
    }
}
