"""What every response schema shares: pydantic models that ignore what they do not declare."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class Schema(BaseModel):
    """Base of the response schemas: the wire shape of the CLI's ``--json``, the SDK and a REST API.

    Built from domain entities with ``model_validate(entity.to_dict())``; a field an entity has and the schema does
    not declare is left out of the answer rather than leaking storage details.
    """

    model_config = ConfigDict(extra="ignore")


class ListPage(Schema, Generic[T]):
    """One page of a list, in OpenAI's list shape.

    Attributes:
        data: The items of this page.
        has_more: Whether another page follows.
        next_cursor: Pass it as ``--after`` (``after=``) to get the next page; None on the last one.
    """

    data: list[T]
    has_more: bool = False
    next_cursor: str | None = None
