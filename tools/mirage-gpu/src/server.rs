//! vfio-user glue: the `vfio_user` crate's [`ServerBackend`] over the model.
//!
//! The crate's backend is single-threaded (`&mut self`), and QEMU waits on
//! every message, so nothing here may wait for a job: jobs run on engine
//! threads that share the [`Gpu`] through an `Arc`.

use crate::device::{Config, Gpu};
use crate::dma::GuestMemory;
use crate::irq::EventfdIrqs;
use crate::pci::{ConfigSpace, CONFIG_SIZE};
use crate::regs;
use crate::vram::Vram;
use log::{debug, info};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use vfio_bindings::bindings::vfio::*;
use vfio_user::{IrqInfo, ServerBackend, ServerRegion, SparseArea};

pub struct Backend {
    config: ConfigSpace,
    pub gpu: Arc<Gpu>,
    pub irqs: Arc<EventfdIrqs>,
    pub mem: Arc<GuestMemory>,
    pub vram: Arc<Vram>,
}

impl Backend {
    pub fn new(cfg: Config) -> std::io::Result<Self> {
        let vram = Arc::new(Vram::new(cfg.vram_size)?);
        let irqs = Arc::new(EventfdIrqs::default());
        let mem = Arc::new(GuestMemory::default());
        let gpu = Arc::new(Gpu::new(cfg, irqs.clone(), mem.clone(), vram.clone()));
        Ok(Backend {
            config: ConfigSpace::new(cfg.vram_size),
            gpu,
            irqs,
            mem,
            vram,
        })
    }

    /// The regions to hand to `vfio_user::Server::new`.
    pub fn regions(&self) -> Vec<ServerRegion> {
        (0..VFIO_PCI_NUM_REGIONS)
            .map(|index| {
                let mut info = vfio_region_info {
                    argsz: std::mem::size_of::<vfio_region_info>() as u32,
                    index,
                    ..Default::default()
                };
                let rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
                let mut sparse_areas = Vec::new();
                let mut mmap_fd = None;
                match index {
                    VFIO_PCI_CONFIG_REGION_INDEX => {
                        info.size = CONFIG_SIZE as u64;
                        info.flags = rw;
                    }
                    VFIO_PCI_BAR0_REGION_INDEX => {
                        info.size = regs::BAR0_SIZE;
                        info.flags = rw;
                    }
                    VFIO_PCI_BAR2_REGION_INDEX => {
                        info.size = self.vram.size();
                        info.flags = rw | VFIO_REGION_INFO_FLAG_MMAP;
                        sparse_areas.push(SparseArea {
                            area: vfio_region_sparse_mmap_area {
                                offset: 0,
                                size: self.vram.size(),
                            },
                        });
                        mmap_fd = Some(self.vram.file().as_raw_fd());
                    }
                    _ => {}
                }
                ServerRegion {
                    region_info: info,
                    sparse_areas,
                    mmap_fd,
                }
            })
            .collect()
    }

    pub fn irqs_info() -> Vec<IrqInfo> {
        (0..VFIO_PCI_NUM_IRQS)
            .map(|index| IrqInfo {
                index,
                count: if index == VFIO_PCI_MSIX_IRQ_INDEX {
                    u32::from(regs::MSIX_VECTORS)
                } else {
                    0
                },
                flags: if index == VFIO_PCI_MSIX_IRQ_INDEX {
                    VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE
                } else {
                    0
                },
            })
            .collect()
    }
}

impl ServerBackend for Backend {
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> std::io::Result<()> {
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX => self.config.read(offset, data),
            VFIO_PCI_BAR0_REGION_INDEX => self.gpu.mmio_read(offset, data),
            // QEMU unmaps BARs while INTx is pending under TCG, so BAR2 is
            // also served through messages.
            VFIO_PCI_BAR2_REGION_INDEX => self.vram.read(offset, data),
            _ => data.fill(0),
        }
        Ok(())
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> std::io::Result<()> {
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX => {
                self.config.write(offset, data);
                // The model must see Bus Master Enable: clear, it may not DMA.
                self.gpu.set_bus_master(self.config.bus_master());
            }
            VFIO_PCI_BAR0_REGION_INDEX => self.gpu.mmio_write(offset, data),
            VFIO_PCI_BAR2_REGION_INDEX => self.vram.write(offset, data),
            _ => {}
        }
        Ok(())
    }

    fn dma_map(
        &mut self,
        flags: vfio_user::DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> std::io::Result<()> {
        debug!("dma_map iova={address:#x} size={size:#x} offset={offset:#x} flags={flags:?}");
        match fd {
            Some(fd) => self.mem.map_fd(address, size, &fd, offset),
            // QEMU sends such maps for RAM it cannot share (not a memfd
            // backend with share=on): DMA there will fault.
            None => {
                info!(
                    "dma_map iova={address:#x} size={size:#x} without an fd: not reachable by DMA"
                );
                Ok(())
            }
        }
    }

    fn dma_unmap(
        &mut self,
        flags: vfio_user::DmaUnmapFlags,
        address: u64,
        size: u64,
    ) -> std::io::Result<()> {
        debug!("dma_unmap iova={address:#x} size={size:#x} flags={flags:?}");
        if flags.contains(vfio_user::DmaUnmapFlags::UNMAP_ALL) {
            self.mem.clear();
        } else {
            self.mem.unmap(address, size);
        }
        Ok(())
    }

    fn reset(&mut self) -> std::io::Result<()> {
        info!("device reset");
        self.gpu.reset();
        Ok(())
    }

    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> std::io::Result<()> {
        debug!(
            "set_irqs index={index} flags={flags:#x} start={start} count={count} fds={}",
            fds.len()
        );
        if index != VFIO_PCI_MSIX_IRQ_INDEX || flags & VFIO_IRQ_SET_ACTION_TRIGGER == 0 {
            return Ok(());
        }
        if flags & VFIO_IRQ_SET_DATA_EVENTFD != 0 {
            // QEMU sends one fd per vector it wires up; vectors without an
            // fd in this message are disabled.
            let mut v: Vec<Option<File>> = fds.into_iter().map(Some).collect();
            v.resize_with(count as usize, || None);
            self.irqs.set(start, v);
        } else if count == 0 {
            self.irqs.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_writes_reach_the_model_bus_master_bit() {
        let mut b = Backend::new(Config {
            vram_size: 1 << 20,
            ..Config::default()
        })
        .unwrap();
        assert!(!b.gpu.bus.master());
        b.region_write(VFIO_PCI_CONFIG_REGION_INDEX, 4, &[0x06, 0x00])
            .unwrap();
        assert!(b.gpu.bus.master());
        let mut cmd = [0u8; 2];
        b.region_read(VFIO_PCI_CONFIG_REGION_INDEX, 4, &mut cmd)
            .unwrap();
        assert_eq!(cmd, [0x06, 0x00]);
        b.region_write(VFIO_PCI_CONFIG_REGION_INDEX, 4, &[0x02, 0x00])
            .unwrap();
        assert!(!b.gpu.bus.master());
    }
}
