//! The landing page (`GET /`): the zone tree this agent knows, with members,
//! children reporting and freshness. Rendered on the server from the
//! snapshot (so it reads without JavaScript), then kept live by a small
//! inline script polling `/api/v1/zones`. No external assets: agents often
//! sit on networks without internet access.

use std::fmt::Write;

use crate::agent::{attr, column};
use crate::view::View;
use crate::zone::Value;

/// Freshness thresholds (seconds) for the colour of the age column.
const FRESH_S: f64 = 10.0;
const STALE_S: f64 = 60.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn freshness(age: f64) -> &'static str {
    if age < FRESH_S {
        "fresh"
    } else if age < STALE_S {
        "aging"
    } else {
        "stale"
    }
}

fn number(v: Option<&Value>, percent: bool) -> String {
    let x = match v {
        Some(Value::Float(f)) if f.is_finite() => *f,
        Some(Value::Int(i)) => *i as f64,
        _ => return "-".into(),
    };
    if percent {
        format!("{:.1}%", x * 100.0)
    } else {
        format!("{x:.2}")
    }
}

/// The page for one snapshot.
pub fn page(view: &View) -> String {
    let mut zones: Vec<_> = view.zones.iter().collect();
    zones.sort_by(|a, b| a.row.zone.cmp(&b.row.zone));
    let mut rows = String::new();
    for z in zones {
        let row = &z.row;
        let path = row.zone.to_string();
        let name = if row.zone.is_root() {
            "/".to_string()
        } else {
            row.zone.name().to_string()
        };
        let cpu = row
            .value(column::CPU_UTILIZATION_AVG)
            .or_else(|| row.value(attr::CPU_UTILIZATION));
        let mem = row
            .value(column::MEMORY_USED_RATIO_AVG)
            .or_else(|| row.value(attr::MEMORY_USED_RATIO));
        let load = row
            .value(column::LOAD1_MAX)
            .or_else(|| row.value(attr::LOAD1));
        let _ = writeln!(
            rows,
            "<tr data-zone=\"{path}\"><td class=\"zone\" style=\"padding-left:{pad}em\" title=\"{path}\">{name}</td><td class=\"num\">{members}</td><td class=\"num\">{reporting}</td><td class=\"num {fresh}\">{age:.1}s</td><td class=\"num\">{cpu}</td><td class=\"num\">{mem}</td><td class=\"num\">{load}</td></tr>",
            path = escape(&path),
            pad = row.zone.depth() as f64 * 1.5 + 0.5,
            name = escape(&name),
            members = row.members(),
            reporting = row
                .value(crate::zone::ATTR_REPORTING)
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            fresh = freshness(z.age_seconds),
            age = z.age_seconds,
            cpu = number(cpu, true),
            mem = number(mem, true),
            load = number(load, false),
        );
    }
    let zone = view
        .agent_zone
        .as_ref()
        .map(|z| z.to_string())
        .unwrap_or_default();
    format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Astrolabe exporter: {zone}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em;color:#1d232a;background:#fafbfc}}
h1{{font-size:1.4em;margin:0 0 .3em}}
p.meta{{margin:.2em 0 1em;color:#555}}
a{{color:#1f62c4}}
table{{border-collapse:collapse;background:#fff;box-shadow:0 1px 3px rgba(0,0,0,.12);min-width:46em}}
th,td{{padding:.35em .9em;border-bottom:1px solid #e4e7eb;text-align:left;white-space:nowrap}}
th{{background:#2c3e50;color:#fff;font-weight:600}}
td.num,th.num{{text-align:right;font-variant-numeric:tabular-nums}}
tr.inner td.zone{{font-weight:600}}
tr.own td.zone::after{{content:" ●";color:#1f62c4}}
td.fresh{{color:#1b7f3b}} td.aging{{color:#b7791f}} td.stale{{color:#c53030;font-weight:600}}
td.partial{{color:#c53030;font-weight:600}}
#status{{font-size:.9em;color:#555}} #status.error{{color:#c53030}}
</style>
</head><body>
<h1>Astrolabe exporter</h1>
<p class="meta">Agent <code>{zone}</code> (id {id}), version {version} ·
<a href="/metrics">Metrics</a> · <a href="/api/v1/zones">Zones (JSON)</a> · <a href="/-/healthy">Health</a> ·
<span id="status">server-rendered</span></p>
<table id="zones"><thead><tr><th>Zone</th><th class="num">Members</th><th class="num">Reporting</th><th class="num">Age</th><th class="num">CPU</th><th class="num">Memory</th><th class="num">Load1</th></tr></thead>
<tbody id="zone-rows">
{rows}</tbody></table>
<p class="meta">Age: seconds since the oldest input of the row was refreshed (green under {fresh}s, red over {stale}s). Reporting: children heard from within their expiry; red when fewer than the children this agent sees. CPU, memory and load: zone average or peak over every host. ● marks this agent's own zones.</p>
<script>
"use strict";
(function () {{
  var own = {own_json};
  function segs(p) {{ return p === "/" ? [] : p.slice(1).split("/"); }}
  function cmp(a, b) {{
    var x = segs(a.zone_path), y = segs(b.zone_path);
    for (var i = 0; i < Math.min(x.length, y.length); i++) {{
      if (x[i] !== y[i]) return x[i] < y[i] ? -1 : 1;
    }}
    return x.length - y.length;
  }}
  function parent(p) {{
    var s = segs(p); s.pop(); return "/" + s.join("/");
  }}
  function num(v, pct) {{
    if (typeof v !== "number" || !isFinite(v)) return "-";
    return pct ? (v * 100).toFixed(1) + "%" : v.toFixed(2);
  }}
  function pick(a, k1, k2) {{ return a[k1] !== undefined ? a[k1] : a[k2]; }}
  function cell(tr, text, cls) {{
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }}
  function render(data) {{
    var zones = data.zones.slice().sort(cmp);
    var children = {{}};
    zones.forEach(function (z) {{
      if (z.zone_path !== "/") children[parent(z.zone_path)] = (children[parent(z.zone_path)] || 0) + 1;
    }});
    var body = document.createElement("tbody");
    body.id = "zone-rows";
    zones.forEach(function (z) {{
      var tr = document.createElement("tr");
      tr.setAttribute("data-zone", z.zone_path);
      var depth = segs(z.zone_path).length;
      var classes = [];
      if (children[z.zone_path]) classes.push("inner");
      if (own.indexOf(z.zone_path) >= 0 || z.computed_here) classes.push("own");
      tr.className = classes.join(" ");
      var name = z.zone_path === "/" ? "/" : segs(z.zone_path)[depth - 1];
      var td = cell(tr, name, "zone");
      td.style.paddingLeft = (depth * 1.5 + 0.5) + "em";
      td.title = z.zone_path;
      cell(tr, String(z.members), "num");
      var rep = z.reporting === null || z.reporting === undefined ? "-" : String(z.reporting);
      var partial = z.reporting !== null && z.reporting !== undefined && children[z.zone_path] && z.reporting < children[z.zone_path];
      cell(tr, rep, "num" + (partial ? " partial" : ""));
      var age = z.age_seconds;
      cell(tr, age.toFixed(1) + "s", "num " + (age < {fresh} ? "fresh" : age < {stale} ? "aging" : "stale"));
      var a = z.attributes || {{}};
      cell(tr, num(pick(a, "{cpu_avg}", "{cpu}"), true), "num");
      cell(tr, num(pick(a, "{mem_avg}", "{mem}"), true), "num");
      cell(tr, num(pick(a, "{load_max}", "{load}"), false), "num");
      body.appendChild(tr);
    }});
    var old = document.getElementById("zone-rows");
    old.parentNode.replaceChild(body, old);
    var status = document.getElementById("status");
    status.className = "";
    status.textContent = "live: " + zones.length + " zones, updated " + new Date().toLocaleTimeString();
    document.body.setAttribute("data-live", "1");
  }}
  function refresh() {{
    fetch("/api/v1/zones", {{ cache: "no-store" }})
      .then(function (r) {{ if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); }})
      .then(render)
      .catch(function (e) {{
        var status = document.getElementById("status");
        status.className = "error";
        status.textContent = "update failed (" + e.message + "); retrying";
      }});
  }}
  refresh();
  setInterval(refresh, 2000);
}})();
</script>
</body></html>
"##,
        zone = escape(&zone),
        cpu_avg = column::CPU_UTILIZATION_AVG,
        cpu = attr::CPU_UTILIZATION,
        mem_avg = column::MEMORY_USED_RATIO_AVG,
        mem = attr::MEMORY_USED_RATIO,
        load_max = column::LOAD1_MAX,
        load = attr::LOAD1,
        id = view.agent_id,
        version = env!("CARGO_PKG_VERSION"),
        fresh = FRESH_S,
        stale = STALE_S,
        own_json = serde_json::to_string(&own_zones(view)).unwrap_or_else(|_| "[]".into()),
    )
}

/// The agent's leaf and its ancestors.
fn own_zones(view: &View) -> Vec<String> {
    let mut out = vec!["/".to_string()];
    if let Some(z) = &view.agent_zone {
        let mut path = String::new();
        for seg in z.as_str().trim_start_matches('/').split('/') {
            path.push('/');
            path.push_str(seg);
            out.push(path.clone());
        }
    }
    out
}
