// Storage: buckets (create, empty, delete) and the objects of a bucket by folder (upload with a
// progress bar, download, image preview, signed URL, delete) through /storage/v1 (docs/STORAGE.md).

import { del, post, request, upload } from "./api.js";
import { button, download, h, replace, table } from "./dom.js";
import { columnsOf, confirmed, errorBox, field, outcome } from "./ui.js";

/** Entries listed per page of a folder (the API allows up to 1,000). */
const objectsPerPage = 100;
/** Longest lifetime a signed URL gets from the page (seconds): one week. */
const signedSecondsMax = 7 * 24 * 3600;

let flash = null;
const enc = (path) => path.split("/").map(encodeURIComponent).join("/");

export async function storageView(view, bucket, params) {
  const status = outcome("storage-outcome");
  if (flash) { status.ok(flash); flash = null; }
  const rerender = (message) => { flash = message; window.dispatchEvent(new HashChangeEvent("hashchange")); };
  if (bucket) { await objectsView(view, bucket, params, status, rerender); return; }
  const { body } = await request("GET", "/storage/v1/bucket");
  const buckets = Array.isArray(body) ? body : [];
  const removeBucket = async (b) => {
    if (!confirmed(`Delete the bucket ${b.id}? (It must be empty.)`)) return;
    try { await del(`/storage/v1/bucket/${encodeURIComponent(b.id)}`); rerender(`bucket ${b.id} deleted`); } catch (e) { status.fail(e); }
  };
  const emptyBucket = async (b) => {
    if (!confirmed(`Delete every object of ${b.id}? This cannot be undone.`)) return;
    try { await post(`/storage/v1/bucket/${encodeURIComponent(b.id)}/empty`); rerender(`bucket ${b.id} emptied`); } catch (e) { status.fail(e); }
  };
  const [nl, ni] = field("bucket id", { id: "bucket-name" });
  const pub = h("input", { type: "checkbox", id: "bucket-public" });
  const create = async (e) => {
    e.preventDefault();
    try { await post("/storage/v1/bucket", { id: ni.value.trim(), name: ni.value.trim(), public: pub.checked }); rerender(`bucket ${ni.value.trim()} created`); } catch (err) { status.fail(err); }
  };
  const rows = buckets.map((b) => ({ ...b, bucket: b.id }));
  replace(view, h("h1", {}, "Storage"), status.el,
    h("div", { class: "card", id: "buckets" }, h("h2", {}, "Buckets"),
      rows.length ? table(columnsOf(rows, ["id", "public", "file_size_limit", "allowed_mime_types", "created_at"]).filter((c) => c !== "bucket" && c !== "name" && c !== "owner"), rows, (c) => c, (b) => [
        h("a", { href: `#/storage/${encodeURIComponent(b.id)}`, class: "button-link" }, "browse"),
        button("empty", () => emptyBucket(b), "secondary small"),
        button("delete", () => removeBucket(b), "danger small"),
      ]) : h("p", { class: "muted" }, "no buckets")),
    h("div", { class: "card" }, h("h2", {}, "New bucket"),
      h("form", { id: "bucket-form", onsubmit: create }, nl, ni, h("label", { class: "inline" }, pub, " public"), h("button", { type: "submit", id: "bucket-create" }, "Create bucket"))));
}

