//! Pipeline and operator commands against an aggregator: `gate`, `status`,
//! `waive`. Fail-closed: anything that is not a well-formed go is not go.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use preflight_agent::{BaseUrl, Client};
use preflight_model::report::{GateAnswer, NodeSummary, Waiver};
use preflight_model::Verdict;

use crate::{emit, EXIT_GO, EXIT_NO_GO, EXIT_UNDECIDED, EXIT_USAGE};

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); e.g. 30s, 10m"))
}

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Aggregator base URL; repeat for several (tried in order).
    #[arg(
        long = "server",
        short = 's',
        value_name = "URL",
        env = "PREFLIGHT_SERVER",
        value_delimiter = ',',
        required = true
    )]
    servers: Vec<String>,
    /// Request timeout per server.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    request_timeout: Duration,
}

impl ServerArgs {
    fn urls(&self) -> Result<Vec<BaseUrl>, u8> {
        self.servers
            .iter()
            .map(|s| BaseUrl::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                eprintln!("preflight: {e}");
                EXIT_USAGE
            })
    }
}

#[derive(clap::Args)]
pub struct GateArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Label selector: `role=compute` or `role=compute,rack=r1`; all nodes when omitted.
    #[arg(long, default_value = "")]
    scope: String,
    /// Keep asking until the answer is go or --timeout passes.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up (exit 1) after this long.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    timeout: Duration,
    /// With --wait: time between questions.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    interval: Duration,
    /// Print the aggregator's answer as JSON.
    #[arg(long)]
    json: bool,
}

enum Asked {
    Answer(GateAnswer),
    /// The aggregator said the question is wrong (unknown scope...): exit 64.
    Refused(String),
    /// No aggregator gave a usable answer: exit 2.
    Undecided(String),
}

