//! mirage's virtual GPU: a PCI device model served to QEMU over vfio-user.
//!
//! The model ([`device::Gpu`]) knows nothing of vfio-user; [`server`]
//! adapts it, and the host tests drive it directly. With the `rig` feature,
//! [`rig`] is a driver's-eye harness for tests and benchmarks.

pub mod bus;
pub mod control;
pub mod device;
pub mod dma;
pub mod irq;
pub mod isa;
pub mod mmu;
pub mod pci;
pub mod regs;
#[cfg(feature = "rig")]
pub mod rig;
pub mod server;
pub mod vram;

use std::fs::File;
use std::os::fd::FromRawFd;

/// Creates an anonymous shared-memory file of `size` bytes.
pub fn memfd(name: &str, size: u64) -> std::io::Result<File> {
    let cname = std::ffi::CString::new(name).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: `cname` is a valid NUL-terminated string.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)?;
    Ok(file)
}

/// Parses a size such as `4096`, `64K`, `64M` or `1G`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, shift) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 10),
        (i, 'M' | 'm') => (&s[..i], 20),
        (i, 'G' | 'g') => (&s[..i], 30),
        _ => (s, 0),
    };
    num.parse::<u64>().ok()?.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(super::parse_size("4096"), Some(4096));
        assert_eq!(super::parse_size("64M"), Some(64 << 20));
        assert_eq!(super::parse_size("2g"), Some(2 << 30));
        assert_eq!(super::parse_size("12K"), Some(12 << 10));
        assert_eq!(super::parse_size("M"), None);
        assert_eq!(super::parse_size("-1M"), None);
        assert_eq!(super::parse_size(""), None);
        assert_eq!(super::parse_size("99999999999G"), None);
    }
}
