// Collections: the table editor (rows through /rest/v1 with the service key: PostgREST filters,
// sort, keyset paging, insert, edit, delete, CSV export and import) and the schema editor
// (/admin/v1/collections: create and drop collections, add and drop fields and indexes,
// references) with the migrations list. docs/DASHBOARD.md.

import { ApiError, del, get, post, request } from "./api.js";
import { button, download, h, replace, table } from "./dom.js";
import { confirmed, errorBox, field, outcome, pageRows } from "./ui.js";

/** Rows per request of a CSV export (keyset pages) and the most rows one export writes. */
const exportPageRows = 1000;
const exportRowsMax = 100_000;
/** Rows per insert request of a CSV import, the most rows and bytes one import reads. */
const importBatchRows = 1000;
const importRowsMax = 100_000;
const importBytesMax = 32 * 1024 * 1024;
/** PostgREST parameters that are not filters: the filter box refuses them (the page sets them). */
const reservedParams = new Set(["select", "order", "limit", "offset", "on_conflict", "columns"]);
const numberTypes = new Set(["int", "float"]);
const sortableTypes = new Set(["text", "int", "float", "bool", "timestamp", "uuid"]);
const filterOps = ["eq", "neq", "gt", "gte", "lt", "lte", "like", "ilike", "is", "in", "fts", "not.eq", "not.is"];

const restPath = (name) => `/rest/v1/${encodeURIComponent(name)}`;

/** A value as a PostgREST filter literal: numbers and booleans bare, everything else double-quoted. */
function literal(type, v) {
  if (v === null || v === undefined) return "null";
  if (numberTypes.has(type) || type === "bool") return String(v);
  return `"${String(v).replace(/\\/g, "\\\\").replace(/"/g, "\\\"")}"`;
}

/** The filter box's text (`n=gte.3&body=like.*x*`) as encoded query parameters; refuses non-filters. */
export function filterParams(text) {
  const out = [];
  for (const part of text.split("&").map((p) => p.trim()).filter((p) => p)) {
    const at = part.indexOf("=");
    if (at <= 0) throw new ApiError(400, "AERO_DASHBOARD_FILTER", `"${part}" is not column=operator.value`);
    const key = part.slice(0, at).trim();
    if (reservedParams.has(key)) throw new ApiError(400, "AERO_DASHBOARD_FILTER", `${key} is set by the page (sort with the column headings)`);
    out.push(`${encodeURIComponent(key)}=${encodeURIComponent(part.slice(at + 1).trim())}`);
  }
  return out;
}

/** The keyset condition for the rows after `row` in the order (sort dir, then the primary key ascending). */
function after(row, sort, sortType, dir, pk, pkType) {
  const k = literal(pkType, row[pk]);
  if (sort === pk) return `${encodeURIComponent(pk)}=${dir === "asc" ? "gt" : "lt"}.${encodeURIComponent(k)}`;
  const v = row[sort];
  const s = sort;
  let tree;
  if (dir === "asc") {
    tree = v === null || v === undefined ? ["and", `(${s}.is.null,${pk}.gt.${k})`]
      : ["or", `(${s}.gt.${literal(sortType, v)},${s}.is.null,and(${s}.eq.${literal(sortType, v)},${pk}.gt.${k}))`];
  } else {
    tree = v === null || v === undefined ? ["or", `(${s}.not.is.null,and(${s}.is.null,${pk}.gt.${k}))`]
      : ["or", `(${s}.lt.${literal(sortType, v)},and(${s}.eq.${literal(sortType, v)},${pk}.gt.${k}))`];
  }
  return `${tree[0]}=${encodeURIComponent(tree[1])}`;
}

function orderParam(sort, dir, pk) {
  if (sort === pk) return `order=${encodeURIComponent(`${pk}.${dir}`)}`;
  return `order=${encodeURIComponent(`${sort}.${dir}.${dir === "asc" ? "nullslast" : "nullsfirst"},${pk}.asc`)}`;
}

