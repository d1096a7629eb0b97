//! The device's view of guest memory: the IOVA ranges QEMU maps with
//! DMA_MAP, each backed by a shared mmap of guest RAM.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::RwLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaFault {
    /// First IOVA of the access that is not mapped.
    pub iova: u64,
}

struct Region {
    iova: u64,
    len: u64,
    host: *mut u8,
    /// The mapping this region owns, unmapped on drop (None: borrowed test memory).
    owned: Option<(*mut libc::c_void, usize)>,
}

// SAFETY: `host` points into a shared mapping that lives as long as the
// region; concurrent access to guest memory is racy by nature, as for a real
// device, and is done with plain byte copies.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Drop for Region {
    fn drop(&mut self) {
        if let Some((addr, len)) = self.owned {
            // SAFETY: `addr`/`len` are exactly what mmap returned for this region.
            unsafe { libc::munmap(addr, len) };
        }
    }
}

#[derive(Default)]
pub struct GuestMemory {
    regions: RwLock<Vec<Region>>,
}

impl GuestMemory {
    /// Maps `size` bytes of `fd` at `offset` as IOVA `iova`.
    pub fn map_fd(&self, iova: u64, size: u64, fd: &File, offset: u64) -> std::io::Result<()> {
        let len = usize::try_from(size).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        let page = 4096u64;
        let aligned = offset & !(page - 1);
        let delta = (offset - aligned) as usize;
        // SAFETY: a fresh shared mapping of a file QEMU handed us; nothing
        // else in this process refers to the address range it returns.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len + delta,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                aligned as libc::off_t,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `delta` is within the mapping just made.
        let host = unsafe { addr.cast::<u8>().add(delta) };
        self.insert(Region {
            iova,
            len: size,
            host,
            owned: Some((addr, len + delta)),
        });
        Ok(())
    }

    /// Maps caller-owned memory; for tests.
    ///
    /// # Safety
    ///
    /// `host` must be valid for reads and writes of `len` bytes for as long
    /// as the mapping exists.
    pub unsafe fn map_host(&self, iova: u64, host: *mut u8, len: u64) {
        self.insert(Region {
            iova,
            len,
            host,
            owned: None,
        });
    }

    fn insert(&self, r: Region) {
        let mut v = self.regions.write().unwrap_or_else(|e| e.into_inner());
        v.retain(|o| o.iova + o.len <= r.iova || r.iova + r.len <= o.iova);
        v.push(r);
    }

    /// Unmaps every region that lies inside `[iova, iova + size)`.
    pub fn unmap(&self, iova: u64, size: u64) {
        let mut v = self.regions.write().unwrap_or_else(|e| e.into_inner());
        v.retain(|r| !(r.iova >= iova && r.iova + r.len <= iova.saturating_add(size)));
    }

    pub fn clear(&self) {
        self.regions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Splits `[iova, iova + len)` into host pieces and calls `f` with each
    /// piece's pointer and its offset in the access.
    fn for_each(
        &self,
        iova: u64,
        len: usize,
        mut f: impl FnMut(*mut u8, usize, usize),
    ) -> Result<(), DmaFault> {
        let v = self.regions.read().unwrap_or_else(|e| e.into_inner());
        let mut done = 0usize;
        while done < len {
            let at = iova.checked_add(done as u64).ok_or(DmaFault { iova })?;
            let r = v
                .iter()
                .find(|r| at >= r.iova && at - r.iova < r.len)
                .ok_or(DmaFault { iova: at })?;
            let off = (at - r.iova) as usize;
            let n = (len - done).min(r.len as usize - off);
            // SAFETY: `off + n <= r.len`, so the piece is inside the region.
            f(unsafe { r.host.add(off) }, done, n);
            done += n;
        }
        Ok(())
    }

    /// Reads guest memory. Nothing is read if any byte is unmapped.
    pub fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        self.check(iova, buf.len())?;
        let dst = buf.as_mut_ptr();
        self.for_each(iova, buf.len(), |src, at, n| {
            // SAFETY: `src` has `n` readable bytes (for_each); `dst + at` has
            // `n` writable bytes because `at + n <= buf.len()`.
            unsafe { std::ptr::copy(src, dst.add(at), n) }
        })
    }

