// SPDX-License-Identifier: GPL-2.0 or MIT

//! Probe-time self-tests: the interrupt path, DMA, and one job through the MMU.
//!
//! Each proves one layer the rest of the driver builds on, and fails probe with a message that
//! names the layer, rather than leaving a later job to hang.

use kernel::{
    device::Bound,
    dma::Coherent,
    io::{poll::read_poll_timeout, register::Array, Io},
    pci,
    prelude::*,
    time::Delta,
};

use crate::{
    irq::{Bar0, IrqHandler},
    regs,
};

/// How long a self-test waits for the device's interrupt.
const IRQ_TIMEOUT: Delta = Delta::from_millis(2000);

/// Waits until `count` (an interrupt counter of the handler) moves past `before`.
fn wait_irq<T: Copy + PartialEq>(before: T, count: impl Fn() -> T) -> Result {
    read_poll_timeout(
        || Ok(count()),
        |&n| n != before,
        Delta::from_millis(1),
        IRQ_TIMEOUT,
    )
    .map(|_| ())
}

/// Rings the ping doorbell and waits for its interrupt, so that a broken interrupt path fails
/// probe instead of hanging the first job.
pub(crate) fn ping(pdev: &pci::Device<Bound>, bar: &Bar0<'_>, handler: &IrqHandler) -> Result {
    let before = handler.pings();
    bar.write_reg(regs::DB_PING::zeroed().with_value(0x5e1f_7e57u32));
    wait_irq(before, || handler.pings()).inspect_err(|_| {
        dev_err!(
            pdev,
            "interrupt self-test failed: no MSI-X interrupt {} ms after a ping (IRQ_RAWSTAT={:#x}, PING_COUNT={})\n",
            IRQ_TIMEOUT.as_millis(),
            bar.read(regs::IRQ_RAWSTAT).into_raw(),
            bar.read(regs::PING_COUNT).value().get()
        )
    })
}

/// Has the device fill a coherent buffer, so that a broken DMA path (unshared guest RAM, a
/// wrong mask) fails probe with a clear message.
pub(crate) fn dma_fill(pdev: &pci::Device<Bound>, bar: &Bar0<'_>, handler: &IrqHandler) -> Result {
    const WORDS: usize = 1024;
    const PATTERN: u32 = 0xd1a6_0057;
    let buf = Coherent::<u32>::zeroed_slice(pdev.as_ref(), WORDS, GFP_KERNEL)?;
    let addr = buf.dma_address();
    let before = handler.dma_done();
    bar.write_reg(regs::DMA_ADDR_LO::zeroed().with_value(addr as u32));
    bar.write_reg(regs::DMA_ADDR_HI::zeroed().with_value((addr >> 32) as u32));
    bar.write_reg(regs::DMA_LEN::zeroed().with_value((WORDS * 4) as u32));
    bar.write_reg(regs::DMA_PATTERN::zeroed().with_value(PATTERN));
    bar.write_reg(regs::DB_DMA_FILL::zeroed().with_value(1u32));
    wait_irq(before, || handler.dma_done())
        .inspect_err(|_| dev_err!(pdev, "DMA self-test: no completion interrupt\n"))?;
    let status = bar.read(regs::DMA_STATUS).value().get();
    if status != regs::DMA_DONE {
        dev_err!(pdev, "DMA self-test: device reports status {} for {:#x}; is guest RAM shared with the device?\n", status, addr);
        return Err(EIO);
    }
    // SAFETY: The device finished the fill (its interrupt was seen with Acquire ordering) and
    // was given no further work on this buffer.
    let words = unsafe { buf.as_ref() };
    if let Some(i) = words.iter().position(|&w| w != PATTERN) {
        dev_err!(
            pdev,
            "DMA self-test: word {} reads {:#010x}, expected {:#010x}\n",
            i,
            words[i],
            PATTERN
        );
        return Err(EIO);
    }
    Ok(())
}

