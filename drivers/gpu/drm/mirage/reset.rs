// SPDX-License-Identifier: GPL-2.0 or MIT

//! Bringing the device to a known, quiet state: at probe, whatever the previous driver
//! instance left running, and at unbind, so that nothing DMAs once the driver is gone.

use kernel::{
    io::{poll::read_poll_timeout, register::Array, Io},
    prelude::*,
    time::Delta,
};

use crate::{irq::Bar0, regs};

/// How long a soft reset may take: it first waits for the command in flight, which can be a
/// long copy under TCG.
const RESET_TIMEOUT: Delta = Delta::from_millis(2000);

/// Resets the whole device and waits until it reports the reset done.
///
/// The reset drops every job, disables every queue and address space and clears the TLBs and
/// the fault queue. It also zeroes `IRQ_MASK`, so its own `RESET` interrupt never fires:
/// completion is polled through `RESET_COUNT`.
pub(crate) fn soft_reset(bar: &Bar0<'_>) -> Result {
    let before = bar.read(regs::RESET_COUNT).value().get();
    bar.write_reg(regs::GPU_COMMAND::zeroed().with_command(regs::GPU_CMD_SOFT_RESET));
    read_poll_timeout(
        || Ok(bar.read(regs::RESET_COUNT).value().get()),
        |&count| count != before,
        Delta::from_millis(1),
        RESET_TIMEOUT,
    )
    .map(|_| ())
}

/// Stops every queue, switches every address space off, masks interrupts and resets.
///
/// The explicit stops come first so that a device whose reset is broken still stops fetching
/// jobs; the reset then guarantees that no command is in flight when this returns.
pub(crate) fn quiesce(bar: &Bar0<'_>) -> Result {
    bar.write_reg(regs::IRQ_MASK::zeroed());
    for q in 0..regs::NUM_QUEUES {
        bar.write(
            regs::Q_CONTROL::try_at(q).ok_or(EINVAL)?,
            regs::Q_CONTROL::zeroed(),
        );
        bar.write(
            regs::Q_COMMAND::try_at(q).ok_or(EINVAL)?,
            regs::Q_COMMAND::zeroed().with_command(regs::Q_CMD_RESET),
        );
    }
    for a in 0..regs::NUM_AS {
        bar.write(
            regs::AS_TRANSCFG::try_at(a).ok_or(EINVAL)?,
            regs::AS_TRANSCFG::zeroed(),
        );
        bar.write(
            regs::AS_COMMAND::try_at(a).ok_or(EINVAL)?,
            regs::AS_COMMAND::zeroed().with_command(regs::AS_CMD_UPDATE),
        );
    }
    soft_reset(bar)?;
    bar.write_reg(regs::IRQ_CLEAR::from(u32::MAX));
    Ok(())
}
