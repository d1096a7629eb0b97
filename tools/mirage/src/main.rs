//! `mirage`: command-line access to the mirage DRM driver.

use std::process::ExitCode;

const USAGE: &str = "usage: mirage [--device /dev/dri/renderDN] info";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, rest) = match args.as_slice() {
        [flag, p, rest @ ..] if flag == "--device" => (Some(p.clone()), rest),
        rest => (None, rest),
    };
    let dev = match &path {
        Some(p) => mirage::Device::open_path(std::path::Path::new(p)),
        None => mirage::Device::open(),
    };
    match (rest, dev) {
        ([cmd], Ok(dev)) if cmd == "info" => match mirage::Info::query(&dev) {
            Ok(info) => {
                println!("node:        {}", dev.path().display());
                println!("{info}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mirage: query failed: {e}");
                ExitCode::FAILURE
            }
        },
        ([cmd], Err(e)) if cmd == "info" => {
            eprintln!("mirage: {e}");
            ExitCode::FAILURE
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
