// Realtime with the official JS SDK (`inngest` 4.24.0): functions that publish, subscribers that use
// the SDK's own `subscribe()`, a page that subscribes from a browser, and durable endpoints that
// stream. Used by tests/compat/test_js_realtime.py. Run with NODE_OPTIONS=--experimental-websocket
// on Node 20 (the SDK needs a global WebSocket; Node 22 has one).
//
// Functions
//   rt-progress   (js/realtime.progress {id, gap_ms})  three step.realtime.publish to progress:<id>
//                 topic "status" ({n, at: ms when published}), gap_ms apart
//   rt-retry      (js/realtime.retry {id})  a step that publishes {stage: "working"} with
//                 inngest.realtime.publish and then fails on its first attempt; then "done"
// Durable endpoints (inngest.endpoint; a client sends Accept: text/event-stream)
//   GET /api/stream-sync?tag=    pushes a, b in a step and answers {tag} in the request
//   GET /api/stream-async?tag=   pushes a, b, sleeps 1 s (the run goes to pgqueue), pushes c, answers {tag}
// Routes for the tests
//   GET  /token?channel=&topics=a,b    a subscription token for the browser: {key, apiBaseUrl}
//   POST /subscribe?channel=&topics=[&key=][&base=]   subscribe() here; -> {id} (or {error})
//   GET  /received?id=                 [{at, kind, channel, topic, data}, ...]
//   POST /unsubscribe?id=
//   GET  /stream-client?path=/api/stream-async&tag=   fetchWithStream (the SDK's client) of an
//                                      endpoint: {chunks, status, body}
//   GET  /browser?channel=&topics=     a page that fetches a token and subscribes in the browser
//   GET  /ledger

import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import express from "express";
import { Inngest, realtime, step } from "inngest";
import { stream } from "inngest/experimental/durable-endpoints";
import { fetchWithStream } from "inngest/experimental/durable-endpoints/client";
import { serve } from "inngest/express";
import { endpointAdapter, serveEndpoint } from "inngest/node";
import { subscribe as realtimeSubscribe } from "inngest/realtime";

const APP_ID = process.env.JS_APP_ID || "js-realtime";
const PORT = Number(process.env.PORT || 3000);
const HERE = path.dirname(fileURLToPath(import.meta.url));

const inngest = new Inngest({ id: APP_ID, endpointAdapter });

const LEDGER = {};
function record(runId, name) {
  const key = `${runId}:${name}`;
  (LEDGER[key] ??= []).push(Date.now() / 1000);
  return LEDGER[key].length;
}

const progress = realtime.channel({ name: (id) => `progress:${id}`, topics: { status: {}, done: {} } });

const rtProgress = inngest.createFunction(
  { id: "rt-progress", triggers: [{ event: "js/realtime.progress" }] },
  async ({ event, step }) => {
    const ch = progress(event.data.id);
    const gap = Number(event.data.gap_ms ?? 300);
    for (let n = 1; n <= 3; n++) {
      await step.realtime.publish(`publish-${n}`, ch.status, { n, at: Date.now() });
      if (n < 3) await step.run(`pause-${n}`, () => new Promise((resolve) => setTimeout(resolve, gap)));
    }
    return "published";
  },
);

const rtRetry = inngest.createFunction(
  { id: "rt-retry", retries: 2, triggers: [{ event: "js/realtime.retry" }] },
  async ({ event, step, runId }) => {
    const ch = progress(event.data.id);
    await step.run("flaky", async () => {
      const n = record(runId, "flaky");
      await inngest.realtime.publish(ch.status, { stage: "working" });
      if (n < 2) throw new Error("fails after publishing, on the first attempt");
      return n;
    });
    await step.realtime.publish("finished", ch.done, { stage: "done" });
  },
);

const tagOf = (req) => new URL(req.url).searchParams.get("tag") || "";

// Durable endpoints have no `step` argument: `step` is the SDK's deferred step tools.
const streamSync = inngest.endpoint(async (req) => {
  const tag = tagOf(req);
  await step.run("sync-pushes", () => {
    stream.push("a");
    stream.push("b");
    return 1;
  });
  return { tag };
});

const streamAsync = inngest.endpoint(async (req) => {
  const tag = tagOf(req);
  await step.run("before-sleep", () => {
    stream.push("a");
    stream.push("b");
    return 1;
  });
  await step.sleep("nap", "1s");
  await step.run("after-sleep", () => {
    stream.push("c");
    return 2;
  });
  return { tag };
});

const SUBS = {};
let nextSub = 1;

