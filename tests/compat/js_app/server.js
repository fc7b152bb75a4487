// An app written with the official JS SDK (`inngest` 4.24.0), served by express.
//
// Configured only through the SDK's own environment variables (INNGEST_DEV / INNGEST_BASE_URL /
// INNGEST_SIGNING_KEY / INNGEST_EVENT_KEY), exactly as a user would point it at pgqueue. It is the
// JS twin of tests/compat/apps/py_app.py: the same functions, and a ledger of every step body
// execution so tests can count side effects from the app's point of view.
//
// The coordination functions (waiter, waiter-if, cancellable, child, invoker) mirror py_app's;
// `cross-invoker` invokes the Python app's `child` (app id py-compat) by reference, for the
// cross-app tests where both apps are synced to one server.
//
// Extra routes for the tests: GET /ledger (the ledger and the onFailure calls) and POST /send
// (sends one event through the SDK's own client, proving the Event API answers in the shape JS parses).

import express from "express";
import { Inngest, NonRetriableError, openai, referenceFunction } from "inngest";
import { createDefer } from "inngest/experimental";
import { serve } from "inngest/express";

const APP_ID = process.env.JS_APP_ID || "js-compat";
const PORT = Number(process.env.PORT || 3000);

const inngest = new Inngest({ id: APP_ID });

// "<runId>:<step name>" -> list of execution timestamps (unix seconds)
const LEDGER = {};
const FAILURES = [];

function record(runId, step) {
  const key = `${runId}:${step}`;
  (LEDGER[key] ??= []).push(Date.now() / 1000);
  return LEDGER[key].length;
}

const threeSteps = inngest.createFunction(
  { id: "three-steps", triggers: [{ event: "compat/three" }] },
  async ({ event, step, runId }) => {
    const a = await step.run("a", () => {
      record(runId, "a");
      return 1;
    });
    const b = await step.run("b", () => {
      record(runId, "b");
      return 2;
    });
    const c = await step.run("c", () => {
      record(runId, "c");
      return "three";
    });
    const delay = Number(event.data?.delay || 0);
    if (delay) await new Promise((resolve) => setTimeout(resolve, delay * 1000));
    return { a, b, c, echo: event.data?.echo ?? null };
  },
);

const parallel = inngest.createFunction(
  { id: "parallel", triggers: [{ event: "compat/parallel" }] },
  async ({ step, runId }) => {
    const results = await Promise.all([
      step.run("left", () => {
        record(runId, "left");
        return "L";
      }),
      step.run("right", () => {
        record(runId, "right");
        return "R";
      }),
    ]);
    const tail = await step.run("after", () => {
      record(runId, "after");
      return "done";
    });
    return [...results, tail];
  },
);

const sleeper = inngest.createFunction(
  { id: "sleeper", triggers: [{ event: "compat/sleep" }] },
  async ({ event, step, runId }) => {
    const seconds = Number(event.data?.seconds ?? 1);
    const t0 = await step.run("before", () => {
      record(runId, "before");
      return Date.now() / 1000;
    });
    await step.sleep("nap", `${seconds}s`);
    const t1 = await step.run("after", () => {
      record(runId, "after");
      return Date.now() / 1000;
    });
    return { slept: t1 - t0 };
  },
);

const flaky = inngest.createFunction(
  { id: "flaky", triggers: [{ event: "compat/flaky" }], retries: 3 },
  async ({ event, step, runId }) => {
    const failTimes = Number(event.data?.fail_times ?? 2);
    return await step.run("unstable", () => {
      const n = record(runId, "unstable");
      if (n <= failTimes) throw new Error(`failure ${n} of ${failTimes}`);
      return `ok after ${n}`;
    });
  },
);

const nonRetriable = inngest.createFunction(
  { id: "non-retriable", triggers: [{ event: "compat/nonretriable" }] },
  async ({ runId }) => {
    record(runId, "body");
    throw new NonRetriableError("this cannot work");
  },
);

const alwaysFails = inngest.createFunction(
  {
    id: "always-fails",
    triggers: [{ event: "compat/fail" }],
    retries: 1,
    onFailure: async ({ event, runId }) => {
      FAILURES.push({ run_id: runId, event: event.name, data: event.data });
    },
  },
  async ({ step, runId }) => {
    return await step.run("boom", () => {
      record(runId, "boom");
      throw new Error("boom");
    });
  },
);

const proOnly = inngest.createFunction(
  {
    id: "pro-only",
    triggers: [{ event: "compat/plan", if: "event.data.plan == 'pro' && event.data.seats > 2" }],
  },
  async ({ event, runId }) => {
    record(runId, "body");
    return String(event.data?.plan);
  },
);

const wildcard = inngest.createFunction(
  { id: "wildcard", triggers: [{ event: "compat-wild/*" }] },
  async ({ event }) => event.name,
);

// Coordination: waitForEvent, cancelOn, invoke.