/** One keyset page: GET /rest/v1/<name> with the filters, the order and the cursor. */
async function fetchPage(q, cursor, limit, count) {
  const params = ["select=*", ...q.filters, orderParam(q.sort, q.dir, q.pk), `limit=${limit}`];
  if (cursor) params.push(after(cursor, q.sort, q.sortType, q.dir, q.pk, q.pkType));
  const r = await request("GET", `${restPath(q.name)}?${params.join("&")}`, { headers: count ? { Prefer: "count=exact" } : {} });
  const range = r.headers.get("Content-Range") || "";
  const total = parseInt(range.split("/")[1], 10);
  return { rows: Array.isArray(r.body) ? r.body : [], total: Number.isFinite(total) ? total : null, lsn: r.headers.get("X-AeroDB-LSN") };
}

// MARK: values of the row editor

function shownValue(v) {
  if (v === null || v === undefined) return "";
  return typeof v === "string" ? v : JSON.stringify(v);
}

/** The text of an editor field as the JSON value for a field of `type`; undefined = leave out. */
function parsedValue(name, spec, text, inserting) {
  if (text === "") {
    if (inserting) return undefined;
    return spec.nullable === false && spec.type === "text" ? "" : null;
  }
  const t = spec.type;
  if (t === "int") {
    if (!/^-?\d+$/.test(text) || !Number.isSafeInteger(Number(text))) throw new ApiError(400, "AERO_DASHBOARD_VALUE", `${name}: "${text}" is not an integer (the browser keeps integers up to 2^53)`);
    return Number(text);
  }
  if (t === "float") {
    const n = Number(text);
    if (!Number.isFinite(n)) throw new ApiError(400, "AERO_DASHBOARD_VALUE", `${name}: "${text}" is not a number`);
    return n;
  }
  if (t === "bool") {
    if (text === "true" || text === "false") return text === "true";
    if (text === "null") return null;
    throw new ApiError(400, "AERO_DASHBOARD_VALUE", `${name}: "${text}" is not true, false or null`);
  }
  if (t === "json" || t.startsWith("array")) {
    try { return JSON.parse(text); } catch (e) { throw new ApiError(400, "AERO_DASHBOARD_VALUE", `${name}: not JSON: ${e.message}`); }
  }
  return text;
}

// MARK: CSV

function csvCell(v) {
  if (v === null || v === undefined) return "";
  const text = typeof v === "string" ? v : JSON.stringify(v);
  return /[",\r\n]/.test(text) || text === "" && typeof v === "string" ? `"${text.replace(/"/g, "\"\"")}"` : text;
}

/** RFC 4180: rows of cells; quoted cells may hold commas, quotes ("") and line breaks. */
export function parseCSV(text) {
  const rows = [];
  let row = [], cell = "", quoted = false, wasQuoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === "\"" && text[i + 1] === "\"") { cell += "\""; i++; } else if (c === "\"") quoted = false; else cell += c;
    } else if (c === "\"") { quoted = true; wasQuoted = true; } else if (c === ",") { row.push({ cell, wasQuoted }); cell = ""; wasQuoted = false; } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push({ cell, wasQuoted }); rows.push(row); row = []; cell = ""; wasQuoted = false;
    } else cell += c;
  }
  if (quoted) throw new ApiError(400, "AERO_DASHBOARD_CSV", "an unterminated quoted cell");
  if (cell !== "" || wasQuoted || row.length) { row.push({ cell, wasQuoted }); rows.push(row); }
  return rows;
}

// MARK: the page

let browse = null; // {key, stack: [cursor rows], page}
/** The outcome of the last action, shown once by the next render (a render replaces the status line). */
let flash = null;
function takeFlash(status) { if (flash) { status.ok(flash); flash = null; } }

export async function collectionsView(view, name, params) {
  const { body } = await get("/admin/v1/collections");
  const all = (body.collections || []).slice().sort((a, b) => a.name.localeCompare(b.name));
  const list = h("ul", { class: "list", id: "collection-list" }, all.map((c) =>
    h("li", {}, h("a", { href: `#/collections/${encodeURIComponent(c.name)}`, class: c.name === name ? "active" : "" }, c.name))));
  const side = h("div", { class: "card" }, h("h2", {}, "Collections"), all.length ? list : h("p", { class: "muted" }, "none yet"),
    h("a", { href: "#/collections", id: "new-collection-link" }, "+ new collection"));
  const content = h("div", {});
  replace(view, h("h1", {}, "Collections"), h("div", { class: "layout" }, side, content));
  if (!name) { await indexPage(content); return; }
  const schema = all.find((c) => c.name === name);
  if (!schema) { replace(content, errorBox(new ApiError(404, "AERO_NOT_FOUND", `no collection ${name}`))); return; }
  const system = name.startsWith("_");
  const rowsCard = h("div", { class: "card", id: "rows" }, h("p", { class: "muted" }, "Loading…"));
  const editor = h("div", { class: "card", id: "row-editor", hidden: true });
  replace(content, rowsCard, editor, schemaCard(schema, system));
  if (system) { replace(rowsCard, h("h2", {}, name), h("p", { class: "muted" }, "A system collection: read it with the query console (it is never served at /rest/v1).")); return; }
  await rowsPage(rowsCard, editor, schema, params);
}

