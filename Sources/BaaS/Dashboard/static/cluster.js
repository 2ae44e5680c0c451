// Cluster: this node, the replicas as the primary sees them, every member, a chart of
// replication lag over time (polled while the page is open; plain SVG), and promote /
// switchover of this node with the validation report (/admin/v1/status, /admin/v1/cluster/*):
// the confirmation dialog shows the report of a dry run (`?dry_run=true`: the same checks, nothing
// acted on), refusals as the node words them; confirming then makes the real call.

import { ApiError, get, post } from "./api.js";
import { button, h, kv, lineChart, replace, table } from "./dom.js";
import { confirmDialog, errorBox, errorText, outcome } from "./ui.js";

/** Poll period of the cluster page and the most samples kept per member (10 minutes at 2 s). */
const pollMs = 2000;
const lagSamplesMax = 300;

let timer = null;
/** member id -> [[time ms, lag in LSNs]]; kept across visits of the page, bounded. */
const lagSeries = new Map();

export function stopCluster() { if (timer) clearInterval(timer); timer = null; }

function record(members) {
  const now = Date.now();
  for (const m of members) {
    if (typeof m.lag_lsn !== "number") continue;
    const pts = lagSeries.get(m.node_id) || [];
    pts.push([now, m.lag_lsn]);
    while (pts.length > lagSamplesMax) pts.shift();
    lagSeries.set(m.node_id, pts);
  }
}

function reportView(report, id) {
  if (!report || !Array.isArray(report.checks)) return null;
  const head = report.dry_run
    ? [["dry run", "yes: nothing was changed"], ["would go on", report.would_promote], ["epoch it would open", report.epoch]]
    : [["promoted", report.promoted], ["epoch", report.epoch]];
  return h("div", { id: id || "promotion-report" },
    kv([...head, ["fork LSN", report.fork_lsn], ["better candidate", report.better_candidate],
      ["LSNs at risk", report.lsns_at_risk ? `${report.lsns_at_risk.from}–${report.lsns_at_risk.to}` : null], ["elapsed (ms)", report.elapsed_ms]]),
    table(["name", "outcome", "detail"], report.checks));
}

