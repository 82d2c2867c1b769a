"""The real demo: SmolLM2-135M-Instruct from the PyPI wheel, fine-tuned on CPU. Minutes: behind the slow marker."""

from __future__ import annotations

import pytest

from tests.conftest import parse_json

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_quickstart_smollm2_beats_the_base_model(cli) -> None:
    doc = parse_json(cli("quickstart", "--json", timeout=1800))
    base, tuned = doc["metrics"]["base"], doc["metrics"]["tuned"]
    assert doc["job"]["status"] == "succeeded"
    assert tuned["exact_match"] >= base["exact_match"] + 0.3, (base, tuned)
    assert tuned["test_loss"] < base["test_loss"]
    assert doc["endpoint"]["deleted"] is True
    assert doc["response"][0]["output"]
