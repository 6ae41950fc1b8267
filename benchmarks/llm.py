"""Added cost per LLM call of ``contrib.openai.instrument`` against the bare client.

Both clients talk to the same fake OpenAI server on 127.0.0.1 (``tests/providers/server.py``),
calls interleaved, plain and streamed (50 chunks); the added cost is the difference of the
medians. Peers (Langfuse's OpenAI wrapper, LangSmith's ``wrap_openai``) are NOT measured yet.

    make bench-llm            # or: python -m benchmarks.llm --calls 300
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import openai

from hiveloop_async import HiveBoard
from hiveloop_async.contrib.openai import instrument
from tests.providers.server import FakeProvider

MSGS: Any = [{"role": "user", "content": "hi"}]


def _plain(c: Any) -> None:
    c.chat.completions.create(model="gpt-4o", messages=MSGS)


def _stream(c: Any) -> None:
    for _ in c.chat.completions.create(
        model="gpt-4o", messages=MSGS, stream=True, extra_body={"chunks": 50}
    ):
        pass


def _time(fn: Callable[[Any], None], client: Any) -> float:
    t0 = time.perf_counter()
    fn(client)
    return time.perf_counter() - t0


def run(calls: int) -> dict[str, dict[str, float]]:
    """Median seconds per call, bare and instrumented, for plain and streamed calls."""
    server = FakeProvider().start()
    hb = HiveBoard(api_key="hb_bench", enabled=False)
    agent = hb.agent("bench-llm")
    bare: Any = openai.OpenAI(api_key="sk-x", base_url=server.openai_url)
    ours: Any = instrument(openai.OpenAI(api_key="sk-x", base_url=server.openai_url))
    out: dict[str, dict[str, float]] = {}
    try:
        with agent.task("bench"):
            for label, fn in (("plain", _plain), ("stream-50", _stream)):
                for c in (bare, ours):
                    for _ in range(20):
                        fn(c)
                b: list[float] = []
                o: list[float] = []
                for _ in range(calls):
                    b.append(_time(fn, bare))
                    o.append(_time(fn, ours))
                out[label] = {"bare": statistics.median(b), "ours": statistics.median(o)}
    finally:
        bare.close()
        ours.close()
        hb.shutdown(timeout=0)
        server.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the medians and the added cost per call."""
    parser = argparse.ArgumentParser(description="added cost per LLM call")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    for label, m in run(args.calls).items():
        added = (m["ours"] - m["bare"]) * 1e6
        print(
            f"{label:10s} bare {m['bare'] * 1e6:8.0f} us  instrumented {m['ours'] * 1e6:8.0f} us"
            f"  added {added:+7.0f} us/call"
        )
    print("peers (Langfuse, LangSmith): not measured")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
