//! The kernel driver's register map (`drivers/gpu/drm/mirage/regs.rs`, kernel Rust that cannot
//! be built here) is parsed as text and checked against the device model's: every register the
//! driver names must exist in the device at the same offset, arrays must have the device's
//! count and stride, and interrupt bits and command codes must agree.

use mirage_gpu::regs as dev;
use std::collections::HashMap;

const DRIVER_REGS: &str = include_str!("../../../drivers/gpu/drm/mirage/regs.rs");

/// A register as the driver's `register!` invocations declare it.
#[derive(Debug)]
struct DriverReg {
    name: String,
    offset: u64,
    /// Elements and stride, for register arrays.
    array: Option<(String, String)>,
}

fn parse_num(s: &str) -> Option<u64> {
    let s = s.trim().replace('_', "");
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `const NAME: TYPE = VALUE;` lines whose value is a plain number.
fn driver_consts() -> HashMap<String, u64> {
    DRIVER_REGS
        .lines()
        .filter_map(|l| {
            let t = l.trim();
            let rest = t
                .strip_prefix("pub(crate) const ")
                .or(t.strip_prefix("const "))?;
            let (name, rest) = rest.split_once(':')?;
            let value = rest.split_once('=')?.1.trim().strip_suffix(';')?;
            Some((name.trim().to_string(), parse_num(value)?))
        })
        .collect()
}

/// The value of the driver's constant `name`; a missing one fails the test.
fn driver_const(consts: &HashMap<String, u64>, name: &str) -> u64 {
    consts
        .get(name)
        .copied()
        .unwrap_or_else(|| panic!("const {name}"))
}

/// Every `NAME(u32) @ OFFSET {` and `NAME(u32)[N, stride = S] @ OFFSET {` declaration, and
/// every `irq_register!` use (`NAME @ OFFSET`).
fn driver_regs() -> Vec<DriverReg> {
    let mut regs = Vec::new();
    let mut lines = DRIVER_REGS.lines();
    while let Some(l) = lines.next() {
        let t = l.trim();
        if t == "irq_register!(" {
            // Doc comments, then `NAME @ OFFSET`.
            for l in lines.by_ref() {
                let t = l.trim();
                if let Some((name, off)) = t.split_once(" @ ") {
                    regs.push(DriverReg {
                        name: name.to_string(),
                        offset: parse_num(off).expect("irq_register! offset"),
                        array: None,
                    });
                    break;
                }
            }
            continue;
        }
        let Some(decl) = t.strip_prefix("pub(crate) ") else {
            continue;
        };
        let Some((head, off)) = decl.split_once(" @ ") else {
            continue;
        };
        let Some((name, shape)) = head.split_once("(u32)") else {
            continue;
        };
        if name.starts_with('$') {
            continue; // inside irq_register!'s own definition
        }
        let off = off.trim_end_matches('{').trim();
        let array = shape
            .trim()
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .map(|s| {
                let (n, stride) = s.split_once(", stride = ").expect("array shape");
                (n.trim().to_string(), stride.trim().to_string())
            });
        regs.push(DriverReg {
            name: name.to_string(),
            offset: parse_num(off).unwrap_or_else(|| panic!("offset of {name}: {off}")),
            array,
        });
    }
    regs
}

/// The device's fixed registers, by the names both sides use.
fn device_fixed() -> HashMap<&'static str, u64> {
    HashMap::from([
        ("ID", dev::ID),
        ("VERSION", dev::VERSION),
        ("FEATURES", dev::FEATURES),
        ("VRAM_SIZE_LO", dev::VRAM_SIZE_LO),
        ("VRAM_SIZE_HI", dev::VRAM_SIZE_HI),
        ("VA_BITS", dev::VA_BITS),
        ("PGSIZE_BITMAP", dev::PGSIZE_BITMAP),
        ("IRQ_RAWSTAT", dev::IRQ_RAWSTAT),
        ("IRQ_CLEAR", dev::IRQ_CLEAR),
        ("IRQ_MASK", dev::IRQ_MASK),
        ("IRQ_STATUS", dev::IRQ_STATUS),
        ("PING_COUNT", dev::PING_COUNT),
        ("DMA_ADDR_LO", dev::DMA_ADDR_LO),
        ("DMA_ADDR_HI", dev::DMA_ADDR_HI),
        ("DMA_LEN", dev::DMA_LEN),
        ("DMA_PATTERN", dev::DMA_PATTERN),
        ("DMA_STATUS", dev::DMA_STATUS),
        ("GPU_COMMAND", dev::GPU_COMMAND),
        ("RESET_COUNT", dev::RESET_COUNT),
        ("MMU_FAULT_STATUS", dev::MMU_FAULT_STATUS),
        ("MMU_FAULT_CLEAR", dev::MMU_FAULT_CLEAR),
        ("JOB_DONE_STATUS", dev::JOB_DONE_STATUS),
        ("JOB_DONE_CLEAR", dev::JOB_DONE_CLEAR),
        ("QUEUE_ERROR_STATUS", dev::QUEUE_ERROR_STATUS),
        ("QUEUE_ERROR_CLEAR", dev::QUEUE_ERROR_CLEAR),
        ("FAULTQ_BASE_LO", dev::FAULTQ_BASE_LO),
        ("FAULTQ_BASE_HI", dev::FAULTQ_BASE_HI),
        ("FAULTQ_SIZE", dev::FAULTQ_SIZE),
        ("FAULTQ_TAIL_WB_LO", dev::FAULTQ_TAIL_WB_LO),
        ("FAULTQ_TAIL_WB_HI", dev::FAULTQ_TAIL_WB_HI),
        ("DB_PING", dev::DB_PING),
        ("DB_DMA_FILL", dev::DB_DMA_FILL),
        ("DB_FAULTQ_HEAD", dev::DB_FAULTQ_HEAD),
        ("DB_FAULT_RESPONSE", dev::DB_FAULT_RESPONSE),
    ])
}

