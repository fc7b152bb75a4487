// Flow control and the rest of the step API, written with the official JS SDK (`inngest` 4.x):
// the JS twin of tests/compat/apps/py_flow_app.py plus step.sendEvent, step.sleepUntil and
// RetryAfterError. Every function body records a span {fn, run_id, key, n, start, end}, so tests
// judge concurrency, order and timing from the app's own point of view (GET /ledger).
//
// Configured only through the SDK's environment variables, like server.js.

import express from "express";
import { Inngest, RetryAfterError } from "inngest";
import { serve } from "inngest/express";

const APP_ID = process.env.JS_APP_ID || "js-flow";
const PORT = Number(process.env.PORT || 3000);

const inngest = new Inngest({ id: APP_ID });

const SPANS = [];
const CALLS = {};

function span(fn, event, runId, start, extra = {}) {
  SPANS.push({
    fn, run_id: runId, key: event.data?.key ?? null, n: event.data?.n ?? null,
    start, end: Date.now() / 1000, ...extra,
  });
}

function count(name) {
  CALLS[name] = (CALLS[name] ?? 0) + 1;
  return CALLS[name];
}

const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

// A step that holds its concurrency slot for `seconds` (default 0.4).
function work(fn) {
  return async ({ event, step, runId }) =>
    step.run("work", async () => {
      const start = Date.now() / 1000;
      await sleep(Number(event.data?.seconds ?? 0.4));
      span(fn, event, runId, start);
      return event.data?.n ?? null;
    });
}

const concKey = inngest.createFunction(
  { id: "conc-key", triggers: [{ event: "js-flow/conc" }], concurrency: [{ limit: 2, key: "event.data.key" }] },
  work("conc-key"),
);

const twoLimits = inngest.createFunction(
  {
    id: "two-limits",
    triggers: [{ event: "js-flow/two" }],
    concurrency: [{ limit: 2 }, { limit: 1, key: "event.data.user" }],
  },
  work("two-limits"),
);

const envScoped = inngest.createFunction(
  {
    id: "env-scoped",
    triggers: [{ event: "js-flow/env" }],
    concurrency: [{ limit: 1, scope: "env", key: "event.data.tenant" }],
  },
  work("env-scoped"),
);

const throttled = inngest.createFunction(
  { id: "throttled", triggers: [{ event: "js-flow/throttle" }], throttle: { limit: 1, period: "1s", key: "event.data.key" } },
  async ({ event, runId }) => {
    span("throttled", event, runId, Date.now() / 1000);
    return event.data?.n ?? null;
  },
);

const rateLimited = inngest.createFunction(
  { id: "rate-limited", triggers: [{ event: "js-flow/rate" }], rateLimit: { limit: 2, period: "60s", key: "event.data.key" } },
  async ({ event, runId }) => {
    span("rate-limited", event, runId, Date.now() / 1000);
    return event.data?.n ?? null;
  },
);

const debounced = inngest.createFunction(
  {
    id: "debounced",
    triggers: [{ event: "js-flow/debounce" }],
    debounce: { period: "1s", key: "event.data.key", timeout: "3s" },
  },
  async ({ event, runId }) => {
    span("debounced", event, runId, Date.now() / 1000);
    return event.data?.n ?? null;
  },
);

const batched = inngest.createFunction(
  {
    id: "batched",
    triggers: [{ event: "js-flow/batch" }],
    batchEvents: { maxSize: 3, timeout: "2s", key: "event.data.key", if: "event.data.batch == true" },
  },
  async ({ events, runId }) => {
    span("batched", events[0], runId, Date.now() / 1000, { size: events.length, ns: events.map((e) => e.data?.n) });
    return events.map((e) => e.data?.n);
  },
);

const prioritized = inngest.createFunction(
  {
    id: "prioritized",
    triggers: [{ event: "js-flow/prio" }],
    concurrency: [{ limit: 1 }],
    priority: { run: "event.data.prio" },
  },
  work("prioritized"),
);

const idempotent = inngest.createFunction(
  { id: "idempotent", triggers: [{ event: "js-flow/order" }], idempotency: "event.data.order" },
  async ({ event, step, runId }) =>
    step.run("charge", () => {
      span("idempotent", event, runId, Date.now() / 1000, { order: event.data?.order });
      return "charged";
    }),
);

const singleton = inngest.createFunction(
  { id: "singleton", triggers: [{ event: "js-flow/singleton" }], singleton: { key: "event.data.key", mode: "skip" } },
  work("singleton"),
);

const startTimeout = inngest.createFunction(
  {
    id: "start-timeout",
    triggers: [{ event: "js-flow/start-timeout" }],
    concurrency: [{ limit: 1 }],
    timeouts: { start: "1s" },
  },
  work("start-timeout"),
);

const finishTimeout = inngest.createFunction(
  { id: "finish-timeout", triggers: [{ event: "js-flow/finish-timeout" }], timeouts: { finish: "1s" } },
  async ({ event, step, runId }) => {
    await step.run("first", () => span("finish-timeout-first", event, runId, Date.now() / 1000));
    await step.sleep("nap", "2s");
    await step.run("second", () => span("finish-timeout-second", event, runId, Date.now() / 1000));
    return "finished";
  },
);

// The rest of the step API.
const sender = inngest.createFunction(
  { id: "sender", triggers: [{ event: "js-flow/send" }], retries: 2 },
  async ({ event, step, attempt, runId }) => {
    const sent = await step.sendEvent("emit", { name: "js-flow/echo", data: { tag: event.data?.tag } });
    if (attempt === 0) {
      count(`${runId}:fail-once`);
      throw new Error("fail after sending, once");
    }
    return sent;
  },
);

const echo = inngest.createFunction(
  { id: "echo", triggers: [{ event: "js-flow/echo" }] },
  async ({ event }) => ({ tag: event.data?.tag ?? null }),
);

const sleepUntil = inngest.createFunction(
  { id: "sleep-until", triggers: [{ event: "js-flow/sleep-until" }] },
  async ({ event, step }) => {
    await step.sleepUntil("nap", new Date(event.data.until));
    return { woke: await step.run("after", () => Date.now() / 1000) };
  },
);

const retryAfter = inngest.createFunction(
  { id: "retry-after", triggers: [{ event: "js-flow/retry-after" }], retries: 2 },
  async ({ step, runId }) =>
    step.run("call", () => {
      const n = count(`${runId}:call`);
      (CALLS[`${runId}:times`] ??= []).push(Date.now() / 1000);
      if (n === 1) throw new RetryAfterError("rate limited upstream", "2s");
      return "ok";
    }),
);

const cronParis = inngest.createFunction(
  { id: "cron-paris", triggers: [{ cron: "TZ=Europe/Paris 0 9 * * *" }] },
  async () => "bonjour",
);

export const FUNCTIONS = [
  concKey, twoLimits, envScoped, throttled, rateLimited, debounced, batched, prioritized, idempotent,
  singleton, startTimeout, finishTimeout, sender, echo, sleepUntil, retryAfter, cronParis,
];

const app = express();
app.use(express.json({ limit: "10mb" }));
app.get("/ledger", (_req, res) => res.json({ spans: SPANS, calls: CALLS }));
app.use("/api/inngest", serve({ client: inngest, functions: FUNCTIONS }));

const listener = app.listen(PORT, "127.0.0.1", () => {
  console.log(`js-flow app ${APP_ID} listening on http://127.0.0.1:${PORT}`);
});
process.on("SIGTERM", () => {
  listener.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
