"""The KV cache of recent prompts, so a request that starts as an earlier one did skips that part of its prefill.

Multi-turn chat sends the whole conversation again each turn, and most requests begin with the same system prompt:
the keys and values of that shared beginning were computed already. As vLLM's automatic prefix caching does, the
token ids are cut into blocks and each block is named by a hash chained over all blocks before it, so a lookup walks
the new prompt block by block and stops at the first block never seen: the reuse is a whole number of blocks, and
always leaves at least one token to compute (its logits give the first new token). A hit is checked token by token
against the entry, so a hash collision costs a miss, never a wrong answer.

An entry is one sequence's keys and values, per layer, copied out of the batch (a view would keep the whole batch's
cache alive), keyed by the LoRA adapter that computed them (another adapter's keys differ). Entries are dropped
least recently used first when the cache is over its budget in bytes. The scheduler thread is its only user.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BLOCK = 16  # tokens per block: vLLM's default block size


@dataclass
class _Entry:
    adapter: str | None
    ids: list[int]
    layers: list[tuple[Any, Any]]  # per layer: keys, values of shape (kv heads, len(ids), head dim)
    hashes: list[int]
    members: frozenset[int]
    nbytes: int


@dataclass
class Hit:
    """What a lookup found: the first ``length`` tokens' keys and values, per layer (kv heads, length, head dim)."""

    length: int
    layers: list[tuple[Any, Any]]


class PrefixCache:
    """Keys and values of recent sequences, found again by their leading token ids.

    Args:
        max_bytes: The budget; the least recently used entries go when it is exceeded. 0 turns the cache off.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: collections.OrderedDict[int, _Entry] = collections.OrderedDict()  # least recently used first
        self._by_hash: dict[int, int] = {}  # chained block hash -> the entry that holds that block
        self._serial = 0
        self.nbytes = 0
        self.hits = 0
        self.reused_tokens = 0

    @staticmethod
    def _chain(adapter: str | None, ids: list[int], blocks: int) -> list[int]:
        hashes, h = [], hash(adapter)
        for b in range(blocks):
            h = hash((h, *ids[b * BLOCK : (b + 1) * BLOCK]))
            hashes.append(h)
        return hashes

    def lookup(self, adapter: str | None, ids: list[int]) -> Hit | None:
        """The longest cached beginning of ``ids`` (whole blocks, at least one token left over), or None."""
        if not self.max_bytes:
            return None
        h, found, length = hash(adapter), None, 0
        for b in range((len(ids) - 1) // BLOCK):
            h = hash((h, *ids[b * BLOCK : (b + 1) * BLOCK]))
            key = self._by_hash.get(h)
            if key is None:
                break
            found, length = key, (b + 1) * BLOCK
        if found is None:
            return None
        entry = self._entries[found]
        if entry.adapter != adapter or entry.ids[:length] != ids[:length]:  # a hash collision
            return None
        self._entries.move_to_end(found)
        self.hits += 1
        self.reused_tokens += length
        return Hit(length, [(k[:, :length], v[:, :length]) for k, v in entry.layers])

    def store(self, adapter: str | None, ids: list[int], fetch: Callable[[int], list[tuple[Any, Any]]]) -> None:
        """Keep the keys and values of the whole blocks of ``ids``.

        ``fetch(n)`` gives the first n tokens' (per layer, (kv heads, n, head dim); copies, not views of a batch's
        cache); it is called only when they are kept.

        Nothing is kept for less than a block, or when an entry already holds every block of ``ids``. An entry whose
        blocks all begin ``ids`` (the earlier turn of this conversation) is replaced by this one.
        """
        blocks = len(ids) // BLOCK
        if not self.max_bytes or not blocks:
            return
        hashes = self._chain(adapter, ids, blocks)
        if hashes[-1] in self._by_hash:
            self._entries.move_to_end(self._by_hash[hashes[-1]])
            return
        for h in hashes:  # earlier entries that this one extends are redundant now
            key = self._by_hash.get(h)
            if key is not None and self._entries[key].hashes[-1] == h:
                self._drop(key)
        n = blocks * BLOCK
        kept = fetch(n)
        nbytes = sum(k.nbytes + v.nbytes for k, v in kept)
        if nbytes > self.max_bytes:
            return
        self._serial += 1
        self._entries[self._serial] = _Entry(adapter, list(ids[:n]), kept, hashes, frozenset(hashes), nbytes)
        self.nbytes += nbytes
        for h in hashes:
            self._by_hash[h] = self._serial
        while self.nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: int) -> None:
        entry = self._entries.pop(key)
        self.nbytes -= entry.nbytes
        for h in entry.hashes:
            if self._by_hash.get(h) == key:
                del self._by_hash[h]
                # another entry may hold the same block (a shared system prompt): point the hash at it instead
                for other_key, other in reversed(self._entries.items()):
                    if h in other.members:
                        self._by_hash[h] = other_key
                        break

    def forget(self, adapter: str | None) -> None:
        """Drop the entries that ``adapter`` computed (it is being unloaded)."""
        for key in [key for key, entry in self._entries.items() if entry.adapter == adapter]:
            self._drop(key)

    def __len__(self) -> int:
        return len(self._entries)