async fn ask(client: &Client, urls: &[BaseUrl], scope: &str) -> Asked {
    let mut errors = Vec::new();
    let q = form_urlencode(scope);
    for url in urls {
        let target = url.join(&format!("/v1/gate?scope={q}"));
        match client.request(Method::GET, &target, None, None).await {
            Ok((status, body))
                if status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE =>
            {
                match serde_json::from_slice::<GateAnswer>(&body) {
                    // The status code and the body must agree, or the answer is not trusted.
                    Ok(a) if (a.verdict == Verdict::Go) == (status == StatusCode::OK) => {
                        return Asked::Answer(a)
                    }
                    Ok(_) => errors.push(format!(
                        "{url}: HTTP {status} disagrees with the verdict in the body"
                    )),
                    Err(e) => errors.push(format!(
                        "{url}: HTTP {status} with an unreadable answer ({e})"
                    )),
                }
            }
            Ok((status, body)) if status.is_client_error() => {
                let msg = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                return Asked::Refused(format!("{url}: HTTP {status}: {msg}"));
            }
            Ok((status, _)) => errors.push(format!("{url}: HTTP {status}")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Asked::Undecided(errors.join("; "))
}

fn form_urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

fn human(a: &GateAnswer) -> String {
    let mut o = String::new();
    let scope = if a.scope.is_empty() {
        "all nodes".to_string()
    } else {
        a.scope.clone()
    };
    let _ = writeln!(
        o,
        "{}: {scope} ({} nodes: {} ready, {} blocked)",
        a.verdict.as_str().to_uppercase(),
        a.nodes,
        a.ready.len(),
        a.blocked.len()
    );
    for b in &a.blockers {
        let _ = writeln!(
            o,
            "  {:<14} {:<22} {:<18} {}",
            b.node, b.code, b.subject, b.message
        );
    }
    for w in &a.waived {
        let _ = writeln!(
            o,
            "  waived #{} on {} ({} {}) by {} until {}: {}",
            w.id,
            w.node,
            w.code.as_deref().unwrap_or("any code"),
            w.subject.as_deref().unwrap_or("any subject"),
            w.author,
            preflight_model::time::format(w.expires_at),
            w.reason
        );
    }
    if !a.ready.is_empty() && a.verdict == Verdict::NoGo {
        let _ = writeln!(o, "ready: {}", a.ready.join(","));
    }
    o
}

pub async fn gate(args: GateArgs) -> u8 {
    let urls = match args.server.urls() {
        Ok(u) => u,
        Err(c) => return c,
    };
    let client = Client::new(args.server.request_timeout);
    let deadline = Instant::now() + args.timeout;
    let mut last_shown = String::new();
    loop {
        let asked = ask(&client, &urls, &args.scope).await;
        let (code, answer) = match asked {
            Asked::Answer(a) => (
                if a.verdict == Verdict::Go {
                    EXIT_GO
                } else {
                    EXIT_NO_GO
                },
                Some(a),
            ),
            Asked::Refused(m) => {
                eprintln!("preflight gate: {m}");
                return EXIT_USAGE;
            }
            Asked::Undecided(m) => {
                eprintln!("preflight gate: could not decide (treat as no-go): {m}");
                (EXIT_UNDECIDED, None)
            }
        };
        let finished = code == EXIT_GO || !args.wait || Instant::now() + args.interval > deadline;
        if finished {
            if let Some(a) = &answer {
                if args.json {
                    emit(&format!(
                        "{}\n",
                        serde_json::to_string_pretty(a).expect("answer serializes")
                    ));
                } else {
                    emit(&human(a));
                }
            }
            if args.wait && code != EXIT_GO {
                eprintln!(
                    "preflight gate: still not go after {}",
                    humantime::format_duration(args.timeout)
                );
            }
            return code;
        }
        if let Some(a) = &answer {
            let summary: Vec<String> = a
                .blockers
                .iter()
                .map(|b| format!("{} {} {}", b.node, b.code, b.subject))
                .collect();
            let summary = summary.join("; ");
            if summary != last_shown {
                eprintln!("waiting: {} blocker(s): {summary}", a.blockers.len());
                last_shown = summary;
            }
        }
        tokio::time::sleep(args.interval).await;
    }
}

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &Client,
    urls: &[BaseUrl],
    path: &str,
) -> Result<T, String> {
    let mut errors = Vec::new();
    for url in urls {
        match client
            .request(Method::GET, &url.join(path), None, None)
            .await
        {
            Ok((StatusCode::OK, body)) => {
                return serde_json::from_slice(&body)
                    .map_err(|e| format!("{url}: unreadable answer: {e}"))
            }
            Ok((status, body)) => errors.push(format!(
                "{url}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            )),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(errors.join("; "))
}

pub async fn status(args: StatusArgs) -> u8 {
    let urls = match args.server.urls() {
        Ok(u) => u,
        Err(c) => return c,
    };
    let client = Client::new(args.server.request_timeout);
    let nodes: Vec<NodeSummary> = match get_json(&client, &urls, "/v1/nodes").await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("preflight status: {e}");
            return EXIT_UNDECIDED;
        }
    };
    if args.json {
        emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&nodes).expect("serializes")
        ));
    } else {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{:<24} {:<9} {:<28} {:>8} {:<20} FIRST BLOCKER",
            "NODE", "STATUS", "LABELS", "FINDINGS", "LAST REPORT"
        );
        for n in &nodes {
            let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(
                o,
                "{:<24} {:<9} {:<28} {:>8} {:<20} {}",
                n.node,
                n.status,
                labels.join(","),
                n.findings.len(),
                n.last_report
                    .map_or_else(|| "never".into(), preflight_model::time::format),
                n.blockers
                    .first()
                    .map_or_else(String::new, |b| format!("{} {}", b.code, b.subject))
            );
        }
        emit(&o);
    }
    if nodes.iter().all(|n| n.status == "go") && !nodes.is_empty() {
        EXIT_GO
    } else {
        EXIT_NO_GO
    }
}

#[derive(clap::Args)]
pub struct WaiveArgs {
    #[command(subcommand)]
    action: WaiveAction,
}

