//! `mirage-bench`: what mirage's ioctls cost, measured side by side in one
//! run, with each cost as a ratio to a no-op ioctl's. `make bench` boots
//! the test guest, runs it and prints its output on the host.
//!
//! It is a benchmark, not a test: it prints numbers and exits nonzero only
//! if an ioctl it needs fails, never because of a timing.

mod budget;
mod debugfs;

use budget::Op;
use mirage::uapi::*;
use mirage::{Bo, Device};
use std::io;
use std::path::Path;
use std::time::Instant;

const SZ_4K: u64 = 4096;
const SYSTEM: u32 = DRM_MIRAGE_GEM_CREATE_FLAG_SYSTEM;
const DEBUGFS: &str = "/sys/kernel/debug/mirage";

/// Calls of the no-op ioctl, after as many to warm up.
const NOOPS: usize = 20_000;
/// Map + unmap pairs of one 4 KiB page.
const PAIRS: usize = 2_000;
/// The large bind: this many arrays of this many 4 KiB maps.
const ARRAYS: usize = 10;
const ARRAY_OPS: usize = 1_000;

/// Nanoseconds `f` took.
fn timed<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let t = Instant::now();
    let r = f();
    (t.elapsed().as_nanos() as u64, r)
}

/// The median and 90th percentile of some timings, in ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    median: u64,
    p90: u64,
}

/// The [`Stat`] of `v`, which must not be empty.
fn median_p90(v: &mut [u64]) -> Stat {
    v.sort_unstable();
    Stat {
        median: v[v.len() / 2],
        p90: v[(v.len() * 9) / 10],
    }
}

/// A VM's pool counters, or why they cannot be read.
fn pool(vm: u32) -> Result<debugfs::Pool, String> {
    debugfs::find(Path::new(DEBUGFS), vm, std::process::id()).map(|f| f.pool)
}

/// Page tables over one sequence of binds: what mirage reserved and used
/// (from debugfs), and what panthor's and msm's formulas would reserve.
struct Tables {
    what: &'static str,
    ops: usize,
    mirage: Result<debugfs::Pool, String>,
    panthor: u64,
    msm: u64,
}

fn ratio(n: u64, d: u64) -> String {
    if d == 0 {
        "-".into()
    } else {
        format!("{:.2}x", n as f64 / d as f64)
    }
}

/// One timing line: `s` and its median's ratio to the no-op's.
fn line(what: &str, s: Stat, noop: &Stat) {
    println!(
        "{what:<44} {:>11} ns {:>11} ns {:>10}",
        s.median,
        s.p90,
        ratio(s.median, noop.median)
    );
}

