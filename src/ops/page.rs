//! The status page (`GET /` on the admin address and on `metrics_listen`): one screen of HTML
//! an operator reads during an incident — who the primary is and since when, what discovery
//! sees (every instance, and why it is or is not the primary), connections, and the last
//! failovers as a timeline.
//!
//! It renders a [`Report`] (the `/status` document), so it shows exactly the facts `/status`
//! serves. Self-contained for machines without internet: inline CSS, no script at all (a
//! `<meta http-equiv="refresh">` reloads it every [`REFRESH_S`] seconds), no outside asset.
//! Every text that comes from Consul or the network — node names, check output, reasons, error
//! texts — goes through [`Esc`]; numbers and the page's own words are the only unescaped text.

use std::fmt::{self, Display, Formatter};
use std::time::SystemTime;

use serde_json::Value;

use super::history::FailoverRecord;
use super::instances::{Instance, InstanceState, Instances};
use super::report::{Report, ago, first_client, millis, setting_name};
use crate::util::html::Esc;

/// Seconds between reloads of the page.
pub const REFRESH_S: u32 = 2;

/// The page for `report`, with times shown relative to `now`.
pub fn render(report: &Report, now: SystemTime) -> String {
    Page { r: report, now }.to_string()
}

struct Page<'a> {
    r: &'a Report,
    now: SystemTime,
}

/// An RFC 3339 time as `2026-12-01 09:00:00.123Z (4m 12s ago)`, escaped.
struct Stamp<'a>(&'a str, SystemTime);

impl Display for Stamp<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "<time>{}</time>", Esc(&self.0.replacen('T', " ", 1)))?;
        if let Some(ago) = ago(self.0, self.1) {
            write!(f, " <span class=\"muted\">({ago} ago)</span>")?;
        }
        Ok(())
    }
}

/// An address and, when it says more, its name: `127.0.0.1:3307 db-a/mysql-a`, escaped.
struct Named<'a>(&'a str, &'a str);

impl Display for Named<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "<span class=\"addr\">{}</span>", Esc(self.0))?;
        if !self.1.is_empty() && self.1 != self.0 {
            write!(f, " <span class=\"name\">{}</span>", Esc(self.1))?;
        }
        Ok(())
    }
}

impl Display for Page<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        self.head(f)?;
        self.routes(f)?;
        self.primary(f)?;
        self.discovery(f)?;
        self.instances(f)?;
        f.write_str("<div class=\"row\">")?;
        self.connections(f)?;
        self.fast_path(f)?;
        f.write_str("</div>")?;
        self.failovers(f)?;
        self.config(f)?;
        f.write_str(
            "<footer>Raw data: <a href=\"status\">/status</a> (JSON) · \
             <a href=\"metrics\">/metrics</a> (Prometheus)</footer></body></html>\n",
        )
    }
}

