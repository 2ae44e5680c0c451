// Functions: the deployed functions, deploy a .wasm module, versions and rollback, invoke with a
// body, logs of this node, delete (/admin/v1/functions, /functions/v1; docs/FUNCTIONS.md).

import { ApiError, del, get, post, request } from "./api.js";
import { button, h, kv, replace, table } from "./dom.js";
import { columnsOf, confirmed, errorBox, errorText, field, outcome } from "./ui.js";

/** Log lines shown per function; largest module the page reads (the request body limit is 32 MiB, base64 grows it by 4/3). */
const logLinesShown = 100;
const moduleBytesMax = 16 * 1024 * 1024;

let flash = null;

function base64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

export async function functionsView(view, name) {
  const status = outcome("function-outcome");
  if (flash) { status.ok(flash); flash = null; }
  const rerender = (message) => { flash = message; window.dispatchEvent(new HashChangeEvent("hashchange")); };
  if (name) { await functionView(view, name, status, rerender); return; }
  const { body } = await get("/admin/v1/functions");
  const fns = body.functions || [];
  const [nl, ni] = field("name", { id: "fn-name" });
  const file = h("input", { type: "file", id: "fn-module", accept: ".wasm,application/wasm", "aria-label": "module (.wasm)" });
  const [rl, rpc] = field("rpc parameters (e.g. a:int,b:int: callable as /rest/v1/rpc/<name>; empty: not an rpc)", { id: "fn-rpc" });
  const deploy = async (e) => {
    e.preventDefault();
    try {
      const f = file.files && file.files[0];
      if (!f) throw new ApiError(400, "AERO_DASHBOARD_FILE", "choose a .wasm module");
      if (f.size > moduleBytesMax) throw new ApiError(413, "AERO_DASHBOARD_FILE", `the module is over ${moduleBytesMax} bytes`);
      const b = { name: ni.value.trim(), module: base64(new Uint8Array(await f.arrayBuffer())) };
      if (rpc.value.trim()) b.rpc = rpc.value.trim();
      const r = (await post("/admin/v1/functions", b)).body;
      rerender(`deployed ${r.name} version ${r.version}`);
    } catch (err) { status.fail(err); }
  };
  replace(view, h("h1", {}, "Functions"), status.el, h("div", { class: "card", id: "functions" },
    fns.length ? table(columnsOf(fns, ["name", "version", "active", "created_at"]).filter((c) => c !== "module" && c !== "secrets"), fns, undefined,
      (f) => [h("a", { href: `#/functions/${encodeURIComponent(f.name)}`, class: "button-link" }, "open")]) : h("p", { class: "muted" }, "no functions deployed")),
  h("div", { class: "card" }, h("h2", {}, "Deploy"), h("form", { id: "deploy-form", onsubmit: deploy }, nl, ni,
    h("label", { for: "fn-module" }, "module (.wasm, docs/FUNCTIONS.md)"), file, rl, rpc,
    h("button", { type: "submit", id: "fn-deploy" }, "Deploy"))));
}

async function functionView(view, name, status, rerender) {
  const base = `/admin/v1/functions/${encodeURIComponent(name)}`;
  const fn = (await get(base)).body;
  const versions = fn.versions || [];
  const rollback = async (v) => {
    if (!confirmed(`Make version ${v.version} of ${name} the active one?`)) return;
    try { await post(`${base}/rollback`, { version: v.version }); rerender(`${name}: version ${v.version} is active`); } catch (e) { status.fail(e); }
  };
  const remove = async () => {
    if (!confirmed(`Delete ${name} and every version of it?`)) return;
    try { await del(base); flash = `${name} deleted`; location.hash = "#/functions"; } catch (e) { status.fail(e); }
  };
  const [bl, bi] = field("request body", { id: "fn-body", tag: "textarea", class: "small" });
  bi.value = "{}";
  const answer = h("div", { id: "fn-answer" });
  const invoke = async (e) => {
    e.preventDefault();
    const t0 = performance.now();
    try {
      const r = await request("POST", `/functions/v1/${encodeURIComponent(name)}`, { raw: bi.value, as: "text", headers: { "Content-Type": "application/json" } });
      replace(answer, h("p", { class: "ok" }, `HTTP ${r.status} in ${Math.round(performance.now() - t0)} ms`), h("pre", {}, typeof r.body === "string" ? r.body : JSON.stringify(r.body)));
    } catch (err) { replace(answer, h("p", { class: "error", role: "alert" }, errorText(err))); }
  };
  const logs = h("div", { class: "card", id: "fn-logs" }, h("h2", {}, "Logs (this node)"), h("p", { class: "muted" }, "Loading…"));
  const summary = { ...fn };
  delete summary.versions; delete summary.module; delete summary.secrets;
  replace(view, h("h1", {}, `Function ${name}`), status.el,
    h("div", { class: "card" }, kv(Object.entries(summary)), button("Delete function", remove, "danger small")),
    h("div", { class: "card", id: "fn-versions" }, h("h2", {}, "Versions"),
      table(columnsOf(versions, ["version", "active", "created_at"]).filter((c) => c !== "module" && c !== "secrets"), versions, undefined,
        (v) => v.active ? [] : [button("make active", () => rollback(v), "secondary small")])),
    h("div", { class: "card" }, h("h2", {}, "Invoke (POST /functions/v1/" + name + ")"), h("form", { id: "invoke-form", onsubmit: invoke }, bl, bi, h("button", { type: "submit", id: "fn-invoke" }, "Invoke")), answer),
    logs);
  try {
    const l = (await get(`${base}/logs?limit=${logLinesShown}`)).body.logs || [];
    replace(logs, h("h2", {}, "Logs (this node)"), l.length ? table(["at", "version", "level", "message"], l) : h("p", { class: "muted" }, "none"));
  } catch (e) { replace(logs, h("h2", {}, "Logs"), errorBox(e)); }
}
