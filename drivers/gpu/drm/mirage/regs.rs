// SPDX-License-Identifier: GPL-2.0 or MIT

//! BAR0 register map of the mirage virtual GPU.
//!
//! `Documentation/gpu/mirage.rst` is the normative description. The device model's
//! `tools/mirage-gpu/src/regs.rs` implements the same map, and a host test
//! (`tools/mirage-gpu/tests/driver_regs.rs`) parses this file and checks every offset, array
//! stride and interrupt bit against it, so the two cannot drift apart.

// The map is complete, as the C drivers' headers are; not every register has a user yet.
#![allow(dead_code)]

use kernel::io::register;

/// Bytes of BAR0 the driver maps: the register and doorbell pages. BAR0 is 64 KiB, but its
/// upper half holds the MSI-X table and PBA, which belong to the PCI core.
pub(crate) const BAR0_MAPPED: usize = 0x4000;

/// ASCII "MRAG" read as a little-endian u32.
pub(crate) const ID_MAGIC: u32 = u32::from_le_bytes(*b"MRAG");
/// Bus addresses of system memory must stay below VRAM's base, `1 << 47`.
pub(crate) const DMA_BITS: u32 = 47;
/// The only hardware major version this driver speaks.
pub(crate) const VERSION_MAJOR: u32 = 1;

/// Address spaces (MMU contexts) of the device.
pub(crate) const NUM_AS: usize = 16;
/// Job queues of the device.
pub(crate) const NUM_QUEUES: usize = 8;
const AS_STRIDE: usize = 0x40;
const QUEUE_STRIDE: usize = 0x40;