const waiter = inngest.createFunction(
  { id: "waiter", triggers: [{ event: "compat/wait" }] },
  async ({ event, step, runId }) => {
    await step.run("before", () => {
      record(runId, "before");
      return "waiting";
    });
    // `match` is the JS shorthand the SDK compiles to `event.data.id == async.data.id`.
    const got = await step.waitForEvent("approval", {
      event: "compat/approved",
      timeout: `${event.data?.timeout ?? 30}s`,
      match: "data.id",
    });
    return got === null ? null : { name: got.name, data: got.data };
  },
);

const waiterIf = inngest.createFunction(
  { id: "waiter-if", triggers: [{ event: "compat/wait-if" }] },
  async ({ event, step, runId }) => {
    await step.run("before", () => {
      record(runId, "before");
      return "waiting";
    });
    const got = await step.waitForEvent("approval", {
      event: "compat/approved",
      timeout: `${event.data?.timeout ?? 30}s`,
      if: "async.data.id == event.data.id && async.data.amount > 10",
    });
    return got === null ? null : { name: got.name, data: got.data };
  },
);

const cancellable = inngest.createFunction(
  {
    id: "cancellable",
    triggers: [{ event: "compat/cancellable" }],
    cancelOn: [{ event: "compat/cancel", match: "data.id" }],
  },
  async ({ event, step, runId }) => {
    await step.run("first", () => {
      record(runId, "first");
      return "first";
    });
    await step.sleep("nap", `${event.data?.sleep ?? 3}s`);
    return await step.run("second", () => {
      record(runId, "second");
      return "second";
    });
  },
);

const child = inngest.createFunction(
  { id: "child", triggers: [{ event: "compat/child-direct" }] },
  async ({ event }) => {
    const mode = event.data?.mode;
    if (mode === "fail") throw new NonRetriableError("child failed on purpose");
    // Plain JS, not a step: the whole call takes longer than the invoker's timeout.
    if (mode === "slow") await new Promise((resolve) => setTimeout(resolve, 3000));
    return { doubled: Number(event.data?.n ?? 0) * 2, invoked_by: event.name };
  },
);

async function invokeAndReport(step, fn, data, timeout) {
  try {
    const result = await step.invoke("call-child", { function: fn, data, timeout: `${timeout ?? 30}s` });
    return { result };
  } catch (err) {
    return { error: err?.name, message: err?.message };
  }
}

const invoker = inngest.createFunction(
  { id: "invoker", triggers: [{ event: "compat/invoke" }] },
  async ({ event, step }) =>
    invokeAndReport(step, child, { n: event.data?.n ?? 1, mode: event.data?.mode ?? null }, event.data?.timeout),
);

// The Python app's `child`, by reference: the SDK sends function_id "py-compat-child".
const pyChild = referenceFunction({ appId: "py-compat", functionId: "child" });

const crossInvoker = inngest.createFunction(
  { id: "cross-invoker", triggers: [{ event: "compat/cross-invoke" }] },
  async ({ event, step }) =>
    invokeAndReport(step, pyChild, { n: event.data?.n ?? 1, mode: event.data?.mode ?? null }, event.data?.timeout),
);

// Invoke under the child's own flow control: five parents, a child with `concurrency limit 1`.
const limitedChild = inngest.createFunction(
  { id: "limited-child", triggers: [{ event: "compat/limited-child-direct" }], concurrency: [{ limit: 1 }] },
  async ({ event, step, runId }) =>
    step.run("work", async () => {
      const started = Date.now() / 1000;
      record(runId, "work");
      await new Promise((resolve) => setTimeout(resolve, Number(event.data?.seconds ?? 0.3) * 1000));
      return { tag: event.data?.tag ?? null, started, ended: Date.now() / 1000 };
    }),
);

const fanInvoker = inngest.createFunction(
  { id: "fan-invoker", triggers: [{ event: "compat/fan-invoke" }] },
  async ({ event, step, runId }) => {
    record(runId, "parent");
    const child = await step.invoke("call-limited", {
      function: limitedChild,
      data: { tag: event.data?.tag ?? null, seconds: event.data?.seconds ?? 0.3 },
    });
    return { child, resumed: Date.now() / 1000 };
  },
);

// ---------------------------------------------------------------------------------------------
// Operations pgqueue performs or refuses on the SDK's behalf (tests/compat/test_js_ops.py):
// waitForSignal / sendSignal, step.fetch (Gateway), step.ai.infer (AIGateway), parallelMode
// "race", and defer() (DeferAdd, refused).

const signalWaiter = inngest.createFunction(
  { id: "signal-waiter", triggers: [{ event: "compat/signal-wait" }], retries: 1 },
  async ({ event, step, runId }) => {
    await step.run("before", () => {
      record(runId, "before");
      return "waiting";
    });
    const got = await step.waitForSignal("wait-signal", {
      signal: event.data.signal,
      timeout: `${event.data?.timeout ?? 30}s`,
      onConflict: event.data?.conflict ?? "fail",
    });
    return { got };
  },
);

