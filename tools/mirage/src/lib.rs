//! Userspace access to the mirage DRM driver: finding its render node and
//! typed wrappers for each ioctl of `include/uapi/drm/mirage_drm.h`.

pub mod uapi;

// build.rs's header parser, here for its unit tests.
#[cfg(test)]
#[path = "../build/uapi_header.rs"]
mod uapi_header;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use uapi::*;

/// An open mirage render node.
pub struct Device {
    file: File,
    path: PathBuf,
}

/// Name, version and description the DRM driver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverVersion {
    pub name: String,
    pub desc: String,
    pub major: i32,
    pub minor: i32,
    pub patchlevel: i32,
}

/// Issues `ioctl(fd, req, arg)`, retrying on EINTR/EAGAIN as libdrm does.
///
/// # Safety
///
/// `arg` must point to the argument type `req` encodes.
pub unsafe fn ioctl<T>(fd: &File, req: u64, arg: *mut T) -> io::Result<()> {
    loop {
        // SAFETY: the caller guarantees `arg` matches `req`.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) {
            return Err(e);
        }
    }
}

impl Device {
    /// Opens `path` and checks that the mirage driver is behind it.
    pub fn open_path(path: &Path) -> io::Result<Device> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let dev = Device {
            file,
            path: path.to_path_buf(),
        };
        if dev.version()?.name != "mirage" {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "not a mirage device",
            ));
        }
        Ok(dev)
    }

    /// Opens the first render node driven by mirage.
    pub fn open() -> io::Result<Device> {
        let mut nodes: Vec<PathBuf> = std::fs::read_dir("/dev/dri")?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("renderD"))
            })
            .collect();
        nodes.sort();
        nodes
            .iter()
            .find_map(|p| Device::open_path(p).ok())
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "no mirage render node in /dev/dri")
            })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn version(&self) -> io::Result<DriverVersion> {
        let mut name = [0u8; 64];
        let mut desc = [0u8; 128];
        let mut date = [0u8; 64];
        let mut v = DrmVersion {
            version_major: 0,
            version_minor: 0,
            version_patchlevel: 0,
            name_len: name.len(),
            name: name.as_mut_ptr(),
            date_len: date.len(),
            date: date.as_mut_ptr(),
            desc_len: desc.len(),
            desc: desc.as_mut_ptr(),
        };
        // SAFETY: `v` is a `drm_version` whose buffers outlive the call.
        unsafe { ioctl(&self.file, DRM_IOCTL_VERSION, &mut v)? };
        let s = |b: &[u8], n: usize| String::from_utf8_lossy(&b[..n.min(b.len())]).into_owned();
        Ok(DriverVersion {
            name: s(&name, v.name_len),
            desc: s(&desc, v.desc_len),
            major: v.version_major,
            minor: v.version_minor,
            patchlevel: v.version_patchlevel,
        })
    }

    /// `DRM_IOCTL_MIRAGE_GET_PARAM` with a raw argument, for tests of validation.
    pub fn get_param_raw(&self, args: &mut DrmMirageGetParam) -> io::Result<()> {
        // SAFETY: `args` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_MIRAGE_GET_PARAM, args) }
    }

    /// Creates a syncobj (`DRM_SYNCOBJ_CREATE_SIGNALED` starts it signalled).
    pub fn syncobj_create(&self, flags: u32) -> io::Result<u32> {
        let mut a = DrmSyncobjCreate { handle: 0, flags };
        // SAFETY: `a` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_SYNCOBJ_CREATE, &mut a)? };
        Ok(a.handle)
    }

    pub fn syncobj_destroy(&self, handle: u32) -> io::Result<()> {
        let mut a = DrmSyncobjDestroy { handle, pad: 0 };
        // SAFETY: `a` is the argument type of the request.
        unsafe { ioctl(&self.file, DRM_IOCTL_SYNCOBJ_DESTROY, &mut a) }
    }

    /// Signals point `point` of `handle`'s timeline from the CPU (0: a binary syncobj).
    pub fn syncobj_timeline_signal(&self, handle: u32, point: u64) -> io::Result<()> {
        let (handles, points) = ([handle], [point]);
        let mut a = DrmSyncobjTimelineArray {
            handles: handles.as_ptr() as u64,
            points: points.as_ptr() as u64,
            count_handles: 1,
            flags: 0,
        };
        // SAFETY: `a` is the argument type of the request; its arrays outlive the call.
        unsafe { ioctl(&self.file, DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL, &mut a) }
    }

    /// The last signalled point of `handle`'s timeline.
    pub fn syncobj_query(&self, handle: u32) -> io::Result<u64> {
        let handles = [handle];
        let mut points = [0u64];
        let mut a = DrmSyncobjTimelineArray {
            handles: handles.as_ptr() as u64,
            points: points.as_mut_ptr() as u64,
            count_handles: 1,
            flags: 0,
        };
        // SAFETY: `a` is the argument type of the request; its arrays outlive the call.
        unsafe { ioctl(&self.file, DRM_IOCTL_SYNCOBJ_QUERY, &mut a)? };
        Ok(points[0])
    }

    /// Waits until point `point` of `handle` signals or the absolute CLOCK_MONOTONIC time
    /// `deadline_ns` passes (0 polls): `ETIME` then. A point with no fence yet is waited for
    /// (WAIT_FOR_SUBMIT), as a job's out-syncobj would be.
    pub fn syncobj_wait(&self, handle: u32, point: u64, deadline_ns: i64) -> io::Result<()> {
        let (handles, points) = ([handle], [point]);
        let mut a = DrmSyncobjTimelineWait {
            handles: handles.as_ptr() as u64,
            points: points.as_ptr() as u64,
            timeout_nsec: deadline_ns,
            count_handles: 1,
            flags: DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL | DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT,
            ..Default::default()
        };
        // SAFETY: `a` is the argument type of the request; its arrays outlive the call.
        unsafe { ioctl(&self.file, DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT, &mut a) }
    }

    /// Resets a binary syncobj to unsignalled (it holds no fence).
    pub fn syncobj_reset(&self, handle: u32) -> io::Result<()> {
        let handles = [handle];
        let mut a = DrmSyncobjArray {
            handles: handles.as_ptr() as u64,
            count_handles: 1,
            pad: 0,
        };
        // SAFETY: `a` is the argument type of the request; its array outlives the call.
        unsafe { ioctl(&self.file, DRM_IOCTL_SYNCOBJ_RESET, &mut a) }
    }

    pub fn get_param(&self, param: u32) -> io::Result<u64> {
        let mut a = DrmMirageGetParam {
            param,
            ..Default::default()
        };
        self.get_param_raw(&mut a)?;
        Ok(a.value)
    }
}

