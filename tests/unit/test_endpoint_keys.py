"""chattune.serving.keys: generation, hashing, constant-time matching over both keys, bearer parsing."""

from __future__ import annotations

import hashlib
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from chattune.serving.keys import KEY_TYPES, bearer, generate_key, hash_key, instance_token, matches


def test_generated_keys_are_long_distinct_and_url_safe() -> None:
    keys = [generate_key() for _ in range(50)]
    assert len(set(keys)) == 50
    for key in keys:
        assert len(key) >= 43  # 32 random bytes, base64url
        assert re.fullmatch(r"[A-Za-z0-9_-]+", key)


def test_hash_key_is_sha256_hex() -> None:
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    key = generate_key()
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", hash_key(key))
    assert hash_key(key) != key


def test_matches_either_key_only() -> None:
    primary, secondary = generate_key(), generate_key()
    hashes = {"primary": hash_key(primary), "secondary": hash_key(secondary)}
    assert KEY_TYPES == ("primary", "secondary")
    assert matches(primary, hashes) is True
    assert matches(secondary, hashes) is True
    assert matches(generate_key(), hashes) is False
    assert matches(primary + "x", hashes) is False
    assert matches(hashes["primary"], hashes) is False  # the stored hash is not a key
    assert matches(None, hashes) is False
    assert matches("", hashes) is False
    assert matches(primary, {}) is False


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc123", "abc123"),
        ("bearer abc123", "abc123"),
        ("BEARER  abc123 ", "abc123"),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic abc123", None),
        ("abc123", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer(header: str | None, expected: str | None) -> None:
    assert bearer(header) == expected


def test_keys_come_from_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    import secrets

    calls: list[int] = []

    def token_urlsafe(nbytes: int) -> str:
        calls.append(nbytes)
        return secrets.token_hex(nbytes)

    monkeypatch.setattr("chattune.serving.keys.secrets.token_urlsafe", token_urlsafe)
    generate_key()
    assert calls == [32]  # 256 bits from the OS's CSPRNG


@pytest.mark.parametrize("which", ["primary", "secondary", "neither"])
def test_matching_compares_every_hash_in_constant_time(monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    # Timing must not tell which key (if any) matched: each stored hash is compared, with hmac.compare_digest,
    # even after a match; the presented key is hashed first, so the comparison never sees it.
    import hmac

    keys = {"primary": generate_key(), "secondary": generate_key()}
    hashes = {t: hash_key(k) for t, k in keys.items()}
    compared: list[tuple[str, str]] = []
    original = hmac.compare_digest

    def compare_digest(a: str, b: str) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr("chattune.serving.keys.hmac.compare_digest", compare_digest)
    presented = keys.get(which, generate_key())
    assert matches(presented, hashes) is (which != "neither")
    assert compared == [(hash_key(presented), hashes["primary"]), (hash_key(presented), hashes["secondary"])]


def test_the_instance_token_is_made_once_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "endpoints" / "ep" / "instance.token"
    with ThreadPoolExecutor(8) as pool:  # gateways racing to make it agree on one token
        tokens = set(pool.map(lambda _: instance_token(path), range(16)))
    assert len(tokens) == 1 and len(tokens.pop()) >= 43
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert instance_token(path) == path.read_text()  # a restarted gateway reads the same one
    assert [p.name for p in path.parent.iterdir()] == ["instance.token"]  # no temporary file left
