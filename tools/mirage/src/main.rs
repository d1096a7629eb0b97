//! `mirage`: command-line access to the mirage DRM driver.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Command-line access to the mirage DRM driver.
#[derive(Parser, Debug)]
#[command(name = "mirage", version)]
struct Cli {
    /// Render node to use; by default the first one mirage drives.
    #[arg(long, value_name = "/dev/dri/renderDN")]
    device: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
enum Command {
    /// Print the driver version and the device's parameters.
    Info,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let dev = match &cli.device {
        Some(p) => mirage::Device::open_path(p),
        None => mirage::Device::open(),
    };
    let dev = match dev {
        Ok(dev) => dev,
        Err(e) => {
            eprintln!("mirage: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Info => match mirage::Info::query(&dev) {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn device_and_info_parse() {
        let cli = Cli::try_parse_from(["mirage", "--device", "/dev/dri/renderD129", "info"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.device, Some(PathBuf::from("/dev/dri/renderD129")));
        assert_eq!(cli.command, Command::Info);
        let cli = Cli::try_parse_from(["mirage", "info"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.device, None);
        for bad in [
            &["mirage"][..],
            &["mirage", "frob"],
            &["mirage", "info", "x"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} accepted");
        }
    }
}
