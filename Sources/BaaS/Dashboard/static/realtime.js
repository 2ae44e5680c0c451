// The realtime inspector: joins a channel over /realtime/v1/websocket (Phoenix protocol, vsn
// 1.0.0, a plain WebSocket to this origin: CSP connect-src 'self') and shows live
// postgres_changes, broadcast and presence messages; sends broadcasts and presence (docs/REALTIME.md).
//
// Key: a browser WebSocket cannot send headers, so the key goes in the socket URL's `apikey`
// parameter as every Supabase browser client does. It never enters the page URL or history, and
// the node's request log leaves the query of /realtime/v1/websocket out (RequestLog.swift).

import { savedKey } from "./api.js";
import { button, h, replace } from "./dom.js";
import { field, outcome } from "./ui.js";

/** Messages kept on the page, newest first (older ones drop off). */
const eventsShownMax = 200;
/** Phoenix heartbeat period (the server closes silent sockets). */
const heartbeatMs = 25_000;

let socket = null, heartbeat = null;

/** Closes the inspector's socket (called when the page changes). */
export function stopRealtime() {
  if (heartbeat) clearInterval(heartbeat);
  heartbeat = null;
  if (socket) { try { socket.close(1000, "page left"); } catch { /* already closed */ } }
  socket = null;
}

export async function realtimeView(view, params, collections) {
  stopRealtime();
  const status = outcome("realtime-status");
  status.busy("not connected");
  const log = h("ol", { id: "realtime-log", class: "log", reversed: true });
  let ref = 0, topic = null;
  const nextRef = () => String(++ref);
  const show = (event, payload) => {
    const line = h("li", {}, h("span", { class: "muted" }, `${new Date().toISOString().slice(11, 23)} `), h("strong", {}, event), " ", JSON.stringify(payload));
    log.prepend(line);
    while (log.children.length > eventsShownMax) log.lastChild.remove();
  };
  const send = (event, payload) => {
    if (!socket || socket.readyState !== WebSocket.OPEN) { status.fail(new Error("not connected")); return false; }
    socket.send(JSON.stringify({ topic: event === "heartbeat" ? "phoenix" : topic, event, payload, ref: nextRef(), join_ref: "1" }));
    return true;
  };

  const [tl, ti] = field("channel (topic)", { id: "rt-topic", value: "dashboard" });
  const [cl, ci] = field("collection (postgres_changes; * = every collection)", { id: "rt-table", tag: "select", options: ["*", ...collections] });
  const [el, ei] = field("event", { id: "rt-event", tag: "select", options: ["*", "INSERT", "UPDATE", "DELETE"] });
  const [fl, fi] = field("filter (optional, e.g. n=gt.10)", { id: "rt-filter" });
  const connect = (e) => {
    e.preventDefault();
    stopRealtime();
    topic = `realtime:${ti.value.trim() || "dashboard"}`;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/realtime/v1/websocket?apikey=${encodeURIComponent(savedKey() || "")}&vsn=1.0.0`);
    socket = ws;
    status.busy("connecting…");
    ws.onopen = () => {
      const binding = { event: ei.value, schema: "public", table: ci.value };
      if (fi.value.trim()) binding.filter = fi.value.trim();
      ws.send(JSON.stringify({ topic, event: "phx_join", ref: nextRef(), join_ref: "1", payload: {
        config: { broadcast: { self: true, ack: false }, presence: { key: "dashboard", enabled: true }, private: false, postgres_changes: [binding] },
        access_token: savedKey() } }));
      heartbeat = setInterval(() => send("heartbeat", {}), heartbeatMs);
    };
    ws.onmessage = (m) => {
      let frame;
      try { frame = JSON.parse(m.data); } catch { show("unparsed", String(m.data)); return; }
      if (frame.event === "phx_reply" && frame.topic === "phoenix") return; // heartbeat answers
      if (frame.event === "phx_reply" && frame.payload && frame.payload.status === "ok" && frame.topic === topic && status.el.textContent.startsWith("connecting")) status.ok(`joined ${topic}`);
      else if (frame.event === "phx_reply" && frame.payload && frame.payload.status === "error") status.fail(new Error(`join refused: ${JSON.stringify(frame.payload.response)}`));
      show(frame.event, frame.payload);
    };
    ws.onerror = () => status.fail(new Error("the realtime socket failed (see the node's answer to GET /realtime/v1/websocket)"));
    ws.onclose = (c) => { if (socket === ws) { status.busy(`closed (${c.code}${c.reason ? ` ${c.reason}` : ""})`); socket = null; if (heartbeat) clearInterval(heartbeat); heartbeat = null; } };
  };

  const [bl, bi] = field("broadcast event", { id: "rt-bevent", value: "message" });
  const [pl, pi] = field("payload (JSON object)", { id: "rt-bpayload", tag: "textarea", class: "small" });
  pi.value = "{\"text\":\"hello\"}";
  const broadcast = (e) => {
    e.preventDefault();
    try {
      const payload = JSON.parse(pi.value);
      if (send("broadcast", { type: "broadcast", event: bi.value.trim(), payload })) status.ok(`broadcast ${bi.value.trim()} sent`);
    } catch (err) { status.fail(err instanceof SyntaxError ? new Error(`payload is not JSON: ${err.message}`) : err); }
  };
  const track = () => { if (send("presence", { type: "presence", event: "track", payload: { who: "dashboard", at: new Date().toISOString() } })) status.ok("presence tracked"); };

  replace(view, h("h1", {}, "Realtime inspector"),
    h("div", { class: "card" },
      h("form", { id: "rt-form", onsubmit: connect }, tl, ti, cl, ci, el, ei, fl, fi,
        h("button", { type: "submit", id: "rt-connect" }, "Join"), button("Leave", () => { stopRealtime(); status.busy("left"); }, "secondary")),
      status.el),
    h("div", { class: "card" }, h("h2", {}, "Broadcast"),
      h("form", { id: "rt-broadcast-form", onsubmit: broadcast }, bl, bi, pl, pi, h("button", { type: "submit", id: "rt-broadcast" }, "Send broadcast"), button("Track presence", track, "secondary"))),
    h("div", { class: "card", id: "realtime-messages" }, h("h2", {}, `Messages (newest first, last ${eventsShownMax})`), log));
}
