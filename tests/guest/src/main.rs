//! In-guest tests of the mirage driver through its render node.
//!
//! Output is KTAP, parsed by `scripts/runner.py` next to the kernel's own
//! KUnit results. `mirage-tests [FILTER]` runs the tests whose name contains
//! FILTER. The exit status is nonzero if any test failed.

use mirage::uapi::*;
use mirage::Device;
use std::io;

mod bind_async;
mod exec;
mod fuzz;
mod madvise;
mod svm;
mod userptr;
mod vm;

pub type TestResult = Result<(), String>;

#[macro_export]
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

pub fn errno(r: io::Result<()>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// The mirage function's sysfs directory, found by PCI ID, independent of the driver.
fn pci_dir() -> Result<std::path::PathBuf, String> {
    let rd = std::fs::read_dir("/sys/bus/pci/devices").map_err(|e| e.to_string())?;
    for e in rd.flatten() {
        let p = e.path();
        let rd = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
        if rd("vendor").trim() == "0x1b36" && rd("device").trim() == "0x4d47" {
            return Ok(p);
        }
    }
    Err("no 1b36:4d47 PCI function in sysfs".into())
}

fn bar_size(bar: usize) -> Result<u64, String> {
    let res = std::fs::read_to_string(pci_dir()?.join("resource")).map_err(|e| e.to_string())?;
    let line = res.lines().nth(bar).ok_or("short resource file")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|x| u64::from_str_radix(x.trim_start_matches("0x"), 16).unwrap_or(0))
        .collect();
    check!(f.len() == 3 && f[1] > f[0], "BAR{bar} not assigned: {line}");
    Ok(f[1] - f[0] + 1)
}

fn driver_version(d: &Device) -> TestResult {
    let v = d.version().map_err(|e| e.to_string())?;
    check!(v.name == "mirage", "name {:?}", v.name);
    check!(
        (v.major, v.minor, v.patchlevel) == (0, 1, 0),
        "version {v:?}"
    );
    check!(v.desc == "mirage virtual GPU", "desc {:?}", v.desc);
    Ok(())
}

fn bound_to_the_mirage_pci_driver(_: &Device) -> TestResult {
    let link = std::fs::read_link(pci_dir()?.join("driver")).map_err(|e| e.to_string())?;
    check!(link.ends_with("mirage"), "bound to {}", link.display());
    Ok(())
}

fn get_param_values(d: &Device) -> TestResult {
    let p = |x| d.get_param(x).map_err(|e| format!("param {x}: {e}"));
    check!(p(DRM_MIRAGE_PARAM_DEVICE_ID)? == 0x1b36_4d47, "device id");
    check!(p(DRM_MIRAGE_PARAM_HW_VERSION)? == 0x0001_0001, "hw version");
    check!(p(DRM_MIRAGE_PARAM_VA_BITS)? == 48, "va bits");
    check!(p(DRM_MIRAGE_PARAM_PAGE_SIZES)? == 0x4020_1000, "page sizes");
    let all = DRM_MIRAGE_FEATURE_VRAM
        | DRM_MIRAGE_FEATURE_PAGE_FAULTS
        | DRM_MIRAGE_FEATURE_SYSMEM_ATOMICS;
    check!(p(DRM_MIRAGE_PARAM_FEATURES)? == u64::from(all), "features");
    // The VRAM register must agree with the BAR the PCI core sized.
    let vram = p(DRM_MIRAGE_PARAM_VRAM_SIZE)?;
    let bar2 = bar_size(2)?;
    check!(vram == bar2, "VRAM_SIZE {vram:#x} but BAR2 is {bar2:#x}");
    Ok(())
}

fn get_param_rejects_bad_input(d: &Device) -> TestResult {
    let base = DrmMirageGetParam {
        param: DRM_MIRAGE_PARAM_VA_BITS,
        ..Default::default()
    };
    let cases: [(&str, DrmMirageGetParam); 6] = [
        ("unknown param", DrmMirageGetParam { param: 6, ..base }),
        (
            "huge param",
            DrmMirageGetParam {
                param: u32::MAX,
                ..base
            },
        ),
        (
            "extensions",
            DrmMirageGetParam {
                extensions: 0x1000,
                ..base
            },
        ),
        ("pad", DrmMirageGetParam { pad: 1, ..base }),
        (
            "reserved[0]",
            DrmMirageGetParam {
                reserved: [1, 0],
                ..base
            },
        ),
        (
            "reserved[1]",
            DrmMirageGetParam {
                reserved: [0, u64::MAX],
                ..base
            },
        ),
    ];
    for (what, mut a) in cases {
        let before = a;
        let e = errno(d.get_param_raw(&mut a));
        check!(e == Some(libc::EINVAL), "{what}: got {e:?}, want EINVAL");
        check!(a == before, "{what}: argument modified on failure");
    }
    // Output-only `value` is ignored on input.
    let mut a = DrmMirageGetParam {
        value: u64::MAX,
        ..base
    };
    d.get_param_raw(&mut a).map_err(|e| e.to_string())?;
    check!(a.value == 48, "value {}", a.value);
    Ok(())
}

