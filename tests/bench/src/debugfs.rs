//! The driver's per-VM debugfs file, `/sys/kernel/debug/mirage/vm-<serial>`:
//!
//! ```text
//! vm <vm_id> pid <tgid> usable <0|1>
//! pool reserved <n> used <n> returned <n> live <n> exhausted <n> unused <n> cancelled <n> available <n>
//! pt leaves 1g <n> 2m <n> 4k <n>
//! userptr live <n> invalidated <n> invalidations <n> revalidated_last <n> revalidated_total <n>
//! faults resolved <n> aborted <n>
//! svm ranges <n>                                    (fault-mode VMs only, with the next four)
//! fault <4k|64k|2m> count <n> service_ns <n> get_pages_ns <n> bind_ns <n> tlb_ns <n>
//! gc passes <n> ranges <n> ns <n>
//! va 0x<start> 0x<end> offset 0x<bo offset>[ userptr <id>][ mirror pat <n> autoreset <0|1>]
//! ...
//! ```
//!
//! The pool counts are page tables: `live` and `available` now, the others
//! over the VM's life.

use std::path::Path;

/// The second line: the VM's page-table pool counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pool {
    pub reserved: u64,
    pub used: u64,
    pub returned: u64,
    /// Tables in the page table now.
    pub live: u64,
    /// Allocations refused because the reservation ran dry (a driver bug).
    pub exhausted: u64,
    /// Reserved tables left over once every bind executed.
    pub unused: u64,
    /// Reserved tables given back because their binds were cancelled.
    pub cancelled: u64,
    /// Reserved tables not used yet, now: once every bind has executed,
    /// nonzero means the budget was too large.
    pub available: u64,
}

impl Pool {
    /// What happened between `before` and `self`: the differences of the
    /// lifetime counts, and `self`'s counts of now.
    pub fn since(&self, before: &Pool) -> Pool {
        Pool {
            reserved: self.reserved - before.reserved,
            used: self.used - before.used,
            returned: self.returned - before.returned,
            live: self.live,
            exhausted: self.exhausted - before.exhausted,
            unused: self.unused - before.unused,
            cancelled: self.cancelled - before.cancelled,
            available: self.available,
        }
    }
}

/// A VM's file, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmFile {
    pub vm_id: u32,
    pub pid: u32,
    pub usable: bool,
    pub pool: Pool,
    /// Leaves of the page table: 1 GiB blocks, 2 MiB blocks, 4 KiB pages.
    pub leaves: [u64; 3],
    /// `(start, end, bo offset)` of each mapping (a userptr's offset is its
    /// CPU address).
    pub mappings: Vec<(u64, u64, u64)>,
    /// Userptrs: live, invalidated, invalidations, revalidated by the last
    /// EXEC or bind that revalidated any, revalidated in all; zero if the
    /// file has no userptr line.
    pub userptr: [u64; 5],
    /// GPU faults resolved and aborted.
    pub faults: [u64; 2],
    /// A fault-mode VM's fault-service and collector figures.
    pub svm: Option<SvmStats>,
}

/// The fault-service figures of one range size: faults, then the sums of
/// their service, get_pages, bind and TLB times, in ns.
pub type FaultSums = [u64; 5];

/// What a fault-mode VM's file says of its mirror.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvmStats {
    pub ranges: u64,
    /// By range size: 4 KiB, 64 KiB, 2 MiB.
    pub faults: [FaultSums; 3],
    /// Collector passes, the ranges they removed, and their time in ns.
    pub gc: [u64; 3],
}

