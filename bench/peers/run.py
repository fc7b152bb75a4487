"""Run one peer benchmark in a child process and return the JSON object it prints.

A child per peer keeps each peer's dependencies, threads and global state (DBOS is a process-wide
singleton) out of the caller, and lets a peer live in another virtualenv (`python=`).

    from bench.peers import run
    result = run.run_peer("pgqueuer", "postgresql://postgres@127.0.0.1:5432/postgres", 10_000, 100)

or from a shell: python bench/peers/run.py --url URL [--peers raw,pgqueuer] [--jobs N] [--samples S]
(prints one JSON object per line, one per peer).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.peers import PEERS

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT_S = 300.0


class PeerError(RuntimeError):
    """A peer's child process failed, timed out or printed no JSON; the message carries its stderr tail."""


def run_peer(
    name: str,
    url: str,
    jobs: int,
    samples: int,
    python: str = sys.executable,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """`python bench/peers/<module>.py --url URL --jobs N --samples S` -> its JSON dict.

    `name` is one of PEERS (raw, pgqueuer, procrastinate, dbos). The child runs from the repository root
    so `bench.peers` imports; a killed or failing child raises PeerError."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")
    script = ROOT / "bench" / "peers" / f"{PEERS[name]}.py"
    args = [python, str(script), "--url", url, "--jobs", str(jobs), "--samples", str(samples)]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    try:
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise PeerError(f"peer {name} did not finish within {timeout:.0f} s: {_tail(exc.stderr)}") from exc
    if done.returncode != 0:
        raise PeerError(f"peer {name} exited with {done.returncode}: {_tail(done.stderr)}")
    # The JSON object is the last line; libraries may print their own lines before it.
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise PeerError(f"peer {name} printed no JSON object: {_tail(done.stdout + done.stderr)}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _tail(text: str | bytes | None, chars: int = 2000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-chars:].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description="run peer benchmarks, one JSON object per line")
    parser.add_argument("--url", required=True)
    parser.add_argument(
        "--peers", default=",".join(PEERS), help="comma-separated subset of " + ",".join(PEERS)
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--python", default=sys.executable, help="interpreter holding the peer packages")
    args = parser.parse_args()
    for name in args.peers.split(","):
        result = run_peer(name.strip(), args.url, args.jobs, args.samples, python=args.python)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
