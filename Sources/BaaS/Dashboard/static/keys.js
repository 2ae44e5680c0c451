// Keyboard shortcuts of the dashboard (docs/DASHBOARD.md "Keyboard"): `g` then a letter opens a
// page, `/` focuses the page's filter or search box, `?` shows (and hides) the list, Escape
// closes it. Keys typed into a field, with Ctrl/Alt/Meta, or while a confirmation is open are
// left alone. Every control is also reachable with Tab (focus outlined: style.css :focus-visible).

import { h } from "./dom.js";

/** `g` then one of these keys: [page fragment, label]. */
export const goKeys = {
  c: ["cluster", "Cluster"],
  t: ["collections", "Collections (tables)"],
  q: ["query", "Query console"],
  p: ["policies", "Policies"],
  a: ["users", "Users (auth)"],
  u: ["users", "Users (auth)"],
  s: ["storage", "Storage"],
  f: ["functions", "Functions"],
  r: ["realtime", "Realtime inspector"],
  l: ["logs", "Logs (observability)"],
  o: ["logs", "Logs (observability)"],
};
/** How long after `g` the page key still counts (ms). */
const chordMs = 1500;

let pendingG = 0;

function typing(el) {
  if (!el || !(el instanceof Element)) return false;
  return el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName);
}

/** The page's filter: a field marked data-filter, the table editor's filter box, a search box, else the first text field. */
function filterField() {
  return document.querySelector("#view [data-filter], #view #filter-input, #view input[type=search]")
    || document.querySelector("#view input[type=text], #view textarea");
}

let help = null;

function helpDialog() {
  const rows = Object.entries(goKeys).filter(([k]) => k !== "u" && k !== "o")
    .map(([k, [, label]]) => h("tr", {}, h("td", {}, h("kbd", {}, "g"), " ", h("kbd", {}, k)), h("td", {}, label)));
  const close = h("button", { type: "button", id: "shortcuts-close", class: "secondary" }, "Close");
  const dialog = h("dialog", { id: "shortcuts", "aria-labelledby": "shortcuts-title" },
    h("h2", { id: "shortcuts-title" }, "Keyboard shortcuts"),
    h("table", {}, h("tbody", {}, rows,
      h("tr", {}, h("td", {}, h("kbd", {}, "/")), h("td", {}, "focus the page's filter or search box")),
      h("tr", {}, h("td", {}, h("kbd", {}, "?")), h("td", {}, "show or hide this list")),
      h("tr", {}, h("td", {}, h("kbd", {}, "Esc")), h("td", {}, "close this list or a confirmation (cancels it)")),
      h("tr", {}, h("td", {}, h("kbd", {}, "Tab")), h("td", {}, "next control (Shift+Tab: previous); Enter or Space activates it")),
      h("tr", {}, h("td", {}, h("kbd", {}, "Enter")), h("td", {}, "on a table cell: edit it inline (Escape cancels)")))),
    close);
  close.addEventListener("click", () => dialog.close());
  document.body.appendChild(dialog);
  return dialog;
}

export function toggleHelp() {
  help ||= helpDialog();
  if (help.open) help.close();
  else { help.showModal(); help.querySelector("#shortcuts-close").focus(); }
}

/** Installs the shortcuts; `signedIn()` says whether pages may be opened. */
export function installShortcuts(signedIn) {
  document.addEventListener("keydown", (e) => {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
    if (document.querySelector("dialog[open]:not(#shortcuts)")) return; // a confirmation has the keyboard
    if (e.key === "?") { e.preventDefault(); toggleHelp(); return; }
    if (!signedIn()) return;
    const afterG = pendingG && Date.now() - pendingG < chordMs;
    pendingG = 0;
    if (afterG && goKeys[e.key]) {
      e.preventDefault();
      if (help && help.open) help.close();
      const target = `#/${goKeys[e.key][0]}`;
      // The page's content takes the focus once it is shown, so Tab continues there.
      window.addEventListener("hashchange", () => setTimeout(() => document.getElementById("view").focus(), 0), { once: true });
      if (location.hash === target) window.dispatchEvent(new HashChangeEvent("hashchange"));
      else location.hash = target;
      return;
    }
    if (e.key === "g") { pendingG = Date.now(); return; }
    if (e.key === "/") {
      const f = filterField();
      if (f) { e.preventDefault(); if (help && help.open) help.close(); f.focus(); if (f.select) f.select(); }
    }
  });
}