export async function clusterView(view) {
  stopCluster();
  const [status, cluster] = await Promise.allSettled([get("/admin/v1/status"), get("/admin/v1/cluster/status")]);
  const parts = [h("h1", {}, "Cluster")];
  let role = null;
  if (status.status === "fulfilled") {
    const s = status.value.body;
    role = s.role;
    const r = s.replication || {};
    parts.push(h("div", { class: "card", id: "node-status" }, h("h2", {}, `This node: ${s.node_id}`), kv([
      ["role", s.role], ["epoch", s.epoch], ["primary", s.primary], ["commit mode", r.commit_mode],
      ["replication", r.state], ["durable LSN", s.lsn && s.lsn.durable], ["applied LSN", s.lsn && s.lsn.applied],
      ["WAL engine", s.wal_engine], ["collections", s.collections], ["documents", s.documents],
      ["uptime (s)", s.uptime_seconds], ["last checkpoint LSN", s.last_checkpoint_lsn],
    ])));
    if (Array.isArray(r.replicas)) {
      parts.push(h("div", { class: "card" }, h("h2", {}, "Replicas (as the primary sees them)"),
        table(["node_id", "connected", "received", "durable", "applied", "lag_lsn", "lag_ms", "last_ack_ms_ago"], r.replicas)));
    }
  } else parts.push(errorBox(status.reason));
  const members = h("div", { class: "card", id: "members" });
  const chart = h("div", { class: "card", id: "lag" });
  let lastMembers = [];
  const showMembers = (c) => {
    lastMembers = c.members || [];
    record(c.members || []);
    replace(members, h("h2", {}, `Members (cluster ${c.cluster_id}, commit mode ${c.commit_mode}, answered by ${c.answered_by})`),
      table(["node_id", "http", "reachable", "role", "epoch", "primary", "durable_lsn", "applied_lsn", "lag_lsn", "state"], c.members || []));
    replace(chart, h("h2", {}, "Replication lag (LSNs behind the primary, sampled every 2 s while this page is open)"),
      lineChart([...lagSeries.entries()].map(([name, points]) => ({ name, points })), "lag (LSN)", "lag-chart"));
  };
  if (cluster.status === "fulfilled") showMembers(cluster.value.body);
  else replace(members, errorBox(cluster.reason));
  const pollStatus = outcome("poll-outcome"); // a failed poll: the tables keep the last answer, the error shows here
  parts.push(members, pollStatus.el, chart);

  // Promote / switchover this node.
  const result = outcome("promote-outcome");
  const reportBox = h("div", {});
  const force = h("input", { type: "checkbox", id: "promote-force" });
  const act = async (kind) => {
    const question = kind === "promote"
      ? `Promote this node to primary${force.checked ? " WITH --force (checks that refuse become warnings; acknowledged writes may be lost)" : ""}? The current primary is fenced by the new epoch.`
      : "Switch over to this node? The primary stops writing and hands over once this node has every durable record.";
    const body = kind === "promote" ? { force: force.checked } : undefined;
    // The node's checks first, as a dry run: the same validation, nothing changed.
    result.busy(`${kind}: checking (dry run)…`);
    let dry = null, dryError = null;
    try { dry = (await post(`/admin/v1/cluster/${kind}?dry_run=true`, body)).body; } catch (e) { dryError = e; dry = e instanceof ApiError ? e.body : null; }
    result.busy("");
    const verdict = dry && dry.dry_run
      ? (dry.would_promote ? `The checks pass: it would open epoch ${dry.epoch}. Nothing has changed yet.` : "The checks refuse (below, as the node words them): confirming now is refused the same way unless the facts change. Nothing has changed.")
      : `The dry run did not answer: ${dryError ? errorText(dryError) : "no report"}`;
    // What the last poll saw of every member, so the decision is made with the positions in view.
    const seen = lastMembers.map((m) => `  ${m.node_id}: ${m.reachable ? `${m.role}, epoch ${m.epoch}, durable LSN ${m.durable_lsn}` : "unreachable"}`).join("\n");
    const content = [h("p", {}, question),
      h("p", { id: "dryrun-verdict", class: dry && dry.would_promote ? "ok" : "error" }, verdict),
      reportView(dry, "dryrun-report"),
      h("p", { class: "muted" }, "Members at the last poll:"), h("pre", { id: "confirm-members" }, seen || "  (none answered)")];
    const label = kind === "promote" ? "Promote" : "Switch over";
    if (!await confirmDialog(`${label}: the node's checks (dry run)`, content, `Confirm: ${label.toLowerCase()}`, "danger")) {
      result.busy(`${kind}: cancelled, nothing was changed`);
      return;
    }
    result.busy(`${kind}…`);
    try {
      const r = await post(`/admin/v1/cluster/${kind}`, body);
      result.ok(`${kind}: done, epoch ${r.body.epoch}`);
      replace(reportBox, reportView(r.body));
    } catch (e) {
      result.fail(e);
      replace(reportBox, e instanceof ApiError ? reportView(e.body) : null);
    }
  };
  parts.push(h("div", { class: "card", id: "promote" }, h("h2", {}, "Promote or switch over to this node"),
    role === "replica"
      ? h("div", {}, h("label", { class: "inline" }, force, " force (docs/REPLICATION.md)"), button("Promote", () => act("promote"), "danger"), button("Switchover", () => act("switchover"), "secondary"))
      : h("p", { class: "muted" }, "This node is the primary: open the dashboard of a replica to promote it (or run aerodb promote there)."),
    result.el, reportBox));
  replace(view, parts);
  // Each poller stops itself (not the module's current one) once its page is gone.
  const mine = setInterval(async () => {
    if (!document.body.contains(members)) { clearInterval(mine); return; }
    try { showMembers((await get("/admin/v1/cluster/status")).body); pollStatus.busy(""); } catch (e) { pollStatus.fail(e); }
  }, pollMs);
  timer = mine;
}