fn get_param_bad_pointer_is_efault(d: &Device) -> TestResult {
    // SAFETY: the kernel must refuse the unmapped address without touching our memory.
    let r = unsafe {
        mirage::ioctl::<DrmMirageGetParam>(d.file(), DRM_IOCTL_MIRAGE_GET_PARAM, 0x1000 as *mut _)
    };
    let e = errno(r);
    check!(e == Some(libc::EFAULT), "got {e:?}");
    Ok(())
}

fn unknown_driver_ioctl_is_einval(d: &Device) -> TestResult {
    let mut a = DrmMirageGetParam::default();
    // A driver ioctl number that is not defined, with GET_PARAM's size and direction.
    let req = DRM_IOCTL_MIRAGE_GET_PARAM + 0x30;
    // SAFETY: the argument is a valid buffer of the encoded size.
    let r = unsafe { mirage::ioctl(d.file(), req, &mut a) };
    let e = errno(r);
    check!(e == Some(libc::EINVAL), "got {e:?}");
    Ok(())
}

fn info_matches_params(d: &Device) -> TestResult {
    let info = mirage::Info::query(d).map_err(|e| e.to_string())?;
    let text = info.to_string();
    check!(text.contains("device:      1b36:4d47"), "{text}");
    check!(text.contains("page sizes:  4K 2M 1G"), "{text}");
    Ok(())
}

fn many_clients_open_and_query(_: &Device) -> TestResult {
    let devs: Vec<Device> = (0..16)
        .map(|_| Device::open())
        .collect::<io::Result<_>>()
        .map_err(|e| e.to_string())?;
    for d in &devs {
        check!(
            d.get_param(DRM_MIRAGE_PARAM_VA_BITS)
                .map_err(|e| e.to_string())?
                == 48,
            "va bits"
        );
    }
    Ok(())
}

pub fn e2s(e: io::Error) -> String {
    e.to_string()
}

/// CLOCK_MONOTONIC now plus `ms`, in nanoseconds: a syncobj wait deadline.
pub fn deadline_in(ms: i64) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec + ms * 1_000_000
}

// The DRM core's syncobj ioctls work only for a driver that sets DRIVER_SYNCOBJ(_TIMELINE):
// these prove the Rust abstraction's feature bits reach the core.
fn syncobj_binary_signal_and_reset(d: &Device) -> TestResult {
    let h = d.syncobj_create(DRM_SYNCOBJ_CREATE_SIGNALED).map_err(e2s)?;
    check!(
        d.syncobj_wait(h, 0, 0).is_ok(),
        "created signalled, but waits"
    );
    d.syncobj_reset(h).map_err(e2s)?;
    let e = errno(d.syncobj_wait(h, 0, 0));
    check!(e == Some(libc::ETIME), "reset syncobj: poll gave {e:?}");
    d.syncobj_timeline_signal(h, 0).map_err(e2s)?;
    check!(d.syncobj_wait(h, 0, 0).is_ok(), "signalled, but waits");
    d.syncobj_destroy(h).map_err(e2s)?;
    let e = errno(d.syncobj_destroy(h));
    check!(e == Some(libc::EINVAL), "second destroy gave {e:?}");
    Ok(())
}

