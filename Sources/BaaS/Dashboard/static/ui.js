// Helpers shared by the dashboard's pages: error boxes, list columns, form fields, confirmations.

import { ApiError } from "./api.js";
import { h, replace } from "./dom.js";

/** Rows per page of the table browser and the users list (the API allows up to 10,000; a page stays small). */
export const pageRows = 50;
/** Columns shown when a list's rows have no schema (users, buckets, functions). */
export const listColumnsMax = 12;

export function errorText(e) {
  return e instanceof ApiError ? e.toString() : `${e && e.name ? e.name : "Error"}: ${e && e.message ? e.message : e}`;
}

export function errorBox(e) {
  return h("p", { class: "error", role: "alert" }, errorText(e));
}

export function columnsOf(rows, preferred) {
  const seen = new Set(preferred.filter((c) => rows.some((r) => c in r)));
  for (const r of rows) for (const k of Object.keys(r)) { if (seen.size >= listColumnsMax) break; seen.add(k); }
  return [...seen];
}

/** A labelled input; returns [label, input]. */
export function field(label, attrs) {
  const id = attrs.id;
  const input = attrs.tag === "textarea" ? h("textarea", { ...attrs, tag: undefined, spellcheck: "false" })
    : attrs.tag === "select" ? h("select", { ...attrs, tag: undefined, options: undefined }, (attrs.options || []).map((o) => h("option", { value: o }, o)))
      : h("input", { type: "text", spellcheck: "false", autocomplete: "off", ...attrs, tag: undefined });
  return [h("label", { for: id }, label), input];
}

/** A status line that shows the outcome of an action: text on success, the API error on failure. */
export function outcome(id) {
  const el = h("p", { id, role: "status", class: "muted" });
  return {
    el,
    ok(text) { el.className = "ok"; replace(el, text); },
    fail(e) { el.className = "error"; replace(el, errorText(e)); },
    busy(text) { el.className = "muted"; replace(el, text); },
  };
}

/** Runs `action` after the user confirms `question` (the browser's confirm dialog). */
export function confirmed(question) { return window.confirm(question); }

/** A modal confirmation (<dialog>) showing `content` (nodes: e.g. a validation report); resolves
 *  true on the confirm button, false on Cancel or Escape. Focus starts on Cancel (the safe choice). */
export function confirmDialog(title, content, confirmLabel, cls) {
  return new Promise((resolve) => {
    const cancel = h("button", { type: "button", class: "secondary", id: "confirm-cancel" }, "Cancel");
    const ok = h("button", { type: "button", class: cls || "", id: "confirm-ok" }, confirmLabel);
    const dialog = h("dialog", { id: "confirm-dialog", "aria-labelledby": "confirm-title" },
      h("h2", { id: "confirm-title" }, title), content, h("div", { class: "toolbar" }, ok, cancel));
    let answered = false;
    const finish = (yes) => { if (answered) return; answered = true; dialog.close(); dialog.remove(); resolve(yes); };
    ok.addEventListener("click", () => finish(true));
    cancel.addEventListener("click", () => finish(false));
    dialog.addEventListener("cancel", (e) => { e.preventDefault(); finish(false); }); // Escape
    document.body.appendChild(dialog);
    dialog.showModal();
    cancel.focus();
  });
}
