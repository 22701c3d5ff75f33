//! The `preflight` binary: parses arguments, loads configuration and wires
//! the library crates together. Exit codes are part of the interface:
//! 0 go, 1 no-go, 2 could not decide, 64 bad usage or configuration.

mod baseline;
mod cmd;
mod config;
mod inspect;
mod lldp;
mod output;
mod paths_view;
#[cfg(test)]
mod port_state_tests;
mod probe;
mod services;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code: the verdict is go.
pub const EXIT_GO: u8 = 0;
/// Exit code: the verdict is no-go.
pub const EXIT_NO_GO: u8 = 1;
/// Exit code: preflight could not decide (fail-closed: treat as no-go).
pub const EXIT_UNDECIDED: u8 = 2;
/// Exit code: bad command line or configuration (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "preflight",
    version,
    about = "Go/no-go network readiness checks for bonded server fleets, before and during updates",
    long_about = "preflight reads bond ports, link state, addresses and routes from the kernel \
over netlink and answers one question before an update: go or no-go?\n\n\
Exit codes: 0 go, 1 no-go, 2 could not decide (treat as no-go), 64 bad usage or configuration.",
    after_help = "Examples:\n  preflight inspect                 table of this node's links, bonds and findings\n  \
preflight inspect --json          the same as JSON, for scripts\n  \
preflight inspect --watch         print every finding change as it happens"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check this node once (or continuously with --watch) and print the verdict.
    #[command(
        after_help = "Exit codes: 0 go, 1 no-go, 2 could not decide (e.g. netlink error), 64 bad configuration.\n\n\
The JSON form is documented in docs/inspect.md."
    )]
    Inspect(inspect::Args),
    /// Save this node's state before an update; compare after it (every difference is a finding).
    Baseline(baseline::BaselineArgs),
    /// Probe targets through an interface now (ICMP, TCP, ARP), as the agent does; dhcp@IFACE: does a DHCP server answer?
    #[command(
        after_help = "Examples:\n  preflight probe arp:10.0.0.1@bond0 icmp:10.0.0.1@bond0\n  \
preflight probe tcp:10.0.0.5:9100 --count 10 --json\n  \
preflight probe dhcp@eth1          one DHCPDISCOVER, never a REQUEST: does any server offer?\n\n\
Exit codes: 0 every target answered every probe, 1 a target missed one or more, \
2 a probe could not be sent (e.g. ARP without CAP_NET_RAW), 64 bad usage. \
A dhcp target: 0 a server offered, 1 none did within --timeout (default 5s)."
    )]
    Probe(probe::ProbeArgs),
    /// For pipelines: is the scope go? Exit 0 go, 1 no-go (blockers printed), 2 could not decide.
    #[command(
        after_help = "Examples:\n  preflight gate --server http://agg:9100 --scope role=compute\n  \
preflight gate --server http://agg1:9100,http://agg2:9100 --wait --timeout 15m\n\n\
Fail-closed: an unreachable aggregator or an answer that does not parse exits 2, never 0."
    )]
    Gate(cmd::gate::GateArgs),
    /// Fleet table: every node's gate status and first blocker.
    Status(cmd::status::StatusArgs),
    /// Create, list or remove time-limited waivers.
    Waive(cmd::waive::WaiveArgs),
    /// For rolling updates: which nodes of the scope may go down now (--take: lease them). Exit 0 a batch, 1 none now, 2 could not tell.
    #[command(after_help = cmd::plan::AFTER_HELP)]
    Plan(cmd::plan::PlanArgs),
    /// List or end maintenance leases (taken by `preflight plan --take`).
    #[command(subcommand_required = true)]
    Maintenance(cmd::maintenance::MaintenanceArgs),
    /// Per-node daemon: watch netlink, evaluate, serve /metrics, push reports (also the smaller `preflight-agent` binary).
    Agent(services::ServiceArgs),
    /// Fleet service: store reports, answer the gate, keep waivers, serve the page.
    Aggregator(services::AggregatorArgs),
    /// Everything on this machine: aggregator + local agent, SQLite file in the current directory.
    Up(services::UpArgs),
    /// Tools for developers and bug reports.
    #[command(subcommand)]
    Debug(DebugCommand),
}