    /// Writes guest memory. Nothing is written if any byte is unmapped.
    pub fn write(&self, iova: u64, buf: &[u8]) -> Result<(), DmaFault> {
        self.check(iova, buf.len())?;
        let src = buf.as_ptr();
        self.for_each(iova, buf.len(), |dst, at, n| {
            // SAFETY: as in `read`, with the roles swapped.
            unsafe { std::ptr::copy(src.add(at), dst, n) }
        })
    }

    /// Host pointer to `len` bytes at `iova`, which must lie in one region.
    /// The pointer stays valid until the region is unmapped; callers use it
    /// at once, for accesses that must be single host operations (atomics).
    pub fn host_ptr(&self, iova: u64, len: usize) -> Result<*mut u8, DmaFault> {
        let v = self.regions.read().unwrap_or_else(|e| e.into_inner());
        let r = v
            .iter()
            .find(|r| iova >= r.iova && iova - r.iova < r.len)
            .ok_or(DmaFault { iova })?;
        let off = iova - r.iova;
        if off + len as u64 > r.len {
            return Err(DmaFault {
                iova: r.iova + r.len,
            });
        }
        // SAFETY: `off + len <= r.len`, inside the region.
        Ok(unsafe { r.host.add(off as usize) })
    }

    fn check(&self, iova: u64, len: usize) -> Result<(), DmaFault> {
        self.for_each(iova, len, |_, _, _| {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_span_adjacent_regions() {
        let mem = GuestMemory::default();
        let mut a = vec![0u8; 4096];
        let mut b = vec![0u8; 4096];
        // SAFETY: the vectors outlive `mem`'s use below.
        unsafe {
            mem.map_host(0x1000, a.as_mut_ptr(), 4096);
            mem.map_host(0x2000, b.as_mut_ptr(), 4096);
        }
        let data: Vec<u8> = (0..32).collect();
        mem.write(0x1ff0, &data).unwrap();
        let mut back = [0u8; 32];
        mem.read(0x1ff0, &mut back).unwrap();
        assert_eq!(&back[..], &data[..]);
        drop(mem);
        assert_eq!(&a[0xff0..], &data[..16]);
        assert_eq!(&b[..16], &data[16..]);
    }

    #[test]
    fn unmapped_access_faults_and_touches_nothing() {
        let mem = GuestMemory::default();
        let mut a = vec![0u8; 4096];
        // SAFETY: `a` outlives `mem`'s use below.
        unsafe { mem.map_host(0x1000, a.as_mut_ptr(), 4096) };
        assert_eq!(mem.write(0x1ff8, &[1; 16]), Err(DmaFault { iova: 0x2000 }));
        assert_eq!(mem.read(0x500, &mut [0; 4]), Err(DmaFault { iova: 0x500 }));
        mem.unmap(0x1000, 4096);
        assert_eq!(
            mem.read(0x1000, &mut [0; 4]),
            Err(DmaFault { iova: 0x1000 })
        );
        drop(mem);
        assert!(a.iter().all(|&x| x == 0));
    }

    #[test]
    fn memfd_mapping_shares_bytes_with_the_file() {
        use std::io::{Read, Seek, Write};
        let mut f = crate::memfd("dma-test", 3 * 4096).unwrap();
        let mem = GuestMemory::default();
        mem.map_fd(0x10_0000, 2 * 4096, &f, 4096).unwrap();
        mem.write(0x10_0010, b"mirage").unwrap();
        let mut buf = [0u8; 6];
        f.seek(std::io::SeekFrom::Start(4096 + 0x10)).unwrap();
        f.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"mirage");
        f.seek(std::io::SeekFrom::Start(4096 + 0x20)).unwrap();
        f.write_all(b"guest").unwrap();
        let mut buf = [0u8; 5];
        mem.read(0x10_0020, &mut buf).unwrap();
        assert_eq!(&buf, b"guest");
    }
}
