// The AeroDB dashboard (docs/DASHBOARD.md): sign-in with the service key, then views over the
// public APIs, chosen by the URL fragment (#/cluster, #/collections/<name>?page=N, #/query,
// #/users, #/storage, #/functions). Every API error is shown with its HTTP status, code and message.

import { ApiError, checkServiceKey, forgetKey, get, post, saveKey, savedKey } from "./api.js";
import { h, kv, replace, table } from "./dom.js";

const $ = (id) => document.getElementById(id);
/** Rows per page of the table browser and the users list (the API allows up to 10,000; a page stays small). */
const pageRows = 50;
/** Columns shown when a list's rows have no schema (users, buckets, functions). */
const listColumnsMax = 12;

function errorBox(e) {
  const text = e instanceof ApiError ? e.toString() : `${e && e.name ? e.name : "Error"}: ${e && e.message ? e.message : e}`;
  return h("p", { class: "error", role: "alert" }, text);
}

function columnsOf(rows, preferred) {
  const seen = new Set(preferred.filter((c) => rows.some((r) => c in r)));
  for (const r of rows) for (const k of Object.keys(r)) { if (seen.size >= listColumnsMax) break; seen.add(k); }
  return [...seen];
}

// MARK: sign-in

function showSignedOut(message) {
  $("nav").hidden = true;
  $("signout").hidden = true;
  replace($("view"));
  $("signin").hidden = false;
  const err = $("signin-error");
  err.hidden = !message;
  err.textContent = message || "";
  $("key").focus();
}

async function signIn(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  const button = $("signin-button");
  button.disabled = true;
  try {
    await checkServiceKey(key);
    saveKey(key);
    $("key").value = "";
    $("signin-error").hidden = true;
    if (!location.hash || location.hash === "#/") location.hash = "#/cluster";
    await route();
  } catch (e) {
    showSignedOut(e instanceof ApiError ? e.toString() : String(e));
  } finally {
    button.disabled = false;
  }
}

function signOut() {
  forgetKey();
  location.hash = "";
  showSignedOut("Signed out.");
}

// MARK: views

