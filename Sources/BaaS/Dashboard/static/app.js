// The AeroDB dashboard (docs/DASHBOARD.md): sign-in with the service key, then pages over the
// public APIs, chosen by the URL fragment (#/cluster, #/collections/<name>?sort=&dir=&f=,
// #/query, #/policies, #/users, #/storage/<bucket>?prefix=, #/functions/<name>, #/realtime,
// #/logs). Every API error is shown with its HTTP status, code and message. Keyboard shortcuts:
// keys.js (`?` lists them).

import { ApiError, checkServiceKey, forgetKey, get, post, saveKey, savedKey } from "./api.js";
import { clusterView, stopCluster } from "./cluster.js";
import { h, replace, table } from "./dom.js";
import { functionsView } from "./functions.js";
import { installShortcuts, toggleHelp } from "./keys.js";
import { logsView, stopLogs } from "./logs.js";
import { policiesView } from "./policies.js";
import { realtimeView, stopRealtime } from "./realtime.js";
import { storageView } from "./storage.js";
import { collectionsView } from "./table.js";
import { columnsOf, errorBox } from "./ui.js";
import { usersView } from "./users.js";

const $ = (id) => document.getElementById(id);

// MARK: sign-in

function showSignedOut(message) {
  stopPages();
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
    if (!location.hash || location.hash === "#/") location.hash = "#/cluster"; // the hashchange routes
    else await route();
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

// MARK: the query console

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
    h("p", { class: "muted" }, "A query of POST /admin/v1/query (docs/API.md \"Queries\"); Explain shows the plan."), input,
    h("button", { type: "button", onclick: () => run("/admin/v1/query") }, "Run"),
    h("button", { type: "button", class: "secondary", onclick: () => run("/admin/v1/explain") }, "Explain")), out);
}

async function realtimePage(view, params) {
  const { body } = await get("/admin/v1/collections");
  const names = (body.collections || []).map((c) => c.name).filter((n) => !n.startsWith("_")).sort();
  await realtimeView(view, params, names);
}

// MARK: routing

/** Pages by the first segment of the fragment; `sub` is the rest (a collection, bucket or function name). */
const views = {
  cluster: (v) => clusterView(v),
  collections: (v, sub, p) => collectionsView(v, sub, p),
  query: (v) => queryView(v),
  policies: (v, sub, p) => policiesView(v, p),
  users: (v, sub, p) => usersView(v, p),
  storage: (v, sub, p) => storageView(v, sub, p),
  functions: (v, sub) => functionsView(v, sub),
  realtime: (v, sub, p) => realtimePage(v, p),
  logs: (v) => logsView(v),
};

function stopPages() { stopCluster(); stopLogs(); stopRealtime(); }

async function route() {
  if (!savedKey()) { showSignedOut(""); return; }
  stopPages();
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
    await show(view, rest.length ? decodeURIComponent(rest.join("/")) : null, params);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) { forgetKey(); showSignedOut(`Signed out: ${e.toString()}`); return; }
    replace(view, errorBox(e));
  }
}

$("signin-form").addEventListener("submit", signIn);
$("signout").addEventListener("click", signOut);
$("shortcuts-button").addEventListener("click", toggleHelp);
$("skip").addEventListener("click", () => $("view").focus());
installShortcuts(() => Boolean(savedKey()));
window.addEventListener("hashchange", route);
route();
