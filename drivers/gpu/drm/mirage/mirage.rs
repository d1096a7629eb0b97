// SPDX-License-Identifier: GPL-2.0 or MIT

//! mirage: Rust DRM driver for the mirage virtual GPU.
//!
//! The device is a PCI function served to QEMU over vfio-user by `tools/mirage-gpu`; see
//! `Documentation/gpu/mirage.rst`.

mod bind;
mod driver;
mod exec;
mod faults;
mod file;
mod gem;
mod gpu;
mod irq;
mod madvise;
mod mmu;
mod params;
mod regs;
mod reset;
mod selftest;
mod syncs;
mod vm;

kernel::module_pci_driver! {
    type: driver::MirageDriver,
    name: "mirage",
    authors: ["The mirage developers"],
    description: "Rust DRM driver for the mirage virtual GPU",
    license: "Dual MIT/GPL",
    params: {
        job_timeout_ms: u32 {
            default: 5000,
            description: "How long a job may run before it is killed and its exec queue banned",
        },
    },
}
