//! The binary must not survive a device-model panic: the runner fails a
//! boot on a nonzero exit or "panicked" in the device log.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tmpdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("mirage-gpu-panic-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn an_engine_panic_kills_the_process_and_says_panicked() {
    let dir = tmpdir();
    let (sock, ctl) = (dir.join("gpu.sock"), dir.join("control.sock"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_mirage-gpu"))
        .args(["--socket", sock.to_str().unwrap()])
        .args(["--control", ctl.to_str().unwrap()])
        .args(["--vram-size", "1M"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "mirage-gpu did not start listening"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut c = UnixStream::connect(&ctl).unwrap();
    c.write_all(b"crash-engine 3\n").unwrap();
    let mut reply = String::new();
    BufReader::new(c.try_clone().unwrap())
        .read_line(&mut reply)
        .unwrap();
    assert_eq!(reply, "ok\n");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("mirage-gpu kept running after an engine panicked");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!status.success(), "exit status {status}");
    assert!(log.contains("panicked"), "log: {log}");
    assert!(log.contains("mirage-q3"), "log names the thread: {log}");
}