impl Page<'_> {
    fn stamp<'s>(&self, at: &'s str) -> Stamp<'s> {
        Stamp(at, self.now)
    }

    fn head(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let r = self.r;
        let primary = r.primary.as_ref().map_or("none", |p| p.address.as_str());
        write!(
            f,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{} · primary {} · consul-mysql-proxy</title><style>{STYLE}</style></head><body>",
            Esc(r.service().unwrap_or("?")),
            Esc(primary),
        )?;
        let (class, verdict) = if r.ready {
            ("ok", "ready")
        } else {
            ("bad", "not ready")
        };
        write!(
            f,
            "<header><h1>consul-mysql-proxy <span class=\"muted\">{}</span></h1>\
             <span id=\"verdict\" class=\"badge large {class}\">{verdict}</span>\
             <p class=\"muted\">service <b>{}</b> · as of {} · reloads every {REFRESH_S} s</p>\
             </header>",
            Esc(&r.version),
            Esc(r.service().unwrap_or("?")),
            Esc(&crate::util::clock::rfc3339(self.now).replacen('T', " ", 1)),
        )
    }

    fn primary(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let r = self.r;
        let class = match (&r.primary, r.ready) {
            (Some(_), true) => "ok",
            (Some(_), false) => "warn",
            (None, _) => "bad",
        };
        write!(
            f,
            "<section id=\"primary\" class=\"card {class}\"><h2>Primary</h2>"
        )?;
        match &r.primary {
            Some(p) => write!(f, "<p class=\"big\">{}</p>", Named(&p.address, &p.name))?,
            None => f.write_str(
                "<p class=\"big\">none — new clients are held, then refused with an ERR \
                 packet after hold_timeout</p>",
            )?,
        }
        f.write_str("<dl>")?;
        if let Some(since) = &r.since {
            write!(f, "<dt>since</dt><dd>{}</dd>", self.stamp(since))?;
        }
        write!(
            f,
            "<dt>epoch</dt><dd>{}</dd><dt>reason</dt><dd>{}</dd>\
             <dt>readiness</dt><dd id=\"readiness\" class=\"{}\">{}</dd></dl>",
            r.epoch,
            Esc(&r.reason),
            if r.ready { "ok-text" } else { "bad-text" },
            Esc(&r.readiness),
        )?;
        if let Some(w) = &r.discovery.withdrawn_primary {
            write!(
                f,
                "<p id=\"withdrawn\" class=\"alert warn\">Withdrawn by Consul {}: {}. Still \
                 routed to: Consul says who should be primary, the proxy checks that it still \
                 can be (withdrawn_grace, or verify_writable).</p>",
                self.stamp(&w.since),
                Esc(&w.reason),
            )?;
        }
        f.write_str("</section>")
    }

    fn discovery(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let d = &self.r.discovery;
        f.write_str("<section id=\"discovery\" class=\"card\"><h2>Discovery</h2>")?;
        if d.failing {
            let error = d.last_error.as_deref().unwrap_or("unknown error");
            write!(
                f,
                "<p id=\"discovery-failing\" class=\"alert bad\">Discovery is failing: {}. ",
                Esc(error)
            )?;
            match &self.r.primary {
                Some(p) => write!(
                    f,
                    "Keeping the last known primary {} — Consul down is not the database down.",
                    Named(&p.address, &p.name)
                )?,
                None => f.write_str("No primary is known: new clients are held.")?,
            }
            f.write_str("</p>")?;
        }
        write!(f, "<dl><dt>source</dt><dd>{}</dd>", Esc(&d.source))?;
        match (d.watching, &d.not_watching) {
            (true, _) => f.write_str("<dt>watching</dt><dd class=\"ok-text\">yes</dd>")?,
            (false, cause) => write!(
                f,
                "<dt>watching</dt><dd class=\"bad-text\">no: {}</dd>",
                Esc(cause.as_deref().unwrap_or("not started"))
            )?,
        }
        f.write_str("<dt>last success</dt><dd>")?;
        match &d.last_success {
            Some(at) => write!(f, "{}", self.stamp(at))?,
            None => f.write_str("never")?,
        }
        f.write_str("</dd>")?;
        if let Some(index) = d.consul_index.filter(|i| *i > 0) {
            write!(f, "<dt>Consul index</dt><dd>{index}</dd>")?;
        }
        f.write_str("<dt>last error</dt><dd id=\"last-error\">")?;
        match (&d.last_error, &d.last_error_at) {
            (Some(e), Some(at)) => write!(f, "{} {}", self.stamp(at), Esc(e))?,
            (Some(e), None) => write!(f, "{}", Esc(e))?,
            (None, _) => f.write_str("none")?,
        }
        f.write_str("</dd></dl></section>")
    }

    fn instances(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("<section id=\"candidates\" class=\"card\"><h2>Instances</h2>")?;
        let Some(instances) = &self.r.discovery.instances else {
            return f.write_str("<p class=\"muted\">No answer from discovery yet.</p></section>");
        };
        let Instances {
            at,
            split_brain,
            reason,
            list,
        } = instances;
        write!(
            f,
            "<p class=\"muted\">Last answer {} — {}</p>",
            self.stamp(at),
            Esc(reason)
        )?;
        if *split_brain {
            f.write_str(
                "<p id=\"split-brain\" class=\"alert bad\">Split brain: several instances \
                 claim to be the primary and none is the current one; the proxy refuses to \
                 pick (on_multiple = refuse) and holds new clients.</p>",
            )?;
        }
        if list.is_empty() {
            return f.write_str("<p>The last answer named no instance.</p></section>");
        }
        f.write_str(
            "<table><thead><tr><th>role</th><th>instance</th><th>state</th><th>why</th></tr>\
             </thead><tbody>",
        )?;
        for instance in list {
            self.instance_row(f, instance)?;
        }
        f.write_str("</tbody></table></section>")
    }

    fn instance_row(&self, f: &mut Formatter<'_>, i: &Instance) -> fmt::Result {
        let published = self.r.is_primary(&i.address);
        let member = self.r.pool_member(&i.address);
        let role = match (published, i.chosen, i.state) {
            _ if member.is_some_and(|m| m.lagging) => {
                "<span class=\"badge warn\">replica (lagging)</span>"
            }
            _ if member.is_some() => "<span class=\"badge ok\">replica</span>",
            (true, _, InstanceState::Candidate) => "<span class=\"badge ok\">primary</span>",
            // A withdrawn primary still routed to: excluded by Consul, published by the proxy.
            (true, _, _) => "<span class=\"badge warn\">primary (withdrawn)</span>",
            (false, true, _) => "<span class=\"badge\">chosen, not published</span>",
            (false, false, _) => "",
        };
        let state_class = match i.state {
            InstanceState::Candidate => "ok",
            InstanceState::Critical => "bad",
            InstanceState::Maintenance | InstanceState::Lagging => "warn",
        };
        write!(
            f,
            "<tr class=\"instance{}\" data-address=\"{}\"><td>{role}</td><td class=\"nowrap\">{}</td>\
             <td><span class=\"badge {state_class}\">{}</span></td><td>{}</td></tr>",
            if published { " published" } else { "" },
            Esc(&i.address),
            Named(&i.address, &i.name),
            i.state.as_str(),
            Esc(&i.why),
        )
    }

    /// With named routes: one line per route (the cards below are the first route's).
    fn routes(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let routes = &self.r.routes;
        if routes.is_empty() {
            return Ok(());
        }
        f.write_str(
            "<section id=\"routes\" class=\"card\"><h2>Routes</h2><table><thead><tr>\
             <th>route</th><th>listen</th><th>service</th><th>primary</th><th>active</th>\
             <th>held</th><th>state</th></tr></thead><tbody>",
        )?;
        for route in routes {
            let r = &route.report;
            let primary = r.primary.as_ref().map_or_else(
                || "none".to_owned(),
                |p| Named(&p.address, &p.name).to_string(),
            );
            let (class, verdict) = if r.ready {
                ("ok", "ready")
            } else {
                ("bad", "not ready")
            };
            write!(
                f,
                "<tr><td><b>{}</b></td><td><span class=\"addr\">{}</span></td><td>{}</td>\
                 <td>{primary}</td><td>{}</td><td>{}</td>\
                 <td><span class=\"badge {class}\" title=\"{}\">{verdict}</span></td></tr>",
                Esc(&route.name),
                Esc(&route.listen),
                Esc(r.service().unwrap_or("?")),
                r.connections.active,
                r.connections.held,
                Esc(&r.readiness),
            )?;
        }
        write!(
            f,
            "</tbody></table><p class=\"muted\">The cards below are route <b>{}</b>'s.</p></section>",
            Esc(routes.first().map_or("", |r| r.name.as_str()))
        )
    }

    fn connections(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let c = &self.r.connections;
        write!(
            f,
            "<section id=\"connections\" class=\"card\"><h2>Connections</h2>\
             <div class=\"numbers\"><div><b>{}</b>active</div><div><b>{}</b>held</div>\
             <div><b>{}</b>accepted</div></div>",
            c.active, c.held, c.accepted_total
        )?;
        if c.per_backend.is_empty() {
            f.write_str("<p class=\"muted\">No relayed connection open.</p>")?;
        } else {
            f.write_str("<table><thead><tr><th>backend</th><th>open</th></tr></thead><tbody>")?;
            for (backend, open) in &c.per_backend {
                let mark = if self.r.is_primary(backend) {
                    " <span class=\"badge ok\">primary</span>"
                } else if self.r.pool_member(backend).is_some() {
                    " <span class=\"badge ok\">replica</span>"
                } else {
                    " <span class=\"badge warn\">not the primary</span>"
                };
                write!(
                    f,
                    "<tr><td><span class=\"addr\">{}</span>{mark}</td><td>{open}</td></tr>",
                    Esc(backend)
                )?;
            }
            f.write_str("</tbody></table>")?;
        }
        f.write_str("</section>")
    }

    /// Its own block, fed by `fast_path` alone: a later change fills it.
    fn fast_path(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("<section id=\"fast-path\" class=\"card\"><h2>Fast path</h2>")?;
        match &self.r.fast_path {
            None => f.write_str("<p class=\"muted\">not configured</p>")?,
            Some(facts) => {
                f.write_str("<dl>")?;
                for (key, value) in facts {
                    let text = match value {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    write!(f, "<dt>{}</dt><dd>{}</dd>", Esc(key), Esc(&text))?;
                }
                f.write_str("</dl>")?;
            }
        }
        f.write_str("</section>")
    }

    fn failovers(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let r = self.r;
        write!(
            f,
            "<section id=\"failovers\" class=\"card\"><h2>Failovers <span class=\"muted\">{} \
             since start{}</span></h2>",
            r.failovers_total,
            match r.failovers.len() {
                0 => String::new(),
                kept if kept as u64 == r.failovers_total => " · newest first".to_owned(),
                kept => format!(" · the last {kept}, newest first"),
            }
        )?;
        if r.failovers.is_empty() {
            return f.write_str("<p class=\"muted\">None since the proxy started.</p></section>");
        }
        f.write_str("<ol class=\"timeline\">")?;
        for record in &r.failovers {
            self.failover(f, record)?;
        }
        f.write_str("</ol></section>")
    }

    fn failover(&self, f: &mut Formatter<'_>, record: &FailoverRecord) -> fmt::Result {
        let x = &record.failover;
        write!(
            f,
            "<li class=\"failover\"><div class=\"when\">{}</div><div class=\"move\">\
             <span class=\"addr\">{}</span> → <span class=\"addr\">{}</span> \
             <span class=\"muted\">on_failover = {}</span></div><div>",
            self.stamp(&x.at),
            Esc(&x.old),
            Esc(&x.new),
            Esc(&setting_name(&x.policy)),
        )?;
        for (label, value) in [
            ("gap without primary", millis(x.gap_ms)),
            ("connections closed", x.closed_connections.to_string()),
            ("held clients released", x.held_clients_released.to_string()),
            ("first client routed after", first_client(record)),
            ("epoch", x.epoch.to_string()),
        ] {
            write!(
                f,
                "<span class=\"fact\">{label} <b>{}</b></span>",
                Esc(&value)
            )?;
        }
        f.write_str("</div></li>")
    }

    fn config(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string_pretty(&self.r.config).unwrap_or_default();
        write!(
            f,
            "<details id=\"config\" class=\"card\"><summary>Configuration (no secrets)</summary>\
             <pre>{}</pre></details>",
            Esc(&text)
        )
    }
}