fn syncobj_timeline_points(d: &Device) -> TestResult {
    let h = d.syncobj_create(0).map_err(e2s)?;
    check!(d.syncobj_query(h).map_err(e2s)? == 0, "new timeline");
    let e = errno(d.syncobj_wait(h, 3, 0));
    check!(e == Some(libc::ETIME), "point 3 before any signal: {e:?}");
    d.syncobj_timeline_signal(h, 3).map_err(e2s)?;
    check!(d.syncobj_query(h).map_err(e2s)? == 3, "after signalling 3");
    check!(d.syncobj_wait(h, 3, 0).is_ok(), "point 3 signalled");
    check!(
        d.syncobj_wait(h, 2, 0).is_ok(),
        "an earlier point is signalled too"
    );
    let e = errno(d.syncobj_wait(h, 4, 0));
    check!(e == Some(libc::ETIME), "point 4: {e:?}");
    d.syncobj_timeline_signal(h, 7).map_err(e2s)?;
    check!(d.syncobj_query(h).map_err(e2s)? == 7, "after signalling 7");
    d.syncobj_destroy(h).map_err(e2s)?;
    Ok(())
}

fn syncobj_wait_sees_a_later_cpu_signal(d: &Device) -> TestResult {
    let h = d.syncobj_create(0).map_err(e2s)?;
    let signalled = std::thread::scope(|s| {
        let t = s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            d.syncobj_timeline_signal(h, 1)
        });
        let waited = d.syncobj_wait(h, 1, deadline_in(10_000));
        (waited, t.join())
    });
    check!(signalled.0.is_ok(), "wait: {:?}", signalled.0);
    check!(
        matches!(signalled.1, Ok(Ok(()))),
        "signal: {:?}",
        signalled.1
    );
    check!(d.syncobj_query(h).map_err(e2s)? == 1, "point 1");
    d.syncobj_destroy(h).map_err(e2s)?;
    Ok(())
}

type Test = fn(&Device) -> TestResult;

