"""An app written with the official Python SDK (`inngest` 0.5.x), served by FastAPI.

Configured only through the SDK's own environment variables (INNGEST_DEV / INNGEST_BASE_URL /
INNGEST_SIGNING_KEY / INNGEST_EVENT_KEY), exactly as a user would point it at pgqueue. It keeps a
ledger of every step body execution so tests can count side effects from the app's point of view.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import threading
import time
from collections import defaultdict
from typing import Any

import fastapi
import inngest
import inngest.experimental.ai.openai
import inngest.fast_api

APP_ID = os.environ.get("PY_APP_ID", "py-compat")

client = inngest.Inngest(app_id=APP_ID)

_lock = threading.Lock()
# (run_id, step name) -> list of execution timestamps
LEDGER: dict[str, list[float]] = defaultdict(list)
FAILURES: list[dict[str, Any]] = []


def record(run_id: str, step: str) -> int:
    with _lock:
        LEDGER[f"{run_id}:{step}"].append(time.time())
        return len(LEDGER[f"{run_id}:{step}"])


@client.create_function(fn_id="three-steps", trigger=inngest.TriggerEvent(event="compat/three"))
async def three_steps(ctx: inngest.Context) -> dict[str, Any]:
    async def step_a() -> int:
        record(ctx.run_id, "a")
        return 1

    async def step_b() -> int:
        record(ctx.run_id, "b")
        return 2

    async def step_c() -> str:
        record(ctx.run_id, "c")
        return "three"

    a = await ctx.step.run("a", step_a)
    b = await ctx.step.run("b", step_b)
    c = await ctx.step.run("c", step_c)
    delay = float(ctx.event.data.get("delay", 0) or 0)
    if delay:
        await asyncio.sleep(delay)
    return {"a": a, "b": b, "c": c, "echo": ctx.event.data.get("echo")}


@client.create_function(fn_id="parallel", trigger=inngest.TriggerEvent(event="compat/parallel"))
async def parallel(ctx: inngest.Context) -> list[Any]:
    async def left() -> str:
        record(ctx.run_id, "left")
        return "L"

    async def right() -> str:
        record(ctx.run_id, "right")
        return "R"

    results = await ctx.group.parallel(
        (lambda: ctx.step.run("left", left), lambda: ctx.step.run("right", right))
    )
    async def after() -> str:
        record(ctx.run_id, "after")
        return "done"

    tail = await ctx.step.run("after", after)
    return [*results, tail]


@client.create_function(fn_id="sleeper", trigger=inngest.TriggerEvent(event="compat/sleep"))
async def sleeper(ctx: inngest.Context) -> dict[str, float]:
    async def before() -> float:
        record(ctx.run_id, "before")
        return time.time()

    async def after() -> float:
        record(ctx.run_id, "after")
        return time.time()

    t0 = await ctx.step.run("before", before)
    await ctx.step.sleep("nap", datetime.timedelta(seconds=float(ctx.event.data.get("seconds", 1))))
    t1 = await ctx.step.run("after", after)
    return {"slept": t1 - t0}


@client.create_function(fn_id="flaky", trigger=inngest.TriggerEvent(event="compat/flaky"), retries=3)
async def flaky(ctx: inngest.Context) -> str:
    fail_times = int(ctx.event.data.get("fail_times", 2))

    async def unstable() -> str:
        n = record(ctx.run_id, "unstable")
        if n <= fail_times:
            raise RuntimeError(f"failure {n} of {fail_times}")
        return f"ok after {n}"

    return await ctx.step.run("unstable", unstable)


@client.create_function(fn_id="non-retriable", trigger=inngest.TriggerEvent(event="compat/nonretriable"))
async def non_retriable(ctx: inngest.Context) -> str:
    record(ctx.run_id, "body")
    raise inngest.NonRetriableError("this cannot work")


async def _on_failure(ctx: inngest.Context) -> None:
    with _lock:
        FAILURES.append({"run_id": ctx.run_id, "event": ctx.event.name, "data": dict(ctx.event.data)})


@client.create_function(
    fn_id="always-fails",
    trigger=inngest.TriggerEvent(event="compat/fail"),
    retries=1,
    on_failure=_on_failure,
)
async def always_fails(ctx: inngest.Context) -> str:
    async def boom() -> str:
        record(ctx.run_id, "boom")
        raise RuntimeError("boom")

    return await ctx.step.run("boom", boom)


@client.create_function(
    fn_id="pro-only",
    trigger=inngest.TriggerEvent(
        event="compat/plan", expression="event.data.plan == 'pro' && event.data.seats > 2"
    ),
)
async def pro_only(ctx: inngest.Context) -> str:
    record(ctx.run_id, "body")
    return str(ctx.event.data.get("plan"))


@client.create_function(fn_id="wildcard", trigger=inngest.TriggerEvent(event="compat-wild/*"))
async def wildcard(ctx: inngest.Context) -> str:
    return ctx.event.name


@client.create_function(fn_id="durable", trigger=inngest.TriggerEvent(event="compat/durable"), retries=10)
async def durable(ctx: inngest.Context) -> list[str]:
    delay = float(ctx.event.data.get("delay", 0.1))
    outputs = []
    for name in ("one", "two", "three"):

        async def body(name: str = name) -> str:
            record(ctx.run_id, name)
            await asyncio.sleep(delay)
            return f"{name}-{ctx.event.data.get('n')}"

        outputs.append(await ctx.step.run(name, body))
    return outputs


@client.create_function(fn_id="slow-step", trigger=inngest.TriggerEvent(event="compat/slow"))
async def slow_step(ctx: inngest.Context) -> str:
    async def slow() -> str:
        record(ctx.run_id, "slow")
        await asyncio.sleep(float(ctx.event.data.get("seconds", 2)))
        return "slow done"

    first = await ctx.step.run("slow", slow)

    async def after() -> str:
        record(ctx.run_id, "after")
        return "after done"

    return first + " / " + await ctx.step.run("after", after)


@client.create_function(fn_id="big-state", trigger=inngest.TriggerEvent(event="compat/big"))
async def big_state(ctx: inngest.Context) -> list[int]:
    size = int(ctx.event.data.get("size", 2_500_000))
    sizes = []
    for name in ("big1", "big2"):

        async def body(name: str = name) -> str:
            record(ctx.run_id, name)
            return "x" * size

        sizes.append(len(await ctx.step.run(name, body)))

    async def last() -> int:
        record(ctx.run_id, "last")
        return sum(sizes)

    sizes.append(await ctx.step.run("last", last))
    return sizes


@client.create_function(fn_id="huge-int", trigger=inngest.TriggerEvent(event="compat/bigint"))
async def huge_int(ctx: inngest.Context) -> dict[str, Any]:
    async def echo() -> Any:
        return ctx.event.data.get("value")

    first = await ctx.step.run("echo", echo)
    return {"seen_by_step": first, "seen_in_event": ctx.event.data.get("value")}


@client.create_function(fn_id="waiter", trigger=inngest.TriggerEvent(event="compat/wait"))
async def waiter(ctx: inngest.Context) -> Any:
    async def before() -> str:
        record(ctx.run_id, "before")
        return "waiting"

    await ctx.step.run("before", before)
    got = await ctx.step.wait_for_event(
        "approval", event="compat/approved",
        timeout=datetime.timedelta(seconds=float(ctx.event.data.get("timeout", 30))),
        if_exp="async.data.id == event.data.id",
    )
    return None if got is None else {"name": got.name, "data": dict(got.data)}


@client.create_function(
    fn_id="cancellable",
    trigger=inngest.TriggerEvent(event="compat/cancellable"),
    cancel=[inngest.Cancel(event="compat/cancel", if_exp="async.data.id == event.data.id")],
)
async def cancellable(ctx: inngest.Context) -> str:
    async def first() -> str:
        record(ctx.run_id, "first")
        return "first"

    await ctx.step.run("first", first)
    await ctx.step.sleep("nap", datetime.timedelta(seconds=float(ctx.event.data.get("sleep", 3))))

    async def second() -> str:
        record(ctx.run_id, "second")
        return "second"

    return await ctx.step.run("second", second)


@client.create_function(fn_id="child", trigger=inngest.TriggerEvent(event="compat/child-direct"))
async def child(ctx: inngest.Context) -> Any:
    mode = ctx.event.data.get("mode")
    if mode == "fail":
        raise inngest.NonRetriableError("child failed on purpose")
    if mode == "slow":
        await asyncio.sleep(3)
    return {"doubled": int(ctx.event.data.get("n", 0)) * 2, "invoked_by": ctx.event.name}


@client.create_function(fn_id="invoker", trigger=inngest.TriggerEvent(event="compat/invoke"))
async def invoker(ctx: inngest.Context) -> Any:
    try:
        result = await ctx.step.invoke(
            "call-child", function=child,
            data={"n": ctx.event.data.get("n", 1), "mode": ctx.event.data.get("mode")},
            timeout=datetime.timedelta(seconds=float(ctx.event.data.get("timeout", 30))),
        )
    except inngest.StepError as err:
        return {"error": err.name, "message": err.message}
    return {"result": result}


@client.create_function(
    fn_id="idempotent", trigger=inngest.TriggerEvent(event="compat/order"), idempotency="event.data.order_id"
)
async def idempotent(ctx: inngest.Context) -> str:
    async def charge() -> str:
        record(ctx.event.data["order_id"], "charge")
        return "charged"

    return await ctx.step.run("charge", charge)


@client.create_function(
    fn_id="singleton-skip",
    trigger=inngest.TriggerEvent(event="compat/single-skip"),
    singleton=inngest.Singleton(key="event.data.user", mode="skip"),
)
async def singleton_skip(ctx: inngest.Context) -> str:
    async def work() -> str:
        record(str(ctx.event.data["user"]), "single-skip")
        await asyncio.sleep(float(ctx.event.data.get("seconds", 2)))
        return "done"

    return await ctx.step.run("work", work)


@client.create_function(
    fn_id="singleton-cancel",
    trigger=inngest.TriggerEvent(event="compat/single-cancel"),
    singleton=inngest.Singleton(key="event.data.user", mode="cancel"),
)
async def singleton_cancel(ctx: inngest.Context) -> Any:
    async def first() -> str:
        record(ctx.run_id, "first")
        return "first"

    await ctx.step.run("first", first)
    await ctx.step.sleep("nap", datetime.timedelta(seconds=float(ctx.event.data.get("seconds", 3))))
    return ctx.event.data.get("n")


@client.create_function(
    fn_id="finish-timeout",
    trigger=inngest.TriggerEvent(event="compat/finish-timeout"),
    timeouts=inngest.Timeouts(finish=datetime.timedelta(seconds=1)),
)
async def finish_timeout(ctx: inngest.Context) -> str:
    await ctx.step.sleep("long-nap", datetime.timedelta(seconds=10))
    return "never"


@client.create_function(
    fn_id="unstorable", trigger=inngest.TriggerEvent(event="compat/unstorable"), retries=2
)
async def unstorable(ctx: inngest.Context) -> Any:
    """A step whose output PostgreSQL cannot store, as the SDK serialises it (NaN, a lone surrogate)."""

    async def produce() -> Any:
        record(ctx.run_id, "produce")
        kind = ctx.event.data.get("kind")
        return {"nan": float("nan"), "surrogate": "caf\ud83d"}.get(kind, "fine")

    return await ctx.step.run("produce", produce)


@client.create_function(
    fn_id="limited-child", trigger=inngest.TriggerEvent(event="compat/limited-child-direct"),
    concurrency=[inngest.Concurrency(limit=1)],
)
async def limited_child(ctx: inngest.Context) -> Any:
    async def work() -> dict[str, Any]:
        started = time.time()
        record(ctx.run_id, "work")
        await asyncio.sleep(float(ctx.event.data.get("seconds", 0.3)))
        return {"tag": ctx.event.data.get("tag"), "started": started, "ended": time.time()}

    return await ctx.step.run("work", work)


@client.create_function(fn_id="fan-invoker", trigger=inngest.TriggerEvent(event="compat/fan-invoke"))
async def fan_invoker(ctx: inngest.Context) -> Any:
    record(ctx.run_id, "parent")
    result = await ctx.step.invoke(
        "call-limited", function=limited_child, data={"tag": ctx.event.data.get("tag"),
                                                      "seconds": ctx.event.data.get("seconds", 0.3)},
    )
    return {"child": result, "resumed": time.time()}


@client.create_function(fn_id="cross-invoker", trigger=inngest.TriggerEvent(event="compat/py-cross-invoke"))
async def cross_invoker(ctx: inngest.Context) -> Any:
    """Invokes the JS app's `child` (app id js-compat) by id; used when both apps are synced."""
    try:
        result = await ctx.step.invoke_by_id(
            "call-js-child", app_id="js-compat", function_id="child",
            data={"n": ctx.event.data.get("n", 1), "mode": ctx.event.data.get("mode")},
            timeout=datetime.timedelta(seconds=float(ctx.event.data.get("timeout", 30))),
        )
    except inngest.StepError as err:
        return {"error": err.name, "message": err.message}
    return {"result": result}


