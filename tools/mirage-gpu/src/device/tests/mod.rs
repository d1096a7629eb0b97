//! Host tests of the device model, one file per hardware block, driving it
//! through the driver's-eye [`crate::rig::Rig`] (test-owned memory and a
//! page-table builder independent of the walker).

use super::*;
use crate::isa::*;
use crate::mmu::{Access, FaultKind};
use crate::rig::*;
use proptest::prelude::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod commands;
mod driver;
mod inflight;
mod mmu;
mod queues;
mod registers;
mod reset;
mod stall;
mod walker;

fn fault_code(status: u32) -> u32 {
    status & 0xff
}
fn fault_access(status: u32) -> u32 {
    (status >> 8) & 3
}
