// SPDX-License-Identifier: GPL-2.0 or MIT

//! What the device reports about itself, and `DRM_IOCTL_MIRAGE_GET_PARAM`.

use kernel::{prelude::*, uapi};

/// Device properties read once at probe; they never change while bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeviceInfo {
    /// PCI vendor ID in bits 31:16, device ID in 15:0.
    pub(crate) device_id: u32,
    /// Hardware version, major in bits 31:16, minor in 15:0.
    pub(crate) hw_version: u32,
    /// `DRM_MIRAGE_FEATURE_*` bits.
    pub(crate) features: u32,
    pub(crate) vram_size: u64,
    pub(crate) va_bits: u32,
    pub(crate) pgsize_bitmap: u32,
}

impl DeviceInfo {
    /// Validates a GET_PARAM request and returns the value it asks for.
    pub(crate) fn get_param(&self, args: &uapi::drm_mirage_get_param) -> Result<u64> {
        if args.extensions != 0 || args.pad != 0 || args.reserved.iter().any(|&r| r != 0) {
            return Err(EINVAL);
        }
        Ok(match args.param {
            uapi::drm_mirage_param_DRM_MIRAGE_PARAM_DEVICE_ID => self.device_id.into(),
            uapi::drm_mirage_param_DRM_MIRAGE_PARAM_HW_VERSION => self.hw_version.into(),
            uapi::drm_mirage_param_DRM_MIRAGE_PARAM_VRAM_SIZE => self.vram_size,
            uapi::drm_mirage_param_DRM_MIRAGE_PARAM_VA_BITS => self.va_bits.into(),
            uapi::drm_mirage_param_DRM_MIRAGE_PARAM_PAGE_SIZES => self.pgsize_bitmap.into(),
            uapi::drm_mirage_param_DRM_MIRAGE_PARAM_FEATURES => self.features.into(),
            _ => return Err(EINVAL),
        })
    }
}

#[cfg(CONFIG_DRM_MIRAGE_KUNIT_TEST)]
#[kunit_tests(mirage_uapi_get_param)]
mod tests {
    use super::*;

    const INFO: DeviceInfo = DeviceInfo {
        device_id: 0x1b36_4d47,
        hw_version: 0x0001_0002,
        features: 0x3,
        vram_size: 0x1_2345_6000,
        va_bits: 48,
        pgsize_bitmap: 0x4020_1000,
    };

    fn args(param: u32) -> uapi::drm_mirage_get_param {
        uapi::drm_mirage_get_param {
            extensions: 0,
            param,
            pad: 0,
            value: 0,
            reserved: [0; 2],
        }
    }

    #[test]
    fn every_param_reads_its_field() -> Result {
        let expect: [(u32, u64); 6] = [
            (
                uapi::drm_mirage_param_DRM_MIRAGE_PARAM_DEVICE_ID,
                0x1b36_4d47,
            ),
            (
                uapi::drm_mirage_param_DRM_MIRAGE_PARAM_HW_VERSION,
                0x0001_0002,
            ),
            (
                uapi::drm_mirage_param_DRM_MIRAGE_PARAM_VRAM_SIZE,
                0x1_2345_6000,
            ),
            (uapi::drm_mirage_param_DRM_MIRAGE_PARAM_VA_BITS, 48),
            (
                uapi::drm_mirage_param_DRM_MIRAGE_PARAM_PAGE_SIZES,
                0x4020_1000,
            ),
            (uapi::drm_mirage_param_DRM_MIRAGE_PARAM_FEATURES, 0x3),
        ];
        for (param, value) in expect {
            assert_eq!(INFO.get_param(&args(param))?, value);
        }
        Ok(())
    }

    #[test]
    fn unknown_param_is_einval() {
        assert_eq!(INFO.get_param(&args(6)), Err(EINVAL));
        assert_eq!(INFO.get_param(&args(u32::MAX)), Err(EINVAL));
    }

    #[test]
    fn nonzero_extensions_pad_or_reserved_is_einval() {
        let param = uapi::drm_mirage_param_DRM_MIRAGE_PARAM_VA_BITS;
        let mut a = args(param);
        a.extensions = 1;
        assert_eq!(INFO.get_param(&a), Err(EINVAL));
        let mut a = args(param);
        a.pad = 0x8000_0000;
        assert_eq!(INFO.get_param(&a), Err(EINVAL));
        for i in 0..2 {
            let mut a = args(param);
            a.reserved[i] = 1;
            assert_eq!(INFO.get_param(&a), Err(EINVAL));
        }
    }

    #[test]
    fn value_is_output_only() -> Result {
        let mut a = args(uapi::drm_mirage_param_DRM_MIRAGE_PARAM_VA_BITS);
        a.value = u64::MAX;
        assert_eq!(INFO.get_param(&a)?, 48);
        Ok(())
    }
}
