//! `mirage-gpu`: serve the mirage virtual GPU on a vfio-user socket.

use clap::Parser;
use mirage_gpu::device::{Config, Inject};
use mirage_gpu::server::Backend;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

/// Serve the mirage virtual GPU to QEMU over vfio-user.
///
/// Logs go to stderr; MIRAGE_GPU_LOG sets the filter (env_logger syntax,
/// e.g. `debug` or `mirage_gpu=debug,vfio_user=info`; default `info`).
#[derive(Parser, Debug)]
#[command(name = "mirage-gpu", version)]
struct Args {
    /// vfio-user socket to listen on (a stale one is replaced).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Control socket: counters and fault injection.
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Device memory in BAR2, a power of two (K, M, G suffixes).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    vram_size: u64,
    /// TLB entries per address space.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    tlb_entries: u32,
    /// Faults to inject from power-on, comma-separated. bad-id: the ID
    /// register reads a wrong magic; drop-irqs: interrupts latch but are
    /// never signalled.
    #[arg(long, value_name = "FAULT[,FAULT]", default_value = "")]
    inject: Inject,
}

fn parse_size(s: &str) -> Result<u64, String> {
    mirage_gpu::parse_size(s).ok_or(format!("bad size '{s}'"))
}

fn init_logging() {
    let env = env_logger::Env::new().filter_or("MIRAGE_GPU_LOG", "info");
    env_logger::Builder::from_env(env)
        .format(|buf, r| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            writeln!(
                buf,
                "[{}.{:06} mirage-gpu {}] {}",
                t.as_secs(),
                t.subsec_micros(),
                r.level(),
                r.args()
            )
        })
        .init();
}

/// A panic anywhere (an engine thread, a control connection) is a device
/// model bug: log it with the word "panicked", which the runner looks for,
/// and abort, so that the process exits nonzero instead of running on
/// with a dead engine.
fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let thread = std::thread::current();
        log::error!(
            "device model panicked in thread '{}': {info}",
            thread.name().unwrap_or("?")
        );
        std::process::abort();
    }));
}

fn main() -> ExitCode {
    init_logging();
    abort_on_panic();
    let args = Args::parse();
    let cfg = Config {
        vram_size: args.vram_size,
        inject: args.inject,
        tlb_entries: args.tlb_entries as usize,
    };
    let mut backend = match Backend::new(cfg) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("mirage-gpu: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &args.control {
        if let Err(e) = mirage_gpu::control::serve(backend.gpu.clone(), path) {
            eprintln!(
                "mirage-gpu: cannot serve control socket {}: {e}",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    }
    let engines = backend.gpu.start_engines();
    let socket = &args.socket;
    // The crate refuses an existing path; a previous run killed by a signal leaves one.
    let _ = std::fs::remove_file(socket);
    let server = match vfio_user::Server::new(socket, true, Backend::irqs_info(), backend.regions())
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mirage-gpu: cannot listen on {}: {e}", socket.display());
            return ExitCode::FAILURE;
        }
    };
    log::info!(
        "listening on {} (VRAM {} MiB, inject {:?})",
        socket.display(),
        cfg.vram_size >> 20,
        cfg.inject
    );
    let res = server.run(&mut backend);
    backend.gpu.stop();
    let mut failed = false;
    for e in engines {
        if e.join().is_err() {
            log::error!("an engine thread panicked");
            failed = true;
        }
    }
    log::info!("counters: {:?}", backend.gpu.stats.snapshot());
    log::info!(
        "client gone; interrupts lost for want of an eventfd: {}",
        backend.irqs.lost.load(Ordering::Relaxed)
    );
    if let Err(e) = res {
        eprintln!("mirage-gpu: {e}");
        failed = true;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
