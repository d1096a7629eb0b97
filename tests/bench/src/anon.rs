//! Anonymous memory for the benchmarks that need the process's own pages
//! (userptrs, CPU-address mirrors).

use crate::{timed, SZ_4K};
use std::io;

/// Anonymous memory, unmapped on drop unless [`Anon::munmap`] did.
pub struct Anon {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Anon {
    /// `len` bytes, no page faulted in yet.
    pub fn new(len: u64) -> Result<Self, String> {
        // SAFETY: a new private anonymous mapping.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!("mmap: {}", io::Error::last_os_error()));
        }
        Ok(Self {
            ptr,
            len: len as usize,
        })
    }

    /// `len` bytes, every page written (faulted in).
    pub fn touched(len: u64) -> Result<Self, String> {
        let a = Self::new(len)?;
        a.touch();
        Ok(a)
    }

    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// Writes every page.
    pub fn touch(&self) {
        for off in (0..self.len).step_by(SZ_4K as usize) {
            // SAFETY: in bounds of the mapping, which is ours.
            unsafe { self.ptr.cast::<u8>().add(off).write_volatile(1) };
        }
    }

    pub fn dontneed(&self) -> Result<(), String> {
        // SAFETY: the pages are ours.
        match unsafe { libc::madvise(self.ptr, self.len, libc::MADV_DONTNEED) } {
            0 => Ok(()),
            _ => Err(format!("madvise: {}", io::Error::last_os_error())),
        }
    }

    /// munmap of `[addr, addr + len)`, a part of the mapping; the drop
    /// unmaps the rest.
    pub fn unmap(&self, addr: u64, len: u64) -> Result<(), String> {
        // SAFETY: a part of our mapping, which nothing refers to.
        match unsafe { libc::munmap(addr as *mut libc::c_void, len as usize) } {
            0 => Ok(()),
            _ => Err(format!("munmap: {}", io::Error::last_os_error())),
        }
    }

    /// A new mapping in place of `[addr, addr + len)`, a part of the mapping
    /// (mmap with MAP_FIXED: what was there is unmapped first).
    pub fn remap(&self, addr: u64, len: u64) -> Result<(), String> {
        // SAFETY: a part of our mapping, which nothing refers to, replaced by
        // new anonymous memory that the drop unmaps with the rest.
        let ptr = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!("mmap: {}", io::Error::last_os_error()));
        }
        Ok(())
    }

    /// munmap, timed.
    pub fn munmap(mut self) -> Result<u64, String> {
        // SAFETY: the mapping is ours; nothing refers to it after.
        let (ns, r) = timed(|| unsafe { libc::munmap(self.ptr, self.len) });
        self.len = 0;
        match r {
            0 => Ok(ns),
            _ => Err(format!("munmap: {}", io::Error::last_os_error())),
        }
    }
}

impl Drop for Anon {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: as in `munmap`.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}