const TESTS: &[(&str, Test)] = &[
    ("driver_version", driver_version),
    (
        "bound_to_the_mirage_pci_driver",
        bound_to_the_mirage_pci_driver,
    ),
    ("get_param_values", get_param_values),
    ("get_param_rejects_bad_input", get_param_rejects_bad_input),
    (
        "get_param_bad_pointer_is_efault",
        get_param_bad_pointer_is_efault,
    ),
    (
        "unknown_driver_ioctl_is_einval",
        unknown_driver_ioctl_is_einval,
    ),
    ("info_matches_params", info_matches_params),
    ("many_clients_open_and_query", many_clients_open_and_query),
    (
        "syncobj_binary_signal_and_reset",
        syncobj_binary_signal_and_reset,
    ),
    ("syncobj_timeline_points", syncobj_timeline_points),
    (
        "syncobj_wait_sees_a_later_cpu_signal",
        syncobj_wait_sees_a_later_cpu_signal,
    ),
    ("gem_create_and_cpu_mmap", vm::gem_create_and_cpu_mmap),
    (
        "gem_create_rejects_bad_input",
        vm::gem_create_rejects_bad_input,
    ),
    (
        "gem_prime_export_of_private_bo_is_refused",
        vm::gem_prime_export_of_private_bo_is_refused,
    ),
    (
        "gem_prime_external_bo_exports_and_imports",
        vm::gem_prime_external_bo_exports_and_imports,
    ),
    ("vm_create_and_destroy", vm::vm_create_and_destroy),
    ("vm_bind_rejects_bad_input", vm::vm_bind_rejects_bad_input),
    ("vm_bind_map_and_unmap", vm::vm_bind_map_and_unmap),
    ("vm_bind_syncs", vm::vm_bind_syncs),
    ("vm_bind_random_vs_model", vm::vm_bind_random_vs_model),
    (
        "vm_bind_without_memory_changes_nothing",
        vm::vm_bind_without_memory_changes_nothing,
    ),
    (
        "vm_bind_fail_nth_changes_nothing",
        vm::vm_bind_fail_nth_changes_nothing,
    ),
    (
        "exec_fill_and_store_through_mappings",
        exec::exec_fill_and_store_through_mappings,
    ),
    (
        "exec_readonly_and_noexec_fault",
        exec::exec_readonly_and_noexec_fault,
    ),
    ("exec_after_unmap_faults", exec::exec_after_unmap_faults),
    ("exec_in_and_out_syncobjs", exec::exec_in_and_out_syncobjs),
    ("exec_rejects_bad_input", exec::exec_rejects_bad_input),
    (
        "exec_hang_times_out_and_bans_the_queue",
        exec::exec_hang_times_out_and_bans_the_queue,
    ),
    (
        "exec_more_vms_than_address_spaces",
        exec::exec_more_vms_than_address_spaces,
    ),
    (
        "exec_close_with_work_in_flight",
        exec::exec_close_with_work_in_flight,
    ),
    (
        "exec_ordered_through_an_external_bo",
        exec::exec_ordered_through_an_external_bo,
    ),
    (
        "vm_bind_interrupted_changes_nothing",
        exec::vm_bind_interrupted_changes_nothing,
    ),
    (
        "exec_map_over_and_unmap_all",
        exec::exec_map_over_and_unmap_all,
    ),
    (
        "exec_partial_unmaps_of_2m_blocks",
        exec::exec_partial_unmaps_of_2m_blocks,
    ),
    (
        "exec_vm_destroyed_while_its_job_runs",
        exec::exec_vm_destroyed_while_its_job_runs,
    ),
    (
        "vm_bind_async_bind_queue_errors",
        bind_async::vm_bind_async_bind_queue_errors,
    ),
    (
        "vm_bind_async_bind_fence_gates_submit",
        bind_async::vm_bind_async_bind_fence_gates_submit,
    ),
    (
        "vm_bind_async_submit_fence_gates_bind",
        bind_async::vm_bind_async_submit_fence_gates_bind,
    ),
    (
        "vm_bind_async_timeline_chain_64",
        bind_async::vm_bind_async_timeline_chain_64,
    ),
    (
        "vm_bind_async_two_queues_independent",
        bind_async::vm_bind_async_two_queues_independent,
    ),
    (
        "vm_bind_async_pipelined_chain",
        bind_async::vm_bind_async_pipelined_chain,
    ),
    ("vm_bind_async_hammer", bind_async::vm_bind_async_hammer),
    (
        "vm_bind_async_runtime_failure_makes_vm_unusable",
        bind_async::vm_bind_async_runtime_failure_makes_vm_unusable,
    ),
    (
        "vm_bind_async_reserve_failure_changes_nothing",
        bind_async::vm_bind_async_reserve_failure_changes_nothing,
    ),
    (
        "vm_bind_async_teardown_cancels",
        bind_async::vm_bind_async_teardown_cancels,
    ),
    (
        "vm_bind_async_unmap_without_memory_succeeds",
        bind_async::vm_bind_async_unmap_without_memory_succeeds,
    ),
    (
        "userptr_gpu_and_cpu_see_each_other",
        userptr::userptr_gpu_and_cpu_see_each_other,
    ),
    (
        "userptr_readonly_refuses_gpu_writes",
        userptr::userptr_readonly_refuses_gpu_writes,
    ),
    (
        "userptr_bind_rejects_bad_input",
        userptr::userptr_bind_rejects_bad_input,
    ),
    (
        "userptr_dontneed_exec_sees_new_pages",
        userptr::userptr_dontneed_exec_sees_new_pages,
    ),
    (
        "userptr_munmap_then_exec_faults",
        userptr::userptr_munmap_then_exec_faults,
    ),
    (
        "userptr_unbind_removes_the_notifier",
        userptr::userptr_unbind_removes_the_notifier,
    ),
    (
        "userptr_exec_walks_only_the_invalidated",
        userptr::userptr_exec_walks_only_the_invalidated,
    ),
    (
        "userptr_fork_keeps_the_parent_view",
        userptr::userptr_fork_keeps_the_parent_view,
    ),
    (
        "userptr_invalidation_waits_for_the_gpu",
        userptr::userptr_invalidation_waits_for_the_gpu,
    ),
    (
        "userptr_exec_rechecks_after_a_late_invalidation",
        userptr::userptr_exec_rechecks_after_a_late_invalidation,
    ),
    (
        "userptr_async_bind_revalidates",
        userptr::userptr_async_bind_revalidates,
    ),
    ("userptr_invalidate_race", userptr::userptr_invalidate_race),
    (
        "userptr_exit_with_jobs_in_flight",
        userptr::userptr_exit_with_jobs_in_flight,
    ),
    (
        "fault_mode_vm_create_flags",
        svm::fault_mode_vm_create_flags,
    ),
    (
        "fault_mode_unresolvable_fault_aborts",
        svm::fault_mode_unresolvable_fault_aborts,
    ),
    (
        "fault_mode_permission_fault_aborts",
        svm::fault_mode_permission_fault_aborts,
    ),
    (
        "fault_mode_faults_on_several_queues",
        svm::fault_mode_faults_on_several_queues,
    ),
    (
        "svm_mirror_bind_rejects_bad_input",
        svm::svm_mirror_bind_rejects_bad_input,
    ),
    (
        "svm_gpu_writes_malloc_mmap_and_stack",
        svm::svm_gpu_writes_malloc_mmap_and_stack,
    ),
    (
        "svm_unmapped_cpu_memory_aborts",
        svm::svm_unmapped_cpu_memory_aborts,
    ),
    (
        "svm_partial_munmap_keeps_the_rest",
        svm::svm_partial_munmap_keeps_the_rest,
    ),
    (
        "svm_threads_fault_concurrently",
        svm::svm_threads_fault_concurrently,
    ),
    ("svm_free_and_malloc_again", svm::svm_free_and_malloc_again),
    (
        "fault_mode_timeout_counts_resolved_faults_as_progress",
        svm::fault_mode_timeout_counts_resolved_faults_as_progress,
    ),
    (
        "madvise_splits_a_mirror_and_the_query_shows_it",
        madvise::madvise_splits_a_mirror_and_the_query_shows_it,
    ),
    ("madvise_query_two_calls", madvise::madvise_query_two_calls),
    (
        "madvise_rejects_bad_input",
        madvise::madvise_rejects_bad_input,
    ),
    (
        "madvise_atomics_follow_the_policy",
        madvise::madvise_atomics_follow_the_policy,
    ),
    (
        "madvise_invalidates_only_what_changes",
        madvise::madvise_invalidates_only_what_changes,
    ),
    (
        "madvise_autoreset_follows_munmap",
        madvise::madvise_autoreset_follows_munmap,
    ),
    (
        "madvise_autoreset_without_gpu_access",
        madvise::madvise_autoreset_without_gpu_access,
    ),
    (
        "madvise_autoreset_after_the_log_overflows",
        madvise::madvise_autoreset_after_the_log_overflows,
    ),
    ("ioctl_fuzz", fuzz::ioctl_fuzz),
];