@client.create_function(fn_id="sender", trigger=inngest.TriggerEvent(event="compat/send"), retries=2)
async def sender(ctx: inngest.Context) -> Any:
    """step.send_event, then a failure on the first attempt: the retry must not send again."""
    tag = ctx.event.data.get("tag")
    ids = await ctx.step.send_event("emit", [inngest.Event(name="compat/three", data={"echo": tag})])
    if ctx.attempt == 0:
        record(ctx.run_id, "fail-once")
        raise RuntimeError("fail after sending, once")
    return {"ids": ids}


@client.create_function(fn_id="sleep-until", trigger=inngest.TriggerEvent(event="compat/sleep-until"))
async def sleep_until(ctx: inngest.Context) -> Any:
    until = datetime.datetime.fromisoformat(ctx.event.data["until"])
    await ctx.step.sleep_until("nap", until)

    async def after() -> float:
        record(ctx.run_id, "after")
        return time.time()

    return {"woke": await ctx.step.run("after", after)}


@client.create_function(
    fn_id="retry-after", trigger=inngest.TriggerEvent(event="compat/retry-after"), retries=2
)
async def retry_after(ctx: inngest.Context) -> Any:
    async def flaky_call() -> str:
        if record(ctx.run_id, "call") == 1:
            raise inngest.RetryAfterError("rate limited upstream", datetime.timedelta(seconds=2))
        return "ok"

    return await ctx.step.run("call", flaky_call)


