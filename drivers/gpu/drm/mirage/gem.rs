// SPDX-License-Identifier: GPL-2.0 or MIT

//! shmem-backed GEM objects.

use kernel::{
    drm::gem::{self, shmem},
    prelude::*,
};

use crate::driver::{MirageDevice, MirageDriver};

/// Driver data of a mirage buffer object.
#[pin_data]
pub(crate) struct BoData {}

impl gem::DriverObject for BoData {
    type Driver = MirageDriver;
    type Args = ();

    fn new(_dev: &MirageDevice, _size: usize, _args: ()) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {})
    }
}

pub(crate) type Bo = shmem::Object<BoData>;
