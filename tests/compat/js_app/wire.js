// Wire details the official JS SDK (`inngest` 4.24.0) relies on, written with the SDK: events always
// carry `user`, event sessions (`meta.sessions`, `ctx.sessions`, propagation through
// step.sendEvent and step.invoke), checkpointing after parallel steps, and run/step metadata
// (step.metadata, inngest.metadata, step.score, group.experiment). Used by
// tests/compat/test_js_wire.py.
//
// GET /ledger answers {seen, sessions, calls}:
//   seen      runId -> {hook: {has_user, user}}: what each middleware hook saw as ctx.event.user
//   sessions  tag -> ctx.sessions of the run that recorded it (null when the SDK set none)
//   calls     runId -> [{step_id, die, status, ops}]: every call request of the run, its
//             ctx.disable_immediate_execution, its answer's status and opcodes ("<op>:<step name>")
//
// POST /send sends the body (an event or a list) with the SDK's own client (inngest.send).
//
// Configured only through the SDK's environment variables, like server.js.

import express from "express";
import { Inngest, Middleware, experiment } from "inngest";
import { metadataMiddleware, scoreMiddleware } from "inngest/experimental";
import { serve } from "inngest/express";

const APP_ID = process.env.JS_APP_ID || "js-wire";
const PORT = Number(process.env.PORT || 3000);

const inngest = new Inngest({ id: APP_ID, middleware: [metadataMiddleware(), scoreMiddleware()] });

const SEEN = {};
const SESSIONS = {};
const CALLS = {};

function note(ctx, hook) {
  const event = ctx?.event;
  if (!event || !ctx.runId) return;
  (SEEN[ctx.runId] ??= {})[hook] = { has_user: "user" in event, user: event.user ?? null };
}

// Every hook that is handed the run's context records what it saw as `event.user`.
class UserProbe extends Middleware.BaseMiddleware {
  id = "wire:user-probe";

  transformFunctionInput(arg) {
    note(arg.ctx, "transformFunctionInput");
    return arg;
  }

  onMemoizationEnd({ ctx }) {
    note(ctx, "onMemoizationEnd");
  }

  onRunStart({ ctx }) {
    note(ctx, "onRunStart");
  }

  onStepStart({ ctx }) {
    note(ctx, "onStepStart");
  }

  onStepComplete({ ctx }) {
    note(ctx, "onStepComplete");
  }

  onRunComplete({ ctx }) {
    note(ctx, "onRunComplete");
  }
}

const userProbe = inngest.createFunction(
  { id: "user-probe", triggers: [{ event: "wire/user" }], middleware: [UserProbe] },
  async ({ event, step }) => {
    await step.run("a", () => "A");
    return { has_user: "user" in event, user: event.user ?? null };
  },
);

// Sessions.

const sessionsEcho = inngest.createFunction(
  { id: "sessions-echo", triggers: [{ event: "wire/sessions" }] },
  async ({ event, sessions }) => {
    SESSIONS[event.data?.tag ?? "echo"] = sessions ?? null;
    return { sessions: sessions ?? null, meta: event.meta ?? null };
  },
);

const sessionsBatch = inngest.createFunction(
  {
    id: "sessions-batch",
    triggers: [{ event: "wire/sessions.batch" }],
    batchEvents: { maxSize: 2, timeout: "5s", key: "event.data.batch" },
  },
  async ({ events, sessions, step }) => {
    const tag = events[0]?.data?.batch ?? "batch";
    SESSIONS[tag] = sessions ?? null;
    // Children sent from a batch inherit the batch's sessions (the intersection).
    await step.sendEvent("child", { name: "wire/sessions.child", data: { tag: `${tag}:child` } });
    return { sessions: sessions ?? null, count: events.length };
  },
);

const sessionsChild = inngest.createFunction(
  { id: "sessions-child", triggers: [{ event: "wire/sessions.child" }] },
  async ({ event, sessions }) => {
    SESSIONS[event.data?.tag ?? "child"] = sessions ?? null;
    return { sessions: sessions ?? null };
  },
);

// step.sendEvent and step.invoke stamp `meta.propagated_sessions` from ctx.sessions;
// event.data.override, when given, is a manual `meta.sessions` layer on both (manual wins per key,
// null cuts an inherited key, a whole-field null clears them).
const sessionsParent = inngest.createFunction(
  { id: "sessions-parent", triggers: [{ event: "wire/sessions.parent" }] },
  async ({ event, sessions, step }) => {
    const tag = event.data?.tag ?? "parent";
    SESSIONS[tag] = sessions ?? null;
    const manual = "override" in (event.data ?? {}) ? { meta: { sessions: event.data.override } } : {};
    await step.sendEvent("send-child", { name: "wire/sessions.child", data: { tag: `${tag}:sent` }, ...manual });
    const invoked = await step.invoke("invoke-child", {
      function: sessionsChild,
      data: { tag: `${tag}:invoked` },
      ...manual,
    });
    return { parent: sessions ?? null, invoked: invoked.sessions };
  },
);

