"""The workspace's catalog: the built-in entries and the models the user imported, behind one lookup by name.

Every lookup of a model by name (job creation, the model_import step, compute check, quickstart, the registry's
hints, the SDK) goes through a ``Catalog``. Built-in names come first and need no database; a user entry is read from
the workspace store (``user_models``) only when a name is not built in, so ``compute check --model tiny-test`` still
creates no workspace.
"""

from __future__ import annotations

import builtins
import difflib
from collections.abc import Callable

from chattune.catalog import CatalogEntry, ModelSource, find_entry, list_entries
from chattune.catalog.derived import DerivedFields
from chattune.entities import UserModel
from chattune.errors import NotFoundError
from chattune.store.base import UserModelStore


def user_entry(model: UserModel) -> CatalogEntry:
    """A stored user model as a catalog entry: the sizes, LoRA targets and allow lists are its derived values."""
    derived = DerivedFields.model_validate(model.derived)
    source = ModelSource.model_validate(model.source)
    return CatalogEntry(
        name=model.name,
        display_name=model.name,
        description=f"Imported from {source.label}.",
        version=model.version,
        family=derived.model_type.value,
        parameters=derived.parameters.value,
        hidden_size=derived.hidden_size.value,
        num_hidden_layers=derived.num_hidden_layers.value,
        vocab_size=derived.vocab_size.value,
        hub_id=source.repo_id,
        source=source,
        tags={
            "task": "chat-completion",
            "lora_target_modules": derived.lora_target_modules.value,
            "model_specific_defaults": {},
        },
        origin="user",
        content_hash=model.content_hash,
        path=model.path,
        derived=derived,
    )


class Catalog:
    """The built-in catalog plus the workspace's own entries.

    Args:
        store: Opens the workspace store holding the user's entries (called on first need, so that a built-in name
            opens no database); None: the built-in entries only.
    """

    def __init__(self, store: Callable[[], UserModelStore] | None = None) -> None:
        self._store = store

    def _user_store(self) -> UserModelStore | None:
        return self._store() if self._store is not None else None

    def list(self) -> list[CatalogEntry]:
        """Every entry: the built-in ones, then the user's, oldest first."""
        store = self._user_store()
        users = [user_entry(m) for m in store.list_user_models()] if store is not None else []
        return [*list_entries(), *users]

    def find(self, name: str) -> CatalogEntry | None:
        """The entry ``name`` (a built-in name or display name first, then a user entry), or None."""
        entry = find_entry(name)
        if entry is not None:
            return entry
        store = self._user_store()
        found = store.find_user_model(name) if store is not None else None
        return user_entry(found) if found is not None else None

    def get(self, name: str) -> CatalogEntry:
        """The entry ``name``; on a miss, NotFoundError with the closest name and every valid one.

        Raises:
            NotFoundError: No built-in or imported model has this name.
        """
        entry = self.find(name)
        if entry is not None:
            return entry
        names = self.names()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise NotFoundError(
            f"model {name!r} is not in the catalog.{hint}",
            remedy=f"Use one of: {', '.join(names)} (or a local model directory); import your own with "
            f"`chattune models import NAME --from FOLDER|HUB_ID|FILE.gguf`.",
        )

    def names(self) -> builtins.list[str]:
        """Every entry's name: the built-in ones sorted, then the user's."""
        store = self._user_store()
        users = [m.name for m in store.list_user_models()] if store is not None else []
        return [*sorted(e.name for e in list_entries()), *users]
