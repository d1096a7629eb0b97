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
        let maplen = len
            .checked_add(delta)
            .ok_or(std::io::ErrorKind::InvalidInput)?;
        // SAFETY: a fresh shared mapping of a file QEMU handed us; nothing
        // else in this process refers to the address range it returns.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                maplen,
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
            owned: Some((addr, maplen)),
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
        let mut v = write_lock(&self.regions);
        let end = |x: &Region| x.iova.saturating_add(x.len);
        v.retain(|o| end(o) <= r.iova || end(&r) <= o.iova);
        v.push(r);
    }

    /// Unmaps every region that lies inside `[iova, iova + size)`.
    pub fn unmap(&self, iova: u64, size: u64) {
        let mut v = write_lock(&self.regions);
        v.retain(|r| {
            !(r.iova >= iova && r.iova.saturating_add(r.len) <= iova.saturating_add(size))
        });
    }

    pub fn clear(&self) {
        write_lock(&self.regions).clear();
    }

    /// Runs `f` with the host pieces (pointer, bytes) that back `[iova,
    /// iova + len)`, in order, while holding the regions lock: no DMA_UNMAP
    /// can take a piece away before `f` returns. `f` does not run at all if
    /// any byte is unmapped.
    fn with_pieces<R>(
        &self,
        iova: u64,
        len: usize,
        f: impl FnOnce(&[(*mut u8, usize)]) -> R,
    ) -> Result<R, DmaFault> {
        let v = read_lock(&self.regions);
        let mut pieces = Vec::with_capacity(1);
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
            pieces.push((unsafe { r.host.add(off) }, n));
            done += n;
        }
        Ok(f(&pieces))
    }

    /// Reads guest memory. Nothing is read if any byte is unmapped.
    pub fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        let dst = buf.as_mut_ptr();
        self.with_pieces(iova, buf.len(), |pieces| {
            let mut at = 0;
            for &(src, n) in pieces {
                // SAFETY: `src` has `n` readable bytes, kept mapped by the
                // lock with_pieces holds; `dst + at` has `n` writable bytes
                // because the pieces add up to `buf.len()`.
                unsafe { std::ptr::copy(src, dst.add(at), n) };
                at += n;
            }
        })
    }

    /// Writes guest memory. Nothing is written if any byte is unmapped,
    /// and the check and the copy happen under one lock.
    pub fn write(&self, iova: u64, buf: &[u8]) -> Result<(), DmaFault> {
        let src = buf.as_ptr();
        self.with_pieces(iova, buf.len(), |pieces| {
            let mut at = 0;
            for &(dst, n) in pieces {
                // SAFETY: as in `read`, with the roles swapped.
                unsafe { std::ptr::copy(src.add(at), dst, n) };
                at += n;
            }
        })
    }

    /// Runs `f` with a host pointer to the `len` bytes at `iova`, which must
    /// lie in one region, for accesses that must be one host operation
    /// (atomics). The pointer is valid for `len` bytes until `f` returns:
    /// the regions lock is held across `f`.
    pub fn with_host_ptr<R>(
        &self,
        iova: u64,
        len: usize,
        f: impl FnOnce(*mut u8) -> R,
    ) -> Result<R, DmaFault> {
        self.with_pieces(iova, len, |pieces| match pieces {
            [(p, _)] => Ok(f(*p)),
            // Split across regions: not one host operation.
            _ => Err(DmaFault { iova }),
        })?
    }
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().expect("guest memory lock poisoned by a panic")
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().expect("guest memory lock poisoned by a panic")
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
    fn unmap_waits_for_an_access_in_progress() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let mem = Arc::new(GuestMemory::default());
        let f = crate::memfd("dma-test", 4096).unwrap();
        mem.map_fd(0x1000, 4096, &f, 0).unwrap();
        let unmapped = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let t = {
            let (mem, unmapped) = (mem.clone(), unmapped.clone());
            std::thread::spawn(move || {
                rx.recv().unwrap();
                mem.unmap(0x1000, 4096);
                unmapped.store(true, Ordering::SeqCst);
            })
        };
        let r = mem.with_host_ptr(0x1008, 8, |p| {
            tx.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(50));
            // The mapping must still be there: this store would otherwise
            // hit an unmapped page.
            assert!(
                !unmapped.load(Ordering::SeqCst),
                "unmapped under the access"
            );
            // SAFETY: `p` is valid for 8 bytes while this closure runs.
            unsafe { p.cast::<u64>().write_unaligned(7) };
        });
        assert_eq!(r, Ok(()));
        t.join().unwrap();
        assert!(unmapped.load(Ordering::SeqCst));
        assert_eq!(
            mem.with_host_ptr(0x1008, 8, |_| ()),
            Err(DmaFault { iova: 0x1008 })
        );
    }

    #[test]
    fn host_ptr_access_must_lie_in_one_region() {
        let mem = GuestMemory::default();
        let mut a = vec![0u64; 1024];
        let mut b = vec![0u64; 1024];
        // SAFETY: the vectors outlive `mem`'s use below.
        unsafe {
            mem.map_host(0x1000, a.as_mut_ptr().cast(), 4096);
            mem.map_host(0x2000, b.as_mut_ptr().cast(), 4096);
        }
        assert!(mem.with_host_ptr(0x1ff8, 8, |_| ()).is_ok());
        assert_eq!(
            mem.with_host_ptr(0x1ffc, 8, |_| ()),
            Err(DmaFault { iova: 0x1ffc })
        );
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