fn err(what: &str) -> impl Fn(io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The no-op: GET_PARAM of a constant.
fn noop(d: &Device) -> Result<Stat, String> {
    let mut t = Vec::with_capacity(NOOPS);
    for i in 0..2 * NOOPS {
        let (ns, r) = timed(|| d.get_param(DRM_MIRAGE_PARAM_VA_BITS));
        r.map_err(err("GET_PARAM"))?;
        if i >= NOOPS {
            t.push(ns);
        }
    }
    Ok(median_p90(&mut t))
}

/// Map and unmap one 4 KiB page, over and over, in a VM of its own; the
/// medians of each.
fn pairs(d: &Device) -> Result<(Stat, Stat, Tables), String> {
    let vm = d.vm_create(0).map_err(err("VM_CREATE"))?;
    let bo = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(err("GEM_CREATE"))?;
    let va = 0x1000_0000;
    let map = DrmMirageVmBindOp::map(bo.handle(), 0, va, SZ_4K);
    let unmap = DrmMirageVmBindOp::unmap(va, SZ_4K);
    let before = pool(vm);
    let (mut tm, mut tu) = (Vec::with_capacity(PAIRS), Vec::with_capacity(PAIRS));
    let (mut panthor, mut msm) = (0, 0);
    for _ in 0..PAIRS {
        let (ns, r) = timed(|| d.vm_bind(vm, 0, &[map], &[]));
        r.map_err(err("VM_BIND map"))?;
        tm.push(ns);
        let (ns, r) = timed(|| d.vm_bind(vm, 0, &[unmap], &[]));
        r.map_err(err("VM_BIND unmap"))?;
        tu.push(ns);
        for job in [
            [Op::Map { va, size: SZ_4K }],
            [Op::Unmap { va, size: SZ_4K }],
        ] {
            panthor += budget::panthor(&job);
            msm += budget::msm(&job);
        }
    }
    let mirage = before.and_then(|b| pool(vm).map(|a| a.since(&b)));
    d.vm_destroy(vm).map_err(err("VM_DESTROY"))?;
    let tables = Tables {
        what: "4 KiB map + unmap pairs",
        ops: 2 * PAIRS,
        mirage,
        panthor,
        msm,
    };
    Ok((median_p90(&mut tm), median_p90(&mut tu), tables))
}

/// [`ARRAYS`] binds of [`ARRAY_OPS`] 4 KiB maps each, at distinct,
/// consecutive addresses, in a VM of its own; then one unmap of it all.
/// Returns the median ns per op of the arrays, the unmap's ns, and the
/// tables.
fn arrays(d: &Device) -> Result<(Stat, u64, Tables), String> {
    let vm = d.vm_create(0).map_err(err("VM_CREATE"))?;
    let bo = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(err("GEM_CREATE"))?;
    let base = 1 << 32;
    let before = pool(vm);
    let (mut per_op, mut panthor, mut msm) = (Vec::new(), 0, 0);
    for a in 0..ARRAYS {
        let first = (a * ARRAY_OPS) as u64;
        let ops: Vec<_> = (first..first + ARRAY_OPS as u64)
            .map(|i| DrmMirageVmBindOp::map(bo.handle(), 0, base + i * SZ_4K, SZ_4K))
            .collect();
        let job: Vec<_> = ops
            .iter()
            .map(|o| Op::Map {
                va: o.addr,
                size: o.range,
            })
            .collect();
        panthor += budget::panthor(&job);
        msm += budget::msm(&job);
        let (ns, r) = timed(|| d.vm_bind(vm, 0, &ops, &[]));
        r.map_err(err("VM_BIND of 1000 maps"))?;
        per_op.push(ns / ARRAY_OPS as u64);
    }
    let mirage = before.and_then(|b| pool(vm).map(|a| a.since(&b)));
    let size = (ARRAYS * ARRAY_OPS) as u64 * SZ_4K;
    let (unmap_ns, r) = timed(|| d.vm_bind(vm, 0, &[DrmMirageVmBindOp::unmap(base, size)], &[]));
    r.map_err(err("VM_BIND unmap"))?;
    d.vm_destroy(vm).map_err(err("VM_DESTROY"))?;
    let tables = Tables {
        what: "10 arrays of 1000 4 KiB maps",
        ops: ARRAYS * ARRAY_OPS,
        mirage,
        panthor,
        msm,
    };
    Ok((median_p90(&mut per_op), unmap_ns, tables))
}

// --- EXEC of an empty job to completion --------------------------------------

/// Jobs of the EXEC item, after as many to warm up.
const JOBS: usize = 200;

/// An empty command buffer (one END) submitted to a COMPUTE exec queue, each
/// job waited for through its out-syncobj: ns per job, submission to
/// completion.
fn exec_empty_job(d: &Device) -> Option<Result<Stat, String>> {
    Some(exec_jobs(d))
}

fn exec_jobs(d: &Device) -> Result<Stat, String> {
    const CMD_VA: u64 = 0x1000_0000;
    let vm = d.vm_create(0).map_err(err("VM_CREATE"))?;
    let queue = d
        .exec_queue_create(
            vm,
            DRM_MIRAGE_ENGINE_CLASS_COMPUTE,
            DRM_MIRAGE_EXEC_QUEUE_PRIORITY_NORMAL,
        )
        .map_err(err("EXEC_QUEUE_CREATE"))?;
    let cmd = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(err("GEM_CREATE"))?;
    let end = mirage::cmd::CmdBuf::new().end().to_bytes();
    cmd.mmap()
        .and_then(|m| m.write(0, &end))
        .map_err(err("writing the command buffer"))?;
    d.vm_bind(
        vm,
        0,
        &[DrmMirageVmBindOp::map(cmd.handle(), 0, CMD_VA, SZ_4K)],
        &[],
    )
    .map_err(err("VM_BIND"))?;
    let out = d.syncobj_create(0).map_err(err("SYNCOBJ_CREATE"))?;
    let mut times = Vec::with_capacity(JOBS);
    for i in 0..2 * JOBS {
        let (ns, r) = timed(|| -> io::Result<()> {
            d.exec(
                queue,
                CMD_VA,
                end.len() as u64,
                &[DrmMirageSync::signal(out)],
            )?;
            d.syncobj_wait(out, 0, i64::MAX)
        });
        r.map_err(err("EXEC"))?;
        if i >= JOBS {
            times.push(ns);
        }
    }
    d.syncobj_destroy(out).map_err(err("SYNCOBJ_DESTROY"))?;
    d.exec_queue_destroy(queue)
        .map_err(err("EXEC_QUEUE_DESTROY"))?;
    d.vm_destroy(vm).map_err(err("VM_DESTROY"))?;
    Ok(median_p90(&mut times))
}

fn run() -> Result<(), String> {
    let d = Device::open().map_err(err("opening the render node"))?;
    println!("mirage-bench: costs measured side by side in this one boot. The guest runs");
    println!("the debug kernel of `make check` (KASAN, lockdep, kmemleak), maybe under TCG:");
    println!("absolute times are inflated; the ratios to the no-op ioctl are what compare.");
    println!();
    println!(
        "{:<44} {:>14} {:>14} {:>10}",
        "operation", "median", "p90", "/ no-op"
    );
    let noop = noop(&d)?;
    line(
        &format!("no-op ioctl (GET_PARAM), {NOOPS} calls"),
        noop,
        &noop,
    );
    let (map, unmap, pair_tables) = pairs(&d)?;
    line(&format!("VM_BIND map 4 KiB, {PAIRS} calls"), map, &noop);
    line(&format!("VM_BIND unmap 4 KiB, {PAIRS} calls"), unmap, &noop);
    let (per_op, unmap_all, array_tables) = arrays(&d)?;
    line(
        &format!("VM_BIND of {ARRAY_OPS} 4 KiB maps, per op ({ARRAYS} calls)"),
        per_op,
        &noop,
    );
    let once = Stat {
        median: unmap_all,
        p90: unmap_all,
    };
    line("VM_BIND unmap of those 40000 KiB (one call)", once, &noop);
    let exec = "EXEC of an empty job to completion";
    match exec_empty_job(&d) {
        None => println!("{exec:<44} n/a (not measured yet)"),
        Some(r) => line(exec, r?, &noop),
    }

    println!();
    println!("page tables reserved for the binds above, against the tables mirage used");
    println!(
        "{:<30} {:>6} {:>6} {:>16} {:>16} {:>16}",
        "binds", "ops", "used", "mirage reserved", "panthor would", "msm would"
    );
    let mut missing = None;
    for t in [&pair_tables, &array_tables] {
        let (used, reserved) = match &t.mirage {
            Ok(p) => (
                p.used.to_string(),
                format!("{} ({})", p.reserved, ratio(p.reserved, p.used)),
            ),
            Err(e) => {
                missing = Some(e.clone());
                ("n/a".into(), "n/a".into())
            }
        };
        let vs = |n: u64| match &t.mirage {
            Ok(p) => format!("{n} ({})", ratio(n, p.used)),
            Err(_) => n.to_string(),
        };
        println!(
            "{:<30} {:>6} {:>6} {:>16} {:>16} {:>16}",
            t.what,
            t.ops,
            used,
            reserved,
            vs(t.panthor),
            vs(t.msm)
        );
        if let Ok(p) = &t.mirage {
            if p.exhausted != 0 {
                println!("  (the pool ran dry {} times: a driver bug)", p.exhausted);
            }
        }
    }
    if let Some(e) = missing {
        println!("mirage's counts: n/a ({e})");
    }
    println!("(ratios: reserved / used; panthor and msm counted with their drivers' formulas)");
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            println!("mirage-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p90_of_sorted_ranks() {
        let mut v = vec![9, 1, 5, 3, 7, 2, 8, 4, 6, 10];
        assert_eq!(median_p90(&mut v), Stat { median: 6, p90: 10 });
        assert_eq!(
            median_p90(&mut [42]),
            Stat {
                median: 42,
                p90: 42
            }
        );
    }

    #[test]
    fn ratios_print_two_decimals_and_no_division_by_zero() {
        assert_eq!(ratio(3, 2), "1.50x");
        assert_eq!(ratio(30000, 22), "1363.64x");
        assert_eq!(ratio(1, 0), "-");
    }
}