#[derive(clap::Subcommand)]
enum WaiveAction {
    /// Create a time-limited waiver.
    Add {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        token: TokenArgs,
        /// Node the waiver applies to.
        #[arg(long)]
        node: String,
        /// Finding code to waive (BOND_PORT_DOWN); all reported findings when omitted.
        /// NODE_SILENT and NODE_STALE are waived only when named.
        #[arg(long)]
        code: Option<String>,
        /// Subject to waive (bond0/eth1); any subject when omitted.
        #[arg(long)]
        subject: Option<String>,
        /// Why (shown on every answer the waiver changes).
        #[arg(long)]
        reason: String,
        /// How long the waiver lasts (2h, 3d); the aggregator caps it.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Who [default: $USER].
        #[arg(long, env = "USER")]
        author: String,
    },
    /// List waivers in force.
    List {
        #[command(flatten)]
        server: ServerArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a waiver now.
    Remove {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        token: TokenArgs,
        /// Waiver id.
        id: i64,
        /// Who [default: $USER].
        #[arg(long, env = "USER", default_value = "cli")]
        author: String,
    },
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Admin token of the aggregator.
    #[arg(long, env = "PREFLIGHT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the admin token.
    #[arg(long, conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,
}

impl TokenArgs {
    fn get(&self) -> Result<Option<String>, u8> {
        match (&self.token, &self.token_file) {
            (Some(t), _) => Ok(Some(t.clone())),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map(|t| Some(t.trim().to_owned()))
                .map_err(|e| {
                    eprintln!("preflight: cannot read {}: {e}", f.display());
                    EXIT_USAGE
                }),
            (None, None) => Ok(None),
        }
    }
}

async fn send(
    client: &Client,
    urls: &[BaseUrl],
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, bytes::Bytes), String> {
    let mut errors = Vec::new();
    for url in urls {
        match client
            .request(method.clone(), &url.join(path), token, body.clone())
            .await
        {
            Ok(r) => return Ok(r),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(errors.join("; "))
}

fn api_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// Exit code and message for a waiver request that did not succeed: the
/// aggregator refusing it (4xx) is a usage error, anything else undecided.
fn waive_failed(r: Result<(StatusCode, bytes::Bytes), String>) -> u8 {
    match r {
        Ok((s, b)) => {
            eprintln!("preflight waive: HTTP {s}: {}", api_message(&b));
            if s.is_client_error() {
                EXIT_USAGE
            } else {
                EXIT_UNDECIDED
            }
        }
        Err(e) => {
            eprintln!("preflight waive: {e}");
            EXIT_UNDECIDED
        }
    }
}

pub async fn waive(args: WaiveArgs) -> u8 {
    match args.action {
        WaiveAction::Add {
            server,
            token,
            node,
            code,
            subject,
            reason,
            duration,
            author,
        } => {
            let (Ok(urls), Ok(tok)) = (server.urls(), token.get()) else {
                return EXIT_USAGE;
            };
            if let Err(e) = parse_duration(&duration) {
                eprintln!("preflight waive: --for {e}");
                return EXIT_USAGE;
            }
            let body = serde_json::json!({ "node": node, "code": code, "subject": subject, "reason": reason, "author": author, "duration": duration });
            let client = Client::new(server.request_timeout);
            match send(
                &client,
                &urls,
                Method::POST,
                "/v1/waivers",
                tok.as_deref(),
                Some(body.to_string().into_bytes()),
            )
            .await
            {
                Ok((StatusCode::CREATED, b)) => match serde_json::from_slice::<Waiver>(&b) {
                    Ok(w) => {
                        emit(&format!(
                            "waiver #{} on {} until {}\n",
                            w.id,
                            w.node,
                            preflight_model::time::format(w.expires_at)
                        ));
                        EXIT_GO
                    }
                    Err(e) => {
                        eprintln!("preflight waive: unreadable answer: {e}");
                        EXIT_UNDECIDED
                    }
                },
                other => waive_failed(other),
            }
        }
        WaiveAction::List { server, json } => {
            let Ok(urls) = server.urls() else {
                return EXIT_USAGE;
            };
            let client = Client::new(server.request_timeout);
            match get_json::<Vec<Waiver>>(&client, &urls, "/v1/waivers").await {
                Ok(ws) => {
                    if json {
                        emit(&format!(
                            "{}\n",
                            serde_json::to_string_pretty(&ws).expect("serializes")
                        ));
                    } else {
                        let mut o = String::new();
                        for w in &ws {
                            let _ = writeln!(
                                o,
                                "#{:<5} {:<20} {:<22} {:<16} until {}  by {}: {}",
                                w.id,
                                w.node,
                                w.code.as_deref().unwrap_or("(any code)"),
                                w.subject.as_deref().unwrap_or("(any)"),
                                preflight_model::time::format(w.expires_at),
                                w.author,
                                w.reason
                            );
                        }
                        if ws.is_empty() {
                            o.push_str("no waivers in force\n");
                        }
                        emit(&o);
                    }
                    EXIT_GO
                }
                Err(e) => {
                    eprintln!("preflight waive: {e}");
                    EXIT_UNDECIDED
                }
            }
        }
        WaiveAction::Remove {
            server,
            token,
            id,
            author,
        } => {
            let (Ok(urls), Ok(tok)) = (server.urls(), token.get()) else {
                return EXIT_USAGE;
            };
            let client = Client::new(server.request_timeout);
            let path = format!("/v1/waivers/{id}?by={}", form_urlencode(&author));
            match send(&client, &urls, Method::DELETE, &path, tok.as_deref(), None).await {
                Ok((StatusCode::NO_CONTENT, _)) => {
                    emit(&format!("waiver #{id} removed\n"));
                    EXIT_GO
                }
                other => waive_failed(other),
            }
        }
    }
}