@client.create_function(fn_id="cron-tz", trigger=inngest.TriggerCron(cron="TZ=Asia/Kolkata 30 9 * * *"))
async def cron_tz(ctx: inngest.Context) -> str:
    return "namaste"


# --- Operations pgqueue performs on the SDK's behalf (tests/compat/test_python_ops.py) ----------------


@client.create_function(fn_id="ai-infer", trigger=inngest.TriggerEvent(event="compat/ai"), retries=2)
async def ai_infer(ctx: inngest.Context) -> dict[str, Any]:
    adapter = inngest.experimental.ai.openai.Adapter(
        auth_key="sk-py-test", base_url=ctx.event.data["base_url"], model="stub-model"
    )
    body: dict[str, Any] = {"messages": [{"role": "user", "content": ctx.event.data["prompt"]}]}
    try:
        return {"answer": await ctx.step.ai.infer("ask", adapter=adapter, body=body)}
    except inngest.StepError as exc:
        return {"error": exc.name, "message": exc.message}


@client.create_function(fn_id="racer", trigger=inngest.TriggerEvent(event="compat/race"))
async def racer(ctx: inngest.Context) -> dict[str, Any]:
    async def slow() -> str:
        record(ctx.run_id, "slow")
        await asyncio.sleep(float(ctx.event.data.get("slow_s", 2)))
        return "slow"

    async def fast() -> str:
        record(ctx.run_id, "fast")
        return "fast"

    results = await ctx.group.parallel(
        (lambda: ctx.step.run("slow", slow), lambda: ctx.step.run("fast", fast)),
        parallel_mode=inngest.ParallelMode.RACE,
    )

    async def after() -> str:
        record(ctx.run_id, "after-race")
        return "after"

    return {"results": list(results), "after": await ctx.step.run("after-race", after)}


