// Observability: a metrics summary with charts of commits/s and request latency (from
// /metrics, polled while the page is open), this node's recent requests with filters
// (/admin/v1/requests: the request log's in-memory ring, queries redacted as in the stdout log),
// the slow request log (/admin/v1/logs/slow) and the audit log (/admin/v1/audit).
// docs/OPERATIONS.md "Metrics", docs/DASHBOARD.md.

import { request, get } from "./api.js";
import { h, kv, lineChart, replace, table } from "./dom.js";
import { errorBox, outcome } from "./ui.js";

const pollMs = 2000;
/** Samples kept per chart (10 minutes at 2 s). */
const samplesMax = 300;
/** Entries shown of the slow log and the audit log. */
const logEntriesShown = 100;
/** Requests shown by default and at most (the node keeps at most 1,000: RequestRing.entriesMax). */
const requestsShownDefault = 100;
const requestsShownMax = 1000;

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
  const requests = requestsCard();
  replace(view, h("h1", {}, "Observability"), summary, pollStatus.el, charts, requests.el, slow, audit);

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
  await requests.load();
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

/** This node's recent requests (GET /admin/v1/requests) with the route's filters: status (a code
 *  or a class such as 4xx), path prefix, how many. Loaded on open, on Filter and on Refresh. */
function requestsCard() {
  const statusIn = h("input", { id: "requests-status", type: "text", spellcheck: "false", autocomplete: "off", placeholder: "status 404, 4xx",
    "aria-label": "status (a code or a class such as 4xx)", size: 10 });
  const prefixIn = h("input", { id: "requests-path", type: "text", spellcheck: "false", autocomplete: "off", placeholder: "path prefix, e.g. /rest/v1/",
    "aria-label": "path prefix", "data-filter": true });
  const limitIn = h("input", { id: "requests-limit", type: "number", min: 1, max: requestsShownMax, value: requestsShownDefault, "aria-label": "requests shown" });
  const list = h("div", { id: "requests-list" }, h("p", { class: "muted" }, "Loading…"));
  const title = h("h2", {}, "Recent requests (this node)");
  const load = async () => {
    const q = new URLSearchParams();
    const n = Math.min(requestsShownMax, Math.max(1, parseInt(limitIn.value, 10) || requestsShownDefault));
    q.set("limit", String(n));
    if (statusIn.value.trim()) q.set("status", statusIn.value.trim());
    if (prefixIn.value.trim()) q.set("path_prefix", prefixIn.value.trim());
    try {
      const r = (await get(`/admin/v1/requests?${q}`)).body;
      replace(title, `Recent requests (this node: ${r.kept} kept of at most ${r.entries_max}, ${r.bytes} of ${r.bytes_max} bytes; newest first)`);
      replace(list, (r.entries || []).length ? table(["ts", "method", "path", "query", "status", "ms", "request_id"], r.entries.map((e) => ({ ...e, ms: Math.round(e.ms * 100) / 100 })))
        : h("p", { class: "muted" }, "no request matches"));
    } catch (e) { replace(list, errorBox(e)); }
  };
  const form = h("form", { class: "filter", id: "requests-form", onsubmit: (e) => { e.preventDefault(); load(); } },
    prefixIn, statusIn, limitIn, h("button", { type: "submit", id: "requests-apply" }, "Filter"));
  const el = h("div", { class: "card", id: "requests" }, title,
    h("p", { class: "muted" }, "The request log kept in memory (no header, no body; keys, tokens and signed-URL secrets in queries shown as (redacted))."), form, list);
  return { el, load };
}
