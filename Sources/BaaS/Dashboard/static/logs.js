// Observability: a metrics summary with charts of commits/s and request latency (from
// /metrics, polled while the page is open), the slow request log (/admin/v1/logs/slow) and the
// audit log (/admin/v1/audit). docs/OPERATIONS.md "Metrics".

import { request, get } from "./api.js";
import { h, kv, lineChart, replace, table } from "./dom.js";
import { errorBox, outcome } from "./ui.js";

const pollMs = 2000;
/** Samples kept per chart (10 minutes at 2 s). */
const samplesMax = 300;
/** Entries shown of the slow log and the audit log. */
const logEntriesShown = 100;

let timer = null;
const history = { commits: [], requests: [], latency: [], commitLatency: [] };
let previous = null;

export function stopLogs() { if (timer) clearInterval(timer); timer = null; }

/** Prometheus text (0.0.4) -> {name: [{labels, value}]}. Label values never hold `}` here. */
export function parseMetrics(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    (out[m[1]] ||= []).push({ labels: m[2] || "", value: Number(m[3]) });
  }
  return out;
}

const sum = (metrics, name) => (metrics[name] || []).reduce((a, s) => a + (Number.isFinite(s.value) ? s.value : 0), 0);

function sample(metrics) {
  const now = Date.now();
  const cur = { t: now, commits: sum(metrics, "aerodb_commits_total"), requests: sum(metrics, "aerodb_http_requests_total"),
    reqSeconds: sum(metrics, "aerodb_http_request_duration_seconds_sum"), reqCount: sum(metrics, "aerodb_http_request_duration_seconds_count"),
    commitSeconds: sum(metrics, "aerodb_commit_duration_seconds_sum"), commitCount: sum(metrics, "aerodb_commit_duration_seconds_count") };
  if (previous && cur.t > previous.t) {
    const dt = (cur.t - previous.t) / 1000;
    const push = (series, v) => { series.push([now, Math.max(0, v)]); while (series.length > samplesMax) series.shift(); };
    push(history.commits, (cur.commits - previous.commits) / dt);
    push(history.requests, (cur.requests - previous.requests) / dt);
    const dn = cur.reqCount - previous.reqCount;
    push(history.latency, dn > 0 ? (1000 * (cur.reqSeconds - previous.reqSeconds)) / dn : 0);
    const dc = cur.commitCount - previous.commitCount;
    push(history.commitLatency, dc > 0 ? (1000 * (cur.commitSeconds - previous.commitSeconds)) / dc : 0);
  }
  previous = cur;
  return cur;
}

export async function logsView(view) {
  stopLogs();
  const summary = h("div", { class: "card", id: "metrics" }, h("h2", {}, "Metrics"), h("p", { class: "muted" }, "Loading…"));
  const charts = h("div", { class: "card", id: "charts" });
  const slow = h("div", { class: "card", id: "slow-log" }, h("h2", {}, "Slow requests"), h("p", { class: "muted" }, "Loading…"));
  const audit = h("div", { class: "card", id: "audit-log" }, h("h2", {}, "Audit log"), h("p", { class: "muted" }, "Loading…"));
  const pollStatus = outcome("metrics-outcome");
  replace(view, h("h1", {}, "Observability"), summary, pollStatus.el, charts, slow, audit);

  const refreshMetrics = async () => {
    const m = parseMetrics((await request("GET", "/metrics", { as: "text", headers: { Accept: "text/plain" } })).body);
    const cur = sample(m);
    const g = (name) => (m[name] && m[name].length ? m[name].reduce((a, s) => a + s.value, 0) : null);
    const lag = (m.aerodb_replication_follower_lag_lsn || []).map((s) => `${s.labels} ${s.value}`).join(", ") || (g("aerodb_replication_primary_lag_lsn") ?? "none");
    replace(summary, h("h2", {}, "Metrics (this node)"), kv([
      ["primary", g("aerodb_is_primary") === 1 ? "yes" : "no"], ["durable LSN", g("aerodb_durable_lsn")], ["applied LSN", g("aerodb_applied_lsn")],
      ["commits", cur.commits], ["HTTP requests", cur.requests], ["documents", g("aerodb_documents")],
      ["memory used (bytes)", g("aerodb_memory_used_bytes")], ["realtime connections", g("aerodb_realtime_connections")],
      ["replication lag (LSN)", lag],
      ["mean request latency (ms, since start)", cur.reqCount ? Math.round((100_000 * cur.reqSeconds) / cur.reqCount) / 100 : null],
      ["mean commit latency (ms, since start)", cur.commitCount ? Math.round((100_000 * cur.commitSeconds) / cur.commitCount) / 100 : null],
    ]));
    replace(charts, h("h2", {}, "Over time (sampled every 2 s while this page is open)"),
      lineChart([{ name: "commits/s", points: history.commits }, { name: "requests/s", points: history.requests }], "per second", "rate-chart"),
      lineChart([{ name: "request ms", points: history.latency }, { name: "commit ms", points: history.commitLatency }], "mean latency (ms)", "latency-chart"));
  };
  try { await refreshMetrics(); } catch (e) { replace(summary, h("h2", {}, "Metrics"), errorBox(e)); }
  const mine = setInterval(async () => {
    if (!document.body.contains(summary)) { clearInterval(mine); return; }
    try { await refreshMetrics(); pollStatus.busy(""); } catch (e) { pollStatus.fail(e); }
  }, pollMs);
  timer = mine;

  try {
    const s = (await get(`/admin/v1/logs/slow?limit=${logEntriesShown}`)).body;
    replace(slow, h("h2", {}, `Slow requests (over ${s.threshold_ms} ms, newest first)`),
      (s.entries || []).length ? table(["ts", "method", "route", "path", "status", "ms", "request_id"], s.entries) : h("p", { class: "muted" }, "none"));
  } catch (e) { replace(slow, h("h2", {}, "Slow requests"), errorBox(e)); }
  try {
    const a = (await get(`/admin/v1/audit?limit=${logEntriesShown}`)).body;
    replace(audit, h("h2", {}, `Audit log (newest ${logEntriesShown})`),
      (a.events || []).length ? table(["at", "action", "actor_role", "actor_id", "target", "ip", "details"], a.events) : h("p", { class: "muted" }, "none"));
  } catch (e) { replace(audit, h("h2", {}, "Audit log"), errorBox(e)); }
}
