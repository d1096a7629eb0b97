//! Mirror of `include/uapi/drm/mirage_drm.h` and the bits of `drm.h` used.

/// `_IOC(dir, 'd', nr, size)` as in `include/uapi/asm-generic/ioctl.h`.
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((b'd' as u64) << 8) | nr
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

pub const DRM_COMMAND_BASE: u64 = 0x40;
pub const DRM_MIRAGE_GET_PARAM: u64 = 0x00;

pub const DRM_MIRAGE_PARAM_DEVICE_ID: u32 = 0;
pub const DRM_MIRAGE_PARAM_HW_VERSION: u32 = 1;
pub const DRM_MIRAGE_PARAM_VRAM_SIZE: u32 = 2;
pub const DRM_MIRAGE_PARAM_VA_BITS: u32 = 3;
pub const DRM_MIRAGE_PARAM_PAGE_SIZES: u32 = 4;
pub const DRM_MIRAGE_PARAM_HW_FEATURES: u32 = 5;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrmMirageGetParam {
    pub extensions: u64,
    pub param: u32,
    pub pad: u32,
    pub value: u64,
    pub reserved: [u64; 2],
}

pub const DRM_IOCTL_MIRAGE_GET_PARAM: u64 = ioc(
    IOC_READ | IOC_WRITE,
    DRM_COMMAND_BASE + DRM_MIRAGE_GET_PARAM,
    std::mem::size_of::<DrmMirageGetParam>(),
);

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

pub const DRM_IOCTL_VERSION: u64 = ioc(
    IOC_READ | IOC_WRITE,
    0x00,
    std::mem::size_of::<DrmVersion>(),
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_c_header() {
        assert_eq!(std::mem::size_of::<DrmMirageGetParam>(), 40);
        assert_eq!(std::mem::offset_of!(DrmMirageGetParam, param), 8);
        assert_eq!(std::mem::offset_of!(DrmMirageGetParam, value), 16);
        assert_eq!(std::mem::offset_of!(DrmMirageGetParam, reserved), 24);
        assert_eq!(DRM_IOCTL_MIRAGE_GET_PARAM, 0xc028_6440);
        assert_eq!(DRM_IOCTL_VERSION, 0xc040_6400);
    }
}
