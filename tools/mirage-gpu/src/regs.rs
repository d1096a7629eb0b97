//! BAR0 register map. `Documentation/gpu/mirage.rst` is the normative copy;
//! the driver's `regs.rs` mirrors these offsets.

/// Value of [`ID`]: ASCII "MRAG" read as a little-endian u32.
pub const ID_MAGIC: u32 = u32::from_le_bytes(*b"MRAG");
/// Major in bits 31:16, minor in 15:0. A driver rejects another major.
pub const VERSION_MAJOR: u16 = 1;
pub const VERSION_MINOR: u16 = 1;

/// Size of BAR0 (registers, doorbells, MSI-X table and PBA).
pub const BAR0_SIZE: u64 = 64 * 1024;

pub const ID: u64 = 0x000;
pub const VERSION: u64 = 0x004;
pub const FEATURES: u64 = 0x008;
pub const SCRATCH: u64 = 0x00c;
pub const VRAM_SIZE_LO: u64 = 0x010;
pub const VRAM_SIZE_HI: u64 = 0x014;
pub const VA_BITS: u64 = 0x018;
pub const PGSIZE_BITMAP: u64 = 0x01c;
pub const IRQ_RAWSTAT: u64 = 0x020;
pub const IRQ_CLEAR: u64 = 0x024;
pub const IRQ_MASK: u64 = 0x028;
pub const IRQ_STATUS: u64 = 0x02c;
pub const PING_COUNT: u64 = 0x030;
pub const PING_VALUE: u64 = 0x034;
pub const DMA_ADDR_LO: u64 = 0x040;
pub const DMA_ADDR_HI: u64 = 0x044;
pub const DMA_LEN: u64 = 0x048;
pub const DMA_PATTERN: u64 = 0x04c;
pub const DMA_STATUS: u64 = 0x050;
/// Device-physical base of VRAM in the GPU MMU's output address space.
pub const VRAM_BASE_LO: u64 = 0x058;
pub const VRAM_BASE_HI: u64 = 0x05c;
/// Write [`GPU_CMD_SOFT_RESET`] to reset the whole device.
pub const GPU_COMMAND: u64 = 0x060;
pub const RESET_COUNT: u64 = 0x064;
pub const NUM_AS: u64 = 0x068;
pub const NUM_QUEUES: u64 = 0x06c;
/// Bit n set: address space n has a fault latched (abort mode).
pub const MMU_FAULT_STATUS: u64 = 0x070;
/// Write 1 to bit n to clear the fault latched in address space n.
pub const MMU_FAULT_CLEAR: u64 = 0x074;
/// Bit n set: queue n completed a job since the bit was last cleared.
pub const JOB_DONE_STATUS: u64 = 0x078;
pub const JOB_DONE_CLEAR: u64 = 0x07c;
/// Bit n set: queue n stopped on an error.
pub const QUEUE_ERROR_STATUS: u64 = 0x080;
pub const QUEUE_ERROR_CLEAR: u64 = 0x084;
/// Page-fault queue (stall mode): a ring of [`FAULT_RECORD_SIZE`]-byte records.
pub const FAULTQ_BASE_LO: u64 = 0x090;
pub const FAULTQ_BASE_HI: u64 = 0x094;
/// Entries in the fault queue, a power of two from 2 to 4096; 0 disables it.
pub const FAULTQ_SIZE: u64 = 0x098;
/// Bus address where the device writes its producer index (u32) after each record.
pub const FAULTQ_TAIL_WB_LO: u64 = 0x09c;
pub const FAULTQ_TAIL_WB_HI: u64 = 0x0a0;
pub const FAULTQ_TAIL: u64 = 0x0a4;
pub const FAULTQ_HEAD: u64 = 0x0a8;
/// TLB capacity per address space, in entries (RO; set with --tlb-entries).
pub const TLB_ENTRIES: u64 = 0x0ac;

/// Doorbells live on their own page so a driver may map it write-combined
/// and so that reads never need to be served on the hot path.
pub const DOORBELL_BASE: u64 = 0x1000;
pub const DB_PING: u64 = DOORBELL_BASE;
pub const DB_DMA_FILL: u64 = DOORBELL_BASE + 0x4;
/// The driver's consumer index of the fault queue.
pub const DB_FAULTQ_HEAD: u64 = DOORBELL_BASE + 0x8;
/// Answer to a stalled fault: bits 30:0 the fault id, bit 31 set to abort, clear to retry.
pub const DB_FAULT_RESPONSE: u64 = DOORBELL_BASE + 0xc;
/// Queue n's doorbell: the new tail (producer index).
pub const fn db_queue(n: u64) -> u64 {
    DOORBELL_BASE + 0x100 + 4 * n
}
pub const FAULT_RESPONSE_ABORT: u32 = 1 << 31;