async function rowsPage(card, editor, schema, params) {
  const name = schema.name;
  const pk = schema.primary_key || "id";
  const fields = schema.fields || {};
  const sortable = (f) => Object.hasOwn(fields, f) && sortableTypes.has(fields[f].type);
  const sort = sortable(params.get("sort") || "") ? params.get("sort") : pk;
  const dir = params.get("dir") === "desc" ? "desc" : "asc";
  const filterText = params.get("f") || "";
  const here = (s, d, f) => `#/collections/${encodeURIComponent(name)}?sort=${encodeURIComponent(s)}&dir=${d}${f ? `&f=${encodeURIComponent(f)}` : ""}`;
  const columns = [pk, ...Object.keys(fields).filter((f) => f !== pk)];
  const status = outcome("row-outcome");
  takeFlash(status);
  const key = `${name}|${sort}|${dir}|${filterText}`;
  if (!browse || browse.key !== key) browse = { key, stack: [null], page: 0 };

  // Filter box and builder.
  const filterInput = h("input", { id: "filter-input", type: "text", spellcheck: "false", autocomplete: "off", value: filterText,
    placeholder: "PostgREST filters, e.g. n=gte.10&body=like.*row*", "aria-label": "filter (PostgREST syntax)" });
  const applyFilter = (e) => { e.preventDefault(); location.hash = here(sort, dir, filterInput.value.trim()); };
  const colSel = h("select", { id: "filter-column", "aria-label": "filter column" }, columns.map((c) => h("option", { value: c }, c)));
  const opSel = h("select", { id: "filter-op", "aria-label": "filter operator" }, filterOps.map((o) => h("option", { value: o }, o)));
  const valIn = h("input", { id: "filter-value", type: "text", "aria-label": "filter value", spellcheck: "false", autocomplete: "off" });
  const addCond = () => {
    const cond = `${colSel.value}=${opSel.value}.${valIn.value}`;
    filterInput.value = filterInput.value.trim() ? `${filterInput.value.trim()}&${cond}` : cond;
    valIn.value = "";
  };
  const filterForm = h("form", { class: "filter", onsubmit: applyFilter },
    filterInput, h("button", { type: "submit", id: "filter-apply" }, "Filter"),
    filterText ? h("a", { href: here(sort, dir, ""), id: "filter-clear" }, "clear") : null,
    h("div", { class: "builder" }, colSel, opSel, valIn, button("+ condition", addCond, "secondary small")));

  let q;
  try {
    q = { name, pk, pkType: (fields[pk] || {}).type || "uuid", sort, sortType: (fields[sort] || {}).type, dir, filters: filterParams(filterText), columns };
  } catch (e) { replace(card, h("h2", {}, name), filterForm, errorBox(e)); return; }

  const reload = (message) => { flash = message || null; return rowsPage(card, editor, schema, params); };
  const openEditor = (row) => editRow(editor, schema, row, status, reload);
  const removeRow = async (row) => {
    if (!confirmed(`Delete the row ${pk} = ${row[pk]} of ${name}? This cannot be undone.`)) return;
    try {
      const r = await request("DELETE", `${restPath(name)}?${encodeURIComponent(pk)}=eq.${encodeURIComponent(literal(q.pkType, row[pk]))}`, { headers: { Prefer: "return=representation" } });
      if (!Array.isArray(r.body) || r.body.length === 0) throw new ApiError(404, "AERO_NOT_FOUND", `no row ${pk} = ${row[pk]} (deleted meanwhile?)`);
      await reload(`deleted ${pk} = ${row[pk]} (LSN ${r.headers.get("X-AeroDB-LSN")})`);
    } catch (e) { status.fail(e); }
  };

  const t0 = performance.now();
  let page;
  try { page = await fetchPage(q, browse.stack[browse.page], pageRows, true); } catch (e) { replace(card, h("h2", {}, name), filterForm, errorBox(e)); return; }
  const ms = Math.round(performance.now() - t0);
  const { rows } = page;
  // The count is of the rows from the cursor on: the rows before it are the pages already seen.
  const total = page.total === null ? null : browse.page * pageRows + page.total;
  const first = rows.length === 0 ? 0 : browse.page * pageRows + 1;
  const lastSeen = browse.page * pageRows + rows.length;
  const go = async (delta) => {
    if (delta > 0) { browse.stack[browse.page + 1] = rows[rows.length - 1]; browse.page += 1; } else browse.page = Math.max(0, browse.page - 1);
    await reload();
  };
  const hasNext = rows.length === pageRows && (total === null || lastSeen < total);
  const heading = (c) => !sortable(c) ? c : h("a", {
    href: here(c, c === sort && dir === "asc" ? "desc" : "asc", filterText), class: "sort-link",
    "aria-sort": c === sort ? (dir === "asc" ? "ascending" : "descending") : undefined,
  }, c === sort ? `${c} ${dir === "asc" ? "▲" : "▼"}` : c);

  replace(card,
    h("h2", {}, name),
    filterForm,
    h("div", { class: "pager" },
      h("button", { type: "button", class: "secondary small", id: "page-prev", disabled: browse.page === 0, onclick: () => go(-1) }, "← previous"),
      h("span", { id: "row-range" }, `rows ${first}–${lastSeen} of ${total ?? "?"}`),
      h("button", { type: "button", class: "secondary small", id: "page-next", disabled: !hasNext, onclick: () => go(1) }, "next →"),
      h("span", { class: "muted" }, `LSN ${page.lsn}, ${ms} ms`)),
    h("div", { class: "toolbar" },
      button("Insert row", () => openEditor(null), "small"),
      button("Export CSV", () => exportCSV(q, status), "secondary small"),
      h("label", { for: "csv-file", class: "inline" }, "Import CSV"),
      h("input", { type: "file", id: "csv-file", accept: ".csv,text/csv", onchange: (e) => importCSV(e.target, schema, status, reload) })),
    status.el,
    rows.length ? inlineEditable(table(columns, rows, heading, (row) => [
      button("edit", () => openEditor(row), "secondary small"),
      button("delete", () => removeRow(row), "danger small"),
    ]), rows, columns, schema, q.pkType, status, reload) : h("p", { class: "muted" }, "no rows"));
}