async function subscribeHere(q) {
  const id = String(nextSub++);
  const topics = String(q.get("topics") || "status").split(",");
  const channel = q.get("channel");
  SUBS[id] = { messages: [], handle: null };
  const onMessage = (msg) => {
    SUBS[id].messages.push({ at: Date.now(), kind: msg.kind, channel: msg.channel, topic: msg.topic, data: msg.data });
  };
  const key = q.get("key");
  if (key) {
    const apiBaseUrl = q.get("base") || inngest.apiBaseUrl;
    SUBS[id].handle = await realtimeSubscribe({ channel, topics, key, apiBaseUrl, onMessage });
  } else if (q.get("base")) {
    const token = await inngest.realtime.token({ channel, topics });
    SUBS[id].handle = await realtimeSubscribe({ channel, topics, key: token.key, apiBaseUrl: q.get("base"),
                                                 onMessage });
  } else {
    SUBS[id].handle = await inngest.realtime.subscribe({ channel, topics, onMessage });
  }
  return id;
}

const app = express();
app.use("/api/inngest", express.json({ limit: "10mb" }));
app.use("/api/inngest", serve({ client: inngest, functions: [rtProgress, rtRetry] }));

app.all("/api/stream-sync", (req, res) => serveEndpoint(streamSync)(req, res));
app.all("/api/stream-async", (req, res) => serveEndpoint(streamAsync)(req, res));

app.get("/ledger", (_req, res) => res.json({ ledger: LEDGER }));

app.get("/token", async (req, res) => {
  const q = new URL(req.url, "http://x").searchParams;
  try {
    const token = await inngest.realtime.token({ channel: q.get("channel"), topics: q.get("topics").split(",") });
    res.json({ key: token.key, apiBaseUrl: token.apiBaseUrl });
  } catch (err) {
    res.status(502).json({ error: String(err?.message || err) });
  }
});

app.post("/subscribe", async (req, res) => {
  try {
    res.json({ id: await subscribeHere(new URL(req.url, "http://x").searchParams) });
  } catch (err) {
    res.status(502).json({ error: String(err?.message || err) });
  }
});

app.get("/received", (req, res) => {
  const sub = SUBS[new URL(req.url, "http://x").searchParams.get("id")];
  res.json(sub ? sub.messages : null);
});

app.post("/unsubscribe", (req, res) => {
  const sub = SUBS[new URL(req.url, "http://x").searchParams.get("id")];
  sub?.handle?.close?.("test done");
  res.json({ ok: Boolean(sub) });
});

app.get("/stream-client", async (req, res) => {
  const q = new URL(req.url, "http://x").searchParams;
  const url = `http://127.0.0.1:${PORT}${q.get("path")}?tag=${encodeURIComponent(q.get("tag") || "")}`;
  const chunks = [];
  try {
    const resp = await fetchWithStream(url, { onData: ({ data }) => chunks.push(data) });
    res.json({ chunks, status: resp.status, body: await resp.text() });
  } catch (err) {
    res.status(502).json({ error: String(err?.stack || err), chunks });
  }
});

// The browser loads the SDK's realtime subscriber from these files (no bundler): zod is ESM, and
// `debug` (CommonJS, a logging helper) gets an inert stand-in.
app.use("/node_modules/inngest", express.static(path.join(HERE, "node_modules", "inngest")));
app.use("/node_modules/zod", express.static(path.join(HERE, "node_modules", "zod")));
app.get("/shim/debug.js", (_req, res) => {
  res.type("text/javascript").send("export default function debug() { return () => {}; }\n");
});
app.get("/browser", (_req, res) => {
  res.type("html").send(`<!doctype html>
<html><head><meta charset="utf-8"><title>realtime</title>
<script type="importmap">{"imports": {"zod/v3": "/node_modules/zod/v3/index.js", "debug": "/shim/debug.js"}}</script>
<script type="module">
import { subscribe } from "/node_modules/inngest/components/realtime/subscribe/index.js";
const q = new URLSearchParams(location.search);
const channel = q.get("channel");
const topics = q.get("topics").split(",");
window.received = [];
try {
  const token = await (await fetch("/token?" + new URLSearchParams({ channel, topics: topics.join(",") }))).json();
  await subscribe({ channel, topics, key: token.key, apiBaseUrl: token.apiBaseUrl },
                  (msg) => { window.received.push({ topic: msg.topic, data: msg.data }); });
  document.body.dataset.state = "subscribed";
} catch (err) {
  document.body.dataset.state = "failed: " + (err && err.message);
}
</script></head><body data-state="starting"></body></html>`);
});

const server = http.createServer(app);
server.listen(PORT, "127.0.0.1", () => {
  console.log(`js-realtime app ${APP_ID} listening on http://127.0.0.1:${PORT}`);
});
process.on("SIGTERM", () => {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
