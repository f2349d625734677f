//! `consul-mysql-proxy status [--admin ADDR] [--json]`: the running proxy's state on one
//! terminal screen — the same facts as the status page, from the same `/status` document: the
//! primary, since when and why, discovery, every instance of the last answer, connections and
//! the last failovers.
//!
//! Asks `GET /readyz` (the verdict) and `GET /status` (the facts) over plain HTTP/1.0, on the
//! admin address or `metrics_listen`. Exits 0 when the proxy is ready, 1 when it is not or
//! cannot be asked. `--json` prints the `/status` document as served instead of the summary.
//! Text from Consul or the network is stripped of control characters before it is printed.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::SystemTime;

use super::http::Endpoint;
use crate::ops::report::{Report, ago, first_client, millis, setting_name};
use crate::util::text::{printable, truncate_chars};

/// Flags of `consul-mysql-proxy status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// Print the /status JSON document instead of the summary
    #[arg(long)]
    pub json: bool,
}

/// Most instances and failovers the summary lists, so it fits one screen.
const MOST_INSTANCES: usize = 8;
const MOST_FAILOVERS: usize = 5;
/// Longest reason or error text printed, in characters.
const MOST_CHARS: usize = 110;

/// Largest `/status` document read (50 failovers and a config summary are a few dozen KiB).
const STATUS_LIMIT: u64 = 4 * 1024 * 1024;

/// Prints the summary (or the JSON) and returns the exit code: 0 ready, 1 otherwise.
pub fn run(args: &StatusArgs) -> u8 {
    let admin = args.endpoint.admin;
    let ask = |path| args.endpoint.get(path, STATUS_LIMIT);
    let (ready, status) = match (ask("/readyz"), ask("/status")) {
        (Ok(ready), Ok(status)) if status.status == 200 => (ready.status == 200, status.body),
        (Ok(_), Ok(status)) => {
            eprintln!(
                "{admin} answered /status with HTTP {}: {}",
                status.status,
                printable(status.body.trim())
            );
            return 1;
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cannot ask {admin}: {e}");
            return 1;
        }
    };
    if args.json {
        println!("{}", status.trim_end());
    } else {
        match Report::parse(&status) {
            Ok(report) => print!("{}", summary(&report, admin, SystemTime::now())),
            Err(e) => {
                eprintln!("{admin}: {e}");
                return 1;
            }
        }
    }
    u8::from(!ready)
}

/// Outside text, made printable and cut to [`MOST_CHARS`].
fn text(s: &str) -> String {
    truncate_chars(&printable(s), MOST_CHARS)
}

/// `2026-12-01 09:00:00.123Z (4m 12s ago)`.
fn when(at: &str, now: SystemTime) -> String {
    let at = printable(at).replacen('T', " ", 1);
    match ago(&at, now) {
        Some(ago) => format!("{at} ({ago} ago)"),
        None => at,
    }
}

/// The one-screen summary of `r`, as asked from `admin`.
fn summary(r: &Report, admin: SocketAddr, now: SystemTime) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail: the results of `writeln!` below are ignored for that.
    let _ = write_summary(&mut out, r, admin, now);
    out
}

