//! `preflight-agent`: the per-node daemon on its own, the same daemon as
//! `preflight agent` in a binary that holds only the agent's code (about a
//! third of `preflight`), so it keeps fewer pages resident. Arguments are
//! read by hand: an argument parser would be most of what is left to trim.
//! Exit codes: 0 stopped cleanly, 2 could not run, 64 bad usage or
//! configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use preflight_agentd::{EXIT_OK, EXIT_UNDECIDED, EXIT_USAGE};

const USAGE: &str = "\
preflight-agent: per-node daemon: watch netlink, evaluate, serve /metrics, push reports.
The same daemon as `preflight agent`, in a smaller binary.

Usage: preflight-agent [--config FILE]

Options:
  -c, --config FILE  configuration file (TOML; see docs/operations.md) [env: PREFLIGHT_CONFIG=]
  -h, --help         print this help
  -V, --version      print the version

Logging: PREFLIGHT_LOG (e.g. info, debug, preflight_agent=debug).
Exit codes: 0 stopped cleanly, 2 could not run, 64 bad usage or configuration.
";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Args {
    Run(Option<PathBuf>),
    Help,
    Version,
}

fn parse_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Args, String> {
    let mut config = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        match text.as_ref() {
            "-h" | "--help" => return Ok(Args::Help),
            "-V" | "--version" => return Ok(Args::Version),
            "-c" | "--config" => {
                let file = args.next().ok_or_else(|| format!("{text} needs a FILE"))?;
                config = Some(PathBuf::from(file));
            }
            t if t.starts_with("--config=") => {
                config = Some(PathBuf::from(&t["--config=".len()..]));
            }
            t => return Err(format!("unexpected argument `{t}`")),
        }
    }
    let config = config.or_else(|| {
        std::env::var_os("PREFLIGHT_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    Ok(Args::Run(config))
}

fn main() -> ExitCode {
    let config = match parse_args(std::env::args_os().skip(1)) {
        Ok(Args::Run(config)) => config,
        Ok(Args::Help) => {
            print!("{USAGE}");
            return ExitCode::from(EXIT_OK);
        }
        Ok(Args::Version) => {
            println!("preflight-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::from(EXIT_OK);
        }
        Err(e) => {
            eprintln!("preflight-agent: {e}\n\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    preflight_agentd::init_tracing();
    let cfg = match preflight_agentd::config::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("preflight-agent: bad configuration: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // One thread: the agent's work is a few sockets and a timer.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("preflight-agent: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_UNDECIDED);
        }
    };
    ExitCode::from(rt.block_on(preflight_agentd::serve(cfg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_args(args.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn arguments() {
        assert_eq!(
            parse(&["-c", "/etc/p.toml"]),
            Ok(Args::Run(Some("/etc/p.toml".into())))
        );
        assert_eq!(
            parse(&["--config=/etc/p.toml"]),
            Ok(Args::Run(Some("/etc/p.toml".into())))
        );
        assert_eq!(parse(&["--version"]), Ok(Args::Version));
        assert_eq!(parse(&["-h"]), Ok(Args::Help));
        assert!(parse(&["--config"]).is_err());
        assert_eq!(
            parse(&["agent"]),
            Err("unexpected argument `agent`".to_owned())
        );
    }
}
