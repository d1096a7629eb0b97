//! Command buffers for the GPU, as `Documentation/gpu/mirage.rst` (section
//! "Commands") defines them.
//!
//! A command is a little-endian u64 header, then its u64 operands. The
//! header holds the opcode in bits 7:0 and the command's length in u64
//! words, header included, in bits 31:16; flags (15:8) and bits 63:32 are
//! zero. The builder checks nothing else: the device does, and tests of its
//! checks need malformed commands.
//!
//! The device model (`tools/mirage-gpu/src/isa.rs`) has its own encoder. It
//! cannot be shared without linking the device model into the guest
//! binaries, so the unit tests check that both encode every command alike.

/// The opcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Opcode {
    Nop = 0x00,
    Store32 = 0x01,
    Store64 = 0x02,
    Copy = 0x03,
    Fill = 0x04,
    Atomic = 0x05,
    Checksum = 0x06,
    SemWait = 0x07,
    FenceWrite = 0x08,
    Timestamp = 0x09,
    Saxpy = 0x0a,
    Hang = 0x0b,
    End = 0x0c,
}

impl Opcode {
    /// How many operands follow the header.
    pub const fn operands(self) -> usize {
        match self {
            Opcode::Nop | Opcode::Hang | Opcode::End => 0,
            Opcode::Timestamp => 1,
            Opcode::Store32 | Opcode::Store64 | Opcode::FenceWrite => 2,
            Opcode::Copy | Opcode::Fill | Opcode::Checksum | Opcode::SemWait => 3,
            Opcode::Saxpy => 4,
            Opcode::Atomic => 5,
        }
    }

    /// The header of a well-formed command.
    pub const fn header(self) -> u64 {
        self as u64 | ((self.operands() as u64 + 1) << 16)
    }
}

/// What an ATOMIC does. The 32-bit ones use the low half of each operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum AtomicOp {
    Add32 = 0,
    Add64 = 1,
    Inc32 = 2,
    Inc64 = 3,
    /// Stores the operand if the memory equals the compare value.
    CmpXchg32 = 4,
    CmpXchg64 = 5,
}

/// The condition a SEM_WAIT waits for, between the memory and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum SemCond {
    Ge32 = 0,
    Ge64 = 1,
    Eq32 = 2,
    Eq64 = 3,
}

/// The longest COPY, FILL or CHECKSUM, in bytes.
pub const MAX_LEN: u64 = 64 << 20;

/// The most elements one SAXPY takes.
pub const MAX_SAXPY_ELEMENTS: u64 = 16 << 20;

/// FNV-1a, 64-bit: what CHECKSUM stores.
pub fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Builds a command buffer.
///
/// ```
/// use mirage::cmd::{CmdBuf, Opcode};
///
/// let mut c = CmdBuf::new();
/// c.store32(0x1000, 7).end();
/// assert_eq!(c.words(), [Opcode::Store32.header(), 0x1000, 7, Opcode::End.header()]);
/// assert_eq!(c.len_bytes(), 32);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CmdBuf {
    words: Vec<u64>,
}

impl CmdBuf {
    pub fn new() -> Self {
        Self::default()
    }

    fn cmd<const N: usize>(&mut self, op: Opcode, operands: [u64; N]) -> &mut Self {
        debug_assert_eq!(N, op.operands());
        self.words.push(op.header());
        self.words.extend_from_slice(&operands);
        self
    }

    pub fn nop(&mut self) -> &mut Self {
        self.cmd(Opcode::Nop, [])
    }

    pub fn store32(&mut self, va: u64, value: u32) -> &mut Self {
        self.cmd(Opcode::Store32, [va, value.into()])
    }

    pub fn store64(&mut self, va: u64, value: u64) -> &mut Self {
        self.cmd(Opcode::Store64, [va, value])
    }

    pub fn copy(&mut self, dst: u64, src: u64, len: u64) -> &mut Self {
        self.cmd(Opcode::Copy, [dst, src, len])
    }

    /// Fills `len` bytes (a multiple of 4) at `va` with `pattern`.
    pub fn fill(&mut self, va: u64, len: u64, pattern: u32) -> &mut Self {
        self.cmd(Opcode::Fill, [va, len, pattern.into()])
    }

    /// `op` on the naturally aligned value at `va`; the old value goes to
    /// `result_va` unless it is 0.
    pub fn atomic(
        &mut self,
        va: u64,
        op: AtomicOp,
        operand: u64,
        compare: u64,
        result_va: u64,
    ) -> &mut Self {
        self.cmd(Opcode::Atomic, [va, op as u64, operand, compare, result_va])
    }

    /// Stores the FNV-1a hash of `len` bytes at `src` at `dst`.
    pub fn checksum(&mut self, src: u64, len: u64, dst: u64) -> &mut Self {
        self.cmd(Opcode::Checksum, [src, len, dst])
    }

    pub fn sem_wait(&mut self, va: u64, value: u64, cond: SemCond) -> &mut Self {
        self.cmd(Opcode::SemWait, [va, value, cond as u64])
    }

    /// Stores `value` at `va` once every earlier write of the job is visible.
    pub fn fence_write(&mut self, va: u64, value: u64) -> &mut Self {
        self.cmd(Opcode::FenceWrite, [va, value])
    }

    /// Stores the device clock, in nanoseconds, at `va`.
    pub fn timestamp(&mut self, va: u64) -> &mut Self {
        self.cmd(Opcode::Timestamp, [va])
    }