/** Inline edit: a cell (not the primary key) opens an input on double-click or Enter; Enter saves the one
 *  field (PATCH ?<pk>=eq.<key>), Escape or leaving the cell cancels. */
function inlineEditable(tableEl, rows, columns, schema, pkType, status, reload) {
  const pk = schema.primary_key || "id";
  const fields = schema.fields || {};
  tableEl.querySelectorAll("tbody tr").forEach((tr, i) => {
    const row = rows[i];
    columns.forEach((column, j) => {
      const td = tr.children[j];
      if (column === pk || !fields[column]) return;
      td.tabIndex = 0;
      td.title = "double-click or Enter to edit";
      td.classList.add("editable");
      const open = () => {
        if (td.querySelector("input")) return;
        const before = [...td.childNodes];
        const input = h("input", { type: "text", class: "cell-input", spellcheck: "false", autocomplete: "off", "aria-label": `${column} of ${row[pk]}` });
        input.value = shownValue(row[column]);
        const cancel = () => { td.replaceChildren(...before); };
        input.addEventListener("keydown", async (e) => {
          if (e.key === "Escape") { e.preventDefault(); cancel(); td.focus(); return; }
          if (e.key !== "Enter") return;
          e.preventDefault();
          try {
            if (input.value === shownValue(row[column])) { cancel(); return; }
            const value = parsedValue(column, fields[column], input.value, false);
            const r = await request("PATCH", `${restPath(schema.name)}?${encodeURIComponent(pk)}=eq.${encodeURIComponent(literal(pkType, row[pk]))}`,
              { body: { [column]: value }, headers: { Prefer: "return=representation" } });
            if (!Array.isArray(r.body) || r.body.length === 0) throw new ApiError(404, "AERO_NOT_FOUND", `no row ${pk} = ${row[pk]} (deleted meanwhile?)`);
            await reload(`saved ${column} of ${pk} = ${row[pk]} (LSN ${r.headers.get("X-AeroDB-LSN")})`);
          } catch (err) { status.fail(err); }
        });
        input.addEventListener("blur", () => setTimeout(() => { if (td.contains(input)) cancel(); }, 0));
        td.replaceChildren(input);
        input.focus();
        input.select();
      };
      td.addEventListener("dblclick", open);
      td.addEventListener("keydown", (e) => { if (e.key === "Enter" && e.target === td) { e.preventDefault(); open(); } });
    });
  });
  return tableEl;
}

