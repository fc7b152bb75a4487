"""The official Python SDK's integration-test helpers, pointed at pgqueue: the same GraphQL queries,
verbatim, and the same reading of their answers (inngest-py's `test_core` package: `helper.py` and
`gql.py`), so a test here passes exactly when the SDK's own suite would. The one addition is the
bearer token a `pgqueue serve` asks for, sent by every request (the SDK's helper sends none: its dev
server has no keys).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
import inngest

from tests.compat.conftest import Server

# -- the SDK helper's queries, verbatim ----------------------------------------------------------

GET_HISTORY_STEPS = """
        query GetHistory($run_id: String!) {
            run(runID: $run_id) {
                trace {
                    childrenSpans {
                        name
                        outputID
                    }
                }
            }
        }
        """

GET_HISTORY_OUTPUT = """
        query GetHistory($output_id: String!) {
            runTraceSpanOutputByID(outputID: $output_id) {
                data
                error {
                    message
                    name
                    stack
                }
            }
        }
        """

GET_RUN_FROM_EVENT_ID = """
        query GetRunFromEventID($event_id: ID!) {
            event(query: {eventId: $event_id}) {
                functionRuns {
                    id
                }
            }
        }
        """

GET_RUN = """
        query GetRun($run_id: String!) {
            run(runID: $run_id) {
                output
                status
            }
            runTrigger(runID: $run_id) {
                payloads
            }
        }
        """

ENDED = {"CANCELLED", "COMPLETED", "FAILED"}


class GqlError(Exception):
    pass


@dataclass
class Run:
    event: inngest.Event
    id: str
    output: str | None
    status: str


class Client:
    """inngest-py's `test_core.helper._Client`, synchronous, against one pgqueue server."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.endpoint = f"{server.url}/v0/gql"

    def raw(self, query: str, variables: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.post(self.endpoint, json={"query": query, "variables": variables},
                          headers=self.server.headers, timeout=30)

    def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The data of a successful answer; GqlError as the SDK's `gql.Client` reports failures."""
        res = self.raw(query, variables)
        if res.status_code != 200:
            raise GqlError(f"API call failed with status code {res.status_code}: {res.text}")
        body = res.json()
        if not isinstance(body.get("data"), dict):
            raise GqlError(f"failed to parse response: {body}")
        if body.get("errors") is not None:
            raise GqlError(f"GraphQL error: {body['errors'][0].get('message')}")
        return dict(body["data"])

    def get_steps(self, run_id: str) -> list[dict[str, Any]]:
        run = self.query(GET_HISTORY_STEPS, {"run_id": run_id})["run"]
        assert isinstance(run, dict) and isinstance(run["trace"], dict)
        spans = run["trace"]["childrenSpans"]
        assert isinstance(spans, list)
        return spans

    def get_step_output(self, *, run_id: str, step_id: str) -> str:
        output_id = next((s["outputID"] for s in self.get_steps(run_id) if s["name"] == step_id), None)
        if not output_id:
            raise GqlError(f'step "{step_id}" not found in history')
        out = self.query(GET_HISTORY_OUTPUT, {"output_id": output_id})["runTraceSpanOutputByID"]
        assert isinstance(out, dict)
        if out["error"] is None:
            del out["error"]
        if out["data"] is not None:
            out["data"] = json.loads(out["data"])
        return json.dumps(out)

    def get_run_ids_from_event_id(self, event_id: str, *, run_count: int, timeout: float = 10) -> list[str]:
        start = time.time()
        while True:
            try:
                event = self.query(GET_RUN_FROM_EVENT_ID, {"event_id": event_id}).get("event")
            except GqlError:
                event = None
            if isinstance(event, dict):
                runs = event.get("functionRuns") or []
                if len(runs) == run_count:
                    return [r["id"] for r in runs]
            if time.time() - start > timeout:
                raise GqlError("timed out waiting for run status")
            time.sleep(0.2)

    def wait_for_run_status(self, run_id: str, expected: str, *, timeout: float = 30) -> Run:
        start = time.time()
        actual: str | None = None
        while True:
            try:
                data: dict[str, Any] | None = self.query(GET_RUN, {"run_id": run_id})
            except GqlError:
                data = None
            if data is not None:
                run = data["run"]
                assert isinstance(run, dict), data
                actual = run["status"]
                payloads = data["runTrigger"]["payloads"]
                assert isinstance(payloads, list), data
                event = inngest.Event.model_validate_json(payloads[0])
                if actual == expected:
                    return Run(event=event, id=run_id, output=run["output"], status=actual)
                if actual in ENDED:
                    raise GqlError(f"run ended with a different status: {actual}")
            if time.time() - start > timeout:
                raise GqlError(f"timed out waiting for run {run_id} status: actual status is {actual}")
            time.sleep(0.2)
