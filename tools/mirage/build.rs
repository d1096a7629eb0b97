//! Compiles a C probe of `include/uapi/drm/mirage_drm.h`, so that the
//! `uapi` module's test compares the Rust mirror with what a C compiler makes
//! of the header itself, not with numbers copied by hand.
//!
//! `build/uapi_header.rs` reads the header to list every `struct
//! drm_mirage_*` member (those of anonymous unions included) and every
//! `DRM_MIRAGE_*` / `DRM_IOCTL_MIRAGE_*` constant; the probe records
//! their sizes, offsets and values in the table `mirage_probe`. A field or
//! constant added to the header without its Rust mirror fails the test, too.
//!
//! When the probe cannot be built (no `drm.h` on this machine), the library
//! still builds and the test fails with the reason, so the guest binaries
//! never depend on it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[path = "build/uapi_header.rs"]
mod uapi_header;

/// What the probe records from `drm.h` itself: the parts of it that
/// `uapi.rs` mirrors. `drm.h` is not parsed, so these are listed here.
const DRM_H_STRUCTS: &[(&str, &[&str])] = &[
    (
        "drm_version",
        &[
            "version_major",
            "version_minor",
            "version_patchlevel",
            "name_len",
            "name",
            "date_len",
            "date",
            "desc_len",
            "desc",
        ],
    ),
    ("drm_gem_close", &["handle", "pad"]),
    ("drm_prime_handle", &["handle", "flags", "fd"]),
    ("drm_syncobj_create", &["handle", "flags"]),
    ("drm_syncobj_destroy", &["handle", "pad"]),
    (
        "drm_syncobj_handle",
        &["handle", "flags", "fd", "pad", "point"],
    ),
    ("drm_syncobj_array", &["handles", "count_handles", "pad"]),
    (
        "drm_syncobj_timeline_array",
        &["handles", "points", "count_handles", "flags"],
    ),
    (
        "drm_syncobj_timeline_wait",
        &[
            "handles",
            "points",
            "timeout_nsec",
            "count_handles",
            "flags",
            "first_signaled",
            "pad",
            "deadline_nsec",
        ],
    ),
];
const DRM_H_CONSTS: &[&str] = &[
    "DRM_COMMAND_BASE",
    "DRM_IOCTL_VERSION",
    "DRM_IOCTL_GEM_CLOSE",
    "DRM_CLOEXEC",
    "DRM_RDWR",
    "DRM_IOCTL_PRIME_HANDLE_TO_FD",
    "DRM_IOCTL_PRIME_FD_TO_HANDLE",
    "DRM_SYNCOBJ_CREATE_SIGNALED",
    "DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE",
    "DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE",
    "DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL",
    "DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT",
    "DRM_IOCTL_SYNCOBJ_CREATE",
    "DRM_IOCTL_SYNCOBJ_DESTROY",
    "DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD",
    "DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE",
    "DRM_IOCTL_SYNCOBJ_RESET",
    "DRM_IOCTL_SYNCOBJ_SIGNAL",
    "DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT",
    "DRM_IOCTL_SYNCOBJ_QUERY",
    "DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL",
];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let header = manifest.join("../../include/uapi/drm/mirage_drm.h");
    let header = header.canonicalize().unwrap_or(header);
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/uapi_header.rs");
    println!("cargo:rerun-if-changed={}", header.display());
    println!("cargo:rerun-if-env-changed=MIRAGE_DRM_INCLUDE");
    println!("cargo:rerun-if-env-changed=MIRAGE_CACHE");
    println!("cargo:rustc-check-cfg=cfg(mirage_uapi_probe)");

    if let Err(why) = build_probe(&header) {
        // Not a build error: the static guest build must not need drm.h.
        println!("cargo:warning=uAPI layout probe not built: {why}");
        println!("cargo:rustc-env=MIRAGE_UAPI_PROBE_ERROR={why}");
        return;
    }
    println!("cargo:rustc-cfg=mirage_uapi_probe");
}

