//! Device memory ("VRAM"): a memfd QEMU maps straight into BAR2, which the
//! device also maps to serve trapped accesses.

use std::fs::File;
use std::os::fd::AsRawFd;

pub struct Vram {
    file: File,
    base: *mut u8,
    size: usize,
}

// SAFETY: `base` is a shared mapping owned by `Vram` for its whole life;
// concurrent access is device-memory semantics, done with byte copies.
unsafe impl Send for Vram {}
// SAFETY: as above.
unsafe impl Sync for Vram {}

impl Vram {
    pub fn new(size: u64) -> std::io::Result<Self> {
        if size == 0 || !size.is_power_of_two() || size < 4096 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "VRAM size must be a power of two of at least 4 KiB (it is a PCI BAR)",
            ));
        }
        let file = crate::memfd("mirage-vram", size)?;
        let len = usize::try_from(size).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // SAFETY: a fresh shared mapping of our own memfd.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Vram {
            file,
            base: base.cast(),
            size: len,
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn size(&self) -> u64 {
        self.size as u64
    }

    /// Reads at `off`; bytes past the end read as zero.
    pub fn read(&self, off: u64, data: &mut [u8]) {
        data.fill(0);
        let off = off as usize;
        if off < self.size {
            let n = data.len().min(self.size - off);
            // SAFETY: `off + n <= size`, inside the mapping.
            unsafe { std::ptr::copy(self.base.add(off), data.as_mut_ptr(), n) };
        }
    }

    /// Host pointer to `len` bytes at `off`, if they lie inside VRAM.
    pub fn host_ptr(&self, off: u64, len: usize) -> Option<*mut u8> {
        let end = off.checked_add(len as u64)?;
        // SAFETY: `off + len <= size`, inside the mapping.
        (end <= self.size as u64).then(|| unsafe { self.base.add(off as usize) })
    }

    /// Writes at `off`; bytes past the end are dropped.
    pub fn write(&self, off: u64, data: &[u8]) {
        let off = off as usize;
        if off < self.size {
            let n = data.len().min(self.size - off);
            // SAFETY: `off + n <= size`, inside the mapping.
            unsafe { std::ptr::copy(data.as_ptr(), self.base.add(off), n) };
        }
    }
}

impl Drop for Vram {
    fn drop(&mut self) {
        // SAFETY: `base`/`size` are the mapping made in `new`.
        unsafe { libc::munmap(self.base.cast(), self.size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trapped_accesses_and_the_shared_file_agree() {
        use std::os::unix::fs::FileExt;
        let v = Vram::new(64 << 10).unwrap();
        v.write(0x100, b"vram");
        let mut buf = [0u8; 4];
        v.file().read_exact_at(&mut buf, 0x100).unwrap();
        assert_eq!(&buf, b"vram");
        v.file().write_all_at(b"bar2", 0xfffc).unwrap();
        let mut buf = [0xffu8; 8];
        v.read(0xfffc, &mut buf);
        assert_eq!(&buf, b"bar2\0\0\0\0");
    }

    #[test]
    fn sizes_must_be_bar_shaped() {
        assert!(Vram::new(0).is_err());
        assert!(Vram::new(3 << 20).is_err());
        assert!(Vram::new(2048).is_err());
        assert_eq!(Vram::new(1 << 20).unwrap().size(), 1 << 20);
    }
}
