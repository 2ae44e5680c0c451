// Policies: row-level security per collection (on/off), the policies (create, edit, delete) with
// a refused expression marked at the offset the API names, and the policy tester
// (/admin/v1/policies, /admin/v1/collections/<name>/policies, .../rls, .../policies/test;
// docs/POLICIES.md).

import { ApiError, del, get, post, put } from "./api.js";
import { button, h, kv, replace, table } from "./dom.js";
import { confirmed, errorText, field, outcome } from "./ui.js";

let flash = null;

/** `error` marked in `text` when its message names `<key>: ... at offset N`: the text with a caret under the byte. */
function marker(key, text, e) {
  const m = e instanceof ApiError ? /^(using|check): .* at offset (\d+)/.exec(e.message) : null;
  if (!m || m[1] !== key) return null;
  const bytes = new TextEncoder().encode(text);
  const offset = Math.min(parseInt(m[2], 10), bytes.length);
  const before = new TextDecoder().decode(bytes.slice(0, offset));
  const lines = before.split("\n");
  const lineNo = lines.length;
  const column = lines[lines.length - 1].length;
  const line = text.split("\n")[lineNo - 1] || "";
  return h("pre", { class: "error mark", id: `mark-${key}` }, `line ${lineNo}, column ${column + 1}:\n${line}\n${" ".repeat(column)}^ ${e.message}`);
}

