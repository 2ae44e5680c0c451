// Auth: users (list with paging, create, invite, ban and unban, delete, generate a link) and
// the dev mail outbox, through /auth/v1/admin/* and /admin/v1/outbox (docs/AUTH.md).

import { ApiError, del, get, post, put } from "./api.js";
import { button, h, replace, table } from "./dom.js";
import { columnsOf, confirmed, errorBox, field, outcome, pageRows } from "./ui.js";

let flash = null;
/** Messages of the outbox shown on the users page; longest search text. */
const outboxShown = 20;
const searchCharsMax = 200;

export async function usersView(view, params) {
  const page = Math.max(1, Math.min(1_000_000, parseInt(params.get("page") || "1", 10) || 1));
  const search = (params.get("q") || "").slice(0, searchCharsMax);
  let users, total;
  if (search) {
    // Search: the admin query over the users' system collection (email or phone containing the text;
    // never the password hash: only these fields are selected). A scan: past scan_rows_max it is refused.
    const like = `%${search.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    const r = (await post("/admin/v1/query", { collection: "_auth_users", filter: { $or: [{ email: { $ilike: like } }, { phone: { $ilike: like } }] },
      select: ["id", "email", "phone", "role", "created_at", "last_sign_in_at", "banned_until"], order: [{ field: "created_at", dir: "asc" }], limit: pageRows, count: true })).body;
    users = r.rows || [];
    total = r.count ?? users.length;
  } else {
    const { body, headers } = await get(`/auth/v1/admin/users?page=${page}&per_page=${pageRows}`);
    users = body.users || [];
    total = parseInt(headers.get("X-Total-Count") || `${users.length}`, 10);
  }
  const lastPage = Math.max(1, Math.ceil(total / pageRows));
  const status = outcome("user-outcome");
  if (flash) { status.ok(flash); flash = null; }
  const rerender = (message) => { flash = message; window.dispatchEvent(new HashChangeEvent("hashchange")); };
  const link = (p, label, enabled) => enabled ? h("a", { href: `#/users?page=${p}` }, label) : h("span", { class: "muted" }, label);
  const userPath = (u) => `/auth/v1/admin/users/${encodeURIComponent(u.id)}`;
  const banned = (u) => u.banned_until && Date.parse(u.banned_until) > Date.now();

  const ban = async (u) => {
    try {
      if (banned(u)) { await put(userPath(u), { ban_duration: "none" }); rerender(`${u.email || u.id} unbanned`); return; }
      const duration = window.prompt(`Ban ${u.email || u.id} for how long? (e.g. 24h, 90m, 8760h)`, "24h");
      if (!duration) return;
      await put(userPath(u), { ban_duration: duration.trim() });
      rerender(`${u.email || u.id} banned for ${duration.trim()}`);
    } catch (e) { status.fail(e); }
  };
  const remove = async (u) => {
    if (!confirmed(`Delete the user ${u.email || u.id}? Their sessions end; this cannot be undone.`)) return;
    try { await del(userPath(u)); rerender(`${u.email || u.id} deleted`); } catch (e) { status.fail(e); }
  };
  const linkOut = h("div", { id: "link-output" });
  const recovery = async (u) => {
    try {
      const r = (await post("/auth/v1/admin/generate_link", { type: "recovery", email: u.email })).body;
      const actionLink = r.action_link ?? (r.properties && r.properties.action_link);
      replace(linkOut, h("p", {}, `Recovery link for ${u.email} (give it to them; it signs them in once): `), h("code", { class: "wrap" }, actionLink || JSON.stringify(r)));
    } catch (e) { replace(linkOut, errorBox(e)); }
  };

  const [el, ei] = field("email", { id: "user-email", type: "email" });
  const [pl, pi] = field("password", { id: "user-password", type: "password", autocomplete: "new-password" });
  const confirmBox = h("input", { type: "checkbox", id: "user-confirm", checked: true });
  const create = async (e) => {
    e.preventDefault();
    try {
      const r = (await post("/auth/v1/admin/users", { email: ei.value.trim(), password: pi.value, email_confirm: confirmBox.checked })).body;
      rerender(`user ${r.email} created (${r.id})`);
    } catch (err) { status.fail(err); }
  };
  const [il, ii] = field("email", { id: "invite-email", type: "email" });
  const invite = async (e) => {
    e.preventDefault();
    try { await post("/auth/v1/invite", { email: ii.value.trim() }); rerender(`invitation sent to ${ii.value.trim()} (see the outbox without SMTP)`); } catch (err) { status.fail(err); }
  };

  const rows = users.map((u) => ({ ...u, banned: banned(u) ? `until ${u.banned_until}` : "no" }));
  const searchBox = h("input", { id: "user-search", type: "search", value: search, maxlength: String(searchCharsMax), placeholder: "email or phone contains…", "aria-label": "search users" });
  const outbox = h("div", { class: "card", id: "outbox" }, h("h2", {}, "Mail outbox"), h("p", { class: "muted" }, "Loading…"));
  const settings = h("div", { class: "card", id: "auth-settings" }, h("h2", {}, "Auth settings"), h("p", { class: "muted" }, "Loading…"));
  const setKey = async (row) => {
    const answer = window.prompt(`New value of ${row.key} (JSON, e.g. true, 3600, "text", ["a"]):`, JSON.stringify(row.value));
    if (answer === null) return;
    try {
      let value;
      try { value = JSON.parse(answer); } catch (err) { throw new ApiError(400, "AERO_DASHBOARD_JSON", `not JSON: ${err.message}`); }
      const r = (await put(`/admin/v1/settings/${encodeURIComponent(row.key)}`, { value })).body;
      rerender(`${row.key} set cluster-wide (LSN ${r.lsn})`);
    } catch (e) { status.fail(e); }
  };
  const resetKey = async (row) => {
    if (!confirmed(`Remove the cluster value of ${row.key}? aerodb.json's value (or the default) applies again.`)) return;
    try { const r = (await del(`/admin/v1/settings/${encodeURIComponent(row.key)}`)).body; rerender(`${row.key} reset (LSN ${r.lsn})`); } catch (e) { status.fail(e); }
  };
  replace(view, h("h1", {}, "Users"), status.el,
    h("div", { class: "card", id: "users" },
      h("form", { id: "search-form", class: "filter", onsubmit: (e) => { e.preventDefault(); location.hash = searchBox.value.trim() ? `#/users?q=${encodeURIComponent(searchBox.value.trim())}` : "#/users"; } },
        searchBox, h("button", { type: "submit", id: "user-search-run" }, "Search"), search ? h("a", { href: "#/users", id: "search-clear" }, "all users") : null),
      search ? h("p", { id: "search-summary" }, `${total} users whose email or phone contains "${search}"${total > users.length ? ` (first ${users.length})` : ""}`)
        : h("div", { class: "pager" }, link(page - 1, "← previous", page > 1), h("span", {}, `page ${page} of ${lastPage} (${total} users)`), link(page + 1, "next →", page < lastPage)),
      rows.length ? table(columnsOf(rows, ["id", "email", "phone", "role", "created_at", "last_sign_in_at", "banned"]).filter((c) => !["identities", "user_metadata", "app_metadata", "factors"].includes(c)), rows, undefined, (u) => [
        button(banned(u) ? "unban" : "ban", () => ban(u), "secondary small"),
        u.email ? button("recovery link", () => recovery(u), "secondary small") : null,
        button("delete", () => remove(u), "danger small"),
      ]) : h("p", { class: "muted" }, "no users"), linkOut,
 ),
    h("div", { class: "card" }, h("h2", {}, "Create a user"),
      h("form", { id: "user-form", onsubmit: create }, el, ei, pl, pi, h("label", { class: "inline" }, confirmBox, " email confirmed"), h("button", { type: "submit", id: "user-create" }, "Create user"))),
    h("div", { class: "card" }, h("h2", {}, "Invite by email"),
      h("form", { id: "invite-form", onsubmit: invite }, il, ii, h("button", { type: "submit", id: "invite-send" }, "Send invitation"))),
    outbox, settings);
  try {
    const list = (await get("/admin/v1/settings")).body.settings || [];
    replace(settings, h("h2", {}, "Auth settings (cluster-wide, docs/OPERATIONS.md \"Cluster settings\")"),
      table(["key", "value", "source"], list, undefined, (row) => [button("set", () => setKey(row), "secondary small"),
        row.source === "cluster" ? button("reset", () => resetKey(row), "danger small") : null]));
  } catch (e) { replace(settings, h("h2", {}, "Auth settings"), errorBox(e)); }
  try {
    const m = (await get(`/admin/v1/outbox?limit=${outboxShown}`)).body.messages || [];
    replace(outbox, h("h2", {}, `Mail outbox (newest ${outboxShown})`), m.length ? table(["created_at", "to", "type", "subject", "link"], m) : h("p", { class: "muted" }, "empty"));
  } catch (e) { replace(outbox, h("h2", {}, "Mail outbox"), errorBox(e)); }
}
