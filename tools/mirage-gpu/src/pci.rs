//! PCI configuration space of the mirage GPU: a type 0 header, two memory
//! BARs and an MSI-X capability. QEMU virtualizes the BAR registers and the
//! MSI-X table itself; it reads the initial values from here.

use crate::regs;

pub const VENDOR_ID: u16 = 0x1b36; // Red Hat, QEMU's vendor space
pub const DEVICE_ID: u16 = 0x4d47; // unallocated by QEMU; names only mirage
pub const CLASS_3D: u32 = 0x03_02_00; // display controller, 3D, prog-if 0
pub const REVISION: u8 = 1;
pub const CONFIG_SIZE: usize = 256;
const MSIX_CAP: usize = 0x40;

pub struct ConfigSpace {
    bytes: [u8; CONFIG_SIZE],
    /// Size of each BAR in `bytes` (0 = unimplemented), indexed by BAR number.
    bar_size: [u64; 6],
    /// Bits of each BAR register that are writable.
    bar_mask: [u32; 6],
}

impl ConfigSpace {
    pub fn new(vram_size: u64) -> Self {
        let mut c = ConfigSpace {
            bytes: [0; CONFIG_SIZE],
            bar_size: [0; 6],
            bar_mask: [0; 6],
        };
        c.put16(0x00, VENDOR_ID);
        c.put16(0x02, DEVICE_ID);
        c.put16(0x06, 1 << 4); // status: capability list
        c.put32(0x08, (CLASS_3D << 8) | u32::from(REVISION));
        c.put16(0x2c, VENDOR_ID); // subsystem vendor
        c.put16(0x2e, DEVICE_ID); // subsystem
        c.bytes[0x34] = MSIX_CAP as u8;
        // INTA#, unused but conventional.
        c.bytes[0x3d] = 1;
        // BAR0: 32-bit non-prefetchable MMIO registers.
        c.bar_size[0] = regs::BAR0_SIZE;
        c.put32(0x10, 0);
        // BAR2/3: 64-bit prefetchable VRAM.
        c.bar_size[2] = vram_size;
        c.put32(0x18, 0b1100);
        // MSI-X: table and PBA in BAR0.
        c.bytes[MSIX_CAP] = 0x11;
        c.bytes[MSIX_CAP + 1] = 0; // last capability
        c.put16(MSIX_CAP + 2, regs::MSIX_VECTORS - 1);
        c.put32(MSIX_CAP + 4, regs::MSIX_TABLE as u32);
        c.put32(MSIX_CAP + 8, regs::MSIX_PBA as u32);
        c.bar_mask[0] = !(regs::BAR0_SIZE as u32 - 1) & !0xf;
        let vram_mask = !(vram_size - 1);
        c.bar_mask[2] = vram_mask as u32 & !0xf;
        c.bar_mask[3] = (vram_mask >> 32) as u32;
        c
    }

    pub fn bar_size(&self, bar: usize) -> u64 {
        self.bar_size[bar]
    }

    fn put16(&mut self, off: usize, v: u16) {
        self.bytes[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn put32(&mut self, off: usize, v: u32) {
        self.bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn get32(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.bytes[off..off + 4].try_into().unwrap_or([0; 4]))
    }

    pub fn read(&self, off: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(off)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| self.bytes.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    /// Applies a write, keeping read-only bits. Only command, BARs, and
    /// the MSI-X control word are writable.
    pub fn write(&mut self, off: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let Some(o) = usize::try_from(off).ok().and_then(|o| o.checked_add(i)) else {
                return;
            };
            match o {
                // Command register: memory space, bus master, INTx disable.
                0x04 => self.bytes[o] = b & 0x06,
                0x05 => self.bytes[o] = b & 0x04,
                0x10..=0x27 => {
                    let bar = (o - 0x10) / 4;
                    let mask = self.bar_mask[bar].to_le_bytes()[(o - 0x10) % 4];
                    self.bytes[o] = (self.bytes[o] & !mask) | (b & mask);
                }
                // MSI-X message control: enable and function mask.
                o if o == MSIX_CAP + 3 => self.bytes[o] = b & 0xc0,
                _ => {}
            }
        }
    }

    pub fn bar_reg(&self, bar: usize) -> u32 {
        self.get32(0x10 + 4 * bar)
    }

    /// Bus Master Enable, bit 2 of the command register.
    pub fn bus_master(&self) -> bool {
        self.bytes[0x04] & 0x04 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd32(c: &ConfigSpace, off: u64) -> u32 {
        let mut b = [0; 4];
        c.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn header_identifies_a_3d_controller() {
        let c = ConfigSpace::new(64 << 20);
        assert_eq!(rd32(&c, 0), 0x4d47_1b36);
        assert_eq!(rd32(&c, 8), 0x0302_0001);
        assert_eq!(rd32(&c, 0x34) & 0xff, 0x40);
        assert_eq!(rd32(&c, 0x04) >> 16 & (1 << 4), 1 << 4);
    }

    #[test]
    fn msix_capability_points_into_bar0() {
        let c = ConfigSpace::new(64 << 20);
        assert_eq!(rd32(&c, 0x40), 0x0003_0011); // id 0x11, last, 4 vectors
        assert_eq!(rd32(&c, 0x44), 0x8000);
        assert_eq!(rd32(&c, 0x48), 0xc000);
    }

    #[test]
    fn bar_sizing_reads_back_the_size_mask() {
        let mut c = ConfigSpace::new(64 << 20);
        for bar in 0..6 {
            c.write(0x10 + 4 * bar as u64, &u32::MAX.to_le_bytes());
        }
        assert_eq!(c.bar_reg(0), !(regs::BAR0_SIZE as u32 - 1) & !0xf);
        assert_eq!(c.bar_reg(1), 0);
        assert_eq!(c.bar_reg(2), !((64u32 << 20) - 1) | 0b1100);
        assert_eq!(c.bar_reg(3), u32::MAX);
        assert_eq!(c.bar_reg(4), 0);
        assert_eq!(c.bar_size(2), 64 << 20);
    }

    #[test]
    fn command_register_carries_bus_master() {
        let mut c = ConfigSpace::new(64 << 20);
        assert!(!c.bus_master(), "off from power-on");
        c.write(4, &[0x06, 0x00]);
        assert!(c.bus_master());
        c.write(4, &[0x02]);
        assert!(!c.bus_master());
    }

    #[test]
    fn read_only_fields_ignore_writes() {
        let mut c = ConfigSpace::new(64 << 20);
        c.write(0, &[0xff; 4]);
        c.write(8, &[0xff; 4]);
        assert_eq!(rd32(&c, 0), 0x4d47_1b36);
        assert_eq!(rd32(&c, 8), 0x0302_0001);
        c.write(4, &[0xff, 0xff]);
        assert_eq!(rd32(&c, 4) & 0xffff, 0x0406);
    }
}
