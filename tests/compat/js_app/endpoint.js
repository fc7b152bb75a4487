// Durable endpoints (the JS SDK 4.x `inngest.endpoint(handler)`): routes of this app run as durable
// functions inside their own HTTP request, creating their runs with POST /v1/checkpoint and storing
// steps with POST /v1/checkpoint/{runId}/steps. Used by tests/compat/test_js_endpoint.py.
//
// GET /api/hello?name=x     two steps, answers {greeting, n, runId}
// POST /api/flaky           step "b" fails on its first run: the run switches to pgqueue's queue
//                           (the client gets a redirect to the run's output) and completes there
// GET /ledger               {ledger}: "<runId>:<step>" -> times the step's body ran
//
// Configured only through the SDK's environment variables, like server.js.

import http from "node:http";
import { Inngest, step } from "inngest";
import { endpointAdapter, serveEndpoint } from "inngest/node";

const APP_ID = process.env.JS_APP_ID || "js-endpoint";
const PORT = Number(process.env.PORT || 3000);

const inngest = new Inngest({ id: APP_ID, endpointAdapter });

const LEDGER = {};

function record(runId, name) {
  const key = `${runId}:${name}`;
  (LEDGER[key] ??= []).push(Date.now() / 1000);
  return LEDGER[key].length;
}

const tagOf = (req) => new URL(req.url).searchParams.get("tag") || "";

const hello = inngest.endpoint(async (req) => {
  const url = new URL(req.url);
  const name = url.searchParams.get("name") || "world";
  const tag = tagOf(req);
  const greeting = await step.run("greet", () => {
    record(tag, "greet");
    return `hello ${name}`;
  });
  const n = await step.run("count", () => {
    record(tag, "count");
    return greeting.length;
  });
  return { greeting, n };
});

const flaky = inngest.endpoint(async (req) => {
  const tag = tagOf(req);
  const a = await step.run("a", () => {
    record(tag, "a");
    return "A";
  });
  const b = await step.run("b", () => {
    const n = record(tag, "b");
    if (n < 2) throw new Error(`b fails on try ${n}`);
    return `B after ${n}`;
  });
  return { a, b };
});

const routes = { "/api/hello": serveEndpoint(hello), "/api/flaky": serveEndpoint(flaky) };

http
  .createServer((req, res) => {
    const path = new URL(req.url, "http://localhost").pathname;
    if (path === "/ledger") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ ledger: LEDGER }));
      return;
    }
    const route = routes[path];
    if (!route) {
      res.writeHead(404);
      res.end();
      return;
    }
    route(req, res);
  })
  .listen(PORT, "127.0.0.1");
