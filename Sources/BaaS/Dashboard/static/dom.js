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
export function table(columns, rows, header, actions) {
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, header ? header(c) : c)),
      actions ? h("th", { scope: "col" }, "actions") : null)),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => {
      const v = row[c];
      return h("td", { class: v === null || v === undefined ? "null" : "" }, cellText(v));
    }), actions ? h("td", { class: "actions" }, actions(row)) : null))));
}

/** A small button (keyboard-usable like any button). */
export function button(label, onclick, cls) {
  return h("button", { type: "button", class: cls || "small", onclick }, label);
}

/** Saves `blob` as a file named `name` (an object URL; img-src/blob is allowed by the CSP). */
export function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

const svgNS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** A line chart (plain SVG) of `series`: [{name, points: [[t, y], ...]}]; times in ms. */
export function lineChart(series, yLabel, id) {
  const width = 640, height = 200, left = 56, bottom = 24, top = 8, right = 8;
  const all = series.flatMap((x) => x.points);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": yLabel, id: id || "" });
  if (all.length === 0) { svg.appendChild(s("text", { x: left, y: height / 2, class: "chart-label" }, "no samples yet")); return svg; }
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]), t0 + 1000);
  const yMax = Math.max(1, ...all.map((p) => p[1]));
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (width - left - right);
  const y = (v) => top + (1 - v / yMax) * (height - top - bottom);
  svg.appendChild(s("line", { x1: left, y1: y(0), x2: width - right, y2: y(0), class: "chart-axis" }));
  svg.appendChild(s("line", { x1: left, y1: top, x2: left, y2: y(0), class: "chart-axis" }));
  svg.appendChild(s("text", { x: 4, y: top + 10, class: "chart-label" }, String(Math.round(yMax * 100) / 100)));
  svg.appendChild(s("text", { x: 4, y: y(0), class: "chart-label" }, "0"));
  svg.appendChild(s("text", { x: left, y: height - 6, class: "chart-label" }, `${yLabel}, last ${Math.round((t1 - t0) / 1000)} s`));
  series.forEach((ser, i) => {
    const pts = ser.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    svg.appendChild(s("polyline", { points: pts, class: `chart-line c${i % 4}` }));
    svg.appendChild(s("text", { x: width - right - 120, y: top + 12 + 14 * i, class: `chart-label c${i % 4}` }, ser.name));
  });
  return svg;
}

/** A definition list of [label, value] pairs. */
export function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, cellText(v))]));
}
