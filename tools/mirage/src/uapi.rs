//! Mirror of `include/uapi/drm/mirage_drm.h` and the bits of `drm.h` used.
//!
//! The test at the bottom checks every size, offset and constant here
//! against a C compiler's view of the header (see `build.rs`).

use std::mem::size_of;

pub const DRM_COMMAND_BASE: u64 = 0x40;
pub const DRM_MIRAGE_GET_PARAM: u64 = 0x00;

pub const DRM_MIRAGE_PARAM_DEVICE_ID: u32 = 0;
pub const DRM_MIRAGE_PARAM_HW_VERSION: u32 = 1;
pub const DRM_MIRAGE_PARAM_VRAM_SIZE: u32 = 2;
pub const DRM_MIRAGE_PARAM_VA_BITS: u32 = 3;
pub const DRM_MIRAGE_PARAM_PAGE_SIZES: u32 = 4;
pub const DRM_MIRAGE_PARAM_FEATURES: u32 = 5;

pub const DRM_MIRAGE_FEATURE_VRAM: u32 = 1 << 0;
pub const DRM_MIRAGE_FEATURE_PAGE_FAULTS: u32 = 1 << 1;
pub const DRM_MIRAGE_FEATURE_SYSMEM_ATOMICS: u32 = 1 << 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageGetParam {
    pub extensions: u64,
    pub param: u32,
    pub pad: u32,
    pub value: u64,
    pub reserved: [u64; 2],
}

// The kernel's request is an unsigned int; `as u32` keeps it so where nix's
// type is signed (musl), and `as u64` is what `crate::ioctl` takes.
pub const DRM_IOCTL_MIRAGE_GET_PARAM: u64 = nix::request_code_readwrite!(
    b'd',
    DRM_COMMAND_BASE + DRM_MIRAGE_GET_PARAM,
    size_of::<DrmMirageGetParam>()
) as u32 as u64;

/// `struct drm_version` from `drm.h`.
#[repr(C)]
#[derive(Debug)]
pub struct DrmVersion {
    pub version_major: i32,
    pub version_minor: i32,
    pub version_patchlevel: i32,
    pub name_len: usize,
    pub name: *mut u8,
    pub date_len: usize,
    pub date: *mut u8,
    pub desc_len: usize,
    pub desc: *mut u8,
}

pub const DRM_IOCTL_VERSION: u64 =
    nix::request_code_readwrite!(b'd', 0x00, size_of::<DrmVersion>()) as u32 as u64;

/// `struct drm_syncobj_create` from `drm.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmSyncobjCreate {
    pub handle: u32,
    pub flags: u32,
}

/// `struct drm_syncobj_destroy` from `drm.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmSyncobjDestroy {
    pub handle: u32,
    pub pad: u32,
}

/// `struct drm_syncobj_array` from `drm.h` (RESET, SIGNAL).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmSyncobjArray {
    pub handles: u64,
    pub count_handles: u32,
    pub pad: u32,
}

/// `struct drm_syncobj_timeline_array` from `drm.h` (QUERY, TIMELINE_SIGNAL).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmSyncobjTimelineArray {
    pub handles: u64,
    pub points: u64,
    pub count_handles: u32,
    pub flags: u32,
}

/// `struct drm_syncobj_timeline_wait` from `drm.h`. `timeout_nsec` is absolute
/// (CLOCK_MONOTONIC): 0 polls.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmSyncobjTimelineWait {
    pub handles: u64,
    pub points: u64,
    pub timeout_nsec: i64,
    pub count_handles: u32,
    pub flags: u32,
    pub first_signaled: u32,
    pub pad: u32,
    pub deadline_nsec: u64,
}

pub const DRM_SYNCOBJ_CREATE_SIGNALED: u32 = 1 << 0;
pub const DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL: u32 = 1 << 0;
pub const DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT: u32 = 1 << 1;

const fn drm_iowr(nr: u64, size: usize) -> u64 {
    nix::request_code_readwrite!(b'd', nr, size) as u32 as u64
}

pub const DRM_IOCTL_SYNCOBJ_CREATE: u64 = drm_iowr(0xbf, size_of::<DrmSyncobjCreate>());
pub const DRM_IOCTL_SYNCOBJ_DESTROY: u64 = drm_iowr(0xc0, size_of::<DrmSyncobjDestroy>());
pub const DRM_IOCTL_SYNCOBJ_RESET: u64 = drm_iowr(0xc4, size_of::<DrmSyncobjArray>());
pub const DRM_IOCTL_SYNCOBJ_SIGNAL: u64 = drm_iowr(0xc5, size_of::<DrmSyncobjArray>());
pub const DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT: u64 =
    drm_iowr(0xca, size_of::<DrmSyncobjTimelineWait>());
