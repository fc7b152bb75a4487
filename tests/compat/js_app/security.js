// An app of the official JS SDK (`inngest` 4.24.0) for the attack tests of issue 22
// (tests/security/test_gateway_requests.py): requests pgqueue makes on the app's behalf.
//
// - `keyed-infer` (event security/infer): step.ai.infer with the SDK's own model adapters
//   (openai, anthropic, gemini), each handing pgqueue its credential the way the provider takes
//   it (Bearer header, x-api-key header, ?key= in the URL).
// - `fetcher` (event security/fetch): step.fetch of one URL or several in parallel, with the
//   caller's headers.
// Both return what their step gave back, or the error it threw, so tests read it from the run's output.

import express from "express";
import { Inngest, anthropic, gemini, openai } from "inngest";
import { serve } from "inngest/express";

const APP_ID = process.env.JS_APP_ID || "js-security";
const PORT = Number(process.env.PORT || 3000);
const inngest = new Inngest({ id: APP_ID });
const ADAPTERS = { openai, anthropic, gemini };

function requestBody(format, prompt) {
  if (format === "gemini") return { contents: [{ role: "user", parts: [{ text: prompt }] }] };
  if (format === "anthropic") return { max_tokens: 16, messages: [{ role: "user", content: prompt }] };
  return { messages: [{ role: "user", content: prompt }] };
}

const keyedInfer = inngest.createFunction(
  { id: "keyed-infer", triggers: [{ event: "security/infer" }], retries: 0 },
  async ({ event, step }) => {
    const { format, base_url: baseUrl, api_key: apiKey, prompt } = event.data;
    try {
      const answer = await step.ai.infer("ask", {
        model: ADAPTERS[format]({ model: "stub-model", baseUrl, apiKey }),
        body: requestBody(format, prompt ?? "hello"),
      });
      return { answer };
    } catch (err) {
      return { error: err?.name ?? null, message: err?.message ?? String(err) };
    }
  },
);

const fetcher = inngest.createFunction(
  { id: "fetcher", triggers: [{ event: "security/fetch" }], retries: 0 },
  async ({ event, step }) => {
    const urls = Array.isArray(event.data.url) ? event.data.url : [event.data.url];
    const results = await Promise.all(
      urls.map(async (url) => {
        try {
          const res = await step.fetch(url, { method: event.data.method ?? "GET", headers: event.data.headers ?? {} });
          return { status: res.status, body: (await res.text()).slice(0, 4000) };
        } catch (err) {
          return { error: err?.name ?? null, message: err?.message ?? String(err) };
        }
      }),
    );
    return { results };
  },
);

const app = express();
app.use(express.json({ limit: "10mb" }));
app.get("/ledger", (_req, res) => res.json({ ledger: {} }));
app.use("/api/inngest", serve({ client: inngest, functions: [keyedInfer, fetcher] }));

const listener = app.listen(PORT, "127.0.0.1", () => {
  console.log(`js-security app ${APP_ID} listening on http://127.0.0.1:${PORT}`);
});

process.on("SIGTERM", () => {
  listener.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