#[derive(Subcommand)]
enum DebugCommand {
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of preflight.
    Man,
    /// Write the raw rtnetlink dump (links, addresses, routes) of this network
    /// namespace to a file; the format of preflight's test fixtures.
    Capture {
        /// Output file.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Mint a random report token for NODE: prints the token (for the
    /// node's `agent.token_file`) on stdout and the line to add to the
    /// aggregator's `node_tokens_file` on stderr.
    NodeToken {
        /// The node name, as the agent reports it.
        node: String,
    },
    /// Listen for LLDP on one interface (never sending any) and print, as
    /// JSON, the neighbour heard and the listener's counters.
    Lldp {
        /// The interface (a bond member).
        #[arg(long)]
        interface: String,
        /// How long to listen (switches send every 30 s).
        #[arg(long, default_value_t = 31)]
        seconds: u64,
    },
    /// Decode a capture file and print the snapshot as JSON.
    Decode {
        /// A file written by `preflight debug capture`.
        file: PathBuf,
    },
}

/// Writes to stdout; a closed pipe (`preflight inspect | head`) is not an
/// error worth a panic.
pub fn emit(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Tells systemd the service is ready (and starts watchdog pings).
pub fn sd_notify_ready() {
    preflight_agentd::sdnotify::ready();
}

/// The aggregator (alone or in `up`) serves pipelines' gate questions
/// while thousands of agents send reports: it gets a pool of worker
/// threads, one per CPU it may run on (at least 2, at most 8), or
/// `PREFLIGHT_THREADS` (1 = everything on one thread), so one slow answer
/// (a whole fleet rendered anew) does not hold every other request and
/// reports can be parsed on more than one core. On the 2-vCPU bench machine
/// the gate's figures were the same with 1 and 2 threads (docs/benchmarks.md).
/// Everything else (a client command, the agent) is one thread: less
/// memory, nothing to share.
fn runtime_for(command: &Command) -> Result<tokio::runtime::Builder, String> {
    if !matches!(command, Command::Aggregator(_) | Command::Up(_)) {
        return Ok(tokio::runtime::Builder::new_current_thread());
    }
    let threads = match std::env::var("PREFLIGHT_THREADS") {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n @ 1..=64) => n,
            _ => {
                return Err(format!(
                    "PREFLIGHT_THREADS={v:?}: expected a number of worker threads from 1 to 64"
                ))
            }
        },
        Err(_) => std::thread::available_parallelism()
            .map_or(2, std::num::NonZero::get)
            .clamp(2, 8),
    };
    Ok(if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    preflight_agentd::init_tracing();
    let mut builder = match runtime_for(&cli.command) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("preflight: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("preflight: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_UNDECIDED);
        }
    };
    let code = rt.block_on(async {
        match cli.command {
            Command::Inspect(args) => inspect::run(args).await,
            Command::Gate(args) => cmd::gate::run(args).await,
            Command::Baseline(args) => baseline::run(args).await,
            Command::Probe(args) => probe::run(args).await,
            Command::Status(args) => cmd::status::run(args).await,
            Command::Waive(args) => cmd::waive::run(args).await,
            Command::Plan(args) => cmd::plan::run(args).await,
            Command::Maintenance(args) => cmd::maintenance::run(args).await,
            Command::Agent(args) => services::agent(args).await,
            Command::Aggregator(args) => services::aggregator(args).await,
            Command::Up(args) => services::up(args).await,
            Command::Debug(DebugCommand::Capture { out }) => debug_capture(&out).await,
            Command::Debug(DebugCommand::Completions { shell }) => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                let mut buf = Vec::new();
                clap_complete::generate(shell, &mut cmd, "preflight", &mut buf);
                emit(&String::from_utf8_lossy(&buf));
                EXIT_GO
            }
            Command::Debug(DebugCommand::Man) => {
                let mut buf = Vec::new();
                match clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                    .render(&mut buf)
                {
                    Ok(()) => {
                        emit(&String::from_utf8_lossy(&buf));
                        EXIT_GO
                    }
                    Err(e) => {
                        eprintln!("preflight: {e}");
                        EXIT_UNDECIDED
                    }
                }
            }
            Command::Debug(DebugCommand::Decode { file }) => debug_decode(&file),
            Command::Debug(DebugCommand::Lldp { interface, seconds }) => {
                lldp::debug(interface, seconds).await
            }
            Command::Debug(DebugCommand::NodeToken { node }) => {
                match preflight_aggregator::auth::mint_node_token(&node) {
                    Ok((token, line)) => {
                        emit(&format!("{token}\n"));
                        eprintln!("add to the aggregator's node_tokens_file:\n{line}");
                        EXIT_GO
                    }
                    Err(e) => {
                        eprintln!("preflight: {e}");
                        EXIT_USAGE
                    }
                }
            }
        }
    });
    ExitCode::from(code)
}

async fn debug_capture(out: &std::path::Path) -> u8 {
    match preflight_netlink::capture().await {
        Ok(bytes) => match std::fs::write(out, &bytes) {
            Ok(()) => {
                eprintln!("wrote {} bytes to {}", bytes.len(), out.display());
                EXIT_GO
            }
            Err(e) => {
                eprintln!("preflight: cannot write {}: {e}", out.display());
                EXIT_UNDECIDED
            }
        },
        Err(e) => {
            eprintln!("preflight: {e}");
            EXIT_UNDECIDED
        }
    }
}

fn debug_decode(file: &std::path::Path) -> u8 {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("preflight: cannot read {}: {e}", file.display());
            return EXIT_USAGE;
        }
    };
    let snap = match preflight_netlink::decode::decode_capture(&bytes) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("preflight: {}: {e}", file.display());
            return EXIT_USAGE;
        }
    };
    match serde_json::to_string_pretty(&snap) {
        Ok(s) => {
            emit(&format!("{s}\n"));
            EXIT_GO
        }
        Err(e) => {
            eprintln!("preflight: {e}");
            EXIT_UNDECIDED
        }
    }
}
