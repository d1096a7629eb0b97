// SPDX-License-Identifier: GPL-2.0

//! DMA buffer sharing: fences and reservation objects.
//!
//! C headers: [`include/linux/dma-fence.h`](srctree/include/linux/dma-fence.h),
//! [`include/linux/dma-resv.h`](srctree/include/linux/dma-resv.h)

pub mod fence;
pub mod resv;