/// Address space n's registers: `as_reg(n, AS_TRANSTAB_LO)`.
pub const AS_BASE: u64 = 0x2000;
pub const AS_STRIDE: u64 = 0x40;
pub const fn as_reg(n: u64, r: u64) -> u64 {
    AS_BASE + n * AS_STRIDE + r
}
/// End of the address-space register window.
pub const AS_END: u64 = AS_BASE + N_AS as u64 * AS_STRIDE;
pub const AS_TRANSTAB_LO: u64 = 0x00;
pub const AS_TRANSTAB_HI: u64 = 0x04;
pub const AS_MEMATTR_LO: u64 = 0x08;
pub const AS_MEMATTR_HI: u64 = 0x0c;
pub const AS_LOCKADDR_LO: u64 = 0x10;
pub const AS_LOCKADDR_HI: u64 = 0x14;
pub const AS_COMMAND: u64 = 0x18;
pub const AS_FAULTSTATUS: u64 = 0x1c;
pub const AS_FAULTADDRESS_LO: u64 = 0x20;
pub const AS_FAULTADDRESS_HI: u64 = 0x24;
pub const AS_STATUS: u64 = 0x28;
pub const AS_TRANSCFG: u64 = 0x30;

/// AS_TRANSCFG: translation on (otherwise every access faults).
pub const TRANSCFG_ENABLE: u32 = 1 << 0;
/// AS_TRANSCFG: stall on translation faults and post them to the fault
/// queue (for SVM) instead of aborting the job.
pub const TRANSCFG_STALL: u32 = 1 << 1;

pub const AS_CMD_NOP: u32 = 0;
/// Latch TRANSTAB, MEMATTR and TRANSCFG, and invalidate the AS's TLB.
pub const AS_CMD_UPDATE: u32 = 1;
/// Invalidate the TLB entries that overlap the LOCKADDR region.
pub const AS_CMD_FLUSH_RANGE: u32 = 2;
/// Invalidate the AS's whole TLB.
pub const AS_CMD_FLUSH_PT: u32 = 3;
/// As FLUSH_PT; the device has no data caches to write back.
pub const AS_CMD_FLUSH_MEM: u32 = 4;

/// AS_STATUS: a fault is latched (abort mode) until MMU_FAULT_CLEAR.
pub const AS_STATUS_FAULTED: u32 = 1 << 0;

/// Queue n's registers: `queue_reg(n, Q_RING_BASE_LO)`.
pub const QUEUE_BASE: u64 = 0x3000;
pub const QUEUE_STRIDE: u64 = 0x40;
pub const fn queue_reg(n: u64, r: u64) -> u64 {
    QUEUE_BASE + n * QUEUE_STRIDE + r
}
/// End of the queue register window.
pub const QUEUE_END: u64 = QUEUE_BASE + N_QUEUES as u64 * QUEUE_STRIDE;
pub const Q_RING_BASE_LO: u64 = 0x00;
pub const Q_RING_BASE_HI: u64 = 0x04;
/// Entries in the ring, a power of two from 2 to 4096.
pub const Q_RING_SIZE: u64 = 0x08;
/// Address space the queue's jobs run in.
pub const Q_AS: u64 = 0x0c;
/// Bus address of the queue's completion record ([`COMPLETION_SIZE`] bytes).
pub const Q_COMPLETION_LO: u64 = 0x10;
pub const Q_COMPLETION_HI: u64 = 0x14;
pub const Q_CONTROL: u64 = 0x20;
pub const Q_STATUS: u64 = 0x24;
pub const Q_HEAD: u64 = 0x28;
pub const Q_TAIL: u64 = 0x2c;
pub const Q_COMMAND: u64 = 0x30;
pub const Q_ERROR: u64 = 0x34;
/// Debug: stall every job of this queue this many milliseconds before it runs.
pub const Q_DELAY_MS: u64 = 0x38;

pub const Q_CONTROL_ENABLE: u32 = 1 << 0;

pub const Q_STATUS_IDLE: u32 = 0;
pub const Q_STATUS_RUNNING: u32 = 1;
pub const Q_STATUS_STALLED: u32 = 2;
pub const Q_STATUS_FAULTED: u32 = 3;
pub const Q_STATUS_DISABLED: u32 = 4;