// Checkpointing: two sequential steps, two parallel steps, three more sequential steps (the JS
// SDK's own scenario for "resumes checkpointing after parallelism").
const parallelCheckpoint = inngest.createFunction(
  { id: "parallel-checkpoint", triggers: [{ event: "wire/parallel" }], retries: 0 },
  async ({ step }) => {
    await step.run("seq-1", () => "seq-1");
    await step.run("seq-2", () => "seq-2");
    await Promise.all([step.run("par-1", () => "par-1"), step.run("par-2", () => "par-2")]);
    await step.run("after-1", () => "after-1");
    await step.run("after-2", () => "after-2");
    await step.run("after-3", () => "after-3");
    return "done";
  },
);

// Metadata: step.metadata (an op's metadata, run scope), inngest.metadata inside a step (step
// scope, on the op), inngest.metadata outside a step and aimed at another step (the REST API),
// step.score (inngest.score) and group.experiment (inngest.experiment on the selection step).
const metadataFn = inngest.createFunction(
  { id: "metadata", triggers: [{ event: "wire/metadata" }] },
  async ({ event, step, group }) => {
    await step.metadata("md").set({ source: "step.metadata", n: 1 }, "md");
    await step.run("work", async () => {
      await inngest.metadata.set({ inside: true, at: "work" });
      return 1;
    });
    await inngest.metadata.set({ outside: true });
    await step.run("aim", async () => {
      await inngest.metadata.step("work").set({ aimed: "from another step" }, "aimed");
      return 2;
    });
    await step.score("score", { name: "accuracy", value: 0.75 });
    const picked = await group.experiment("exp", {
      variants: {
        control: () => step.run("control-variant", () => "control"),
        fresh: () => step.run("fresh-variant", () => "fresh"),
      },
      select: experiment.fixed(event.data?.variant ?? "fresh"),
    });
    return { variant: picked.variant, result: picked.result };
  },
);

// Metadata over Inngest's 64 KB per update, on the step's own op (event.data.via "op") or through
// the REST API (aimed at another step, "api"): the step fails with the reason, which the
// function catches and returns.
const metadataTooBig = inngest.createFunction(
  { id: "metadata-too-big", triggers: [{ event: "wire/metadata.big" }], retries: 0 },
  async ({ event, step }) => {
    await step.run("first", () => 1);
    try {
      await step.run("too-big", async () => {
        const big = { blob: "x".repeat(70 * 1024) };
        if (event.data?.via === "api") await inngest.metadata.step("first").set(big, "big");
        else await inngest.metadata.set(big, "big");
        return "stored";
      });
      return { failed: false };
    } catch (err) {
      return { failed: true, name: err?.name ?? null, message: String(err?.message ?? err) };
    }
  },
);

const app = express();
app.use(express.json({ limit: "10mb" }));

app.get("/ledger", (_req, res) => {
  res.json({ seen: SEEN, sessions: SESSIONS, calls: CALLS });
});

app.post("/send", async (req, res) => {
  try {
    res.json(await inngest.send(req.body));
  } catch (err) {
    res.status(500).json({ error: String(err?.message ?? err) });
  }
});

// Record every call request (its ctx.disable_immediate_execution) and the opcodes of its answer.
app.use("/api/inngest", (req, res, next) => {
  const runId = req.method === "POST" ? req.body?.ctx?.run_id : undefined;
  if (!runId) return next();
  const call = { step_id: req.query.stepId ?? null, die: req.body?.ctx?.disable_immediate_execution ?? null };
  (CALLS[runId] ??= []).push(call);
  const chunks = [];
  const write = res.write.bind(res);
  const end = res.end.bind(res);
  res.write = (chunk, ...rest) => {
    if (chunk) chunks.push(Buffer.from(chunk));
    return write(chunk, ...rest);
  };
  res.end = (chunk, ...rest) => {
    if (chunk && typeof chunk !== "function") chunks.push(Buffer.from(chunk));
    call.status = res.statusCode;
    try {
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      const ops = res.statusCode === 206 ? (Array.isArray(body) ? body : [body]) : [];
      call.ops = ops.map((op) => `${op.op}:${op.displayName ?? op.name ?? ""}`);
    } catch {
      call.ops = [];
    }
    return end(chunk, ...rest);
  };
  next();
});

app.use(
  "/api/inngest",
  serve({
    client: inngest,
    functions: [
      userProbe, sessionsEcho, sessionsBatch, sessionsChild, sessionsParent, parallelCheckpoint, metadataFn,
      metadataTooBig,
    ],
  }),
);

const listener = app.listen(PORT, "127.0.0.1", () => {
  console.log(`js-wire app ${APP_ID} listening on http://127.0.0.1:${PORT}`);
});

process.on("SIGTERM", () => {
  listener.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
