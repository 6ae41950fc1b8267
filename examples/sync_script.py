"""The user manual's synchronous usage, unchanged except for the import line.

Code written for the synchronous ``hiveloop`` 0.2.0 SDK keeps working::

    import hiveloop_async as hiveloop      # was: import hiveloop

``hiveloop.init(...)`` sends from a private event loop in a daemon thread, so plain
synchronous code (scripts, Django views, Celery workers) needs no asyncio at all, and
``hiveloop.shutdown()`` delivers what is queued before the script exits, bounded by its
timeout.

Run it against a local server::

    hiveloop-async serve                  # in another terminal
    python -m examples.sync_script        # or: --endpoint http://127.0.0.1:8766
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from typing import Any

import hiveloop_async as hiveloop  # the only line that differs from a hiveloop 0.2.0 script

DEFAULT_ENDPOINT = "http://127.0.0.1:8766"
DEFAULT_API_KEY = "hb_local_dev"


# -- the application's own code (stand-ins for a CRM client and an LLM) ------------------------


def crm_lookup(email: str) -> dict[str, Any] | None:
    """Find a contact in the CRM (pretend: takes 30 ms)."""
    time.sleep(0.03)
    return {"email": email, "company": "Acme Corp", "employees": 420}


def company_lookup(company: str) -> dict[str, Any]:
    """Enrich a company from a data provider (pretend: takes 20 ms)."""
    time.sleep(0.02)
    return {"company": company, "industry": "manufacturing", "funding": "Series B"}


def model_predict(contact: dict[str, Any], company: dict[str, Any]) -> int:
    """Score the lead (pretend: takes 40 ms)."""
    time.sleep(0.04)
    employees: int = contact["employees"]
    return 70 + employees // 100 + (5 if company["funding"] else 0)


def send_email(to: str, body: str) -> str:
    """Send an email (pretend: takes 25 ms)."""
    time.sleep(0.025)
    return f"queued:{to}"


def main(endpoint: str, api_key: str = DEFAULT_API_KEY, *, run_id: str | None = None) -> str:
    """Qualify one lead with the synchronous API; return the task id."""
    run_id = run_id or uuid.uuid4().hex[:6]
    hb = hiveloop.init(api_key=api_key, endpoint=endpoint, environment="development")
    agent = hb.agent("lead-qualifier-sync", type="sales", version="1.0.0")

    # @agent.track: the action name is known when the function is defined (manual §9).
    @agent.track("score_lead")
    def score_lead(email: str) -> int:
        # Blocks opened inside a tracked function become its children (manual §8.1).
        with agent.track_context("crm_search") as ctx:
            contact = crm_lookup(email)
            ctx.set_payload({"found": contact is not None})
        assert contact is not None
        with agent.track_context("enrich_company") as ctx:
            company = company_lookup(contact["company"])
            ctx.set_payload({"result_preview": str(company)[:200]})
        with agent.track_context("llm_inference") as ctx:
            score = model_predict(contact, company)
            ctx.set_payload({"score": score})
        return score

    task_id = f"task-lead-sync-{run_id}"
    with agent.task(task_id, project="sales-pipeline", type="lead_qualification") as task:
        started = time.perf_counter()
        time.sleep(0.05)  # the LLM reasons...
        task.llm_call(
            "plan_outreach",
            model="claude-sonnet",
            tokens_in=512,
            tokens_out=128,
            cost=0.00346,
            duration_ms=round((time.perf_counter() - started) * 1000),
        )
        score = score_lead("jane@acme.example")
        if score > 50:
            # track_context: the name could just as well come from an LLM at runtime.
            with agent.track_context("send_email") as ctx:
                receipt = send_email("jane@acme.example", f"Your score is {score}")
                ctx.set_payload({"args": {"to": "jane@acme.example"}, "result_preview": receipt})
        task.set_payload({"score": score})

    # Deliver everything before the script ends; returns after 5 s at most.
    result = hiveloop.shutdown(timeout=5.0)
    print(f"sync_script: task {task_id}: {result}")
    return task_id


def cli(argv: list[str] | None = None) -> int:
    """Parse the command line and run the example."""
    parser = argparse.ArgumentParser(description="hiveloop's synchronous API, via hiveloop_async")
    parser.add_argument(
        "--endpoint", default=os.environ.get("HIVELOOP_ENDPOINT") or DEFAULT_ENDPOINT
    )
    args = parser.parse_args(argv)
    main(args.endpoint, os.environ.get("HIVELOOP_API_KEY") or DEFAULT_API_KEY)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
