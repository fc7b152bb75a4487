"""GraphQL at /v0/gql over the real app and a real database, without an SDK: introspection, the
answers to requests that cannot run (GraphQL errors with a 4xx, never a 500), the depth and cost
limits, errors while resolving, and authentication in production mode as REST has it.
(Queries over real runs of the official SDKs: tests/compat/test_graphql.py.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
from graphql import get_introspection_query

from api.gql import limits
from tests.api.conftest import BEARER, Api, ApiFactory

INTROSPECTION = get_introspection_query(descriptions=True)
MISSING = "01M99DR6PC6CMQ52SWQTRG8R3P"
OUTPUT_QUERY = "query O($id: String!) { runTraceSpanOutputByID(outputID: $id) { data } }"


async def post(api: Api, query: str, variables: dict[str, Any] | None = None, **headers: str) -> Any:
    return await api.client.post("/v0/gql", json={"query": query, "variables": variables}, headers=headers)


def error_messages(resp: Any) -> list[str]:
    return [e["message"] for e in resp.json()["errors"]]


async def test_introspection_answers_over_post_and_get(shared_api: Api) -> None:
    resp = await post(shared_api, INTROSPECTION)
    assert resp.status_code == 200, resp.text
    schema = resp.json()["data"]["__schema"]
    types = {t["name"]: t for t in schema["types"]}
    assert schema["queryType"]["name"] == "Query" and schema["mutationType"]["name"] == "Mutation"
    query_fields = {f["name"] for f in types["Query"]["fields"]}
    assert {"run", "runs", "runTrigger", "runTraceSpanOutputByID", "runTrace", "event", "events",
            "functionRun", "apps", "functions"} <= query_fields
    assert {f["name"] for f in types["RunTraceSpan"]["fields"]} >= {
        "name", "status", "outputID", "childrenSpans", "stepOp", "stepInfo", "attempts", "queuedAt"}
    assert {v["name"] for v in types["FunctionRunStatus"]["enumValues"]} == {
        "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "QUEUED"}

    step_ops = "{ __type(name: \"StepOp\") { enumValues { name } } }"
    got = await shared_api.client.get("/v0/gql", params={"query": step_ops})
    assert got.status_code == 200
    assert "WAIT_FOR_EVENT" in {v["name"] for v in got.json()["data"]["__type"]["enumValues"]}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"query": "{ run(runID: "}, 400, "Syntax Error"),
        ({"query": "{ nope }"}, 400, "Cannot query field 'nope' on type 'Query'"),
        ({"query": "{ run(runID: \"01M99DR6PC6CMQ52SWQTRG8R3P\") }"}, 400, "must have a selection"),
        ({"query": ""}, 400, "send a GraphQL query"),
        ({"variables": {}}, 400, "send a GraphQL query"),
        ({"query": "{ functions { slug } }", "variables": [1]}, 400, "`variables` must be a JSON object"),
        ({"query": "query A { functions { slug } } query B { apps { name } }"}, 400, "say which one"),
        ({"query": "query A { functions { slug } }", "operationName": "C"}, 400, "no operation named 'C'"),
        ({"query": "query Q($id: String!) { run(runID: $id) { id } }"}, 200,
         "Variable '$id' has invalid value"),
        ({"query": "mutation { cancelRun(runID: \"nope\") { id } }"}, 400, "invalid ULID"),
    ],
)
async def test_requests_that_cannot_run_get_graphql_errors(
    shared_api: Api, body: dict[str, Any], status: int, message: str
) -> None:
    before = await shared_api.counts(("runs", "events"))
    resp = await shared_api.client.post("/v0/gql", json=body)

    assert resp.status_code == status, resp.text
    assert any(message in m for m in error_messages(resp)), resp.json()
    assert resp.json().get("data") is None
    assert await shared_api.counts(("runs", "events")) == before


async def test_a_body_that_is_not_json_gets_a_400(shared_api: Api) -> None:
    resp = await shared_api.client.post("/v0/gql", content=b"{not json",
                                        headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "not valid JSON" in error_messages(resp)[0]
    resp = await shared_api.client.post("/v0/gql", json=["a list"])
    assert resp.status_code == 400 and "must be a JSON object" in error_messages(resp)[0]


async def test_a_mutation_over_get_is_refused(shared_api: Api) -> None:
    resp = await shared_api.client.get(
        "/v0/gql", params={"query": "mutation { rerun(runID: \"01M99DR6PC6CMQ52SWQTRG8R3P\") }"})
    assert resp.status_code == 405 and "must be sent with POST" in error_messages(resp)[0]


async def test_errors_while_resolving_are_graphql_errors_not_500s(shared_api: Api) -> None:
    missing = "01M99DR6PC6CMQ52SWQTRG8R3P"
    query = "query R($id: String!) { run(runID: $id) { id } runTrigger(runID: $id) { IDs } }"
    resp = await post(shared_api, query, {"id": missing})
    assert resp.status_code == 200
    body = resp.json()
    assert body["data"] is None  # runTrigger is non-null: its error nulls the whole answer, as in Inngest
    assert f"run {missing} not found" in error_messages(resp)
    assert body["errors"][0]["extensions"]["code"] == 404

    resp = await post(shared_api, "{ run(runID: \"not-a-ulid\") { id } }")
    assert resp.status_code == 200 and resp.json()["data"] == {"run": None}
    assert "error parsing runID" in error_messages(resp)[0]

    for garbage in ("", "!!!", "eyJ4IjoxfQ", "e30"):
        resp = await post(shared_api, OUTPUT_QUERY, {"id": garbage})
        assert resp.status_code == 200 and "invalid output id" in error_messages(resp)[0], garbage

    resp = await post(shared_api, "{ event(query: {eventId: \"01M99DR6PC6CMQ52SWQTRG8R3P\"}) { id } }")
    assert resp.status_code == 200 and resp.json() == {"data": {"event": None}}

    resp = await post(shared_api, "{ runs(first: 5, orderBy: [], filter: {from: \"yesterday\"}) {"
                                  " totalCount } }")
    assert resp.status_code == 400 and "Time must be an RFC 3339 string" in error_messages(resp)[0]
    resp = await post(shared_api, "{ runs(first: 5, orderBy: [], filter: {from: \"2024-01-01T00:00:00Z\","
                                  " query: \"event.name == 'x'\"}) { totalCount } }")
    assert "filter.query" in error_messages(resp)[0]


async def test_a_query_too_deep_is_refused(shared_api: Api) -> None:
    nested = "name"
    for _ in range(limits.MAX_DEPTH):
        nested = f"name parentSpan {{ {nested} }}"
    resp = await post(shared_api, f"{{ runTrace(runID: \"01M99DR6PC6CMQ52SWQTRG8R3P\") {{ {nested} }} }}")

    assert resp.status_code == 400
    [error] = resp.json()["errors"]
    assert error["extensions"] == {"code": "QUERY_TOO_DEEP", "depth": limits.MAX_DEPTH + 2,
                                   "limit": limits.MAX_DEPTH}


async def test_a_query_too_costly_is_refused(shared_api: Api) -> None:
    query = """query($n: Int!) { runs(first: $n, orderBy: [], filter: {from: "2024-01-01T00:00:00Z"}) {
      edges { node { id trace { childrenSpans { name childrenSpans { name } } } } } } }"""
    resp = await post(shared_api, query, {"n": 400})
    assert resp.status_code == 400
    [error] = resp.json()["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COSTLY" and error["extensions"]["cost"] > limits.MAX_COST

    resp = await post(shared_api, query, {"n": 10})  # the same shape on a small page runs
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"data": {"runs": {"edges": []}}}

    aliases = " ".join(f"t{i}: runTrace(runID: \"{MISSING}\") {{ name }}" for i in range(500))
    resp = await post(shared_api, f"{{ {aliases} }}")
    assert resp.status_code == 400 and resp.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"


async def test_a_huge_query_text_is_refused_before_it_is_parsed(shared_api: Api) -> None:
    resp = await post(shared_api, "{ " + "functions { slug } " * 5000 + "}")
    assert resp.status_code == 400 and "tokens" in error_messages(resp)[0]


def test_the_standard_introspection_query_fits_the_limits() -> None:
    from graphql import parse

    for depth in (7, 9):
        document = parse(get_introspection_query(type_depth=depth) if depth != 9 else INTROSPECTION)
        operation = document.definitions[0]
        fragments = {d.name.value: d for d in document.definitions[1:]}  # type: ignore[attr-defined]
        assert limits.check(operation, fragments) == []  # type: ignore[arg-type]


async def test_production_mode_asks_for_the_rest_api_s_credentials(make_api: ApiFactory) -> None:
    api = await make_api(mode="serve", signing_key="signkey-prod-" + "0123456789abcdef" * 4,
                         event_keys=("k",), api_tokens=("an-api-token-of-length-32-chars!",),
                         allow_loopback=True)
    for request in (post(api, "{ functions { slug } }"),
                    api.client.get("/v0/gql", params={"query": "{ functions { slug } }"}),
                    post(api, INTROSPECTION, authorization="Bearer wrong")):
        resp = await request
        assert resp.status_code == 401, resp.text
        assert "Authorization" in resp.json()["error"]

    assert (await post(api, "{ functions { slug } }", **BEARER)).json() == {"data": {"functions": []}}
    token = {"authorization": "Bearer an-api-token-of-length-32-chars!"}
    resp = await post(api, INTROSPECTION, **token)
    assert resp.status_code == 200 and resp.json()["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_the_rest_trace_of_a_missing_run_is_a_404(shared_api: Api) -> None:
    resp = await shared_api.client.get("/v1/runs/01M99DR6PC6CMQ52SWQTRG8R3P/trace")
    assert resp.status_code == 404 and resp.json() == {
        "error": "run 01M99DR6PC6CMQ52SWQTRG8R3P not found", "status": 404}
    resp = await shared_api.client.get("/v1/runs/01M99DR6PC6CMQ52SWQTRG8R3P/outputs/garbage")
    assert resp.status_code == 400 and "invalid output id" in resp.json()["error"]
    assert json.loads((await shared_api.client.get("/v1/runs/x/outputs/eyJyIjoieSJ9")).text)["status"] == 404
