// SPDX-License-Identifier: GPL-2.0

//! DMA buffer sharing: fences (and, later, reservation objects).
//!
//! C header: [`include/linux/dma-fence.h`](srctree/include/linux/dma-fence.h)

pub mod fence;
