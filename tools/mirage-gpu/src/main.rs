//! `mirage-gpu`: serve the mirage virtual GPU on a vfio-user socket.

use mirage_gpu::device::{Config, Inject};
use mirage_gpu::server::Backend;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

const USAGE: &str = "usage: mirage-gpu --socket PATH [--control PATH] [--vram-size SIZE]
                  [--tlb-entries N] [--inject FAULT[,FAULT]]

  --socket PATH      vfio-user socket to listen on (a stale one is replaced)
  --control PATH     control socket: counters and fault injection
  --vram-size SIZE   device memory in BAR2, a power of two (default 64M)
  --tlb-entries N    TLB entries per address space (default 64)
  --inject FAULTS    bad-id: the ID register reads a wrong magic;
                     drop-irqs: interrupts latch but are never signalled

Logs go to stderr; MIRAGE_GPU_LOG=debug|info|warn sets the level.";

struct StderrLogger(log::LevelFilter);

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            eprintln!(
                "[{}.{:06} mirage-gpu {}] {}",
                t.as_secs(),
                t.subsec_micros(),
                r.level(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

struct Args {
    socket: PathBuf,
    control: Option<PathBuf>,
    cfg: Config,
}

fn parse_args() -> Result<Args, String> {
    let mut socket = None;
    let mut control = None;
    let mut cfg = Config::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--socket" => socket = Some(PathBuf::from(val("--socket")?)),
            "--vram-size" => {
                let v = val("--vram-size")?;
                cfg.vram_size = mirage_gpu::parse_size(&v).ok_or(format!("bad size '{v}'"))?;
            }
            "--inject" => cfg.inject = val("--inject")?.parse::<Inject>()?,
            "--control" => control = Some(PathBuf::from(val("--control")?)),
            "--tlb-entries" => {
                let v = val("--tlb-entries")?;
                cfg.tlb_entries = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(format!("bad TLB size '{v}'"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(Args {
        socket: socket.ok_or("--socket is required")?,
        control,
        cfg,
    })
}

fn main() -> ExitCode {
    let level = match std::env::var("MIRAGE_GPU_LOG").as_deref() {
        Ok("debug") => log::LevelFilter::Debug,
        Ok("warn") => log::LevelFilter::Warn,
        _ => log::LevelFilter::Info,
    };
    let _ = log::set_logger(Box::leak(Box::new(StderrLogger(level))));
    log::set_max_level(level);

    let Args {
        socket,
        control,
        cfg,
    } = match parse_args() {
        Ok(v) => v,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("mirage-gpu: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut backend = match Backend::new(cfg) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("mirage-gpu: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &control {
        if let Err(e) = mirage_gpu::control::serve(backend.gpu.clone(), path) {
            eprintln!(
                "mirage-gpu: cannot serve control socket {}: {e}",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    }
    let engines = backend.gpu.start_engines();
    // The crate refuses an existing path; a previous run killed by a signal leaves one.
    let _ = std::fs::remove_file(&socket);
    let server =
        match vfio_user::Server::new(&socket, true, Backend::irqs_info(), backend.regions()) {
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
    for e in engines {
        let _ = e.join();
    }
    log::info!("counters: {:?}", backend.gpu.stats.snapshot());
    log::info!(
        "client gone; interrupts lost for want of an eventfd: {}",
        backend.irqs.lost.load(Ordering::Relaxed)
    );
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mirage-gpu: {e}");
            ExitCode::FAILURE
        }
    }
}