@client.create_function(fn_id="waterfall", trigger=inngest.TriggerEvent(event="compat/waterfall"), retries=2)
async def waterfall(ctx: inngest.Context) -> dict[str, Any]:
    """Three steps, a sleep between the first two, and a second step that fails once: what the
    dashboard's trace waterfall draws (tests/dashboard/test_operator.py)."""

    async def load() -> str:
        record(ctx.run_id, "load")
        return str(ctx.event.data.get("user", "anon"))

    async def charge() -> int:
        if record(ctx.run_id, "charge") == 1:
            raise RuntimeError("the payment service timed out")
        return 42

    async def notify() -> str:
        record(ctx.run_id, "notify")
        return "sent"

    user = await ctx.step.run("load", load)
    await ctx.step.sleep("nap", datetime.timedelta(seconds=float(ctx.event.data.get("seconds", 2))))
    amount = await ctx.step.run("charge", charge)
    return {"user": user, "amount": amount, "notified": await ctx.step.run("notify", notify)}


app = fastapi.FastAPI()


@app.get("/ledger")
async def ledger() -> dict[str, Any]:
    with _lock:
        return {"ledger": dict(LEDGER), "failures": list(FAILURES)}


inngest.fast_api.serve(
    app,
    client,
    [three_steps, parallel, sleeper, flaky, non_retriable, always_fails, pro_only, wildcard, durable,
     slow_step, big_state, huge_int, waiter, cancellable, child, invoker,
     idempotent, singleton_skip, singleton_cancel, finish_timeout, unstorable,
     limited_child, fan_invoker, cross_invoker, sender, sleep_until, retry_after, cron_tz,
     ai_infer, racer, waterfall],
    streaming=inngest.Streaming.FORCE if os.environ.get("PY_APP_STREAMING") == "force" else None,
)