async function clusterView(view) {
  const [status, cluster] = await Promise.allSettled([get("/admin/v1/status"), get("/admin/v1/cluster/status")]);
  const parts = [h("h1", {}, "Cluster")];
  if (status.status === "fulfilled") {
    const s = status.value.body;
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
  if (cluster.status === "fulfilled") {
    const c = cluster.value.body;
    parts.push(h("div", { class: "card", id: "members" }, h("h2", {}, `Members (cluster ${c.cluster_id}, commit mode ${c.commit_mode}, answered by ${c.answered_by})`),
      table(["node_id", "http", "reachable", "role", "epoch", "primary", "durable_lsn", "applied_lsn", "lag_lsn", "state"], c.members || [])));
  } else parts.push(errorBox(cluster.reason));
  parts.push(h("p", { class: "muted" }, "Promote and switchover are not in the dashboard yet: use `aerodb promote` (docs/OPERATIONS.md)."));
  replace(view, parts);
}

function schemaCard(schema) {
  const fields = Object.entries(schema.fields || {}).map(([name, f]) => ({
    field: name, type: f.type, required: !!f.required, nullable: f.nullable,
    default: f.default, references: f.references, primary_key: name === schema.primary_key,
  }));
  const indexes = (schema.indexes || []).map((i) => ({ name: i.name, fields: i.fields, type: i.type || "ordered", unique: !!i.unique }));
  return h("div", { class: "card", id: "schema" }, h("h2", {}, "Schema"),
    table(["field", "type", "primary_key", "required", "nullable", "default", "references"], fields),
    h("h2", {}, "Indexes"), indexes.length ? table(["name", "fields", "type", "unique"], indexes) : h("p", { class: "muted" }, "none"));
}

async function collectionsView(view, name, params) {
  const { body } = await get("/admin/v1/collections");
  const all = (body.collections || []).slice().sort((a, b) => a.name.localeCompare(b.name));
  const list = h("ul", { class: "list", id: "collection-list" }, all.map((c) =>
    h("li", {}, h("a", { href: `#/collections/${encodeURIComponent(c.name)}`, class: c.name === name ? "active" : "" }, c.name))));
  const side = h("div", { class: "card" }, h("h2", {}, "Collections"), all.length ? list : h("p", { class: "muted" }, "none yet"));
  const content = h("div", {});
  replace(view, h("h1", {}, "Collections"), h("div", { class: "layout" }, side, content));
  if (!name) { replace(content, h("p", { class: "muted" }, "Choose a collection.")); return; }
  const schema = all.find((c) => c.name === name);
  if (!schema) { replace(content, errorBox(new ApiError(404, "AERO_NOT_FOUND", `no collection ${name}`))); return; }
  const page = Math.max(0, Math.min(1_000_000, parseInt(params.get("page") || "0", 10) || 0));
  const rowsCard = h("div", { class: "card", id: "rows" }, h("p", { class: "muted" }, "Loading…"));
  replace(content, rowsCard, schemaCard(schema));
  const pk = schema.primary_key || "id";
  // Sort by one column (a field of the schema, else the primary key); ties are broken by the primary key.
  const sort = Object.hasOwn(schema.fields || {}, params.get("sort") || "") ? params.get("sort") : pk;
  const dir = params.get("dir") === "desc" ? "desc" : "asc";
  const here = (p, s, d) => `#/collections/${encodeURIComponent(name)}?page=${p}&sort=${encodeURIComponent(s)}&dir=${d}`;
  const t0 = performance.now();
  const result = await post("/admin/v1/query", { collection: name, order: [{ field: sort, dir }], limit: pageRows, offset: page * pageRows, count: true });
  const ms = Math.round(performance.now() - t0);
  const rows = result.body.rows || [];
  const total = result.body.count ?? rows.length;
  const columns = [pk, ...Object.keys(schema.fields || {}).filter((f) => f !== pk)];
  const first = total === 0 ? 0 : page * pageRows + 1;
  const link = (p, label, enabled) => enabled
    ? h("a", { href: here(p, sort, dir), class: "pager-link" }, label)
    : h("span", { class: "muted" }, label);
  const lastPage = Math.max(0, Math.ceil(total / pageRows) - 1);
  replace(rowsCard,
    h("h2", {}, name),
    h("div", { class: "pager" },
      link(page - 1, "← previous", page > 0),
      h("span", { id: "row-range" }, `rows ${first}–${page * pageRows + rows.length} of ${total}`),
      link(page + 1, "next →", page < lastPage),
      h("span", { class: "muted" }, `LSN ${result.body.lsn}, ${ms} ms`)),
    rows.length ? table(columns, rows, (c) => h("a", {
      href: here(0, c, c === sort && dir === "asc" ? "desc" : "asc"), class: "sort-link",
      "aria-sort": c === sort ? (dir === "asc" ? "ascending" : "descending") : undefined,
    }, c === sort ? `${c} ${dir === "asc" ? "▲" : "▼"}` : c)) : h("p", { class: "muted" }, "no rows"));
}

async function queryView(view) {
  const input = h("textarea", { id: "query-input", "aria-label": "query (JSON)", spellcheck: "false" });
  input.value = JSON.stringify({ collection: "", filter: {}, limit: 20 }, null, 2);
  const out = h("div", { id: "query-output" });
  const run = async (path) => {
    let q;
    try { q = JSON.parse(input.value); } catch (e) { replace(out, errorBox(new ApiError(0, "AERO_DASHBOARD_JSON", `the query is not JSON: ${e.message}`))); return; }
    const t0 = performance.now();
    try {
      const r = await post(path, q);
      const ms = Math.round(performance.now() - t0);
      if (path.endsWith("explain")) replace(out, h("p", { class: "muted" }, `${ms} ms`), h("pre", {}, JSON.stringify(r.body, null, 2)));
      else {
        const rows = r.body.rows || [];
        replace(out, h("p", { class: "muted" }, `${rows.length} rows${r.body.count !== undefined ? ` of ${r.body.count}` : ""}, LSN ${r.body.lsn}, ${ms} ms`),
          rows.length ? table(columnsOf(rows, []), rows) : h("p", { class: "muted" }, "no rows"));
      }
    } catch (e) { replace(out, errorBox(e)); }
  };
  replace(view, h("h1", {}, "Query"), h("div", { class: "card" },
    h("p", { class: "muted" }, "A query of POST /admin/v1/query (docs/API.md \"Queries\")."), input,
    h("button", { type: "button", onclick: () => run("/admin/v1/query") }, "Run"),
    h("button", { type: "button", class: "secondary", onclick: () => run("/admin/v1/explain") }, "Explain")), out);
}

async function usersView(view, params) {
  const page = Math.max(1, Math.min(1_000_000, parseInt(params.get("page") || "1", 10) || 1));
  const { body, headers } = await get(`/auth/v1/admin/users?page=${page}&per_page=${pageRows}`);
  const users = body.users || [];
  const total = parseInt(headers.get("X-Total-Count") || `${users.length}`, 10);
  const lastPage = Math.max(1, Math.ceil(total / pageRows));
  const link = (p, label, enabled) => enabled ? h("a", { href: `#/users?page=${p}` }, label) : h("span", { class: "muted" }, label);
  replace(view, h("h1", {}, "Users"), h("div", { class: "card", id: "users" },
    h("div", { class: "pager" }, link(page - 1, "← previous", page > 1), h("span", {}, `page ${page} of ${lastPage} (${total} users)`), link(page + 1, "next →", page < lastPage)),
    users.length ? table(columnsOf(users, ["id", "email", "phone", "role", "created_at", "last_sign_in_at", "banned_until"]), users) : h("p", { class: "muted" }, "no users")));
}

async function storageView(view) {
  const { body } = await get("/storage/v1/bucket");
  const buckets = Array.isArray(body) ? body : [];
  replace(view, h("h1", {}, "Storage"), h("div", { class: "card", id: "buckets" }, h("h2", {}, "Buckets"),
    buckets.length ? table(columnsOf(buckets, ["id", "name", "public", "file_size_limit", "allowed_mime_types", "created_at"]), buckets) : h("p", { class: "muted" }, "no buckets")));
}

async function functionsView(view) {
  const { body } = await get("/admin/v1/functions");
  const fns = body.functions || [];
  replace(view, h("h1", {}, "Functions"), h("div", { class: "card", id: "functions" },
    fns.length ? table(columnsOf(fns, ["name", "version", "active", "created_at"]), fns) : h("p", { class: "muted" }, "no functions deployed")));
}

// MARK: routing

const views = { cluster: clusterView, collections: collectionsView, query: queryView, users: usersView, storage: storageView, functions: functionsView };

async function route() {
  if (!savedKey()) { showSignedOut(""); return; }
  $("signin").hidden = true;
  $("nav").hidden = false;
  $("signout").hidden = false;
  const hash = location.hash.replace(/^#\/?/, "") || "cluster";
  const [path, query] = hash.split("?");
  const [name, ...rest] = path.split("/");
  const params = new URLSearchParams(query || "");
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.getAttribute("href") === `#/${name}`);
  const view = $("view");
  const show = views[name];
  if (!show) { replace(view, errorBox(new ApiError(404, "AERO_NOT_FOUND", `no dashboard page ${name}`))); return; }
  replace(view, h("p", { class: "muted" }, "Loading…"));
  try {
    if (name === "collections") await show(view, rest.length ? decodeURIComponent(rest.join("/")) : null, params);
    else await show(view, params);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) { forgetKey(); showSignedOut(`Signed out: ${e.toString()}`); return; }
    replace(view, errorBox(e));
  }
}

$("signin-form").addEventListener("submit", signIn);
$("signout").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
route();