/// What `mirage info` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub driver: DriverVersion,
    pub device_id: u32,
    pub hw_version: u32,
    pub vram_size: u64,
    pub va_bits: u32,
    pub page_sizes: u64,
    pub features: u32,
}

impl Info {
    pub fn query(dev: &Device) -> io::Result<Info> {
        Ok(Info {
            driver: dev.version()?,
            device_id: dev.get_param(DRM_MIRAGE_PARAM_DEVICE_ID)? as u32,
            hw_version: dev.get_param(DRM_MIRAGE_PARAM_HW_VERSION)? as u32,
            vram_size: dev.get_param(DRM_MIRAGE_PARAM_VRAM_SIZE)?,
            va_bits: dev.get_param(DRM_MIRAGE_PARAM_VA_BITS)? as u32,
            page_sizes: dev.get_param(DRM_MIRAGE_PARAM_PAGE_SIZES)?,
            features: dev.get_param(DRM_MIRAGE_PARAM_FEATURES)? as u32,
        })
    }
}

/// Formats a `DRM_MIRAGE_FEATURE_*` mask as "vram page-faults sysmem-atomics"; unknown bits
/// in hex.
pub fn features_str(mask: u32) -> String {
    let names = [
        (DRM_MIRAGE_FEATURE_VRAM, "vram"),
        (DRM_MIRAGE_FEATURE_PAGE_FAULTS, "page-faults"),
        (DRM_MIRAGE_FEATURE_SYSMEM_ATOMICS, "sysmem-atomics"),
    ];
    let known = names.iter().fold(0, |m, (bit, _)| m | bit);
    let mut words: Vec<String> = names
        .iter()
        .filter(|(bit, _)| mask & bit != 0)
        .map(|(_, name)| name.to_string())
        .collect();
    if mask & !known != 0 {
        words.push(format!("{:#x}", mask & !known));
    }
    if words.is_empty() {
        words.push("none".into());
    }
    words.join(" ")
}

/// Formats a page-size bitmap as "4K 2M 1G".
pub fn page_sizes_str(bitmap: u64) -> String {
    (0..64)
        .filter(|b| bitmap & (1 << b) != 0)
        .map(|b| match b {
            30.. => format!("{}G", 1u64 << (b - 30)),
            20.. => format!("{}M", 1u64 << (b - 20)),
            10.. => format!("{}K", 1u64 << (b - 10)),
            _ => format!("{}", 1u64 << b),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl std::fmt::Display for Info {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.driver;
        writeln!(
            f,
            "driver:      {} {}.{}.{} ({})",
            d.name, d.major, d.minor, d.patchlevel, d.desc
        )?;
        writeln!(
            f,
            "device:      {:04x}:{:04x}",
            self.device_id >> 16,
            self.device_id & 0xffff
        )?;
        writeln!(
            f,
            "hw version:  {}.{}",
            self.hw_version >> 16,
            self.hw_version & 0xffff
        )?;
        writeln!(f, "vram:        {} MiB", self.vram_size >> 20)?;
        writeln!(f, "va bits:     {}", self.va_bits)?;
        writeln!(f, "page sizes:  {}", page_sizes_str(self.page_sizes))?;
        write!(f, "features:    {}", features_str(self.features))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn page_sizes_print_with_units() {
        assert_eq!(super::page_sizes_str(0x4020_1000), "4K 2M 1G");
        assert_eq!(super::page_sizes_str(0), "");
        assert_eq!(super::page_sizes_str(0x10), "16");
    }

    #[test]
    fn features_print_by_name() {
        assert_eq!(super::features_str(0x7), "vram page-faults sysmem-atomics");
        assert_eq!(super::features_str(0x2), "page-faults");
        assert_eq!(super::features_str(0), "none");
        assert_eq!(super::features_str(0x9), "vram 0x8");
    }
}
