//! `mirage-bench`: what mirage's ioctls cost, measured side by side in one
//! run, with each cost as a ratio to a no-op ioctl's. `make bench` boots
//! the test guest, runs it and prints its output on the host.
//!
//! It is a benchmark, not a test: it prints numbers and exits nonzero only
//! if an ioctl it needs fails, never because of a timing.

mod anon;
mod bind_async;
mod budget;
mod debugfs;
mod empty_job;
mod svm;
mod userptr;

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
/// Map + unmap pairs of one 4 KiB page, sync and async.
const PAIRS: usize = 2_000;
/// Where the pairs map their page, each sequence in a VM of its own.
const PAIR_VA: u64 = 0x1000_0000;
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

/// CLOCK_MONOTONIC now plus `ms`, in ns: a syncobj wait's deadline.
fn deadline_in(ms: i64) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec + ms * 1_000_000
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

/// `n` things in `ns` nanoseconds: ns per thing (rounded down) and things
/// per second (rounded to nearest); `None` for none, or no time.
fn per_and_rate(ns: u64, n: usize) -> Option<(u64, u64)> {
    let n = n as u64;
    if n == 0 || ns == 0 {
        return None;
    }
    let rate = (u128::from(n) * 1_000_000_000 + u128::from(ns) / 2) / u128::from(ns);
    Some((ns / n, u64::try_from(rate).unwrap_or(u64::MAX)))
}

