// SPDX-License-Identifier: GPL-2.0 or MIT

//! mirage: Rust DRM driver for the mirage virtual GPU.
//!
//! The device is a PCI function served to QEMU over vfio-user by `tools/mirage-gpu`; see
//! `Documentation/gpu/mirage.rst`.

mod bind;
mod driver;
mod file;
mod gem;
mod irq;
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
}