function editRow(editor, schema, row, status, reload) {
  const name = schema.name;
  const pk = schema.primary_key || "id";
  const fields = schema.fields || {};
  const inserting = row === null;
  const inputs = {};
  const controls = Object.entries(fields).map(([f, spec]) => {
    const attrs = { id: `edit-${f}`, value: inserting ? "" : shownValue(row[f]), placeholder: inserting ? (spec.default !== undefined ? `default ${shownValue(spec.default)}` : spec.required ? "required" : "null") : "" };
    const input = spec.type === "json" || spec.type.startsWith("array") ? h("textarea", { ...attrs, value: undefined, class: "small", spellcheck: "false" }) : h("input", { type: "text", spellcheck: "false", autocomplete: "off", ...attrs });
    if (input.tagName === "TEXTAREA") input.value = attrs.value;
    if (!inserting && f === pk) input.readOnly = true;
    inputs[f] = input;
    return h("div", { class: "field" }, h("label", { for: attrs.id }, `${f} (${spec.type}${spec.required ? ", required" : ""})`), input);
  });
  const result = outcome("editor-outcome");
  const save = async (e) => {
    e.preventDefault();
    try {
      const doc = {};
      for (const [f, spec] of Object.entries(fields)) {
        const text = inputs[f].value;
        if (!inserting && (f === pk || text === shownValue(row[f]))) continue;
        const v = parsedValue(f, spec, text, inserting);
        if (v !== undefined) doc[f] = v;
      }
      let r;
      if (inserting) r = await request("POST", restPath(name), { body: doc, headers: { Prefer: "return=representation" } });
      else {
        if (Object.keys(doc).length === 0) { result.ok("nothing changed"); return; }
        const pkType = (fields[pk] || {}).type || "uuid";
        r = await request("PATCH", `${restPath(name)}?${encodeURIComponent(pk)}=eq.${encodeURIComponent(literal(pkType, row[pk]))}`, { body: doc, headers: { Prefer: "return=representation" } });
        if (!Array.isArray(r.body) || r.body.length === 0) throw new ApiError(404, "AERO_NOT_FOUND", `no row ${pk} = ${row[pk]} (deleted meanwhile?)`);
      }
      const saved = Array.isArray(r.body) ? r.body[0] : r.body;
      editor.hidden = true;
      await reload(`${inserting ? "inserted" : "saved"} ${pk} = ${saved ? saved[pk] : "?"} (LSN ${r.headers.get("X-AeroDB-LSN")})`);
    } catch (err) { result.fail(err); }
  };
  replace(editor,
    h("h2", {}, inserting ? `Insert a row into ${name}` : `Edit ${pk} = ${row[pk]}`),
    h("p", { class: "muted" }, inserting ? "Empty fields are left out (the declared default applies). JSON and array fields take JSON." : "Only changed fields are sent (PATCH). An emptied field becomes null."),
    h("form", { id: "row-form", onsubmit: save }, controls,
      h("button", { type: "submit", id: "row-save" }, inserting ? "Insert" : "Save"),
      button("Cancel", () => { editor.hidden = true; }, "secondary")),
    result.el);
  editor.hidden = false;
  const firstInput = Object.values(inputs).find((i) => !i.readOnly);
  if (firstInput) firstInput.focus();
}

async function exportCSV(q, status) {
  try {
    status.busy("exporting…");
    const cols = q.columns; // the primary key, then the fields in schema order: the header an import takes back
    const out = [cols.map(csvCell).join(",")];
    let cursor = null, count = 0;
    for (;;) {
      const { rows } = await fetchPage(q, cursor, exportPageRows, false);
      for (const r of rows) { out.push(cols.map((c) => csvCell(r[c])).join(",")); count++; }
      if (rows.length < exportPageRows || count >= exportRowsMax) break;
      cursor = rows[rows.length - 1];
    }
    download(new Blob([out.join("\r\n") + "\r\n"], { type: "text/csv" }), `${q.name}.csv`);
    status.ok(`exported ${count} rows${count >= exportRowsMax ? ` (the first ${exportRowsMax}: filter to export the rest)` : ""}`);
  } catch (e) { status.fail(e); }
}