fn build_probe(header: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(header)
        .map_err(|e| format!("cannot read {}: {e}", header.display()))?;
    let includes = find_drm_h()?;
    println!(
        "cargo:rerun-if-changed={}",
        includes[0].join("drm.h").display()
    );

    let parsed = uapi_header::parse_header(&uapi_header::strip_comments(&text))?;
    let mut entries = Vec::new();
    let mut structs: Vec<(String, Vec<String>)> = DRM_H_STRUCTS
        .iter()
        .map(|(s, f)| (s.to_string(), f.iter().map(|f| f.to_string()).collect()))
        .collect();
    structs.extend(parsed.structs);
    for (s, fields) in &structs {
        entries.push((format!("size {s}"), format!("sizeof(struct {s})")));
        for f in fields {
            entries.push((
                format!("offset {s}.{f}"),
                format!("offsetof(struct {s}, {f})"),
            ));
            entries.push((
                format!("size {s}.{f}"),
                format!("sizeof(((struct {s} *)0)->{f})"),
            ));
        }
    }
    let consts = DRM_H_CONSTS.iter().map(|c| c.to_string());
    for c in consts.chain(parsed.consts) {
        // An ioctl number is what the kernel sees: an unsigned int.
        let value = if c.starts_with("DRM_IOCTL_") {
            format!("(unsigned long long)(unsigned int)({c})")
        } else {
            format!("(unsigned long long)({c})")
        };
        entries.push((c, value));
    }

    let mut c = String::new();
    writeln!(c, "/* Generated by tools/mirage/build.rs. */").unwrap();
    writeln!(c, "#include <stddef.h>").unwrap();
    // For the O_* flags that drm.h's DRM_CLOEXEC and DRM_RDWR name.
    writeln!(c, "#include <fcntl.h>").unwrap();
    writeln!(c, "#include \"{}\"", header.display()).unwrap();
    writeln!(
        c,
        "struct mirage_probe_entry {{ const char *name; unsigned long long value; }};"
    )
    .unwrap();
    writeln!(c, "const struct mirage_probe_entry mirage_probe[] = {{").unwrap();
    for (name, expr) in &entries {
        writeln!(c, "\t{{ \"{name}\", {expr} }},").unwrap();
    }
    writeln!(c, "}};").unwrap();
    writeln!(
        c,
        "const unsigned long mirage_probe_len = sizeof(mirage_probe) / sizeof(mirage_probe[0]);"
    )
    .unwrap();

    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let probe = out.join("mirage_uapi_probe.c");
    std::fs::write(&probe, c).map_err(|e| format!("cannot write {}: {e}", probe.display()))?;
    cc::Build::new()
        .file(&probe)
        .includes(&includes)
        .cargo_warnings(true)
        .try_compile("mirage_uapi_probe")
        .map_err(|e| format!("compiling {} failed: {e}", probe.display()))
}

/// Include directories for the `drm.h` that `mirage_drm.h` includes, and
/// for the kernel headers that `drm.h` includes in turn.
fn find_drm_h() -> Result<Vec<PathBuf>, String> {
    let cache = std::env::var("MIRAGE_CACHE").unwrap_or_else(|_| "/var/cache/mirage".into());
    let chroot = Path::new(&cache).join("chroot/usr/include");
    let mut candidates: Vec<Vec<PathBuf>> = Vec::new();
    if let Some(d) = std::env::var_os("MIRAGE_DRM_INCLUDE") {
        candidates.push(vec![PathBuf::from(d)]);
    }
    // The toolchain chroot's (trixie's linux-libc-dev), the same on every
    // machine that ran `make check`. Its drm.h needs its own linux/*.h
    // (bookworm's lack linux/bits.h), so the chroot's headers come first.
    candidates.push(vec![
        chroot.join("drm"),
        chroot.clone(),
        chroot.join("x86_64-linux-gnu"),
    ]);
    // linux-libc-dev on Debian trixie and later, and on Ubuntu.
    candidates.push(vec![PathBuf::from("/usr/include/drm")]);
    // libdrm-dev, on Debian bookworm, whose linux-libc-dev has none.
    candidates.push(vec![PathBuf::from("/usr/include/libdrm")]);
    candidates
        .iter()
        .find(|dirs| dirs[0].join("drm.h").is_file())
        .cloned()
        .ok_or_else(|| {
            format!(
                "no drm.h in {}; run `make check` once (it builds the toolchain chroot), \
                 install linux-libc-dev (trixie) or libdrm-dev, \
                 or set MIRAGE_DRM_INCLUDE to a directory holding drm.h",
                candidates
                    .iter()
                    .map(|d| d[0].display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}