/// One register per interrupt source, with the same bit layout in RAWSTAT, CLEAR, MASK and
/// STATUS.
macro_rules! irq_register {
    ($(#[$meta:meta])* $name:ident @ $offset:literal) => {
        register! {
            $(#[$meta])*
            pub(crate) $name(u32) @ $offset {
                /// A ping doorbell was answered.
                0:0 ping => bool;
                /// A DMA fill finished (see `DMA_STATUS`).
                1:1 dma => bool;
                /// A job with its IRQ flag completed; its record is in memory.
                2:2 job => bool;
                /// An address space latched a fault (abort mode).
                3:3 mmu => bool;
                /// A queue stopped on an error (see `QUEUE_ERROR_STATUS`).
                4:4 queue_error => bool;
                /// A record was posted to the page-fault queue (stall mode).
                5:5 page_fault => bool;
                /// A soft reset finished.
                6:6 reset => bool;
            }
        }
    };
}

register! {
    /// Identification: [`ID_MAGIC`].
    pub(crate) ID(u32) @ 0x000 {
        31:0 value;
    }

    /// Hardware version.
    pub(crate) VERSION(u32) @ 0x004 {
        15:0 minor;
        31:16 major;
    }

    /// Blocks the device implements.
    pub(crate) FEATURES(u32) @ 0x008 {
        0:0 vram => bool;
        1:1 ping => bool;
        2:2 dma_fill => bool;
        3:3 mmu => bool;
        4:4 queues => bool;
        /// Stall-and-replay page faults.
        5:5 stall => bool;
        /// Atomics on write-back system memory.
        6:6 atomics => bool;
    }

    pub(crate) VRAM_SIZE_LO(u32) @ 0x010 {
        31:0 value;
    }

    pub(crate) VRAM_SIZE_HI(u32) @ 0x014 {
        31:0 value;
    }

    /// Virtual address bits of the GPU MMU.
    pub(crate) VA_BITS(u32) @ 0x018 {
        31:0 value;
    }

    /// Page and block sizes of the GPU MMU, one bit per size.
    pub(crate) PGSIZE_BITMAP(u32) @ 0x01c {
        31:0 value;
    }
}

irq_register!(
    /// Latched interrupt sources, masked or not.
    IRQ_RAWSTAT @ 0x020
);
irq_register!(
    /// Write 1 to clear a latched source.
    IRQ_CLEAR @ 0x024
);
irq_register!(
    /// Sources allowed to raise the MSI-X vector.
    IRQ_MASK @ 0x028
);
irq_register!(
    /// `IRQ_RAWSTAT & IRQ_MASK`.
    IRQ_STATUS @ 0x02c
);

register! {
    /// Pings answered since power-on.
    pub(crate) PING_COUNT(u32) @ 0x030 {
        31:0 value;
    }

    pub(crate) DMA_ADDR_LO(u32) @ 0x040 {
        31:0 value;
    }

    pub(crate) DMA_ADDR_HI(u32) @ 0x044 {
        31:0 value;
    }

    /// Bytes to fill: a multiple of 4, from 4 B to 1 MiB.
    pub(crate) DMA_LEN(u32) @ 0x048 {
        31:0 value;
    }

    pub(crate) DMA_PATTERN(u32) @ 0x04c {
        31:0 value;
    }

    /// Outcome of the last fill.
    pub(crate) DMA_STATUS(u32) @ 0x050 {
        31:0 value;
    }

    /// Device commands.
    pub(crate) GPU_COMMAND(u32) @ 0x060 {
        7:0 command;
    }

    /// Soft resets since power-on; it moves when a reset has finished.
    pub(crate) RESET_COUNT(u32) @ 0x064 {
        31:0 value;
    }

    /// Bit n: address space n has a fault latched (abort mode).
    pub(crate) MMU_FAULT_STATUS(u32) @ 0x070 {
        15:0 spaces;
    }

    /// Write 1 to bit n to clear address space n's fault.
    pub(crate) MMU_FAULT_CLEAR(u32) @ 0x074 {
        15:0 spaces;
    }

    /// Bit n: queue n completed a job. Informational: completions are read from memory.
    pub(crate) JOB_DONE_STATUS(u32) @ 0x078 {
        7:0 queues;
    }

    pub(crate) JOB_DONE_CLEAR(u32) @ 0x07c {
        7:0 queues;
    }

    /// Bit n: queue n stopped on an error.
    pub(crate) QUEUE_ERROR_STATUS(u32) @ 0x080 {
        7:0 queues;
    }

    pub(crate) QUEUE_ERROR_CLEAR(u32) @ 0x084 {
        7:0 queues;
    }

    /// Bus address of the page-fault queue, 32-byte aligned.
    pub(crate) FAULTQ_BASE_LO(u32) @ 0x090 {
        31:0 value;
    }

    pub(crate) FAULTQ_BASE_HI(u32) @ 0x094 {
        31:0 value;
    }

    /// Entries of the page-fault queue, a power of two (0: off). Writing it empties the queue;
    /// while it is nonzero, the base and write-back addresses ignore writes.
    pub(crate) FAULTQ_SIZE(u32) @ 0x098 {
        31:0 value;
    }

    /// Bus address where the device writes its producer index after each record.
    pub(crate) FAULTQ_TAIL_WB_LO(u32) @ 0x09c {
        31:0 value;
    }

    pub(crate) FAULTQ_TAIL_WB_HI(u32) @ 0x0a0 {
        31:0 value;
    }

    /// Answers a ping with an interrupt.
    pub(crate) DB_PING(u32) @ 0x1000 {
        31:0 value;
    }

    /// Starts a DMA fill.
    pub(crate) DB_DMA_FILL(u32) @ 0x1004 {
        31:0 value;
    }

    /// The driver's consumer index of the page-fault queue: the slots before it are free.
    pub(crate) DB_FAULTQ_HEAD(u32) @ 0x1008 {
        31:0 head;
    }

    /// The answer to a stalled fault.
    pub(crate) DB_FAULT_RESPONSE(u32) @ 0x100c {
        30:0 id;
        /// End the job with MMU_FAULT; clear: retry the access.
        31:31 abort => bool;
    }

    /// Queue n's doorbell: its new tail.
    pub(crate) DB_QUEUE(u32)[NUM_QUEUES, stride = 4] @ 0x1100 {
        31:0 tail;
    }

    /// Translation table base, low half.
    pub(crate) AS_TRANSTAB_LO(u32)[NUM_AS, stride = AS_STRIDE] @ 0x2000 {
        31:0 value;
    }

    pub(crate) AS_TRANSTAB_HI(u32)[NUM_AS, stride = AS_STRIDE] @ 0x2004 {
        31:0 value;
    }

    /// MAIR-format memory attributes, low half.
    pub(crate) AS_MEMATTR_LO(u32)[NUM_AS, stride = AS_STRIDE] @ 0x2008 {
        31:0 value;
    }

    pub(crate) AS_MEMATTR_HI(u32)[NUM_AS, stride = AS_STRIDE] @ 0x200c {
        31:0 value;
    }

    /// Region of FLUSH_RANGE: bits 47:12 the base, bits 5:0 `w` (2^(w+1) bytes).
    pub(crate) AS_LOCKADDR_LO(u32)[NUM_AS, stride = AS_STRIDE] @ 0x2010 {
        31:0 value;
    }

    pub(crate) AS_LOCKADDR_HI(u32)[NUM_AS, stride = AS_STRIDE] @ 0x2014 {
        31:0 value;
    }

    pub(crate) AS_COMMAND(u32)[NUM_AS, stride = AS_STRIDE] @ 0x2018 {
        7:0 command;
    }

    /// The latched fault of an address space.
    pub(crate) AS_FAULTSTATUS(u32)[NUM_AS, stride = AS_STRIDE] @ 0x201c {
        /// Exception type plus the table level.
        7:0 exception;
        /// 0 atomic, 1 execute, 2 read, 3 write.
        9:8 access;
        /// The queue that made the access.
        31:16 queue;
    }

    pub(crate) AS_FAULTADDRESS_LO(u32)[NUM_AS, stride = AS_STRIDE] @ 0x2020 {
        31:0 value;
    }

    pub(crate) AS_FAULTADDRESS_HI(u32)[NUM_AS, stride = AS_STRIDE] @ 0x2024 {
        31:0 value;
    }

    pub(crate) AS_TRANSCFG(u32)[NUM_AS, stride = AS_STRIDE] @ 0x2030 {
        /// Translation on; off, every access faults.
        0:0 enable => bool;
        /// Stall and replay faults instead of aborting the job.
        1:1 stall => bool;
    }

    pub(crate) Q_RING_BASE_LO(u32)[NUM_QUEUES, stride = QUEUE_STRIDE] @ 0x3000 {
        31:0 value;
    }

    pub(crate) Q_RING_BASE_HI(u32)[NUM_QUEUES, stride = QUEUE_STRIDE] @ 0x3004 {
        31:0 value;
    }

    /// Entries of the ring, a power of two.
    pub(crate) Q_RING_SIZE(u32)[NUM_QUEUES, stride = QUEUE_STRIDE] @ 0x3008 {
        31:0 value;
    }

    /// Address space of the queue's jobs.
    pub(crate) Q_AS(u32)[NUM_QUEUES, stride = QUEUE_STRIDE] @ 0x300c {
        31:0 value;
    }

    pub(crate) Q_COMPLETION_LO(u32)[NUM_QUEUES, stride = QUEUE_STRIDE] @ 0x3010 {
        31:0 value;
    }

    pub(crate) Q_COMPLETION_HI(u32)[NUM_QUEUES, stride = QUEUE_STRIDE] @ 0x3014 {
        31:0 value;
    }

    pub(crate) Q_CONTROL(u32)[NUM_QUEUES, stride = QUEUE_STRIDE] @ 0x3020 {
        0:0 enable => bool;
    }

    /// 0 IDLE, 1 RUNNING, 2 STALLED, 3 FAULTED, 4 DISABLED.
    pub(crate) Q_STATUS(u32)[NUM_QUEUES, stride = QUEUE_STRIDE] @ 0x3024 {
        31:0 value;
    }

    pub(crate) Q_COMMAND(u32)[NUM_QUEUES, stride = QUEUE_STRIDE] @ 0x3030 {
        7:0 command;
    }

    /// The status that stopped the queue.
    pub(crate) Q_ERROR(u32)[NUM_QUEUES, stride = QUEUE_STRIDE] @ 0x3034 {
        31:0 value;
    }
}

/// `GPU_COMMAND`: drop every job, clear every queue, address space and TLB.
pub(crate) const GPU_CMD_SOFT_RESET: u8 = 1;
/// `AS_COMMAND`: latch TRANSTAB, MEMATTR and TRANSCFG, and invalidate the TLB.
pub(crate) const AS_CMD_UPDATE: u8 = 1;
/// `AS_COMMAND`: invalidate the TLB entries that overlap the LOCKADDR region.
pub(crate) const AS_CMD_FLUSH_RANGE: u8 = 2;
/// `Q_COMMAND`: drop the current and every pending job; head := tail.
pub(crate) const Q_CMD_RESET: u8 = 1;
/// `Q_COMMAND`: let a FAULTED queue go on with its next job.
pub(crate) const Q_CMD_RESUME: u8 = 2;

/// Fault status exception types (bits 7:3; the table level is in bits 1:0).
pub(crate) const FAULT_TYPE_MASK: u32 = 0xf8;
pub(crate) const FAULT_TRANSLATION: u32 = 0xc0;
pub(crate) const FAULT_PERMISSION: u32 = 0xc8;
pub(crate) const FAULT_ACCESS_FLAG: u32 = 0xd8;
pub(crate) const FAULT_MEMORY_ATTRIBUTE: u32 = 0xe8;
/// Fault status access types (bits 9:8).
pub(crate) const FAULT_ACCESS_ATOMIC: u32 = 0;
pub(crate) const FAULT_ACCESS_EXECUTE: u32 = 1;
pub(crate) const FAULT_ACCESS_READ: u32 = 2;
pub(crate) const FAULT_ACCESS_WRITE: u32 = 3;

/// Job status of a completion record: the job ran to its end.
pub(crate) const JOB_STATUS_OK: u32 = 0;

/// `DMA_STATUS` after a fill that wrote every byte.
pub(crate) const DMA_DONE: u32 = 1;
