// The JS twin of tests/compat/apps/py_hooks_app.py, written with the official JS SDK (`inngest`
// 4.x): a function triggered by the event a Stripe webhook's transform makes, and one that records
// when its first step ran (a future `ts`). Configured only through the SDK's environment variables.

import express from "express";
import { Inngest } from "inngest";
import { serve } from "inngest/express";

const APP_ID = process.env.JS_APP_ID || "js-hooks";
const PORT = Number(process.env.PORT || 3000);
const inngest = new Inngest({ id: APP_ID });
const STARTS = {};

const onCharge = inngest.createFunction(
  { id: "on-charge", triggers: [{ event: "stripe/charge.succeeded" }] },
  async ({ event, step }) =>
    step.run("record", () => `${event.data.amount} ${event.data.currency} from ${event.data.customer}`),
);

const later = inngest.createFunction(
  { id: "later", triggers: [{ event: "hooks-js/later" }] },
  async ({ event, step, runId }) => {
    const started = await step.run("first", () => {
      STARTS[runId] ??= Date.now() / 1000;
      return STARTS[runId];
    });
    return { started, ts: event.ts };
  },
);

const app = express();
app.use(express.json({ limit: "10mb" }));
app.use("/api/inngest", serve({ client: inngest, functions: [onCharge, later] }));
app.get("/ledger", (_req, res) => res.json({ starts: STARTS }));
const listener = app.listen(PORT, "127.0.0.1", () => {
  console.log(`js-hooks app ${APP_ID} listening on http://127.0.0.1:${PORT}`);
});
process.on("SIGTERM", () => {
  listener.close(() => process.exit(0));
});
