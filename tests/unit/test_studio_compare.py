"""The studio's compare page: two jobs' loss curves from their metrics events, the parameters that differ (with their
sources), and both tuned models' metrics beside the base."""

from __future__ import annotations

import json
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from chattune.schemas import JobPublic
from chattune.studio import compare


def _job(job_id: str, lr: float, losses: list[float], tuned: dict[str, float]) -> JobPublic:
    events: list[dict[str, Any]] = [
        {"id": f"{job_id}-{i}", "created_at": 0, "level": "info", "message": "", "type": "metrics", "data": d}
        for i, d in enumerate(
            [{"step": s + 1, "loss": loss} for s, loss in enumerate(losses)] + [{"step": len(losses), "eval_loss": 1.5}]
        )
    ]
    events.append({"id": f"{job_id}-log", "created_at": 0, "level": "info", "message": "hi", "type": "message"})
    return JobPublic.model_validate(
        {
            "id": job_id,
            "display_name": f"run {job_id}",
            "model": "tiny-test",
            "status": "succeeded",
            "created_at": 0,
            "experiment_name": "e",
            "spec": {},
            "resolved_config": {
                "learning_rate": {"value": lr, "source": "user"},
                "lora_r": {"value": 8, "source": "default"},
            },
            "metrics": {"base": {"exact_match": 0.1}, "tuned": tuned},
            "events": events,
        }
    )


def test_two_jobs_curves_differences_and_metrics() -> None:
    a = _job("ftjob-a", 1e-3, [2.0, 1.0], {"exact_match": 0.5})
    b = _job("ftjob-b", 2e-4, [2.1, 1.7, 1.4], {"exact_match": 0.3, "rouge1": 0.6})
    assert compare.curves(a) == {"loss": [[1, 2.0], [2, 1.0]], "eval_loss": [[2, 1.5]]}
    assert [d["name"] for d in compare.differences(a, b)] == ["learning_rate"]  # lora_r is the same
    rows = {r["name"]: r for r in compare.metric_rows(a, b)}
    assert rows["exact_match"] == {"name": "exact_match", "base": 0.1, "a": 0.5, "b": 0.3}
    assert rows["rouge1"]["a"] is None and rows["rouge1"]["b"] == 0.6

    env = Environment(loader=PackageLoader("chattune.studio", "pages"), autoescape=select_autoescape(["html"]))
    html = env.get_template("jobs_compare.html").render(
        title="t",
        a=a,
        b=b,
        curves={"a": compare.curves(a), "b": compare.curves(b)},
        diffs=compare.differences(a, b),
        metrics=compare.metric_rows(a, b),
    )
    assert 'href="/jobs/ftjob-a"' in html and 'href="/jobs/ftjob-b"' in html
    assert "<td>learning_rate</td><td>0.001 <small>(user)</small></td><td>0.0002 <small>(user)</small></td>" in html
    assert "<td>exact_match</td><td>0.1</td><td>0.5</td><td>0.3</td>" in html
    embedded = html.split("const runs = ", 1)[1].split(";\n", 1)[0]
    assert json.loads(embedded)["b"]["loss"] == [[1, 2.1], [2, 1.7], [3, 1.4]]
