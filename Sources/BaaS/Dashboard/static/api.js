// The dashboard's only way to the node: the public HTTP APIs, with the service key from this
// tab's session storage sent as `apikey` and `Authorization: Bearer` (never in a URL).

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
 *  admin {code,message}, PostgREST {code,message}, GoTrue {error_code,msg}, storage {statusCode,error,message}. */
function errorOf(status, body) {
  if (body && typeof body === "object") {
    const code = body.code ?? body.error_code ?? body.error ?? `HTTP_${status}`;
    const message = body.message ?? body.msg ?? body.error_description ?? JSON.stringify(body);
    return new ApiError(status, String(code), String(message));
  }
  return new ApiError(status, `HTTP_${status}`, String(body || "no answer body"));
}

/** Calls `path` with the key (or `key` when given) and returns the parsed JSON answer with its headers. */
export async function call(method, path, body, key) {
  const k = key ?? savedKey();
  if (!k) throw new ApiError(401, "AERO_DASHBOARD_SIGNED_OUT", "sign in with the service key first");
  const headers = { apikey: k, Authorization: `Bearer ${k}`, Accept: "application/json" };
  const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "AERO_DASHBOARD_NETWORK", `the node did not answer: ${e.message}`);
  }
  const text = await response.text();
  let parsed = text;
  try { parsed = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
  if (!response.ok) throw errorOf(response.status, parsed);
  return { body: parsed, headers: response.headers };
}

export const get = (path, key) => call("GET", path, undefined, key);
export const post = (path, body) => call("POST", path, body);

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