async function importCSV(input, schema, status, reload) {
  const file = input.files && input.files[0];
  input.value = "";
  if (!file) return;
  let inserted = 0;
  try {
    if (file.size > importBytesMax) throw new ApiError(413, "AERO_DASHBOARD_CSV", `the file is over ${importBytesMax} bytes`);
    const table = parseCSV(await file.text());
    if (table.length < 2) throw new ApiError(400, "AERO_DASHBOARD_CSV", "no rows under the header");
    if (table.length - 1 > importRowsMax) throw new ApiError(413, "AERO_DASHBOARD_CSV", `more than ${importRowsMax} rows`);
    const header = table[0].map((c) => c.cell.trim());
    const fields = schema.fields || {};
    for (const c of header) if (!Object.hasOwn(fields, c)) throw new ApiError(400, "AERO_DASHBOARD_CSV", `column ${c} is not a field of ${schema.name}`);
    const docs = table.slice(1).filter((r) => !(r.length === 1 && r[0].cell === "" && !r[0].wasQuoted)).map((r, i) => {
      if (r.length !== header.length) throw new ApiError(400, "AERO_DASHBOARD_CSV", `line ${i + 2} has ${r.length} cells, the header ${header.length}`);
      const doc = {};
      header.forEach((c, j) => {
        const { cell, wasQuoted } = r[j];
        const v = cell === "" && wasQuoted && fields[c].type === "text" ? "" : parsedValue(`${c} (line ${i + 2})`, fields[c], cell, true);
        if (v !== undefined) doc[c] = v;
      });
      return doc;
    });
    for (let i = 0; i < docs.length; i += importBatchRows) {
      status.busy(`importing… ${inserted} of ${docs.length}`);
      await request("POST", restPath(schema.name), { body: docs.slice(i, i + importBatchRows), headers: { Prefer: "return=minimal" } });
      inserted += Math.min(importBatchRows, docs.length - i);
    }
    await reload(`imported ${inserted} rows from ${file.name}`);
  } catch (e) {
    status.fail(e);
    if (inserted) status.el.append(` (${inserted} rows were inserted before the error, in batches of ${importBatchRows})`);
  }
}

// MARK: schema