const signalSender = inngest.createFunction(
  { id: "signal-sender", triggers: [{ event: "compat/signal-send" }] },
  async ({ event, step }) => {
    // step.sendSignal: the SDK's own POST /v1/signals, authenticated like every SDK API call.
    const sent = await step.sendSignal("send", { signal: event.data.signal, data: event.data.data });
    return { run_id: sent?.runId ?? null };
  },
);

const fetcher = inngest.createFunction(
  { id: "fetcher", triggers: [{ event: "compat/fetch" }], retries: 2 },
  async ({ event, step, runId }) => {
    let fetched;
    try {
      const res = await step.fetch(event.data.url, {
        method: event.data.method ?? "GET",
        headers: event.data.headers ?? {},
        ...(event.data.body !== undefined ? { body: event.data.body } : {}),
      });
      fetched = { status: res.status, body: await res.text(), stub: res.headers.get("x-stub") };
    } catch (err) {
      fetched = { error: err?.name ?? null, message: err?.message ?? String(err) };
    }
    const after = await step.run("after-fetch", () => {
      record(runId, "after-fetch");
      return "after";
    });
    return { fetched, after };
  },
);

const aiInfer = inngest.createFunction(
  { id: "ai-infer", triggers: [{ event: "compat/ai" }], retries: 2 },
  async ({ event, step }) => {
    try {
      const answer = await step.ai.infer("ask", {
        model: openai({ model: "stub-model", baseUrl: event.data.base_url, apiKey: "sk-js-test" }),
        body: { messages: [{ role: "user", content: event.data.prompt }] },
      });
      return { answer };
    } catch (err) {
      return { error: err?.name ?? null, message: err?.message ?? String(err) };
    }
  },
);

const racer = inngest.createFunction(
  { id: "racer", triggers: [{ event: "compat/race" }] },
  async ({ event, step, group, runId }) => {
    const winner = await group.parallel({ mode: "race" }, async () =>
      Promise.race([
        step.run("slow", async () => {
          record(runId, "slow");
          await new Promise((resolve) => setTimeout(resolve, Number(event.data?.slow_s ?? 4) * 1000));
          return "slow";
        }),
        step.run("fast", () => {
          record(runId, "fast");
          return "fast";
        }),
      ]),
    );
    const after = await step.run("after-race", () => {
      record(runId, "after-race");
      return Date.now() / 1000;
    });
    return { winner, after };
  },
);

const raceTimer = inngest.createFunction(
  { id: "race-timer", triggers: [{ event: "compat/race-timer" }] },
  async ({ event, step, group, runId }) => {
    // The classic "whichever comes first": a short sleep against a long wait. The code after the
    // race goes on when the sleep ends; the SDK only reports the run finished once the losing wait
    // has ended too (it reports every step it found that has no result yet).
    const first = await group.parallel({ mode: "race" }, async () =>
      Promise.race([
        step.sleep("short", `${event.data?.sleep_s ?? 1}s`).then(() => "slept"),
        step
          .waitForEvent("long-wait", { event: "compat/never", timeout: `${event.data?.wait_s ?? 60}s` })
          .then((got) => (got ? "event" : "timeout")),
      ]),
    );
    const at = await step.run("after-timer-race", () => {
      record(runId, "after-timer-race");
      return Date.now() / 1000;
    });
    return { first, at };
  },
);

const deferred = createDefer(inngest, { id: "deferred" }, async ({ event }) => ({ got: event.data }));

const deferrer = inngest.createFunction(
  { id: "deferrer", triggers: [{ event: "compat/defer" }], retries: 1 },
  async ({ step, defer, runId }) => {
    defer("later", { function: deferred, data: { x: 1 } });
    return await step.run("a", () => {
      record(runId, "a");
      return "a";
    });
  },
);

const app = express();
// The SDK reads the parsed JSON body; the default 100 kB limit is too small for real step state.
app.use(express.json({ limit: "10mb" }));

app.get("/ledger", (_req, res) => {
  res.json({ ledger: LEDGER, failures: FAILURES });
});

app.post("/send", async (_req, res) => {
  try {
    const { ids } = await inngest.send({ name: "compat/three", data: { echo: "from-js" } });
    res.json({ ids });
  } catch (err) {
    res.status(502).json({ error: String(err?.stack || err) });
  }
});

app.use(
  "/api/inngest",
  serve({
    client: inngest,
    functions: [
      threeSteps, parallel, sleeper, flaky, nonRetriable, alwaysFails, proOnly, wildcard,
      waiter, waiterIf, cancellable, child, invoker, crossInvoker, limitedChild, fanInvoker,
      // operations (test_js_ops.py)
      signalWaiter, signalSender, fetcher, aiInfer, racer, raceTimer, deferred, deferrer,
    ],
  }),
);

const listener = app.listen(PORT, "127.0.0.1", () => {
  console.log(`js-compat app ${APP_ID} listening on http://127.0.0.1:${PORT}`);
});

// The test harness stops the app with SIGTERM; close promptly so the port is freed.
process.on("SIGTERM", () => {
  listener.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