/// The device's per-address-space and per-queue registers, relative to their block.
fn device_relative() -> HashMap<&'static str, u64> {
    HashMap::from([
        ("AS_TRANSTAB_LO", dev::AS_TRANSTAB_LO),
        ("AS_TRANSTAB_HI", dev::AS_TRANSTAB_HI),
        ("AS_MEMATTR_LO", dev::AS_MEMATTR_LO),
        ("AS_MEMATTR_HI", dev::AS_MEMATTR_HI),
        ("AS_LOCKADDR_LO", dev::AS_LOCKADDR_LO),
        ("AS_LOCKADDR_HI", dev::AS_LOCKADDR_HI),
        ("AS_COMMAND", dev::AS_COMMAND),
        ("AS_FAULTSTATUS", dev::AS_FAULTSTATUS),
        ("AS_FAULTADDRESS_LO", dev::AS_FAULTADDRESS_LO),
        ("AS_FAULTADDRESS_HI", dev::AS_FAULTADDRESS_HI),
        ("AS_STATUS", dev::AS_STATUS),
        ("AS_TRANSCFG", dev::AS_TRANSCFG),
        ("Q_RING_BASE_LO", dev::Q_RING_BASE_LO),
        ("Q_RING_BASE_HI", dev::Q_RING_BASE_HI),
        ("Q_RING_SIZE", dev::Q_RING_SIZE),
        ("Q_AS", dev::Q_AS),
        ("Q_COMPLETION_LO", dev::Q_COMPLETION_LO),
        ("Q_COMPLETION_HI", dev::Q_COMPLETION_HI),
        ("Q_CONTROL", dev::Q_CONTROL),
        ("Q_STATUS", dev::Q_STATUS),
        ("Q_HEAD", dev::Q_HEAD),
        ("Q_TAIL", dev::Q_TAIL),
        ("Q_COMMAND", dev::Q_COMMAND),
        ("Q_ERROR", dev::Q_ERROR),
    ])
}

#[test]
fn the_parser_sees_the_whole_driver_map() {
    let regs = driver_regs();
    // Guards the checks below against a parser that silently finds nothing.
    assert!(regs.len() >= 40, "only {} registers parsed", regs.len());
    for name in ["ID", "IRQ_STATUS", "DB_QUEUE", "AS_TRANSCFG", "Q_CONTROL"] {
        assert!(regs.iter().any(|r| r.name == name), "{name} not parsed");
    }
}

#[test]
fn every_driver_register_is_the_devices() {
    let consts = driver_consts();
    let c = |n: &str| driver_const(&consts, n);
    let resolve = |s: &str| parse_num(s).unwrap_or_else(|| c(s));
    let fixed = device_fixed();
    let relative = device_relative();
    for r in driver_regs() {
        match &r.array {
            None => {
                let want = fixed
                    .get(r.name.as_str())
                    .unwrap_or_else(|| panic!("the device has no register {}", r.name));
                assert_eq!(r.offset, *want, "offset of {}", r.name);
            }
            Some((n, stride)) if r.name == "DB_QUEUE" => {
                assert_eq!(r.offset, dev::db_queue(0), "offset of DB_QUEUE");
                assert_eq!(resolve(stride), dev::db_queue(1) - dev::db_queue(0));
                assert_eq!(resolve(n), dev::N_QUEUES as u64, "DB_QUEUE count");
            }
            Some((n, stride)) => {
                let rel = relative
                    .get(r.name.as_str())
                    .unwrap_or_else(|| panic!("the device has no register {}", r.name));
                let (base, dev_stride, count) = if r.name.starts_with("AS_") {
                    (dev::AS_BASE, dev::AS_STRIDE, dev::N_AS)
                } else {
                    (dev::QUEUE_BASE, dev::QUEUE_STRIDE, dev::N_QUEUES)
                };
                assert_eq!(r.offset, base + rel, "offset of {}", r.name);
                assert_eq!(resolve(stride), dev_stride, "stride of {}", r.name);
                assert_eq!(resolve(n), count as u64, "count of {}", r.name);
            }
        }
    }
    assert_eq!(c("NUM_AS"), dev::N_AS as u64);
    assert_eq!(c("NUM_QUEUES"), dev::N_QUEUES as u64);
    // The driver maps the register and doorbell pages, below the MSI-X table.
    assert!(c("BAR0_MAPPED") <= dev::MSIX_TABLE && c("BAR0_MAPPED") <= dev::BAR0_SIZE);
    assert!(dev::QUEUE_BASE + dev::N_QUEUES as u64 * dev::QUEUE_STRIDE <= c("BAR0_MAPPED"));
}