fn write_summary(
    out: &mut String,
    r: &Report,
    admin: SocketAddr,
    now: SystemTime,
) -> std::fmt::Result {
    writeln!(
        out,
        "consul-mysql-proxy {} · service {} · asked {admin}",
        text(&r.version),
        text(r.service().unwrap_or("?"))
    )?;
    let verdict = if r.ready { "READY" } else { "NOT READY" };
    writeln!(out, "{verdict:<12}{}", text(&r.readiness))?;
    writeln!(out)?;
    if !r.routes.is_empty() {
        for route in &r.routes {
            let rr = &route.report;
            let primary = rr.primary.as_ref().map_or("none", |p| p.address.as_str());
            writeln!(
                out,
                "{:<12}{} → {} primary {}  active {} held {}{}",
                format!("route {}", text(&route.name)),
                text(&route.listen),
                text(rr.service().unwrap_or("?")),
                text(primary),
                rr.connections.active,
                rr.connections.held,
                if rr.ready { "" } else { "  NOT READY" },
            )?;
        }
        writeln!(out, "  (below: route {})", text(&r.routes[0].name))?;
        writeln!(out)?;
    }

    match &r.primary {
        Some(p) => writeln!(
            out,
            "{:<12}{}  {}",
            "primary",
            text(&p.address),
            text(&p.name)
        )?,
        None => writeln!(out, "{:<12}none: new clients are held", "primary")?,
    }
    if let Some(since) = &r.since {
        writeln!(out, "  since     {}, epoch {}", when(since, now), r.epoch)?;
    }
    writeln!(out, "  reason    {}", text(&r.reason))?;
    if let Some(w) = &r.discovery.withdrawn_primary {
        writeln!(
            out,
            "  WITHDRAWN by Consul since {}: {}; still routed to",
            when(&w.since, now),
            text(&w.reason)
        )?;
    }

    let d = &r.discovery;
    writeln!(out, "{:<12}{}", "discovery", text(&d.source))?;
    match (d.watching, &d.not_watching) {
        (true, _) => writeln!(out, "  watching  yes")?,
        (false, cause) => writeln!(
            out,
            "  watching  NO: {}",
            text(cause.as_deref().unwrap_or("not started"))
        )?,
    }
    let success = d
        .last_success
        .as_deref()
        .map_or_else(|| "never".to_owned(), |at| when(at, now));
    match d.consul_index.filter(|i| *i > 0) {
        Some(index) => writeln!(out, "  success   {success}, Consul index {index}")?,
        None => writeln!(out, "  success   {success}")?,
    }
    match (&d.last_error, &d.last_error_at) {
        (Some(e), Some(at)) => writeln!(out, "  error     {}: {}", when(at, now), text(e))?,
        (Some(e), None) => writeln!(out, "  error     {}", text(e))?,
        (None, _) => writeln!(out, "  error     none")?,
    }
    if d.failing {
        let kept = match &r.primary {
            Some(p) => format!("keeping the last known primary {}", text(&p.address)),
            None => "no primary is known".to_owned(),
        };
        writeln!(out, "  FAILING: {kept}")?;
    }
    writeln!(out)?;

    match &d.instances {
        None => writeln!(out, "instances   no answer from discovery yet")?,
        Some(instances) => {
            writeln!(out, "instances   last answer {}", when(&instances.at, now))?;
            if instances.split_brain {
                writeln!(
                    out,
                    "  SPLIT BRAIN: several candidates, none chosen (on_multiple = refuse)"
                )?;
            }
            if instances.list.is_empty() {
                writeln!(out, "  (the last answer named no instance)")?;
            }
            let width = |f: fn(&crate::ops::instances::Instance) -> &str| {
                instances
                    .list
                    .iter()
                    .map(|i| printable(f(i)).chars().count())
                    .max()
                    .unwrap_or(0)
            };
            let (addr_w, name_w) = (width(|i| &i.address), width(|i| &i.name).min(40));
            for i in instances.list.iter().take(MOST_INSTANCES) {
                let mark = if r.is_primary(&i.address) { "*" } else { " " };
                writeln!(
                    out,
                    "  {mark} {:<addr_w$}  {:<name_w$}  {:<11}  {}",
                    printable(&i.address),
                    truncate_chars(&printable(&i.name), name_w),
                    i.state.as_str(),
                    text(&i.why),
                )?;
            }
            if instances.list.len() > MOST_INSTANCES {
                writeln!(
                    out,
                    "  … {} more (status page or --json)",
                    instances.list.len() - MOST_INSTANCES
                )?;
            }
        }
    }
    writeln!(out)?;

    let c = &r.connections;
    let per_backend = c
        .per_backend
        .iter()
        .map(|(backend, n)| format!("{} {n}", printable(backend)))
        .collect::<Vec<_>>()
        .join(", ");
    writeln!(
        out,
        "connections active {}, held {}, accepted {}{}",
        c.active,
        c.held,
        c.accepted_total,
        if per_backend.is_empty() {
            String::new()
        } else {
            format!("; open per backend: {per_backend}")
        }
    )?;
    match &r.fast_path {
        None => writeln!(out, "fast path   not configured")?,
        Some(facts) => {
            let facts = facts
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k} {}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            writeln!(out, "fast path   {}", text(&facts))?;
        }
    }
    writeln!(out)?;

    writeln!(
        out,
        "failovers   {} since start{}",
        r.failovers_total,
        match r.failovers.len() {
            0 => String::new(),
            kept if kept > MOST_FAILOVERS => {
                format!("; newest first ({MOST_FAILOVERS} of the {kept} kept):")
            }
            _ => "; newest first:".to_owned(),
        }
    )?;
    for record in r.failovers.iter().take(MOST_FAILOVERS) {
        let x = &record.failover;
        let first = first_client(record);
        writeln!(
            out,
            "  {}  {} → {}",
            when(&x.at, now),
            text(&x.old),
            text(&x.new)
        )?;
        writeln!(
            out,
            "      gap {}, closed {}, held released {}, first client {first}, epoch {}, on_failover {}",
            millis(x.gap_ms),
            x.closed_connections,
            x.held_clients_released,
            x.epoch,
            setting_name(&x.policy),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts that `text` contains `needle`, showing `text` when it does not.
    #[track_caller]
    fn has(text: &str, needle: &str) {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }

    #[test]
    fn the_summary_names_the_facts_and_defuses_escapes() {
        let r = Report::parse(
            r#"{"version":"0.1.0","ready":true,"readiness":"ready: primary 127.0.0.1:3307",
            "primary":{"address":"127.0.0.1:3307","name":"db-a/mysql-a"},"epoch":3,
            "since":"2026-01-01T00:00:00.000Z","reason":"single candidate",
            "discovery":{"source":"consul health","watching":true,"failing":true,
              "last_error":"HTTP 500: \u001b]0;owned\u0007","consul_index":42,
              "instances":{"at":"2026-01-01T00:00:59.000Z","split_brain":false,"reason":"x",
                "list":[{"address":"127.0.0.1:3307","name":"db-a/mysql-a","state":"candidate",
                         "chosen":true,"why":"chosen: single candidate"},
                        {"address":"127.0.0.1:3308","name":"db-b/mysql-b","state":"critical",
                         "chosen":false,"why":"not a candidate: check critical"}]}},
            "connections":{"active":2,"held":0,"accepted_total":9,"per_backend":{"127.0.0.1:3307":2}},
            "failovers_total":1,
            "failovers":[{"at":"2026-01-01T00:00:30.000Z","old":"b","new":"a","epoch":3,
              "policy":"close","gap_ms":4,"closed_connections":1,"held_clients_released":2,
              "first_client_routed_ms":8,"waiting_first_client":false}],
            "config":{"service":"mysql"}}"#,
        )
        .unwrap();
        let now = humantime::parse_rfc3339("2026-01-01T00:01:00Z").unwrap();
        let out = summary(&r, "127.0.0.1:9306".parse().unwrap(), now);
        has(&out, "READY       ready: primary 127.0.0.1:3307");
        has(
            &out,
            "since     2026-01-01 00:00:00.000Z (1m 0s ago), epoch 3",
        );
        has(&out, "Consul index 42");
        has(
            &out,
            "FAILING: keeping the last known primary 127.0.0.1:3307",
        );
        has(
            &out,
            "  * 127.0.0.1:3307  db-a/mysql-a  candidate    chosen",
        );
        has(
            &out,
            "    127.0.0.1:3308  db-b/mysql-b  critical     not a candidate",
        );
        has(&out, "b → a");
        has(&out, "first client 8 ms, epoch 3, on_failover close");
        has(&out, "fast path   not configured");
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
    }
}