/// A throughput line: `binds` binds in `ns`, as ns per bind (its ratio to
/// the no-op's median) and binds per second.
fn rate_line(what: &str, ns: u64, binds: usize, noop: &Stat) {
    match per_and_rate(ns, binds) {
        Some((per, rate)) => println!(
            "{what:<44} {per:>11} ns {:>14} {:>10} {rate:>8} binds/s",
            "-",
            ratio(per, noop.median)
        ),
        None => println!("{what:<44} n/a (no binds, or no time)"),
    }
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

/// What panthor's and msm's formulas reserve for `pairs` map + unmap
/// pairs of one 4 KiB page at [`PAIR_VA`], one bind per op.
fn pair_budgets(pairs: usize) -> (u64, u64) {
    let (mut panthor, mut msm) = (0, 0);
    for job in [
        [Op::Map {
            va: PAIR_VA,
            size: SZ_4K,
        }],
        [Op::Unmap {
            va: PAIR_VA,
            size: SZ_4K,
        }],
    ] {
        panthor += budget::panthor(&job);
        msm += budget::msm(&job);
    }
    (panthor * pairs as u64, msm * pairs as u64)
}

/// The sync pairs: the medians of the maps and of the unmaps, and the
/// time of all the ioctls.
struct Pairs {
    map: Stat,
    unmap: Stat,
    total_ns: u64,
    tables: Tables,
}

/// Map and unmap one 4 KiB page, over and over, in a VM of its own, with
/// synchronous binds.
fn pairs(d: &Device) -> Result<Pairs, String> {
    let vm = d.vm_create(0).map_err(err("VM_CREATE"))?;
    let bo = Bo::new(d, SZ_4K, SYSTEM, 0).map_err(err("GEM_CREATE"))?;
    let map = DrmMirageVmBindOp::map(bo.handle(), 0, PAIR_VA, SZ_4K);
    let unmap = DrmMirageVmBindOp::unmap(PAIR_VA, SZ_4K);
    let before = pool(vm);
    let (mut tm, mut tu) = (Vec::with_capacity(PAIRS), Vec::with_capacity(PAIRS));
    for _ in 0..PAIRS {
        let (ns, r) = timed(|| d.vm_bind(vm, 0, &[map], &[]));
        r.map_err(err("VM_BIND map"))?;
        tm.push(ns);
        let (ns, r) = timed(|| d.vm_bind(vm, 0, &[unmap], &[]));
        r.map_err(err("VM_BIND unmap"))?;
        tu.push(ns);
    }
    let mirage = before.and_then(|b| pool(vm).map(|a| a.since(&b)));
    d.vm_destroy(vm).map_err(err("VM_DESTROY"))?;
    let (panthor, msm) = pair_budgets(PAIRS);
    let tables = Tables {
        what: "4 KiB map + unmap pairs",
        ops: 2 * PAIRS,
        mirage,
        panthor,
        msm,
    };
    Ok(Pairs {
        total_ns: tm.iter().chain(&tu).sum(),
        map: median_p90(&mut tm),
        unmap: median_p90(&mut tu),
        tables,
    })
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
    let vm = empty_job::EmptyJob::new(d)?;
    let mut times = Vec::with_capacity(JOBS);
    for i in 0..2 * JOBS {
        let ns = vm.exec()?;
        if i >= JOBS {
            times.push(ns);
        }
    }
    Ok(median_p90(&mut times))
}

/// One row of the page-table table: mirage's counts (`n/a` if debugfs
/// could not be read) and the formulas', each with its ratio to what
/// mirage used.
fn table_row(t: &Tables) -> String {
    let (used, reserved, dry, left) = match &t.mirage {
        Ok(p) => (
            p.used.to_string(),
            format!("{} ({})", p.reserved, ratio(p.reserved, p.used)),
            p.exhausted.to_string(),
            p.available.to_string(),
        ),
        Err(_) => ("n/a".into(), "n/a".into(), "n/a".into(), "n/a".into()),
    };
    let vs = |n: u64| match &t.mirage {
        Ok(p) => format!("{n} ({})", ratio(n, p.used)),
        Err(_) => n.to_string(),
    };
    format!(
        "{:<30} {:>6} {:>6} {:>16} {:>16} {:>16} {:>5} {:>5}",
        t.what,
        t.ops,
        used,
        reserved,
        vs(t.panthor),
        vs(t.msm),
        dry,
        left
    )
}

/// GPU page faults of a fault-mode VM against the bare device round trip.
fn svm_lines(d: &Device) -> Result<(), String> {
    let f = svm::figures(d)?;
    let ping = f.ping;
    println!(
        "{:<44} {:>11} ns {:>11} ns {:>10}",
        "bare device round trip (ping, IRQ, ack)", ping.median, ping.p90, "/ ping 1.00x"
    );
    for (what, s) in [
        (
            format!("GPU fault, 4 KiB range ({} faults)", svm::PAGES),
            f.fault_4k,
        ),
        (
            format!("GPU fault, 2 MiB range ({} faults)", svm::BIG),
            f.fault_2m,
        ),
        (
            format!("GPU fault, 2 MiB range over a table ({})", svm::BIG),
            f.fault_2m_over_table,
        ),
    ] {
        let [n, service, get_pages, bind, tlb] = s;
        if n == 0 {
            println!("{what:<44} n/a (no fault of that size)");
            continue;
        }
        println!(
            "{what:<44} {:>11} ns {:>14} {:>10}",
            service / n,
            "mean",
            ratio(service / n, ping.median)
        );
        for (stage, v) in [("get_pages", get_pages), ("bind", bind), ("TLB", tlb)] {
            println!(
                "{:<44} {:>11} ns {:>14} {:>10}",
                format!("  {stage}"),
                v / n,
                "",
                ratio(v / n, ping.median)
            );
        }
    }
    let [passes, ranges, ns] = f.gc;
    match ns.checked_div(ranges) {
        Some(per) => println!(
            "{:<44} {:>11} ns {:>14} {:>10}",
            format!(
                "GC, per range ({ranges} ranges, {passes} pass{})",
                if passes == 1 { "" } else { "es" }
            ),
            per,
            "",
            ratio(per, ping.median)
        ),
        None => println!("GC: n/a (no range collected)"),
    }
    println!("(GPU faults: mean service time from the fault record to resume, and its stages,");
    println!(" as the driver sums them; ratios to the bare round trip's median; TLB: an");
    println!(" invalidation, needed only where a block replaced a table the TLB may cache)");
    Ok(())
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
    let pairs = pairs(&d)?;
    line(
        &format!("VM_BIND map 4 KiB, {PAIRS} calls"),
        pairs.map,
        &noop,
    );
    line(
        &format!("VM_BIND unmap 4 KiB, {PAIRS} calls"),
        pairs.unmap,
        &noop,
    );
    rate_line(
        "  sync, map + unmap: per bind",
        pairs.total_ns,
        2 * PAIRS,
        &noop,
    );
    let tenth = bind_async::TENTH;
    let signalled = bind_async::signalled(&d)?;
    let held = bind_async::held(&d)?;
    for (how, s, run) in [
        ("in-fence signalled", &signalled, "per bind"),
        ("in-fence held", &held, "drain per bind"),
    ] {
        line(&format!("  async, {how}: submit"), s.submit, &noop);
        line(&format!("    of the first {tenth} binds"), s.first, &noop);
        line(&format!("    of the last {tenth} binds"), s.last, &noop);
        rate_line(
            &format!("  async, {how}: {run}"),
            s.run_ns,
            bind_async::BINDS,
            &noop,
        );
    }
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
    let u = userptr::figures(&d)?;
    line(
        "munmap of 2 MiB, a bound idle userptr",
        u.munmap_bound,
        &noop,
    );
    line("munmap of 2 MiB, plain", u.munmap_plain, &noop);
    println!(
        "{:<44} {:>14} {:>14} {:>10}",
        "  bound / plain",
        "",
        "",
        ratio(u.munmap_bound.median, u.munmap_plain.median)
    );
    let many = userptr::MANY;
    line(
        &format!("EXEC, empty job, {many} userptrs bound"),
        u.exec_many,
        &noop,
    );
    line("EXEC, empty job, no userptr", u.exec_none, &noop);
    println!(
        "{:<44} {:>14} {:>14} {:>10}",
        format!("  {many} userptrs / none"),
        "",
        "",
        ratio(u.exec_many.median, u.exec_none.median)
    );
    line(
        "EXEC, empty job, 2 MiB userptr invalidated",
        u.exec_revalidate,
        &noop,
    );
    line("EXEC, empty job, same userptr valid", u.exec_valid, &noop);
    println!(
        "{:<44} {:>11} ns {:>14} {:>10}",
        "  revalidating 2 MiB: extra per EXEC",
        u.exec_revalidate.median.saturating_sub(u.exec_valid.median),
        "",
        ratio(u.exec_revalidate.median, u.exec_valid.median)
    );
    println!(
        "(sync: the {PAIRS} map + unmap pairs as {} sync binds, all the ioctls' time / binds;",
        2 * PAIRS
    );
    println!(" async: the same pairs as async binds on one bind queue, each with a wait entry");
    println!(" and a signal entry; submit: each ioctl, and those of the first and last");
    println!(" tenth of the binds; per bind: first submission to last out-fence / binds;");
    println!(" held: every bind waits for one fence, opened once all are queued; drain:");
    println!(" its opening to the last out-fence / binds)");

    println!();
    svm_lines(&d)?;
    println!();
    println!("page tables reserved for the binds above, against the tables mirage used");
    println!(
        "{:<30} {:>6} {:>6} {:>16} {:>16} {:>16} {:>5} {:>5}",
        "binds", "ops", "used", "mirage reserved", "panthor would", "msm would", "dry", "left"
    );
    let mut missing = None;
    for t in [
        &pairs.tables,
        &signalled.tables,
        &held.tables,
        &array_tables,
    ] {
        println!("{}", table_row(t));
        if let Err(e) = &t.mirage {
            missing = Some(e.clone());
        }
    }
    if let Some(e) = missing {
        println!("mirage's counts: n/a ({e})");
    }
    println!("(ratios: reserved / used; panthor and msm counted with their drivers' formulas;");
    println!(" dry: allocations the reservation could not serve, a driver bug unless 0;");
    println!(" left: reserved tables still unused once every bind executed, 0 if exact)");
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
    fn per_bind_and_per_second_round_and_refuse_nothing_in_no_time() {
        assert_eq!(per_and_rate(1_000_000_000, 4000), Some((250_000, 4000)));
        // 2 in 3 ns: 1 ns each (down), 666.67 M/s (to nearest).
        assert_eq!(per_and_rate(3, 2), Some((1, 666_666_667)));
        assert_eq!(per_and_rate(2_000_000_001, 1), Some((2_000_000_001, 0)));
        assert_eq!(per_and_rate(0, 5), None);
        assert_eq!(per_and_rate(5, 0), None);
        // More per second than a u64 holds: saturates, does not wrap.
        assert_eq!(per_and_rate(1, usize::MAX).map(|r| r.1), Some(u64::MAX));
    }

    #[test]
    fn the_pairs_budget_as_panthor_and_msm_would_per_op() {
        // A 4 KiB map reserves an L1, L2 and L3 table in both; the unmap
        // of a page at a 2 MiB-aligned address one L3 in panthor (its
        // end may split a block), none in msm.
        assert_eq!(pair_budgets(1), (3 + 1, 3));
        assert_eq!(pair_budgets(PAIRS), (8000, 6000));
        assert_eq!(pair_budgets(0), (0, 0));
    }

    #[test]
    fn a_table_row_puts_every_count_in_its_column() {
        let mut t = Tables {
            what: "  async, in-fence held",
            ops: 4000,
            mirage: Ok(debugfs::Pool {
                reserved: 4,
                used: 3,
                exhausted: 1,
                available: 2,
                ..Default::default()
            }),
            panthor: 8000,
            msm: 6000,
        };
        let row = table_row(&t);
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "async,",
                "in-fence",
                "held",
                "4000",
                "3",
                "4",
                "(1.33x)",
                "8000",
                "(2666.67x)",
                "6000",
                "(2000.00x)",
                "1",
                "2"
            ]
        );
        assert!(row.starts_with("  async, in-fence held "), "{row:?}");
        t.mirage = Err("no debugfs".into());
        let cols: Vec<String> = table_row(&t).split_whitespace().map(String::from).collect();
        assert_eq!(
            cols[3..],
            ["4000", "n/a", "n/a", "8000", "6000", "n/a", "n/a"]
        );
    }

    #[test]
    fn ratios_print_two_decimals_and_no_division_by_zero() {
        assert_eq!(ratio(3, 2), "1.50x");
        assert_eq!(ratio(30000, 22), "1363.64x");
        assert_eq!(ratio(1, 0), "-");
    }
}
