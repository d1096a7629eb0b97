//! The command stream format ("ISA") and an encoder for it.
//!
//! A command is a little-endian u64 header followed by u64 operands. The
//! header holds the opcode in bits 7:0, flags in 15:8 (none defined; must be
//! zero) and the command's length in u64 words, header included, in 31:16;
//! bits 63:32 are reserved and must be zero.

pub const OP_NOP: u8 = 0x00;
/// `[va, value]`: store the low 32 bits of `value` at `va`.
pub const OP_STORE32: u8 = 0x01;
/// `[va, value]`: store `value` at `va`.
pub const OP_STORE64: u8 = 0x02;
/// `[dst, src, len]`: copy `len` bytes.
pub const OP_COPY: u8 = 0x03;
/// `[va, len, pattern]`: fill `len` bytes (a multiple of 4) with the low 32 bits of `pattern`.
pub const OP_FILL: u8 = 0x04;
/// `[va, op, operand, compare, result_va]`: an atomic; the old value goes
/// to `result_va` unless it is 0.
pub const OP_ATOMIC: u8 = 0x05;
/// `[src, len, dst]`: FNV-1a 64 of `len` bytes at `src`, stored at `dst`.
pub const OP_CHECKSUM: u8 = 0x06;
/// `[va, value, cond]`: wait until the memory at `va` satisfies `cond` against `value`.
pub const OP_SEM_WAIT: u8 = 0x07;
/// `[va, value]`: store `value` after every earlier write of the job is visible.
pub const OP_FENCE_WRITE: u8 = 0x08;
/// `[va]`: store the device clock, nanoseconds since the device started.
pub const OP_TIMESTAMP: u8 = 0x09;
/// `[x, y, n, a]`: y[i] = a * x[i] + y[i] over `n` f32s; `a` is f32 bits.
pub const OP_SAXPY: u8 = 0x0a;
/// `[]`: never completes; only a queue reset or a device reset ends it.
pub const OP_HANG: u8 = 0x0b;
/// `[]`: ends the job before the end of its command buffer.
pub const OP_END: u8 = 0x0c;

pub const ATOMIC_ADD32: u64 = 0;
pub const ATOMIC_ADD64: u64 = 1;
pub const ATOMIC_INC32: u64 = 2;
pub const ATOMIC_INC64: u64 = 3;
pub const ATOMIC_CMPXCHG32: u64 = 4;
pub const ATOMIC_CMPXCHG64: u64 = 5;

pub const SEM_GE32: u64 = 0;
pub const SEM_GE64: u64 = 1;
pub const SEM_EQ32: u64 = 2;
pub const SEM_EQ64: u64 = 3;

/// Longest COPY, FILL or CHECKSUM, and largest SAXPY in bytes of x.
pub const MAX_LEN: u64 = 64 << 20;

/// Job descriptor flag: signal IRQ_JOB when the job completes.
pub const JOB_FLAG_IRQ: u32 = 1 << 0;

/// Number of operands of each opcode, or None for an unknown opcode.
pub fn operands(op: u8) -> Option<usize> {
    Some(match op {
        OP_NOP | OP_HANG | OP_END => 0,
        OP_STORE32 | OP_STORE64 | OP_FENCE_WRITE => 2,
        OP_COPY | OP_FILL | OP_CHECKSUM | OP_SEM_WAIT => 3,
        OP_ATOMIC => 5,
        OP_TIMESTAMP => 1,
        OP_SAXPY => 4,
        _ => return None,
    })
}

pub fn header(op: u8, nops: usize) -> u64 {
    u64::from(op) | (((nops as u64) + 1) << 16)
}

/// FNV-1a, 64-bit: what OP_CHECKSUM computes.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Bytes of a job descriptor with defined fields; the rest are reserved
/// and must be zero.
pub const JOB_DESC_USED: usize = 24;

/// A job descriptor as it sits in a ring (64 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobDesc {
    pub cmdbuf_va: u64,
    pub cmdbuf_len: u32,
    pub flags: u32,
    pub seqno: u64,
}

impl JobDesc {
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..8].copy_from_slice(&self.cmdbuf_va.to_le_bytes());
        b[8..12].copy_from_slice(&self.cmdbuf_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.seqno.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; 64]) -> Self {
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]));
        JobDesc {
            cmdbuf_va: u64_at(0),
            cmdbuf_len: u32_at(8),
            flags: u32_at(12),
            seqno: u64_at(16),
        }
    }
}

/// Builds a command buffer.
#[derive(Default, Clone)]
pub struct Builder {
    words: Vec<u64>,
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }
    fn cmd(mut self, op: u8, ops: &[u64]) -> Self {
        self.words.push(header(op, ops.len()));
        self.words.extend_from_slice(ops);
        self
    }
    pub fn nop(self) -> Self {
        self.cmd(OP_NOP, &[])
    }
    pub fn store32(self, va: u64, v: u32) -> Self {
        self.cmd(OP_STORE32, &[va, u64::from(v)])
    }
    pub fn store64(self, va: u64, v: u64) -> Self {
        self.cmd(OP_STORE64, &[va, v])
    }
    pub fn copy(self, dst: u64, src: u64, len: u64) -> Self {
        self.cmd(OP_COPY, &[dst, src, len])
    }
    pub fn fill(self, va: u64, len: u64, pattern: u32) -> Self {
        self.cmd(OP_FILL, &[va, len, u64::from(pattern)])
    }
    pub fn atomic(self, va: u64, op: u64, operand: u64, compare: u64, result_va: u64) -> Self {
        self.cmd(OP_ATOMIC, &[va, op, operand, compare, result_va])
    }
    pub fn checksum(self, src: u64, len: u64, dst: u64) -> Self {
        self.cmd(OP_CHECKSUM, &[src, len, dst])
    }
    pub fn sem_wait(self, va: u64, value: u64, cond: u64) -> Self {
        self.cmd(OP_SEM_WAIT, &[va, value, cond])
    }
    pub fn fence_write(self, va: u64, v: u64) -> Self {
        self.cmd(OP_FENCE_WRITE, &[va, v])
    }
    pub fn timestamp(self, va: u64) -> Self {
        self.cmd(OP_TIMESTAMP, &[va])
    }
    pub fn saxpy(self, x: u64, y: u64, n: u64, a: f32) -> Self {
        self.cmd(OP_SAXPY, &[x, y, n, u64::from(a.to_bits())])
    }
    pub fn hang(self) -> Self {
        self.cmd(OP_HANG, &[])
    }
    pub fn end(self) -> Self {
        self.cmd(OP_END, &[])
    }
    /// Appends a raw word, for tests of malformed streams.
    pub fn raw(mut self, w: u64) -> Self {
        self.words.push(w);
        self
    }
    pub fn bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn job_desc_round_trips() {
        let d = JobDesc {
            cmdbuf_va: 0x1234_5678_9000,
            cmdbuf_len: 4096,
            flags: JOB_FLAG_IRQ,
            seqno: u64::MAX - 1,
        };
        assert_eq!(JobDesc::from_bytes(&d.to_bytes()), d);
    }

    #[test]
    fn builder_encodes_header_and_operands() {
        let b = Builder::new().store32(0x1000, 7).bytes();
        assert_eq!(b.len(), 24);
        assert_eq!(u64::from_le_bytes(b[0..8].try_into().unwrap()), 0x0003_0001);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 0x1000);
        assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 7);
    }
}