pub const DRM_IOCTL_SYNCOBJ_QUERY: u64 = drm_iowr(0xcb, size_of::<DrmSyncobjTimelineArray>());
pub const DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL: u64 =
    drm_iowr(0xcd, size_of::<DrmSyncobjTimelineArray>());

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn field_size<T, F>(_: impl Fn(&T) -> &F) -> usize {
        size_of::<F>()
    }

    /// Sizes and offsets of each mirrored struct and field, and the value of
    /// each constant, named as the C probe names them.
    fn rust_side() -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        macro_rules! layout {
            ($c:literal, $t:ty { $($f:ident),* $(,)? }) => {
                m.insert(format!("size {}", $c), size_of::<$t>() as u64);
                $(
                    m.insert(
                        format!("offset {}.{}", $c, stringify!($f)),
                        std::mem::offset_of!($t, $f) as u64,
                    );
                    m.insert(
                        format!("size {}.{}", $c, stringify!($f)),
                        field_size(|s: &$t| &s.$f) as u64,
                    );
                )*
            };
        }
        macro_rules! consts {
            ($($c:ident),* $(,)?) => {
                $( m.insert(stringify!($c).to_string(), $c as u64); )*
            };
        }
        layout!(
            "drm_version",
            DrmVersion {
                version_major,
                version_minor,
                version_patchlevel,
                name_len,
                name,
                date_len,
                date,
                desc_len,
                desc,
            }
        );
        layout!("drm_syncobj_create", DrmSyncobjCreate { handle, flags });
        layout!("drm_syncobj_destroy", DrmSyncobjDestroy { handle, pad });
        layout!(
            "drm_syncobj_array",
            DrmSyncobjArray {
                handles,
                count_handles,
                pad,
            }
        );
        layout!(
            "drm_syncobj_timeline_array",
            DrmSyncobjTimelineArray {
                handles,
                points,
                count_handles,
                flags,
            }
        );
        layout!(
            "drm_syncobj_timeline_wait",
            DrmSyncobjTimelineWait {
                handles,
                points,
                timeout_nsec,
                count_handles,
                flags,
                first_signaled,
                pad,
                deadline_nsec,
            }
        );
        layout!(
            "drm_mirage_get_param",
            DrmMirageGetParam {
                extensions,
                param,
                pad,
                value,
                reserved,
            }
        );
        consts!(
            DRM_COMMAND_BASE,
            DRM_IOCTL_VERSION,
            DRM_SYNCOBJ_CREATE_SIGNALED,
            DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL,
            DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT,
            DRM_IOCTL_SYNCOBJ_CREATE,
            DRM_IOCTL_SYNCOBJ_DESTROY,
            DRM_IOCTL_SYNCOBJ_RESET,
            DRM_IOCTL_SYNCOBJ_SIGNAL,
            DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT,
            DRM_IOCTL_SYNCOBJ_QUERY,
            DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL,
            DRM_MIRAGE_GET_PARAM,
            DRM_MIRAGE_PARAM_DEVICE_ID,
            DRM_MIRAGE_PARAM_HW_VERSION,
            DRM_MIRAGE_PARAM_VRAM_SIZE,
            DRM_MIRAGE_PARAM_VA_BITS,
            DRM_MIRAGE_PARAM_PAGE_SIZES,
            DRM_MIRAGE_PARAM_FEATURES,
            DRM_MIRAGE_FEATURE_VRAM,
            DRM_MIRAGE_FEATURE_PAGE_FAULTS,
            DRM_MIRAGE_FEATURE_SYSMEM_ATOMICS,
            DRM_IOCTL_MIRAGE_GET_PARAM,
        );
        m
    }

    #[cfg(mirage_uapi_probe)]
    fn c_side() -> BTreeMap<String, u64> {
        use std::ffi::{c_char, c_ulong, CStr};

        #[repr(C)]
        struct Entry {
            name: *const c_char,
            value: u64,
        }
        extern "C" {
            static mirage_probe: [Entry; 0];
            static mirage_probe_len: c_ulong;
        }
        // SAFETY: build.rs's probe defines `mirage_probe` as a const array
        // of `mirage_probe_len` entries of this layout, whose names are
        // string literals; nothing writes to them.
        let entries = unsafe {
            std::slice::from_raw_parts(
                std::ptr::addr_of!(mirage_probe).cast::<Entry>(),
                mirage_probe_len as usize,
            )
        };
        entries
            .iter()
            .map(|e| {
                // SAFETY: each name is a NUL-terminated string literal.
                let name = unsafe { CStr::from_ptr(e.name) };
                (name.to_string_lossy().into_owned(), e.value)
            })
            .collect()
    }

    #[cfg(mirage_uapi_probe)]
    #[test]
    fn layout_matches_the_c_header() {
        let (c, rust) = (c_side(), rust_side());
        let mut wrong = Vec::new();
        for (name, &cv) in &c {
            match rust.get(name) {
                Some(&rv) if rv == cv => {}
                Some(&rv) => wrong.push(format!("{name}: C {cv:#x}, Rust {rv:#x}")),
                None => wrong.push(format!("{name}: in the C header, not mirrored in uapi.rs")),
            }
        }
        for name in rust.keys().filter(|n| !c.contains_key(*n)) {
            wrong.push(format!("{name}: in uapi.rs, not in the C header"));
        }
        assert!(
            wrong.is_empty(),
            "uapi.rs differs from include/uapi/drm/mirage_drm.h:\n  {}",
            wrong.join("\n  ")
        );
    }

    #[cfg(not(mirage_uapi_probe))]
    #[test]
    fn layout_matches_the_c_header() {
        panic!(
            "the C probe of mirage_drm.h was not built: {}",
            env!("MIRAGE_UAPI_PROBE_ERROR")
        );
    }
}
