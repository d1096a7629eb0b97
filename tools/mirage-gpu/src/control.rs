//! The control socket: counters and fault injection for tests, over a
//! line protocol on a unix socket. One command per line, one reply:
//!
//! - `stats`: `name=value` pairs separated by spaces;
//! - `inject-dma-error ADDR LEN`: device accesses touching the range fail;
//! - `clear-dma-errors`;
//! - `drop-irqs N`: the next N interrupts are latched but not sent;
//! - `delay QUEUE MS`: every job of QUEUE waits MS milliseconds first;
//! - `crash-engine QUEUE`: QUEUE's engine thread panics, as a model bug
//!   would (the binary then aborts); for testing that panics are noticed.
//!
//! Replies start with `ok` or `error`.

use crate::device::Gpu;
use crate::regs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;

/// Parses a number in decimal or with a `0x` prefix.
fn num(s: Option<&str>) -> Option<u64> {
    let s = s?;
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Runs one command line against `gpu`; returns the reply.
pub fn handle(gpu: &Gpu, line: &str) -> String {
    let mut it = line.split_whitespace();
    match it.next() {
        Some("stats") => {
            let kv: Vec<String> = gpu
                .stats
                .snapshot()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("ok {}", kv.join(" "))
        }
        Some("inject-dma-error") => match (num(it.next()), num(it.next())) {
            (Some(a), Some(l)) => {
                gpu.bus.inject_error(a, l);
                "ok".into()
            }
            _ => "error usage: inject-dma-error ADDR LEN".into(),
        },
        Some("clear-dma-errors") => {
            gpu.bus.clear_errors();
            "ok".into()
        }
        Some("drop-irqs") => match num(it.next()) {
            Some(n) => {
                gpu.drop_next_irqs(n.min(u64::from(u32::MAX)) as u32);
                "ok".into()
            }
            None => "error usage: drop-irqs N".into(),
        },
        Some("delay") => match (num(it.next()), num(it.next())) {
            (Some(q), Some(ms)) if q < regs::N_QUEUES as u64 => {
                gpu.inject_delay(q as usize, ms.min(u64::from(u32::MAX)) as u32);
                "ok".into()
            }
            _ => "error usage: delay QUEUE MS".into(),
        },
        Some("crash-engine") => match num(it.next()) {
            Some(q) if q < regs::N_QUEUES as u64 => {
                gpu.crash_engine(q as usize);
                "ok".into()
            }
            _ => "error usage: crash-engine QUEUE".into(),
        },
        _ => format!("error unknown command '{}'", line.trim()),
    }
}

/// Serves the control socket at `path` on a thread of its own.
pub fn serve(gpu: Arc<Gpu>, path: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::thread::Builder::new()
        .name("mirage-control".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let gpu = gpu.clone();
                let _ = std::thread::Builder::new()
                    .name("mirage-control-conn".into())
                    .spawn(move || {
                        let Ok(mut out) = conn.try_clone() else {
                            return;
                        };
                        for line in BufReader::new(conn).lines().map_while(Result::ok) {
                            if writeln!(out, "{}", handle(&gpu, &line)).is_err() {
                                break;
                            }
                        }
                    });
            }
        })?;
    Ok(())
}
