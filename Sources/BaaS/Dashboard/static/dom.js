// DOM helpers of the dashboard. Everything the API returns is put on the page as text
// (createTextNode / textContent) or as an attribute set one by one: no HTML is ever parsed from
// data (none of the DOM's HTML-parsing setters or writers is used in any dashboard file, which
// test_dashboard.py checks), so a field holding markup shows as the characters it holds
// (invariant DASH1, docs/DASHBOARD.md).

/** h("td", {class: "x", onclick: fn}, "text", node, [more]) builds an element. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = String(value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces the children of `el` with `children`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** Longest text shown in one table cell before it is cut (the whole value stays in the title). */
export const cellCharsMax = 300;

/** A JSON value as the text of a table cell. */
export function cellText(value) {
  if (value === null || value === undefined) return "null";
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > cellCharsMax ? text.slice(0, cellCharsMax) + "…" : text;
}

/** A table of `rows` (objects) over `columns` (names); every cell is text. `header(c)`, when
 *  given, builds a column's heading (e.g. a sort link). */
export function table(columns, rows, header) {
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, header ? header(c) : c)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => {
      const v = row[c];
      return h("td", { class: v === null || v === undefined ? "null" : "" }, cellText(v));
    })))));
}

/** A definition list of [label, value] pairs. */
export function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, cellText(v))]));
}