/// io-pgtable-arm's MAIR: index 0 non-cacheable, 1 write-back, 2 device, 3 inner-NC.
const MAIR: u64 = 0xf404_ff44;
/// A level-3 page descriptor: valid page, access flag, attribute index 1 (write-back).
const PTE_PAGE: u64 = 0b11 | (1 << 10) | (1 << 2);
const PTE_TABLE: u64 = 0b11;

/// Command-stream words, as in `Documentation/gpu/mirage.rst`.
const fn cmd_header(op: u64, operands: u64) -> u64 {
    op | ((operands + 1) << 16)
}
const OP_STORE32: u64 = 0x01;
const OP_STORE64: u64 = 0x02;
const OP_FILL: u64 = 0x04;
const OP_ATOMIC: u64 = 0x05;
const ATOMIC_INC32: u64 = 2;
const JOB_FLAG_IRQ: u64 = 1;

/// Runs one job on queue 0 in address space 0, through page tables built here that map GPU
/// virtual addresses to the same bus addresses ("identity-style"), and checks every byte it
/// wrote. Queue and address space are switched off again afterwards.
pub(crate) fn mmu_job(pdev: &pci::Device<Bound>, bar: &Bar0<'_>, handler: &IrqHandler) -> Result {
    // 16 pages; the DMA API aligns a coherent allocation to its size, so the pages share one
    // 2 MiB region and one table per level covers them. Pages 0-3: level 0-3 tables.
    const CMD: usize = 4;
    const RING: usize = 5;
    const DONE: usize = 6;
    const DATA: usize = 7;
    const COOKIE: u64 = 0x0123_4567_89ab_cdef;
    let buf = Coherent::<u64>::zeroed_slice(pdev.as_ref(), 16 * 512, GFP_KERNEL)?;
    let page = |i: usize| buf.dma_address() + (i as u64) * 4096;
    if page(0) >> 21 != page(15) >> 21 {
        dev_err!(
            pdev,
            "MMU self-test: buffer {:#x} crosses a 2 MiB boundary\n",
            page(0)
        );
        return Err(EINVAL);
    }
    let data = page(DATA);
    let cmds: [u64; 16] = [
        cmd_header(OP_STORE32, 2),
        data,
        0x5eed_0001,
        cmd_header(OP_STORE64, 2),
        data + 8,
        COOKIE,
        cmd_header(OP_FILL, 3),
        data + 64,
        256,
        0xa5a5_5a5a,
        cmd_header(OP_ATOMIC, 5),
        data + 16,
        ATOMIC_INC32,
        0,
        0,
        data + 20,
    ];
    {
        // SAFETY: The device has not been given any address in the buffer yet.
        let w = unsafe { buf.as_mut() };
        for level in 0..3 {
            let idx = ((page(CMD) >> (39 - 9 * level)) & 511) as usize;
            w[level * 512 + idx] = page(level + 1) | PTE_TABLE;
        }
        for p in CMD..=DATA {
            w[3 * 512 + ((page(p) >> 12) & 511) as usize] = page(p) | PTE_PAGE;
        }
        w[CMD * 512..CMD * 512 + cmds.len()].copy_from_slice(&cmds);
        // Job descriptor: command buffer VA, length | flags << 32, seqno.
        w[RING * 512] = page(CMD);
        w[RING * 512 + 1] = (cmds.len() as u64 * 8) | (JOB_FLAG_IRQ << 32);
        w[RING * 512 + 2] = 1;
        w[DATA * 512 + 2] = 41;
    }

    // Address space 0 and queue 0, which probe owns: nothing else runs yet.
    let lo = |v: u64| v as u32;
    let hi = |v: u64| (v >> 32) as u32;
    bar.write(
        regs::AS_TRANSTAB_LO::at(0),
        regs::AS_TRANSTAB_LO::from(lo(page(0))),
    );
    bar.write(
        regs::AS_TRANSTAB_HI::at(0),
        regs::AS_TRANSTAB_HI::from(hi(page(0))),
    );
    bar.write(
        regs::AS_MEMATTR_LO::at(0),
        regs::AS_MEMATTR_LO::from(lo(MAIR)),
    );
    bar.write(
        regs::AS_MEMATTR_HI::at(0),
        regs::AS_MEMATTR_HI::from(hi(MAIR)),
    );
    bar.write(
        regs::AS_TRANSCFG::at(0),
        regs::AS_TRANSCFG::zeroed().with_enable(true),
    );
    bar.write(
        regs::AS_COMMAND::at(0),
        regs::AS_COMMAND::zeroed().with_command(regs::AS_CMD_UPDATE),
    );
    bar.write(
        regs::Q_RING_BASE_LO::at(0),
        regs::Q_RING_BASE_LO::from(lo(page(RING))),
    );
    bar.write(
        regs::Q_RING_BASE_HI::at(0),
        regs::Q_RING_BASE_HI::from(hi(page(RING))),
    );
    bar.write(regs::Q_RING_SIZE::at(0), regs::Q_RING_SIZE::from(2));
    bar.write(regs::Q_AS::at(0), regs::Q_AS::from(0));
    bar.write(
        regs::Q_COMPLETION_LO::at(0),
        regs::Q_COMPLETION_LO::from(lo(page(DONE))),
    );
    bar.write(
        regs::Q_COMPLETION_HI::at(0),
        regs::Q_COMPLETION_HI::from(hi(page(DONE))),
    );
    bar.write(
        regs::Q_CONTROL::at(0),
        regs::Q_CONTROL::zeroed().with_enable(true),
    );

    let counts = || (handler.jobs_done(), handler.queue_errors());
    let before = counts();
    bar.write(regs::DB_QUEUE::at(0), regs::DB_QUEUE::from(1));
    let waited = wait_irq(before, counts);

    // Switch the queue and the address space off before judging, so that the device is
    // quiet whatever happened.
    bar.write(regs::Q_CONTROL::at(0), regs::Q_CONTROL::zeroed());
    bar.write(
        regs::Q_COMMAND::at(0),
        regs::Q_COMMAND::zeroed().with_command(regs::Q_CMD_RESET),
    );
    let fault = (
        bar.read(regs::AS_FAULTSTATUS::at(0)),
        bar.read(regs::AS_FAULTADDRESS_LO::at(0)).value().get(),
    );
    bar.write(regs::AS_TRANSCFG::at(0), regs::AS_TRANSCFG::zeroed());
    bar.write(
        regs::AS_COMMAND::at(0),
        regs::AS_COMMAND::zeroed().with_command(regs::AS_CMD_UPDATE),
    );
    if waited.is_err() {
        dev_err!(pdev, "MMU self-test: the job did not complete\n");
        return Err(EIO);
    }

    // SAFETY: The job completed (seen through the interrupt counters with Acquire ordering)
    // and the queue is off, so the device no longer touches the buffer.
    let w = unsafe { buf.as_ref() };
    let (seqno, status) = (w[DONE * 512], w[DONE * 512 + 1] as u32);
    if seqno != 1 || status != 0 {
        dev_err!(
            pdev,
            "MMU self-test: job {} ended with status {} (fault {:#x}, access {}, at {:#x})\n",
            seqno,
            status,
            fault.0.exception().get(),
            fault.0.access().get(),
            fault.1
        );
        return Err(EIO);
    }
    let d = &w[DATA * 512..DATA * 512 + 48];
    let filled = d[8..40].iter().all(|&x| x == 0xa5a5_5a5a_a5a5_5a5a);
    if d[0] != 0x5eed_0001 || d[1] != COOKIE || d[2] != 42 | (41 << 32) || !filled || d[40] != 0 {
        dev_err!(
            pdev,
            "MMU self-test: wrong data {:#x} {:#x} {:#x}\n",
            d[0],
            d[1],
            d[2]
        );
        return Err(EIO);
    }
    Ok(())
}
