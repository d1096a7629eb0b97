// SPDX-License-Identifier: GPL-2.0 or MIT

//! Per-client state and ioctls.

use kernel::{
    drm::{self, Registered},
    prelude::*,
    uapi,
};

use crate::driver::{MirageDevice, MirageDriver, MirageRegData};

#[pin_data]
pub(crate) struct MirageFile {}

pub(crate) type DrmFile = drm::file::File<MirageFile>;

impl drm::file::DriverFile for MirageFile {
    type Driver = MirageDriver;

    fn open(_dev: &drm::Device<Self::Driver>) -> Result<Pin<KBox<Self>>> {
        KBox::try_pin_init(try_pin_init!(Self {}), GFP_KERNEL)
    }
}

impl MirageFile {
    /// `DRM_IOCTL_MIRAGE_GET_PARAM`.
    pub(crate) fn get_param(
        dev: &MirageDevice<Registered>,
        _reg: &MirageRegData<'_>,
        args: &mut uapi::drm_mirage_get_param,
        _file: &DrmFile,
    ) -> Result<u32> {
        args.value = dev.info.get_param(args)?;
        Ok(0)
    }
}
