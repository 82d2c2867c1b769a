"""The studio's model page for a version tuned further (DPO on a registered SFT version): lineage links to both
versions' jobs and to the parent version, and the preference metrics, base beside tuned."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, select_autoescape

from chattune.schemas import ModelVersionDetail


def test_a_dpo_version_tuned_from_an_sft_version_links_both_jobs() -> None:
    env = Environment(loader=PackageLoader("chattune.studio", "pages"), autoescape=select_autoescape(["html"]))
    mv = ModelVersionDetail(
        id="chat-dpo:1",
        name="chat-dpo",
        version="1",
        created_at=0,
        kind="lora",
        path="/r/chat-dpo/1",
        base_model="chat:3",
        base_model_hash="ab" * 32,
        base_model_path="/m/abab",
        job_id="ftjob-2",
        tags={"task": "chat-completion", "tuning": "dpo"},
        lineage={
            "job_id": "ftjob-2",
            "task": "preference",
            "parent_model": {"model": "chat:3", "job_id": "ftjob-1", "task": "chat_completion", "base_model": "tiny"},
            "datasets": {"train": {"path": "p.jsonl", "format": "preference", "rows": 40, "sha256": "f" * 64}},
            "parameters": {"learning_rate": 0.001},
        },
        metrics={"base": {"preference_accuracy": 0.3}, "tuned": {"preference_accuracy": 1.0, "reward_margin": 3.1}},
    )
    html = env.get_template("model.html").render(mv=mv, title="Model chat-dpo:1")
    assert 'href="/jobs/ftjob-2"' in html and 'href="/jobs/ftjob-1"' in html and 'href="/models/chat:3"' in html
    assert "<td>preference</td>" in html and "tuning=dpo" in html
    assert "<td>reward_margin</td><td>-</td><td>3.1</td>" in html
    assert "<td>preference_accuracy</td><td>0.3</td><td>1</td>" in html