    /// `y[i] = a * x[i] + y[i]` over `n` f32s.
    pub fn saxpy(&mut self, x: u64, y: u64, n: u64, a: f32) -> &mut Self {
        self.cmd(Opcode::Saxpy, [x, y, n, a.to_bits().into()])
    }

    pub fn hang(&mut self) -> &mut Self {
        self.cmd(Opcode::Hang, [])
    }

    pub fn end(&mut self) -> &mut Self {
        self.cmd(Opcode::End, [])
    }

    /// Appends any word, for tests of malformed commands.
    pub fn raw(&mut self, word: u64) -> &mut Self {
        self.words.push(word);
        self
    }

    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Length in bytes, what DRM_IOCTL_MIRAGE_EXEC's `length` takes.
    pub fn len_bytes(&self) -> u64 {
        self.words.len() as u64 * 8
    }

    /// The buffer as the device reads it.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mirage_gpu::isa;

    /// Every command, encoded by both builders.
    #[test]
    fn encodes_as_the_device_model_does() {
        let mut ours = CmdBuf::new();
        ours.nop()
            .store32(0x1000, 0xdead_beef)
            .store64(0x1008, u64::MAX)
            .copy(0x2000, 0x3000, 4096)
            .fill(0x4000, 64, 0x5a5a_5a5a)
            .checksum(0x5000, 128, 0x6000)
            .fence_write(0x7000, 42)
            .timestamp(0x8000)
            .saxpy(0x9000, 0xa000, 256, -1.5)
            .hang()
            .end()
            .raw(0x1234);
        let mut theirs = isa::Builder::new()
            .nop()
            .store32(0x1000, 0xdead_beef)
            .store64(0x1008, u64::MAX)
            .copy(0x2000, 0x3000, 4096)
            .fill(0x4000, 64, 0x5a5a_5a5a)
            .checksum(0x5000, 128, 0x6000)
            .fence_write(0x7000, 42)
            .timestamp(0x8000)
            .saxpy(0x9000, 0xa000, 256, -1.5)
            .hang()
            .end()
            .raw(0x1234);
        let atomics = [
            (AtomicOp::Add32, isa::ATOMIC_ADD32),
            (AtomicOp::Add64, isa::ATOMIC_ADD64),
            (AtomicOp::Inc32, isa::ATOMIC_INC32),
            (AtomicOp::Inc64, isa::ATOMIC_INC64),
            (AtomicOp::CmpXchg32, isa::ATOMIC_CMPXCHG32),
            (AtomicOp::CmpXchg64, isa::ATOMIC_CMPXCHG64),
        ];
        for (i, (op, code)) in (0u64..).zip(atomics) {
            ours.atomic(0x100 * i, op, i + 1, i + 2, 0x200 * i);
            theirs = theirs.atomic(0x100 * i, code, i + 1, i + 2, 0x200 * i);
        }
        let conds = [
            (SemCond::Ge32, isa::SEM_GE32),
            (SemCond::Ge64, isa::SEM_GE64),
            (SemCond::Eq32, isa::SEM_EQ32),
            (SemCond::Eq64, isa::SEM_EQ64),
        ];
        for (i, (cond, code)) in (0u64..).zip(conds) {
            ours.sem_wait(0x300 * i, i, cond);
            theirs = theirs.sem_wait(0x300 * i, i, code);
        }
        assert_eq!(ours.to_bytes(), theirs.bytes());
    }

    #[test]
    fn opcodes_and_lengths_match_the_device_model() {
        let all = [
            (Opcode::Nop, isa::OP_NOP),
            (Opcode::Store32, isa::OP_STORE32),
            (Opcode::Store64, isa::OP_STORE64),
            (Opcode::Copy, isa::OP_COPY),
            (Opcode::Fill, isa::OP_FILL),
            (Opcode::Atomic, isa::OP_ATOMIC),
            (Opcode::Checksum, isa::OP_CHECKSUM),
            (Opcode::SemWait, isa::OP_SEM_WAIT),
            (Opcode::FenceWrite, isa::OP_FENCE_WRITE),
            (Opcode::Timestamp, isa::OP_TIMESTAMP),
            (Opcode::Saxpy, isa::OP_SAXPY),
            (Opcode::Hang, isa::OP_HANG),
            (Opcode::End, isa::OP_END),
        ];
        for (op, code) in all {
            assert_eq!(op as u8, code, "{op:?}");
            assert_eq!(Some(op.operands()), isa::operands(code), "{op:?}");
            assert_eq!(op.header(), isa::header(code, op.operands()), "{op:?}");
        }
        // The opcodes after END are unknown to the device model too.
        assert_eq!(isa::operands(Opcode::End as u8 + 1), None);
        assert_eq!(MAX_LEN, isa::MAX_LEN);
    }

    #[test]
    fn header_layout() {
        // Opcode in 7:0, length in words (header included) in 31:16.
        assert_eq!(Opcode::Store32.header(), 0x0003_0001);
        assert_eq!(Opcode::Atomic.header(), 0x0006_0005);
        assert_eq!(Opcode::End.header(), 0x0001_000c);
        let mut c = CmdBuf::new();
        c.saxpy(1, 2, 3, 2.0);
        assert_eq!(c.words(), [0x0005_000a, 1, 2, 3, 0x4000_0000]);
        assert_eq!(c.len_bytes(), 40);
        assert_eq!(c.to_bytes()[..8], [0x0a, 0, 0x05, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn checksum_is_the_device_models() {
        for data in [&b""[..], b"a", b"foobar", &[0xffu8; 300]] {
            assert_eq!(fnv1a64(data), isa::fnv1a64(data));
        }
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
