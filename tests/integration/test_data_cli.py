"""`chattune data`: download against a local hub-layout dataset, import of every format, validate, show."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import parse_json

pytestmark = pytest.mark.integration


def _rows(n: int, tag: str) -> list[dict]:
    return [
        {
            "prompt": f"{tag} question {i}",
            "prompt_id": f"{tag}-{i:04d}",
            "messages": [
                {"role": "user", "content": f"{tag} question {i}"},
                {"role": "assistant", "content": f"{tag} answer {i}"},
            ],
            "score": i,
        }
        for i in range(n)
    ]


def _hub_layout(root: Path) -> Path:
    """A dataset directory as the hub lays out ultrachat_200k: parquet shards per split under data/."""
    (root / "data").mkdir(parents=True)
    for split, n in (("train_sft", 20), ("test_gen", 10)):
        pq.write_table(pa.Table.from_pylist(_rows(n, split)), root / "data" / f"{split}-00000-of-00001.parquet")
    return root


def test_download_takes_the_first_percent_of_every_split(cli, tmp_path: Path) -> None:
    dataset = _hub_layout(tmp_path / "ultrachat_like")
    out = tmp_path / "out"
    doc = parse_json(cli("data", "download", str(dataset), "--percent", "50", "--out", str(out), "--json"))
    assert {k: v["rows"] for k, v in doc["splits"].items()} == {"train_sft": 10, "test_gen": 5}
    rows = [json.loads(line) for line in (out / "train_sft.jsonl").read_text().splitlines()]
    assert rows == _rows(20, "train_sft")[:10]  # the FIRST half, in order, every column kept

    only = parse_json(
        cli(
            "data",
            "download",
            str(dataset),
            "--split",
            "test_gen",
            "--percent",
            "20",
            "--out",
            str(tmp_path / "only"),
            "--json",
        )
    )
    assert list(only["splits"]) == ["test_gen"] and only["splits"]["test_gen"]["rows"] == 2
    bad = cli("data", "download", str(dataset), "--split", "nope", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "train_sft" in bad.stderr


def test_download_offline_fails_fast_and_names_the_way_forward(cli, tmp_path: Path) -> None:
    for env in ({"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}):
        result = cli(
            "data", "download", "HuggingFaceH4/ultrachat_200k", "--out", str(tmp_path / "o"), env=env, timeout=60
        )
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "chattune data demo" in result.stderr and "chattune data import" in result.stderr


def test_import_every_format_to_canonical_jsonl(cli, tmp_path: Path) -> None:
    rows = _rows(3, "x")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (src / "b.json").write_text(json.dumps(rows, indent=2))
    pq.write_table(pa.Table.from_pylist(rows), src / "c.parquet")
    csv_lines = ["prompt,messages,score"] + [
        f'"{r["prompt"]}","{json.dumps(r["messages"]).replace(chr(34), chr(34) * 2)}",{r["score"]}' for r in rows
    ]
    (src / "d.csv").write_text("\r\n".join(csv_lines) + "\r\n")
    out = tmp_path / "out"
    doc = parse_json(
        cli(
            "data",
            "import",
            *(str(src / n) for n in ("a.jsonl", "b.json", "c.parquet", "d.csv")),
            "--out",
            str(out),
            "--json",
        )
    )
    assert [Path(f["path"]).name for f in doc["files"]] == ["a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl"]
    for name in "abc":
        assert [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()] == rows
    from_csv = [json.loads(line) for line in (out / "d.jsonl").read_text().splitlines()]
    assert [r["messages"] for r in from_csv] == [r["messages"] for r in rows]
    assert from_csv[0]["score"] == "0"  # csv has no types: other columns pass through as text

    broken = src / "broken.jsonl"
    broken.write_text('{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}\n')
    result = cli("data", "import", str(broken), "--out", str(out))
    assert result.returncode == 2 and f"{broken}:1" in result.stderr and not (out / "broken.jsonl").exists()


def test_validate_with_a_model_counts_tokens_and_truncation(cli, tmp_path: Path) -> None:
    parse_json(cli("data", "demo", "--out", str(tmp_path), "--rows", "10", "--json"))
    train, test = tmp_path / "train_sft.jsonl", tmp_path / "test_sft.jsonl"
    first = train.read_text().splitlines()[0]
    test.write_text(test.read_text() + first + "\n")  # a training row leaks into test
    doc = parse_json(
        cli("data", "validate", str(train), str(test), "--model", "tiny-test", "--max-seq-length", "60", "--json")
    )
    assert doc["valid"] is True
    stats = doc["files"][0]["stats"]
    assert stats["rows"] == 10 and stats["tokens"]["min"] > 0
    assert stats["truncation"]["max_seq_length"] == 60
    assert stats["truncation"]["rows_over"] == 10 and stats["truncation"]["rows_losing_all_assistant_tokens"] == 10
    leaked = [w for w in doc["files"][1]["warnings"] if w["code"] == "row_in_other_file"]
    assert len(leaked) == 1 and f"{train}:1" in leaked[0]["message"]
    assert cli("data", "validate", str(train), "--max-seq-length", "60").returncode == 2  # needs --model


def test_show_renders_and_reports_the_same_numbers(cli, tmp_path: Path) -> None:
    parse_json(cli("data", "demo", "--out", str(tmp_path), "--rows", "12", "--json"))
    path = tmp_path / "train_sft.jsonl"
    doc = parse_json(cli("data", "show", str(path), "--rows", "2", "--json"))
    assert [r["line"] for r in doc["rows"]] == [1, 2] and doc["stats"]["rows"] == 12
    validated = parse_json(cli("data", "validate", str(path), "--json"))["files"][0]["stats"]
    assert doc["stats"] == validated
    text = cli("data", "show", str(path), "--rows", "1")
    assert text.returncode == 0 and "assistant" in text.stdout and "12 rows" in text.stdout


def test_quickstart_downloads_a_hub_layout_dataset(cli, tmp_path: Path) -> None:
    """The seed's step 4 (download the first P% of ultrachat_200k), against a local dataset in the hub's layout."""
    demo_dir = tmp_path / "demo"
    parse_json(cli("data", "demo", "--out", str(demo_dir), "--rows", "40", "--json"))
    hub = tmp_path / "hub_like"
    (hub / "data").mkdir(parents=True)
    for split in ("train_sft", "test_sft", "train_gen", "test_gen"):
        rows = [json.loads(line) for line in (demo_dir / f"{split}.jsonl").read_text().splitlines()]
        pq.write_table(pa.Table.from_pylist(rows), hub / "data" / f"{split}-00000-of-00001.parquet")
    doc = parse_json(
        cli("quickstart", "--model", "tiny-test", "--dataset", str(hub), "--percent", "50", "--json", timeout=300)
    )
    assert doc["job"]["status"] == "succeeded" and doc["endpoint"]["deleted"] is True
    job = parse_json(cli("jobs", "show", doc["job"]["id"], "--json"))
    files = next(s for s in job["steps"] if s["name"] == "validate")["outputs"]["files"]
    assert files["train"]["rows"] == 20  # the first 50% of 40 rows
