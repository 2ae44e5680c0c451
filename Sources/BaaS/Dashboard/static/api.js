// The dashboard's only way to the node: the public HTTP APIs, with the service key from this
// tab's session storage sent as `apikey` and `Authorization: Bearer` (never in a page URL; the
// realtime inspector's WebSocket URL is the one exception, see realtime.js).

const keyName = "aerodb.dashboard.serviceKey";

export function savedKey() { return sessionStorage.getItem(keyName); }
export function saveKey(key) { sessionStorage.setItem(keyName, key); }
export function forgetKey() { sessionStorage.removeItem(keyName); }

/** An error answer of any API, with its HTTP status, stable code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  toString() { return `HTTP ${this.status} ${this.code}: ${this.message}`; }
}

/** The code and message of an error body in any of the shapes the node answers:
 *  admin {code,message}, PostgREST {code,message,details}, GoTrue {error_code,msg}, storage {statusCode,error,message}. */
export function errorOf(status, body) {
  if (body && typeof body === "object") {
    const code = body.code ?? body.error_code ?? body.error ?? `HTTP_${status}`;
    let message = body.message ?? body.msg ?? body.error_description ?? JSON.stringify(body);
    if (typeof body.details === "string" && body.details && body.details !== code) message += ` (${body.details})`;
    const e = new ApiError(status, String(code), String(message));
    e.body = body; // e.g. the promotion report of a refused promotion (409)
    return e;
  }
  return new ApiError(status, `HTTP_${status}`, String(body || "no answer body"));
}

function keyOrThrow(key) {
  const k = key ?? savedKey();
  if (!k) throw new ApiError(401, "AERO_DASHBOARD_SIGNED_OUT", "sign in with the service key first");
  return k;
}

/** Calls `path`; `options`: body (JSON unless `raw`), headers, raw (a Blob/File/string sent as is),
 *  as ("json" default, "text", "blob"), key. Returns {body, headers, status}. */
export async function request(method, path, options = {}) {
  const k = keyOrThrow(options.key);
  const headers = { apikey: k, Authorization: `Bearer ${k}`, Accept: "application/json", ...(options.headers || {}) };
  const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
  if (options.raw !== undefined) init.body = options.raw;
  else if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "AERO_DASHBOARD_NETWORK", `the node did not answer: ${e.message}`);
  }
  if (response.ok && options.as === "blob") return { body: await response.blob(), headers: response.headers, status: response.status };
  const text = await response.text();
  let parsed = text;
  if (options.as !== "text" || !response.ok) {
    try { parsed = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
  }
  if (!response.ok) throw errorOf(response.status, parsed);
  return { body: parsed, headers: response.headers, status: response.status };
}

export const call = (method, path, body, key) => request(method, path, { body, key });
export const get = (path, key) => request("GET", path, { key });
export const post = (path, body) => request("POST", path, { body });
export const del = (path, body) => request("DELETE", path, { body });
export const put = (path, body) => request("PUT", path, { body });

/** Uploads `file` with a progress callback (fetch has no upload progress: XMLHttpRequest). */
export function upload(method, path, file, headers, onProgress) {
  const k = keyOrThrow();
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, path);
    xhr.withCredentials = false;
    xhr.setRequestHeader("apikey", k);
    xhr.setRequestHeader("Authorization", `Bearer ${k}`);
    for (const [name, value] of Object.entries(headers || {})) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); };
    xhr.onerror = () => reject(new ApiError(0, "AERO_DASHBOARD_NETWORK", "the upload did not reach the node"));
    xhr.onload = () => {
      let parsed = xhr.responseText;
      try { parsed = parsed ? JSON.parse(parsed) : null; } catch { /* keep the text */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(parsed); else reject(errorOf(xhr.status, parsed));
    };
    xhr.send(file);
  });
}

/** Checks a key before keeping it: the admin status needs the service key. */
export async function checkServiceKey(key) {
  try {
    return (await get("/admin/v1/status", key)).body;
  } catch (e) {
    if (e.status === 401) throw new ApiError(401, e.code, `the key was refused: it is not a valid key of this node (${e.message})`);
    if (e.status === 403) throw new ApiError(403, e.code, `this key is valid but is not the service key (${e.message})`);
    throw e;
  }
}