async function objectsView(view, bucket, params, status, rerender) {
  const prefix = (params.get("prefix") || "").replace(/^\/+/, "");
  const page = Math.max(0, Math.min(10_000, parseInt(params.get("page") || "0", 10) || 0));
  const here = (p, n) => `#/storage/${encodeURIComponent(bucket)}?prefix=${encodeURIComponent(p)}${n ? `&page=${n}` : ""}`;
  const listed = (await post(`/storage/v1/object/list/${encodeURIComponent(bucket)}`, {
    prefix: prefix.replace(/\/+$/, ""), limit: objectsPerPage, offset: page * objectsPerPage, sortBy: { column: "name", order: "asc" },
  })).body || [];
  const objectPath = (entry) => (prefix ? `${prefix.replace(/\/?$/, "/")}` : "") + entry.name;
  const preview = h("div", { id: "preview" });
  const fetchObject = async (entry) => (await request("GET", `/storage/v1/object/${encodeURIComponent(bucket)}/${enc(objectPath(entry))}`, { as: "blob" })).body;
  const save = async (entry) => { try { download(await fetchObject(entry), entry.name); status.ok(`downloaded ${objectPath(entry)}`); } catch (e) { status.fail(e); } };
  const show = async (entry) => {
    try {
      const blob = await fetchObject(entry);
      const url = URL.createObjectURL(blob);
      replace(preview, h("h2", {}, objectPath(entry)), h("img", { src: url, alt: objectPath(entry), class: "preview" }));
    } catch (e) { replace(preview, errorBox(e)); }
  };
  const sign = async (entry) => {
    const answer = window.prompt("Valid for how many seconds?", "3600");
    if (!answer) return;
    const seconds = Math.max(1, Math.min(signedSecondsMax, parseInt(answer, 10) || 3600));
    try {
      const r = (await post(`/storage/v1/object/sign/${encodeURIComponent(bucket)}/${enc(objectPath(entry))}`, { expiresIn: seconds })).body;
      replace(preview, h("p", {}, `Signed URL of ${objectPath(entry)}, valid ${seconds} s (anyone holding it can download the object):`),
        h("code", { class: "wrap", id: "signed-url" }, `${location.origin}/storage/v1${r.signedURL}`));
    } catch (e) { status.fail(e); }
  };
  const remove = async (entry) => {
    if (!confirmed(`Delete ${objectPath(entry)}?`)) return;
    try { await del(`/storage/v1/object/${encodeURIComponent(bucket)}`, { prefixes: [objectPath(entry)] }); rerender(`deleted ${objectPath(entry)}`); } catch (e) { status.fail(e); }
  };

  const fileInput = h("input", { type: "file", id: "upload-file", "aria-label": "file to upload" });
  const bar = h("progress", { id: "upload-progress", max: "100", value: "0", hidden: true });
  const upsert = h("input", { type: "checkbox", id: "upload-upsert" });
  const [fl, folderInput] = field("into folder (a new path makes the folders)", { id: "upload-folder", value: prefix.replace(/\/+$/, "") });
  const send = async (e) => {
    e.preventDefault();
    const file = fileInput.files && fileInput.files[0];
    if (!file) { status.busy("choose a file first"); return; }
    const folder = folderInput.value.trim().replace(/^\/+/, "").replace(/\/*$/, "");
    const path = (folder ? `${folder}/` : "") + file.name;
    bar.hidden = false; bar.value = 0;
    try {
      await upload("POST", `/storage/v1/object/${encodeURIComponent(bucket)}/${enc(path)}`, file,
        { "Content-Type": file.type || "application/octet-stream", "x-upsert": upsert.checked ? "true" : "false" },
        (loaded, total) => { bar.value = Math.round((100 * loaded) / Math.max(1, total)); });
      bar.value = 100;
      rerender(`uploaded ${path} (${file.size} bytes)`);
    } catch (err) { status.fail(err); bar.hidden = true; }
  };

  const crumbs = [h("a", { href: `#/storage/${encodeURIComponent(bucket)}` }, bucket)];
  let acc = "";
  for (const part of prefix.split("/").filter((p) => p)) { acc += `${part}/`; crumbs.push(" / ", h("a", { href: here(acc) }, part)); }
  const rows = listed.map((e) => ({ name: e.id === null ? `${e.name}/` : e.name, size: e.metadata ? e.metadata.size : null, type: e.metadata ? e.metadata.mimetype : null, updated_at: e.updated_at ?? null, entry: e }));
  replace(view, h("h1", {}, `Storage: ${bucket}`), status.el,
    h("div", { class: "card", id: "objects" },
      h("p", { id: "crumbs" }, h("a", { href: "#/storage" }, "buckets"), " / ", crumbs),
      rows.length ? table(["name", "size", "type", "updated_at"], rows, undefined, (r) => r.entry.id === null
        ? [h("a", { href: here(objectPath(r.entry) + "/"), class: "button-link" }, "open")]
        : [button("download", () => save(r.entry), "secondary small"),
          (r.type || "").startsWith("image/") ? button("preview", () => show(r.entry), "secondary small") : null,
          button("signed URL", () => sign(r.entry), "secondary small"),
          button("delete", () => remove(r.entry), "danger small")]) : h("p", { class: "muted" }, "empty folder"),
      h("div", { class: "pager" },
        page > 0 ? h("a", { href: here(prefix, page - 1) }, "← previous") : null,
        rows.length === objectsPerPage ? h("a", { href: here(prefix, page + 1) }, "next →") : null)),
    h("div", { class: "card" }, h("h2", {}, `Upload into ${bucket}`),
      h("form", { id: "upload-form", onsubmit: send }, fl, folderInput, fileInput, h("label", { class: "inline" }, upsert, " replace an existing object"),
        h("button", { type: "submit", id: "upload-send" }, "Upload"), bar)),
    h("div", { class: "card" }, preview));
}