/// The page's whole style sheet: system fonts, light, readable from across a room.
const STYLE: &str = "\
*{box-sizing:border-box}\
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI','DejaVu Sans',sans-serif;margin:0;\
padding:20px 28px;background:#f3f4f6;color:#1f2328}\
header{display:flex;align-items:center;gap:16px;margin-bottom:14px}\
h1{font-size:22px;margin:0}h2{font-size:16px;margin:0 0 10px}\
header p{margin:0}\
.muted{color:#656d76;font-weight:normal}\
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:14px 18px;\
margin-bottom:14px}\
.card.ok{border-left:6px solid #1a7f37}.card.warn{border-left:6px solid #bf8700}\
.card.bad{border-left:6px solid #cf222e}\
.big{font-size:21px;margin:0 0 8px}\
.addr{font-family:'DejaVu Sans Mono',ui-monospace,monospace;font-weight:600}\
.name{color:#656d76}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:0}\
dt{color:#656d76}dd{margin:0;overflow-wrap:anywhere}\
.ok-text{color:#1a7f37;font-weight:600}.bad-text{color:#cf222e;font-weight:600}\
.alert{padding:8px 12px;border-radius:6px;margin:0 0 10px}\
.alert.bad{background:#ffebe9;border:1px solid #ff8182}\
.alert.warn{background:#fff8c5;border:1px solid #d4a72c;margin:10px 0 0}\
table{border-collapse:collapse;width:100%}\
th{text-align:left;color:#656d76;font-weight:600;border-bottom:1px solid #d0d7de;\
padding:4px 8px}\
td{padding:5px 8px;border-bottom:1px solid #eaeef2;vertical-align:top;overflow-wrap:anywhere}\
tr.published td{background:#dafbe1}\
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:13px;\
background:#eaeef2;white-space:nowrap}\
.badge.ok{background:#1a7f37;color:#fff}.badge.bad{background:#cf222e;color:#fff}\
.badge.warn{background:#bf8700;color:#fff}\
.badge.large{font-size:15px;padding:2px 12px;font-weight:600;text-transform:uppercase}\
.nowrap{white-space:nowrap}\
.row{display:grid;grid-template-columns:2fr 1fr;gap:14px}\
.numbers{display:flex;gap:28px;margin-bottom:8px}\
.numbers div{color:#656d76}.numbers b{display:block;font-size:24px;color:#1f2328}\
.timeline{list-style:none;margin:0;padding:0 0 0 18px;border-left:3px solid #d0d7de}\
.timeline li{position:relative;padding:0 0 12px 10px}\
.timeline li:before{content:'';position:absolute;left:-27px;top:5px;width:12px;height:12px;\
border-radius:50%;background:#0969da;border:2px solid #fff}\
.when{font-size:13px}.move{font-size:16px;margin:1px 0 3px}\
.fact{display:inline-block;margin-right:18px;color:#656d76;font-size:14px}\
.fact b{color:#1f2328}\
summary{cursor:pointer;font-weight:600}\
pre{font-size:12px;overflow:auto;margin:8px 0 0}\
footer{color:#656d76;font-size:13px}\
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::report::Report;
    use serde_json::json;

    const HOSTILE: &str = "<script>alert(1)</script>";

    fn report() -> Report {
        Report::from_json(json!({
            "version": "0.1.0",
            "ready": true,
            "readiness": "ready: primary 127.0.0.1:3307 (db-a/mysql-a)",
            "primary": {"address": "127.0.0.1:3307", "name": "db-a/mysql-a"},
            "epoch": 3,
            "since": "2026-01-01T00:00:00.000Z",
            "reason": "consul health: single candidate",
            "discovery": {
                "source": "consul health \"mysql\"",
                "watching": true,
                "last_success": "2026-01-01T00:00:59.000Z",
                "last_error": format!("HTTP 500: {HOSTILE}"),
                "last_error_at": "2026-01-01T00:00:10.000Z",
                "failing": false,
                "consul_index": 42,
                "instances": {
                    "at": "2026-01-01T00:00:59.000Z",
                    "split_brain": false,
                    "reason": "single candidate",
                    "list": [
                        {"address": "127.0.0.1:3307", "name": "db-a/mysql-a", "state": "candidate",
                         "chosen": true, "why": "chosen: single candidate"},
                        {"address": "127.0.0.1:3308", "name": format!("{HOSTILE}/mysql-b"),
                         "state": "critical", "chosen": false,
                         "why": format!("not a candidate: check service:mysql-b critical: {HOSTILE}")},
                    ],
                },
            },
            "connections": {"active": 2, "held": 0, "accepted_total": 9,
                            "per_backend": {"127.0.0.1:3307": 2}},
            "failovers_total": 1,
            "failovers": [{
                "at": "2026-01-01T00:00:30.000Z", "old": "127.0.0.1:3308 (b)",
                "new": "127.0.0.1:3307 (a)", "epoch": 3, "policy": "close", "gap_ms": 4,
                "closed_connections": 1, "held_clients_released": 2,
                "first_client_routed_ms": 8, "waiting_first_client": false,
            }],
            "config": {"service": "mysql"},
        }))
        .unwrap()
    }

    fn now() -> SystemTime {
        humantime::parse_rfc3339("2026-01-01T00:01:00Z").unwrap()
    }

    #[test]
    fn everything_from_outside_is_escaped() {
        let html = render(&report(), now());
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;/mysql-b"));
        assert!(html.contains("critical: &lt;script&gt;"));
        assert!(html.contains("HTTP 500: &lt;script&gt;"));
    }

    #[test]
    fn shows_the_primary_instances_and_timeline() {
        let html = render(&report(), now());
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"2\">"));
        assert!(html.contains("since</dt><dd><time>2026-01-01 00:00:00.000Z</time>"));
        assert!(html.contains("(1m 0s ago)"), "{html}");
        assert!(html.contains("<tr class=\"instance published\" data-address=\"127.0.0.1:3307\">"));
        assert!(html.contains("<span class=\"badge ok\">primary</span>"));
        assert!(html.contains("<span class=\"badge bad\">critical</span>"));
        assert!(html.contains(
            "<span class=\"addr\">127.0.0.1:3308 (b)</span> → <span class=\"addr\">127.0.0.1:3307 (a)</span>"
        ));
        assert!(html.contains("first client routed after <b>8 ms</b>"));
        assert!(html.contains("<section id=\"fast-path\" class=\"card\"><h2>Fast path</h2><p class=\"muted\">not configured</p>"));
        assert!(!html.contains("discovery-failing"));
        assert!(!html.contains("split-brain"));
    }

    #[test]
    fn a_failing_source_says_the_last_primary_is_kept() {
        let mut r = report();
        r.discovery.failing = true;
        let html = render(&r, now());
        assert!(html.contains(
            "Discovery is failing: HTTP 500: &lt;script&gt;alert(1)&lt;/script&gt;. Keeping the last known primary"
        ));
        r.primary = None;
        r.ready = false;
        let html = render(&r, now());
        assert!(html.contains("No primary is known"));
        assert!(html.contains("id=\"primary\" class=\"card bad\""));
    }

    #[test]
    fn split_brain_and_a_configured_fast_path_show() {
        let mut r = report();
        if let Some(i) = r.discovery.instances.as_mut() {
            i.split_brain = true;
        }
        r.fast_path = Some([("mode".to_owned(), json!(HOSTILE))].into_iter().collect());
        let html = render(&r, now());
        assert!(html.contains("id=\"split-brain\""));
        assert!(html.contains("<dt>mode</dt><dd>&lt;script&gt;"));
        assert!(!html.contains("not configured"));
    }

    #[test]
    fn pool_members_are_marked_as_replicas() {
        let mut r = report();
        r.primary = None;
        r.discovery.pool = Some(crate::ops::report::PoolReport {
            members: vec![crate::ops::report::PoolMemberReport {
                address: "127.0.0.1:3307".into(),
                lagging: true,
                connections: 2,
                ..Default::default()
            }],
            ..Default::default()
        });
        let html = render(&r, now());
        assert!(html.contains("replica (lagging)"), "{html}");
        assert!(!html.contains("not the primary"), "{html}");
    }
}