export async function policiesView(view, params) {
  const [{ body }, cols] = await Promise.all([get("/admin/v1/policies"), get("/admin/v1/collections")]);
  const collections = (cols.body.collections || []).map((c) => c.name).filter((n) => !n.startsWith("_")).sort();
  const rls = new Map((body.rls || []).map((r) => [r.collection, r]));
  const policies = (body.policies || []).slice().sort((a, b) => `${a.collection}.${a.name}`.localeCompare(`${b.collection}.${b.name}`));
  const status = outcome("policy-outcome");
  if (flash) { status.ok(flash); flash = null; }
  const rerender = (message) => { flash = message; window.dispatchEvent(new HashChangeEvent("hashchange")); };

  const rlsRows = collections.map((c) => ({ collection: c, rls: rls.get(c) && rls.get(c).enabled ? "enabled" : "disabled", policies: policies.filter((p) => p.collection === c).length }));
  const toggle = async (row) => {
    const enable = row.rls !== "enabled";
    if (!enable && !confirmed(`Disable row-level security on ${row.collection}? Every valid key may then read and write all its rows.`)) return;
    try {
      const r = await post(`/admin/v1/collections/${encodeURIComponent(row.collection)}/rls`, { enabled: enable });
      rerender(`row-level security ${enable ? "enabled" : "disabled"} on ${row.collection} (LSN ${r.body.lsn})`);
    } catch (e) { status.fail(e); }
  };

  // The policy form: create, or edit (PUT: one transaction; a refused edit leaves the old policy as it was).
  const [cl, ci] = field("collection", { id: "policy-collection", tag: "select", options: collections });
  const [nl, ni] = field("name", { id: "policy-name" });
  const [ol, oi] = field("operation", { id: "policy-operation", tag: "select", options: ["select", "insert", "update", "delete", "all"] });
  const anon = h("input", { type: "checkbox", id: "policy-role-anon", checked: true });
  const authd = h("input", { type: "checkbox", id: "policy-role-authenticated", checked: true });
  const [ul, ui] = field("using (which existing rows it grants)", { id: "policy-using", tag: "textarea", class: "small", placeholder: "owner = auth.uid()" });
  const [kl, ki] = field("with check (which new rows it accepts; empty: the using expression)", { id: "policy-check", tag: "textarea", class: "small" });
  const usingMark = h("div", {}), checkMark = h("div", {});
  let editing = null;
  const formTitle = h("h2", {}, "New policy");
  const policyBody = () => {
    const b = { name: ni.value.trim(), operation: oi.value, roles: [anon.checked ? "anon" : null, authd.checked ? "authenticated" : null].filter((x) => x) };
    if (ui.value.trim()) b.using = ui.value;
    if (ki.value.trim()) b.check = ki.value;
    return b;
  };
  const save = async (e) => {
    e.preventDefault();
    replace(usingMark); replace(checkMark);
    const coll = ci.value, b = policyBody();
    const base = `/admin/v1/collections/${encodeURIComponent(coll)}/policies`;
    try {
      if (editing) await put(`/admin/v1/collections/${encodeURIComponent(editing.collection)}/policies/${encodeURIComponent(editing.name)}`, b);
      else await post(base, b);
      rerender(`policy ${b.name} on ${coll} ${editing ? "saved" : "created"}`);
    } catch (err) {
      status.fail(err);
      const u = marker("using", ui.value, err), k = marker("check", ki.value, err);
      if (u) replace(usingMark, u);
      if (k) replace(checkMark, k);
    }
  };
  const edit = (p) => {
    editing = p;
    ci.value = p.collection; ni.value = p.name; oi.value = p.operation;
    anon.checked = (p.roles || []).includes("anon"); authd.checked = (p.roles || []).includes("authenticated");
    ui.value = p.using ?? ""; ki.value = p.check ?? "";
    ci.disabled = true; // a policy belongs to its collection: edit in place (a new name renames it)
    replace(formTitle, `Edit policy ${p.name} on ${p.collection}`);
    ni.focus();
  };
  const remove = async (p) => {
    if (!confirmed(`Delete the policy ${p.name} on ${p.collection}?`)) return;
    try { const r = await del(`/admin/v1/collections/${encodeURIComponent(p.collection)}/policies/${encodeURIComponent(p.name)}`); rerender(`policy ${p.name} deleted (LSN ${r.body.lsn})`); } catch (e) { status.fail(e); }
  };

  // The tester.
  const [tcl, tci] = field("collection", { id: "tester-collection", tag: "select", options: collections });
  const [trl, tri] = field("as role", { id: "tester-role", tag: "select", options: ["authenticated", "anon", "service_role"] });
  const [tkl, tki] = field("claims (JSON, e.g. {\"sub\":\"<user id>\"}), or leave empty", { id: "tester-claims", tag: "textarea", class: "small" });
  const [ttl, tti] = field("or a user's access token (takes precedence)", { id: "tester-token" });
  const testerOut = h("div", { id: "tester-output" });
  const runTest = async (e) => {
    e.preventDefault();
    try {
      let b;
      if (tti.value.trim()) b = { token: tti.value.trim() };
      else {
        b = { role: tri.value };
        if (tki.value.trim()) { try { b.claims = JSON.parse(tki.value); } catch (err) { throw new ApiError(400, "AERO_DASHBOARD_JSON", `claims are not JSON: ${err.message}`); } }
      }
      const r = (await post(`/admin/v1/collections/${encodeURIComponent(tci.value)}/policies/test`, b)).body;
      const show = (v) => v === null || v === undefined ? "not enforced (no condition)" : v;
      replace(testerOut, kv([["role", r.role], ["row-level security", r.enabled ? "enabled" : "disabled"], ["select", show(r.select)], ["insert check", show(r.insert_check)],
        ["update using", show(r.update_using)], ["update check", show(r.update_check)], ["delete", show(r.delete)]]));
    } catch (err) { replace(testerOut, h("p", { class: "error", role: "alert" }, errorText(err))); }
  };

  const policyRows = policies.map((p) => ({ collection: p.collection, name: p.name, operation: p.operation, roles: (p.roles || []).join(", "), using: p.using ?? null, check: p.check ?? null }));
  replace(view, h("h1", {}, "Policies"), status.el,
    h("div", { class: "card", id: "rls" }, h("h2", {}, "Row-level security"),
      rlsRows.length ? table(["collection", "rls", "policies"], rlsRows, undefined, (r) => [button(r.rls === "enabled" ? "disable" : "enable", () => toggle(r), r.rls === "enabled" ? "danger small" : "small")]) : h("p", { class: "muted" }, "no collections")),
    h("div", { class: "card", id: "policies" }, h("h2", {}, "Policies"),
      policyRows.length ? table(["collection", "name", "operation", "roles", "using", "check"], policyRows, undefined, (r) => {
        const p = policies.find((x) => x.collection === r.collection && x.name === r.name);
        return [button("edit", () => edit(p), "secondary small"), button("delete", () => remove(p), "danger small")];
      }) : h("p", { class: "muted" }, "no policies")),
    h("div", { class: "card" }, formTitle,
      h("form", { id: "policy-form", onsubmit: save }, cl, ci, nl, ni, ol, oi,
        h("span", { class: "inline" }, "roles: "), h("label", { class: "inline" }, anon, " anon"), h("label", { class: "inline" }, authd, " authenticated"),
        ul, ui, usingMark, kl, ki, checkMark,
        h("button", { type: "submit", id: "policy-save" }, "Save policy"),
        button("New", () => { editing = null; ci.disabled = false; replace(formTitle, "New policy"); ni.value = ""; ui.value = ""; ki.value = ""; }, "secondary")),
      h("p", { class: "muted" }, "Expressions: docs/POLICIES.md (e.g. owner = auth.uid(), auth.role() = 'authenticated'). Editing replaces the policy in one transaction (PUT): a refused edit leaves the old one in force.")),
    h("div", { class: "card", id: "tester" }, h("h2", {}, "Policy tester"),
      h("form", { id: "tester-form", onsubmit: runTest }, tcl, tci, trl, tri, tkl, tki, ttl, tti, h("button", { type: "submit", id: "tester-run" }, "Test")), testerOut));
}
