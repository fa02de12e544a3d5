"""Templates of the sessions pages (Tornado templates: every `{{ }}` is HTML-escaped)."""

from __future__ import annotations

from tornado.template import DictLoader

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{% block title %}jido-tasks{% end %}</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; } td, th { padding: .25em .7em; text-align: left; }
tr:nth-child(even) { background: #f4f4f4; } th { border-bottom: 1px solid #999; }
pre { background: #f6f6f6; padding: .6em; max-height: 30em; overflow: auto; }
.failed, .poison { color: #b00; } .succeeded { color: #070; } .muted { color: #777; }
nav a { margin-right: 1em; }
</style></head>
<body><nav><a href="/sessions">sessions</a><a href="/metrics">metrics</a></nav>
{% block body %}{% end %}</body></html>
"""

_LIST = """{% extends "base.html" %}
{% block title %}jido-tasks sessions{% end %}
{% block body %}
<h1>Sessions{% if status %} ({{ status }}){% end %}</h1>
<form method="get" action="/sessions">status:
<select name="status" id="status">
{% for s in statuses %}<option value="{{ s }}" {% if s == status %}selected{% end %}>
{{ s or "live" }}</option>{% end %}
</select> <button type="submit">filter</button></form>
{% if missing %}<p id="missing" class="failed">Incomplete: {{ len(missing) }} slot group(s)
could not be read (a Redis Cluster node down); the sessions below are the live nodes'.
Missing slots: {{ ", ".join(map(str, missing)) }}</p>{% end %}
<table id="sessions"><thead><tr><th>session</th><th>status</th><th>last activity (UTC)</th>
<th>pending</th><th>lease holder</th><th>metadata</th></tr></thead><tbody>
{% for row in rows %}<tr class="session">
<td><a href="/sessions/{{ row.entry.id }}">{{ row.entry.id }}</a></td>
<td>{{ row.entry.status.value }}</td>
<td>{{ row.entry.last_activity.strftime("%Y-%m-%d %H:%M:%S") }}</td>
<td>{{ row.pending }}</td><td>{{ row.lease_holder or "-" }}</td>
<td class="muted">{{ short_json(row.entry.metadata) }}</td></tr>
{% end %}</tbody></table>
{% if not rows %}<p class="muted">No sessions.</p>{% end %}
<p>page {{ page + 1 }}
{% if page > 0 %}<a href="?status={{ status }}&amp;page={{ page - 1 }}">previous</a>{% end %}
{% if more %}<a id="next" href="?status={{ status }}&amp;page={{ page + 1 }}">next</a>{% end %}
</p>
{% end %}
"""

_SESSION = """{% extends "base.html" %}
{% block title %}{{ entry.id }}{% end %}
{% block body %}
<h1>{{ entry.id }}</h1>
<table><tr><th>status</th><td id="status">{{ entry.status.value }}</td></tr>
<tr><th>created</th><td>{{ entry.created_at.isoformat() }}</td></tr>
<tr><th>last activity</th><td>{{ entry.last_activity.isoformat() }}</td></tr>
<tr><th>reason</th><td>{{ entry.reason or "-" }}</td></tr>
<tr><th>restored from</th><td>{{ entry.restored_from or "-" }}</td></tr>
<tr><th>pending</th><td>{{ row.pending }}</td></tr>
<tr><th>lease holder</th><td>{{ row.lease_holder or "-" }}</td></tr></table>
<h2>Metadata</h2><pre>{{ pretty(entry.metadata) }}</pre>
<h2>Config</h2><pre>{{ pretty(entry.config.model_dump(mode="json")) }}</pre>
<h2>LLM config</h2><pre>{{ pretty(entry.llm_config) }}</pre>
<h2>Recent actions</h2>
<table id="actions"><thead><tr><th>action</th><th>id</th><th>status</th><th>attempts</th>
<th>error</th></tr></thead><tbody>
{% for rec in actions %}<tr class="action {{ rec.status.value }}"><td>{{ rec.action }}</td>
<td class="muted">{{ rec.id }}</td><td>{{ rec.status.value }}</td><td>{{ rec.attempts }}</td>
<td>{% if rec.error %}{{ rec.error.type }}: {{ rec.error.message }}{% end %}</td></tr>{% end %}
</tbody></table>
<h2>State{% if truncated %} (first {{ state_limit }} characters){% end %}</h2>
<pre id="state">{{ state }}</pre>
<h2>Events <small class="muted">(live)</small></h2>
<table id="events" data-session="{{ entry.id }}" data-after="{{ last_event }}">
<thead><tr><th>time (UTC)</th><th>type</th><th>data</th></tr></thead><tbody>
{% for ev in events %}<tr class="event"><td>{{ ev.ts.strftime("%H:%M:%S.%f")[:-3] }}</td>
<td>{{ ev.type }}</td><td class="muted">{{ short_json(ev.data) }}</td></tr>{% end %}
</tbody></table>
<script src="/assets/events.js"></script>
{% end %}
"""

# Polls the session's event stream (resuming after the last id seen) twice a second; text is
# inserted with textContent, never as HTML.
EVENTS_JS = """
(function () {
  var table = document.getElementById("events");
  if (!table) { return; }
  var body = table.tBodies[0];
  var sid = table.dataset.session, after = table.dataset.after || "0";
  function cell(row, text, cls) {
    var td = row.insertCell(-1); td.textContent = text; if (cls) { td.className = cls; }
  }
  function poll() {
    fetch("/sessions/" + sid + "/events?after=" + encodeURIComponent(after),
          {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : []; })
      .then(function (events) {
        events.forEach(function (ev) {
          var row = body.insertRow(-1); row.className = "event";
          cell(row, ev.ts.substring(11, 23)); cell(row, ev.type);
          cell(row, JSON.stringify(ev.data).substring(0, 200), "muted");
          after = ev.id;
        });
      })
      .catch(function () {})
      .finally(function () { setTimeout(poll, 500); });
  }
  setTimeout(poll, 500);
})();
"""

LOADER = DictLoader({"base.html": _BASE, "list.html": _LIST, "session.html": _SESSION},
                    autoescape="xhtml_escape")