/// The words of `line` after `tag`, as `key value` pairs whose keys must
/// be `keys`, in order.
fn pairs<'a, const N: usize>(line: &'a str, tag: &str, keys: [&str; N]) -> Option<[&'a str; N]> {
    let mut w = line.split_whitespace();
    if w.next()? != tag {
        return None;
    }
    let mut out = [""; N];
    for (k, o) in keys.iter().zip(&mut out) {
        if w.next()? != *k {
            return None;
        }
        *o = w.next()?;
    }
    w.next().is_none().then_some(out)
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// Parses a VM's file; `None` if it is not in the format above.
pub fn parse(text: &str) -> Option<VmFile> {
    let mut lines = text.lines();
    let first = lines.next()?;
    let mut w = first.split_whitespace();
    let (vm_id, pid, usable) = match (
        w.next(),
        w.next(),
        w.next(),
        w.next(),
        w.next(),
        w.next(),
        w.next(),
    ) {
        (Some("vm"), Some(id), Some("pid"), Some(pid), Some("usable"), Some(u), None) => {
            (id.parse().ok()?, pid.parse().ok()?, matches!(u, "1"))
        }
        _ => return None,
    };
    let p = pairs(
        lines.next()?,
        "pool",
        [
            "reserved",
            "used",
            "returned",
            "live",
            "exhausted",
            "unused",
            "cancelled",
            "available",
        ],
    )?;
    let n = |i: usize| p[i].parse::<u64>().ok();
    let pool = Pool {
        reserved: n(0)?,
        used: n(1)?,
        returned: n(2)?,
        live: n(3)?,
        exhausted: n(4)?,
        unused: n(5)?,
        cancelled: n(6)?,
        available: n(7)?,
    };
    let leaves = match lines.next()?.split_whitespace().collect::<Vec<_>>()[..] {
        ["pt", "leaves", "1g", g, "2m", m, "4k", k] => {
            [g.parse().ok()?, m.parse().ok()?, k.parse().ok()?]
        }
        _ => return None,
    };
    let mut mappings = Vec::new();
    let mut userptr = [0; 5];
    let mut faults = [0; 2];
    let mut svm: Option<SvmStats> = None;
    for l in lines.filter(|l| !l.trim().is_empty()) {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w[..] {
            ["va", start, end, "offset", off]
            | ["va", start, end, "offset", off, "userptr", _]
            | ["va", start, end, "offset", off, "mirror", "pat", _, "autoreset", _] => {
                mappings.push((hex(start)?, hex(end)?, hex(off)?))
            }
            ["faults", "resolved", r, "aborted", a] => faults = [r.parse().ok()?, a.parse().ok()?],
            ["svm", "ranges", n] => {
                svm = Some(SvmStats {
                    ranges: n.parse().ok()?,
                    ..SvmStats::default()
                })
            }
            ["fault", size, ..] => {
                let i = ["4k", "64k", "2m"].iter().position(|s| *s == size)?;
                let keys = ["count", "service_ns", "get_pages_ns", "bind_ns", "tlb_ns"];
                let line = l.replacen(size, "", 1);
                let p = pairs(&line, "fault", keys)?;
                let f = &mut svm.as_mut()?.faults[i];
                for (slot, v) in f.iter_mut().zip(p) {
                    *slot = v.parse().ok()?;
                }
            }
            ["gc", ..] => {
                let p = pairs(l, "gc", ["passes", "ranges", "ns"])?;
                let g = &mut svm.as_mut()?.gc;
                for (slot, v) in g.iter_mut().zip(p) {
                    *slot = v.parse().ok()?;
                }
            }
            ["userptr", ..] => {
                let keys = [
                    "live",
                    "invalidated",
                    "invalidations",
                    "revalidated_last",
                    "revalidated_total",
                ];
                let p = pairs(l, "userptr", keys)?;
                for (slot, v) in userptr.iter_mut().zip(p) {
                    *slot = v.parse().ok()?;
                }
            }
            _ => return None,
        }
    }
    Some(VmFile {
        vm_id,
        pid,
        usable,
        pool,
        leaves,
        mappings,
        userptr,
        faults,
        svm,
    })
}

/// The file of VM `vm_id` of process `pid` under `dir`
/// (`/sys/kernel/debug/mirage`): `Err` says why there is none.
pub fn find(dir: &Path, vm_id: u32, pid: u32) -> Result<VmFile, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in rd.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with("vm-") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        if let Some(f) = parse(&text) {
            if f.vm_id == vm_id && f.pid == pid {
                return Ok(f);
            }
        }
    }
    Err(format!(
        "no vm-* file for VM {vm_id} of pid {pid} in {}",
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "vm 3 pid 77 usable 1\n\
        pool reserved 25 used 22 returned 2 live 20 exhausted 0 unused 3 cancelled 4 available 5\n\
        pt leaves 1g 1 2m 2 4k 3\n\
        va 0x100000 0x101000 offset 0x0\n\
        va 0x40000000 0x40400000 offset 0x200000\n";

    /// A good pool line, with `pt` and `va` lines after it as `tail` says.
    fn with_pool(pool: &str, tail: &str) -> String {
        format!("vm 3 pid 77 usable 1\npool {pool}\n{tail}")
    }

    const POOL: &str =
        "reserved 1 used 1 returned 0 live 1 exhausted 0 unused 0 cancelled 0 available 0";
    const PT: &str = "pt leaves 1g 0 2m 0 4k 1\n";

    #[test]
    fn a_vm_file_parses() {
        let f = parse(FILE).unwrap_or_else(|| panic!("did not parse"));
        assert_eq!((f.vm_id, f.pid, f.usable), (3, 77, true));
        assert_eq!(
            f.pool,
            Pool {
                reserved: 25,
                used: 22,
                returned: 2,
                live: 20,
                exhausted: 0,
                unused: 3,
                cancelled: 4,
                available: 5,
            }
        );
        assert_eq!(f.leaves, [1, 2, 3]);
        assert_eq!(
            f.mappings,
            [
                (0x10_0000, 0x10_1000, 0),
                (0x4000_0000, 0x4040_0000, 0x20_0000)
            ]
        );
        let none = parse(&format!(
            "vm 4 pid 1 usable 0\npool {}\npt leaves 1g 0 2m 0 4k 0\n",
            POOL.replace('1', "0")
        ))
        .unwrap_or_else(|| panic!("did not parse"));
        assert!(!none.usable && none.mappings.is_empty());
        assert_eq!((none.pool, none.leaves), (Pool::default(), [0; 3]));
        // The same lines parse: the helpers below make good files.
        assert!(parse(&with_pool(POOL, PT)).is_some());
    }

    #[test]
    fn userptr_counters_and_mappings_parse() {
        let f = parse(&with_pool(
            POOL,
            "pt leaves 1g 0 2m 0 4k 1\n\
             userptr live 2 invalidated 1 invalidations 9 revalidated_last 3 revalidated_total 7\n\
             va 0x1000 0x3000 offset 0x7f0000001000 userptr 4\n",
        ))
        .unwrap_or_else(|| panic!("did not parse"));
        assert_eq!(f.userptr, [2, 1, 9, 3, 7]);
        assert_eq!(f.mappings, [(0x1000, 0x3000, 0x7f00_0000_1000)]);
        // A userptr line missing a counter, or a va line with a stray word.
        for tail in [
            "userptr live 2 invalidated 1 invalidations 9 revalidated_last 3\n",
            "va 0x1000 0x3000 offset 0x0 userptr\n",
        ] {
            assert!(
                parse(&with_pool(POOL, &format!("{PT}{tail}"))).is_none(),
                "{tail}"
            );
        }
    }

    #[test]
    fn fault_mode_figures_and_mirrors_parse() {
        let f = parse(&with_pool(
            POOL,
            "pt leaves 1g 0 2m 0 4k 1\n\
             faults resolved 5 aborted 1\n\
             svm ranges 3\n\
             fault 4k count 2 service_ns 900 get_pages_ns 500 bind_ns 300 tlb_ns 0\n\
             fault 64k count 0 service_ns 0 get_pages_ns 0 bind_ns 0 tlb_ns 0\n\
             fault 2m count 1 service_ns 7000 get_pages_ns 6000 bind_ns 800 tlb_ns 10\n\
             gc passes 2 ranges 4 ns 1200\n\
             va 0x100000000 0x800000000000 offset 0x100000000 mirror pat 0 autoreset 1\n",
        ))
        .unwrap_or_else(|| panic!("did not parse"));
        assert_eq!(f.faults, [5, 1]);
        assert_eq!(
            f.svm,
            Some(SvmStats {
                ranges: 3,
                faults: [[2, 900, 500, 300, 0], [0; 5], [1, 7000, 6000, 800, 10]],
                gc: [2, 4, 1200],
            })
        );
        assert_eq!(f.mappings, [(1 << 32, 1 << 47, 1 << 32)]);
        // Fault figures with no svm line, or a size the driver has not.
        for tail in [
            "fault 4k count 2 service_ns 900 get_pages_ns 500 bind_ns 300 tlb_ns 0\n",
            "svm ranges 1\nfault 8k count 2 service_ns 900 get_pages_ns 500 bind_ns 300 tlb_ns 0\n",
            "svm ranges 1\ngc passes 1 ranges 1\n",
        ] {
            assert!(
                parse(&with_pool(POOL, &format!("{PT}{tail}"))).is_none(),
                "{tail}"
            );
        }
    }

    #[test]
    fn another_format_does_not_parse() {
        let bad_pools = [
            // The format before cancelled and available.
            "reserved 1 used 1 returned 0 live 1 exhausted 0 unused 0",
            "reserved 1 used 1 returned 0 live 1 exhausted 0 unused 0 cancelled 0",
            "used 1 reserved 1 returned 0 live 1 exhausted 0 unused 0 cancelled 0 available 0",
            "reserved 1 used 1 returned 0 live 1 exhausted 0 unused 0 available 0 cancelled 0",
            "reserved 1 used 1 returned 0 live 1 exhausted 0 unused 0 cancelled 0 available x",
            "reserved 1 used 1 returned 0 live 1 exhausted 0 unused 0 cancelled -1 available 0",
            "reserved 1 used 1 returned 0 live 1 exhausted 0 unused 0 cancelled 0 available 0 x 1",
        ];
        let mut bad: Vec<String> = bad_pools.iter().map(|p| with_pool(p, PT)).collect();
        bad.extend([
            String::new(),
            format!("vm 3 pid 77\npool {POOL}\n{PT}"),
            format!("vm x pid 77 usable 1\npool {POOL}\n{PT}"),
            // No pt line, a malformed one, or one after the VAs.
            with_pool(POOL, ""),
            with_pool(POOL, "va 0x1000 0x2000 offset 0x0\n"),
            with_pool(POOL, "pt leaves 1g 0 2m 0\n"),
            with_pool(POOL, "pt leaves 2m 0 1g 0 4k 1\n"),
            with_pool(POOL, "pt leaves 1g 0 2m 0 4k x\n"),
            with_pool(POOL, &format!("va 0x1000 0x2000 offset 0x0\n{PT}")),
            with_pool(POOL, &format!("{PT}va 1000 2000 offset 0x0\n")),
            with_pool(POOL, &format!("{PT}{PT}")),
        ]);
        for b in &bad {
            assert_eq!(parse(b), None, "{b:?}");
        }
    }

    #[test]
    fn since_subtracts_the_lifetime_counts_and_keeps_the_current_ones() {
        let a = Pool {
            reserved: 5,
            used: 4,
            returned: 1,
            live: 3,
            exhausted: 1,
            unused: 1,
            cancelled: 2,
            available: 7,
        };
        let b = Pool {
            reserved: 30,
            used: 26,
            returned: 3,
            live: 25,
            exhausted: 1,
            unused: 4,
            cancelled: 6,
            available: 0,
        };
        assert_eq!(
            b.since(&a),
            Pool {
                reserved: 25,
                used: 22,
                returned: 2,
                live: 25,
                exhausted: 0,
                unused: 3,
                cancelled: 4,
                available: 0,
            }
        );
    }

    #[test]
    fn find_picks_the_file_of_the_vm_and_pid() {
        let dir = std::env::temp_dir().join(format!("mirage-bench-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let write = |n: &str, t: &str| {
            std::fs::write(dir.join(n), t).unwrap_or_else(|e| panic!("{e}"));
        };
        write("vm-1", &FILE.replace("pid 77", "pid 78"));
        write("vm-2", FILE);
        write("vm-3", &FILE.replace("vm 3", "vm 4"));
        write("other", &FILE.replace("reserved 25", "reserved 99"));
        let f = find(&dir, 3, 77).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((f.vm_id, f.pid, f.pool.reserved), (3, 77, 25));
        assert!(find(&dir, 5, 77).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(find(&dir, 3, 77).is_err());
    }
}