function schemaCard(schema, system) {
  const name = schema.name;
  const base = `/admin/v1/collections/${encodeURIComponent(name)}`;
  const pk = schema.primary_key;
  const fields = Object.entries(schema.fields || {}).map(([f, spec]) => ({
    field: f, type: spec.type, required: !!spec.required, nullable: spec.nullable,
    default: spec.default, references: spec.references, primary_key: f === pk,
  }));
  const indexes = (schema.indexes || []).map((i) => ({ name: i.name, fields: i.fields, type: i.type || "ordered", unique: !!i.unique }));
  const status = outcome("schema-outcome");
  if (!document.getElementById("row-outcome")) takeFlash(status);
  const act = async (question, method, path, body, done) => {
    if (question && !confirmed(question)) return;
    try {
      const r = await request(method, path, { body });
      flash = `${done} (LSN ${r.body && r.body.lsn !== undefined ? r.body.lsn : r.headers.get("X-AeroDB-LSN")})`;
      window.dispatchEvent(new HashChangeEvent("hashchange"));
    } catch (e) { status.fail(e); }
  };
  const fieldActions = system ? undefined : (f) => f.primary_key ? [] : [button("drop", () => act(`Drop the field ${f.field} of ${name}? Its values are removed from every document.`, "DELETE", `${base}/fields/${encodeURIComponent(f.field)}`, undefined, `dropped ${f.field}`), "danger small")];
  const indexActions = system ? undefined : (i) => [button("drop", () => act(`Drop the index ${i.name}?`, "DELETE", `${base}/indexes/${encodeURIComponent(i.name)}`, undefined, `dropped ${i.name}`), "danger small")];
  const parts = [h("h2", {}, "Schema"), status.el,
    table(["field", "type", "primary_key", "required", "nullable", "default", "references"], fields, undefined, fieldActions),
    h("h2", {}, "Indexes"), indexes.length ? table(["name", "fields", "type", "unique"], indexes, undefined, indexActions) : h("p", { class: "muted" }, "none")];
  if (!system) {
    const [nl, ni] = field("name", { id: "field-name" });
    const [tl, ti] = field("type (text, int, float, bool, timestamp, uuid, json, array<T>)", { id: "field-type", value: "text" });
    const [dl, di] = field("default (a JSON literal, now() or gen_random_uuid(); empty: nullable)", { id: "field-default" });
    const [rl, ri] = field("references (collection; empty: none)", { id: "field-ref" });
    const [ol, oi] = field("on delete", { id: "field-ondelete", tag: "select", options: ["restrict", "cascade", "set_null"] });
    const addField = (e) => {
      e.preventDefault();
      const body = { name: ni.value.trim(), type: ti.value.trim() };
      const d = di.value.trim();
      if (d === "") body.nullable = true;
      else if (d === "now()" || d === "gen_random_uuid()") body.default = d;
      else { try { body.default = JSON.parse(d); } catch { body.default = d; } }
      if (ri.value.trim()) body.references = { collection: ri.value.trim(), on_delete: oi.value };
      act(null, "POST", `${base}/fields`, body, `added ${body.name}`);
    };
    const [fl, fi] = field("fields (comma-separated)", { id: "index-fields" });
    const [yl, yi] = field("type", { id: "index-type", tag: "select", options: ["ordered", "fulltext"] });
    const uniq = h("input", { type: "checkbox", id: "index-unique" });
    const addIndex = (e) => {
      e.preventDefault();
      const body = { fields: fi.value.split(",").map((x) => x.trim()).filter((x) => x), type: yi.value, unique: uniq.checked };
      act(null, "POST", `${base}/indexes`, body, "index added");
    };
    parts.push(
      h("details", {}, h("summary", {}, "Add a field"), h("form", { id: "field-form", onsubmit: addField }, nl, ni, tl, ti, dl, di, rl, ri, ol, oi, h("button", { type: "submit", id: "field-add" }, "Add field"))),
      h("details", {}, h("summary", {}, "Add an index"), h("form", { id: "index-form", onsubmit: addIndex }, fl, fi, yl, yi, h("label", { class: "inline" }, uniq, " unique"), h("button", { type: "submit", id: "index-add" }, "Add index"))),
      h("p", {}, button(`Drop collection ${name}`, async () => {
        if (!confirmed(`Drop the collection ${name} and all its documents? This cannot be undone.`)) return;
        try { await del(base); location.hash = "#/collections"; } catch (e) { status.fail(e); }
      }, "danger small")));
  }
  return h("div", { class: "card", id: "schema" }, parts);
}

async function indexPage(content) {
  const status = outcome("create-outcome");
  const [sl, si] = field("schema (JSON, docs/API.md \"Schemas\")", { id: "new-collection", tag: "textarea" });
  si.value = JSON.stringify({ name: "items", primary_key: "id", fields: { id: { type: "text", required: true }, name: { type: "text", nullable: true } }, indexes: [] }, null, 2);
  const create = async (e) => {
    e.preventDefault();
    try {
      let schema;
      try { schema = JSON.parse(si.value); } catch (err) { throw new ApiError(400, "AERO_DASHBOARD_JSON", `the schema is not JSON: ${err.message}`); }
      const r = await post("/admin/v1/collections", schema);
      location.hash = `#/collections/${encodeURIComponent(r.body.name)}`;
    } catch (err) { status.fail(err); }
  };
  const migrations = h("div", { class: "card", id: "migrations" }, h("h2", {}, "Migrations"), h("p", { class: "muted" }, "Loading…"));
  replace(content, h("div", { class: "card" }, h("h2", {}, "New collection"),
    h("form", { id: "create-form", onsubmit: create }, sl, si, h("button", { type: "submit", id: "create-collection" }, "Create")), status.el), migrations);
  try {
    const m = (await get("/admin/v1/migrations")).body.migrations || [];
    replace(migrations, h("h2", {}, "Migrations (applied, with `aerodb migrate`)"),
      m.length ? table(["version", "name", "checksum", "applied_at"], m) : h("p", { class: "muted" }, "none applied"));
  } catch (e) { replace(migrations, h("h2", {}, "Migrations"), errorBox(e)); }
}