/// Checks that the one-bit `N:N name => bool;` fields of `block` (a piece of the driver's map,
/// from `start` to `end`) are exactly `want`.
fn assert_bool_fields(start: &str, end: &str, want: &[(&str, u32)]) {
    let body = DRIVER_REGS.split_once(start).expect(start).1;
    let bits = bool_fields(&body[..body.find(end).expect(end)]);
    assert_eq!(bits.len(), want.len(), "{start}: {bits:?}");
    for (name, bit) in want {
        assert_eq!(bits.get(*name), Some(bit), "{start}: bit {name}");
    }
}

/// The one-bit `N:N name => bool;` fields of a block of the driver's map.
fn bool_fields(body: &str) -> HashMap<String, u32> {
    body.lines()
        .filter_map(|l| {
            let (pos, rest) = l.trim().split_once(' ')?;
            let (hi, lo) = pos.split_once(':')?;
            let name = rest.strip_suffix(" => bool;")?;
            assert_eq!(hi, lo, "{name} is one bit");
            Some((name.to_string(), 1 << lo.parse::<u32>().ok()?))
        })
        .collect()
}

#[test]
fn feature_bits_agree() {
    let want = [
        ("vram", dev::FEATURE_VRAM),
        ("ping", dev::FEATURE_PING),
        ("dma_fill", dev::FEATURE_DMA_FILL),
        ("mmu", dev::FEATURE_MMU),
        ("queues", dev::FEATURE_QUEUES),
        ("stall", dev::FEATURE_STALL),
        ("atomics", dev::FEATURE_ATOMICS),
    ];
    assert_bool_fields("pub(crate) FEATURES(u32) @ 0x008 {", "}", &want);
}

#[test]
fn interrupt_bits_and_command_codes_agree() {
    // The bit layout shared by IRQ_RAWSTAT/CLEAR/MASK/STATUS.
    let want = [
        ("ping", dev::IRQ_PING),
        ("dma", dev::IRQ_DMA),
        ("job", dev::IRQ_JOB),
        ("mmu", dev::IRQ_MMU),
        ("queue_error", dev::IRQ_QUEUE_ERROR),
        ("page_fault", dev::IRQ_PAGE_FAULT),
        ("reset", dev::IRQ_RESET),
    ];
    assert_bool_fields("macro_rules! irq_register", "\n}\n", &want);

    let consts = driver_consts();
    let c = |n: &str| driver_const(&consts, n);
    assert_eq!(c("GPU_CMD_SOFT_RESET"), u64::from(dev::GPU_CMD_SOFT_RESET));
    assert_eq!(c("AS_CMD_UPDATE"), u64::from(dev::AS_CMD_UPDATE));
    assert_eq!(c("Q_CMD_RESET"), u64::from(dev::Q_CMD_RESET));
    assert_eq!(c("AS_CMD_FLUSH_RANGE"), u64::from(dev::AS_CMD_FLUSH_RANGE));
    assert_eq!(c("Q_CMD_RESUME"), u64::from(dev::Q_CMD_RESUME));
    assert_eq!(c("JOB_STATUS_OK"), u64::from(dev::JOB_OK));
    assert_eq!(c("DMA_DONE"), u64::from(dev::DMA_DONE));
    assert_eq!(c("VERSION_MAJOR"), u64::from(dev::VERSION_MAJOR));
    assert_eq!(1u64 << c("DMA_BITS"), dev::VRAM_BASE);
    assert!(
        DRIVER_REGS.contains("ID_MAGIC: u32 = u32::from_le_bytes(*b\"MRAG\")")
            && dev::ID_MAGIC == u32::from_le_bytes(*b"MRAG"),
        "ID magic"
    );
}
