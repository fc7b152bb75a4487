// Checkpointing (the JS SDK 4.x runs a function's steps back to back in one request and reports each
// with POST /v1/checkpoint/{runId}/async), written with the official JS SDK. Used by
// tests/compat/test_js_checkpoint.py and bench/js_checkpoint.py.
//
// GET /ledger answers {ledger, requests}: `ledger` maps "<runId>:<step>" to the times the step's
// body ran, `requests` maps a run id to the number of call requests pgqueue sent for it. Step bodies
// that must survive a crash of this process also append "<runId>:<step>" lines to SIDE_EFFECTS_FILE.
//
// Configured only through the SDK's environment variables, like server.js.

import fs from "node:fs";
import express from "express";
import { Inngest } from "inngest";
import { serve } from "inngest/express";

const APP_ID = process.env.JS_APP_ID || "js-checkpoint";
const PORT = Number(process.env.PORT || 3000);
const SIDE_EFFECTS_FILE = process.env.SIDE_EFFECTS_FILE || "";
const CRASH_MARKER = process.env.CRASH_MARKER || "";

const inngest = new Inngest({ id: APP_ID });

const LEDGER = {};
const REQUESTS = {};

function record(runId, step) {
  const key = `${runId}:${step}`;
  (LEDGER[key] ??= []).push(Date.now() / 1000);
  if (SIDE_EFFECTS_FILE) fs.appendFileSync(SIDE_EFFECTS_FILE, `${key}\n`);
  return LEDGER[key].length;
}

const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

const threeSteps = inngest.createFunction(
  { id: "three-steps", triggers: [{ event: "ckpt/three" }] },
  async ({ event, step, runId }) => {
    const a = await step.run("a", () => {
      record(runId, "a");
      return 1;
    });
    const b = await step.run("b", () => {
      record(runId, "b");
      return { two: 2 };
    });
    const c = await step.run("c", () => {
      record(runId, "c");
      return "three";
    });
    return { a, b, c, echo: event.data?.echo ?? null };
  },
);

const sleepy = inngest.createFunction(
  { id: "sleepy", triggers: [{ event: "ckpt/sleepy" }] },
  async ({ step, runId }) => {
    const a = await step.run("a", () => {
      record(runId, "a");
      return "A";
    });
    const b = await step.run("b", () => {
      record(runId, "b");
      return "B";
    });
    await step.sleep("nap", "1s");
    const c = await step.run("c", () => {
      record(runId, "c");
      return "C";
    });
    return [a, b, c];
  },
);

const flaky = inngest.createFunction(
  { id: "flaky", triggers: [{ event: "ckpt/flaky" }], retries: 3 },
  async ({ step, runId }) => {
    const a = await step.run("a", () => {
      record(runId, "a");
      return "A";
    });
    const b = await step.run("b", () => {
      const n = record(runId, "b");
      if (n === 1) throw new Error("b fails its first attempt");
      return `B after ${n}`;
    });
    const c = await step.run("c", () => {
      record(runId, "c");
      return "C";
    });
    return [a, b, c];
  },
);

// Step b kills this process the first time it runs (CRASH_MARKER does not exist yet): step a was
// checkpointed just before, so the retry must find it stored and not run it again.
const crashy = inngest.createFunction(
  { id: "crashy", triggers: [{ event: "ckpt/crashy" }], retries: 10 },
  async ({ step, runId }) => {
    const a = await step.run("a", () => {
      record(runId, "a");
      return "A";
    });
    const b = await step.run("b", () => {
      record(runId, "b");
      if (CRASH_MARKER && !fs.existsSync(CRASH_MARKER)) {
        fs.writeFileSync(CRASH_MARKER, runId);
        process.kill(process.pid, "SIGKILL");
      }
      return "B";
    });
    const c = await step.run("c", () => {
      record(runId, "c");
      return "C";
    });
    return [a, b, c];
  },
);

// Step b takes event.data.seconds: the call is open (its queue item leased) meanwhile.
const slow = inngest.createFunction(
  { id: "slow", triggers: [{ event: "ckpt/slow" }] },
  async ({ event, step, runId }) => {
    const a = await step.run("a", () => {
      record(runId, "a");
      return "A";
    });
    const b = await step.run("b", async () => {
      record(runId, "b");
      await sleep(Number(event.data?.seconds ?? 3));
      return "B";
    });
    return [a, b];
  },
);

const app = express();
app.use(express.json({ limit: "10mb" }));

app.get("/ledger", (_req, res) => {
  res.json({ ledger: LEDGER, requests: REQUESTS });
});

// Count the call requests per run before the SDK handles them.
app.use("/api/inngest", (req, _res, next) => {
  const runId = req.method === "POST" ? req.body?.ctx?.run_id : undefined;
  if (runId) REQUESTS[runId] = (REQUESTS[runId] ?? 0) + 1;
  next();
});

app.use(
  "/api/inngest",
  serve({ client: inngest, functions: [threeSteps, sleepy, flaky, crashy, slow] }),
);

const listener = app.listen(PORT, "127.0.0.1", () => {
  console.log(`js-checkpoint app ${APP_ID} listening on http://127.0.0.1:${PORT}`);
});

process.on("SIGTERM", () => {
  listener.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