/// Drop the current job and every pending one; head := tail.
pub const Q_CMD_RESET: u32 = 1;
/// Leave the FAULTED state and go on with the next job.
pub const Q_CMD_RESUME: u32 = 2;

/// Completion-record and Q_ERROR status codes.
pub const JOB_OK: u32 = 0;
pub const JOB_MMU_FAULT: u32 = 1;
pub const JOB_INVALID_COMMAND: u32 = 2;
pub const JOB_DMA_ERROR: u32 = 3;
/// Q_ERROR only (no completion record): TAIL - HEAD exceeded RING_SIZE;
/// HEAD did not move.
pub const Q_ERROR_RING_OVERRUN: u32 = 5;
/// Q_ERROR only: CONTROL.ENABLE was refused because COMPLETION is 0 or
/// not 16-byte aligned; the queue stays DISABLED.
pub const Q_ERROR_BAD_COMPLETION: u32 = 6;

pub const GPU_CMD_SOFT_RESET: u32 = 1;

/// MSI-X table and PBA, emulated by QEMU; the device never sees them.
pub const MSIX_TABLE: u64 = 0x8000;
pub const MSIX_PBA: u64 = 0xc000;
pub const MSIX_VECTORS: u16 = 4;

pub const FEATURE_VRAM: u32 = 1 << 0;
pub const FEATURE_PING: u32 = 1 << 1;
pub const FEATURE_DMA_FILL: u32 = 1 << 2;
pub const FEATURE_MMU: u32 = 1 << 3;
pub const FEATURE_QUEUES: u32 = 1 << 4;
pub const FEATURE_STALL: u32 = 1 << 5;
pub const FEATURE_ATOMICS: u32 = 1 << 6;
pub const FEATURES_ALL: u32 = FEATURE_VRAM
    | FEATURE_PING
    | FEATURE_DMA_FILL
    | FEATURE_MMU
    | FEATURE_QUEUES
    | FEATURE_STALL
    | FEATURE_ATOMICS;

pub const IRQ_PING: u32 = 1 << 0;
pub const IRQ_DMA: u32 = 1 << 1;
/// A job completed with its IRQ flag set (see JOB_DONE_STATUS).
pub const IRQ_JOB: u32 = 1 << 2;
/// An address space latched a fault (see MMU_FAULT_STATUS).
pub const IRQ_MMU: u32 = 1 << 3;
/// A queue stopped on an error (see QUEUE_ERROR_STATUS).
pub const IRQ_QUEUE_ERROR: u32 = 1 << 4;
/// A record was posted to the page-fault queue.
pub const IRQ_PAGE_FAULT: u32 = 1 << 5;
/// A soft reset finished.
pub const IRQ_RESET: u32 = 1 << 6;
/// Every IRQ source that exists in this version of the device.
pub const IRQ_ALL: u32 =
    IRQ_PING | IRQ_DMA | IRQ_JOB | IRQ_MMU | IRQ_QUEUE_ERROR | IRQ_PAGE_FAULT | IRQ_RESET;

pub const N_AS: usize = 16;
pub const N_QUEUES: usize = 8;
/// VRAM sits at this device-physical address; guest RAM bus addresses lie below it.
pub const VRAM_BASE: u64 = 1 << 47;
/// Bytes of a job descriptor in a ring.
pub const JOB_DESC_SIZE: u64 = 64;
/// Bytes of a completion record: u64 seqno, u32 status, u32 fault status.
pub const COMPLETION_SIZE: u64 = 16;
/// Bytes of a page-fault record.
pub const FAULT_RECORD_SIZE: u64 = 32;

/// DMA_STATUS values.
pub const DMA_IDLE: u32 = 0;
pub const DMA_DONE: u32 = 1;
/// Part of the range is not mapped for DMA; nothing was written.
pub const DMA_FAULT: u32 = 2;
/// DMA_LEN is zero, not a multiple of 4, or above [`DMA_MAX_LEN`].
pub const DMA_INVALID: u32 = 3;
/// Longest fill one doorbell may ask for; it runs on the doorbell's thread.
pub const DMA_MAX_LEN: u32 = 1 << 20;

/// Virtual address bits of the GPU MMU (48-bit VA, 4 KiB granule).
pub const GPU_VA_BITS: u32 = 48;
/// 4 KiB pages, 2 MiB and 1 GiB blocks.
pub const GPU_PGSIZE_BITMAP: u32 = (1 << 12) | (1 << 21) | (1 << 30);