fn main() -> std::process::ExitCode {
    let filter = std::env::args().nth(1).unwrap_or_default();
    if filter == "--vm-client" {
        let r = std::env::args()
            .nth(2)
            .and_then(|a| a.parse::<u32>().ok())
            .ok_or_else(|| "--vm-client needs a number".to_string())
            .and_then(exec::vm_client);
        return match r {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                println!("{e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if filter == "--userptr-client" {
        if let Err(e) = userptr::userptr_client() {
            println!("{e}");
        }
        return std::process::ExitCode::FAILURE;
    }
    if filter == "--hold-fence" {
        let r = std::env::args()
            .nth(2)
            .and_then(|a| a.parse::<i32>().ok())
            .ok_or_else(|| "--hold-fence needs an fd".to_string())
            .and_then(|fd| {
                // SAFETY: the parent left this fd open for us, and nothing
                // else here uses it.
                exec::hold_fence_across_rmmod(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
            });
        if let Err(e) = &r {
            println!("MIRAGE: fence holder: {e}");
        }
        println!("MIRAGE: fence-holder rc={}", i32::from(r.is_err()));
        let _ = std::fs::write("/tmp/fence-holder.done", "");
        return std::process::ExitCode::SUCCESS;
    }
    if filter == "--leave-work-in-flight" {
        // Not a test of its own: guest-init.sh unloads the module right after.
        let r = Device::open()
            .map_err(|e| format!("cannot open the mirage render node: {e}"))
            .and_then(|d| exec::leave_work_in_flight(&d));
        if let Err(e) = r {
            eprintln!("leave-work-in-flight: {e}");
        }
        return std::process::ExitCode::FAILURE;
    }
    let tests: Vec<_> = TESTS.iter().filter(|(n, _)| n.contains(&filter)).collect();
    // The same nesting as KUnit's output, so one parser reads both.
    println!("KTAP version 1");
    println!("1..1");
    println!("    KTAP version 1");
    println!("    # Subtest: mirage_guest");
    println!("    1..{}", tests.len());
    let dev = Device::open();
    let mut failed = 0;
    for (i, (name, f)) in tests.iter().enumerate() {
        let r = match &dev {
            Ok(d) => f(d),
            Err(e) => Err(format!("cannot open the mirage render node: {e}")),
        };
        match r {
            Ok(()) => println!("    ok {} {name}", i + 1),
            Err(e) => {
                failed += 1;
                for l in e.lines() {
                    println!("    # {name}: {l}");
                }
                println!("    not ok {} {name}", i + 1);
            }
        }
    }
    println!(
        "{} 1 mirage_guest",
        if failed == 0 { "ok" } else { "not ok" }
    );
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
