"""From a chat request to its result, over the instance's engine: the service behind the instance's routes.

The routes parse and shape; this maps wire requests to generation settings, runs them on the engine and builds the
wire answers, including OpenAI's stream of ``chat.completion.chunk`` events.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from chattune.errors import UserError
from chattune.inference import Generation, GenerationParams, TokenLogprob
from chattune.serving import sse, structured
from chattune.serving import tools as tool_calls
from chattune.serving.batching import Pending
from chattune.serving.engine import Engine
from chattune.serving.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ChoiceMessage,
    ChunkChoice,
    ChunkDelta,
    JsonSchemaResponseFormat,
    ModelCard,
    ModelList,
    ScoreOutput,
    ScoreRequest,
    TopLogprob,
    Usage,
    error_body,
)
from chattune.serving.protocol import TokenLogprob as WireTokenLogprob

# The answer length when a request sets neither max_tokens nor max_completion_tokens (under the server's cap).
DEFAULT_MAX_TOKENS = 256


def chat_params(req: ChatCompletionRequest) -> GenerationParams:
    """OpenAI's request fields as generation settings: sampling only with a positive temperature.

    Raises:
        UserError: a ``response_format`` schema llguidance cannot read (400 naming it).
    """
    if req.top_logprobs is not None and not req.logprobs:
        raise UserError("top_logprobs needs logprobs: true", param="top_logprobs")
    if req.tool_choice not in (None, "none") and not req.tools:
        raise UserError(f"tool_choice {req.tool_choice!r} needs tools", param="tool_choice")
    not_ids = [token for token in req.logit_bias or {} if not token.isdigit() or not token.isascii()]
    if not_ids:
        raise UserError(f"logit_bias: keys must be token ids, not {not_ids[:3]}", param="logit_bias")
    fmt = req.response_format
    grammar = None
    forced, name = req.forced_tool()
    if forced:
        if fmt is not None and fmt.type != "text":
            raise UserError("response_format cannot be combined with a forced tool call", param="response_format")
        calls = tool_calls.forced_schema(req.tool_dicts() or [], name, parallel=req.parallel_tool_calls is not False)
        grammar = structured.grammar_for("tool_choice", calls)
    elif fmt is not None and fmt.type != "text":
        given = fmt.json_schema.schema_ if isinstance(fmt, JsonSchemaResponseFormat) else None
        grammar = structured.grammar_for(fmt.type, given)
    return GenerationParams(
        max_new_tokens=req.max_completion_tokens or req.max_tokens or DEFAULT_MAX_TOKENS,
        temperature=req.temperature if req.temperature is not None else 1.0,
        top_p=req.top_p if req.top_p is not None else 1.0,
        do_sample=req.temperature is not None and req.temperature > 0,
        stop=req.stop_list(),
        seed=req.seed,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        logit_bias={int(token): bias for token, bias in (req.logit_bias or {}).items()},
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        grammar=grammar,
        budget_param=(
            "max_completion_tokens" if req.max_completion_tokens else "max_tokens" if req.max_tokens else None
        ),
    )


def conversation(req: ChatCompletionRequest) -> list[dict[str, Any]]:
    """The request's messages as the chat template takes them.

    Text parts joined, ``developer`` as ``system``, an assistant's tool calls with their arguments as objects (as
    chat templates render them), tool answers as ``tool`` turns.

    Raises:
        UserError: a content part this server cannot read (an image, audio, a file), or tool call arguments that are
            not a JSON object: 400 naming it.
    """
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(req.messages):
        content = message.content
        if isinstance(content, list):
            for j, part in enumerate(content):
                if part.type != "text" or part.text is None:
                    raise UserError(
                        f"messages[{i}].content[{j}]: a {part.type!r} part; this model reads text parts only",
                        remedy="Send the content as a string or as parts of type 'text'.",
                        param=f"messages[{i}].content[{j}].type",
                    )
            content = "".join(part.text or "" for part in content)
        role = "system" if message.role == "developer" else message.role
        turn: dict[str, Any] = {"role": role, "content": content or ""}
        if message.tool_calls:
            turn["tool_calls"] = []
            for j, c in enumerate(message.tool_calls):
                function = {"name": c.function.name, "arguments": _arguments(c, i, j)}
                turn["tool_calls"].append({"id": c.id, "type": "function", "function": function})
        if message.tool_call_id is not None:
            turn["tool_call_id"] = message.tool_call_id
        turns.append(turn)
    return turns


def _arguments(tool_call: Any, i: int, j: int) -> dict[str, Any]:
    try:
        arguments = json.loads(tool_call.function.arguments)
    except json.JSONDecodeError as exc:
        arguments = exc
    if not isinstance(arguments, dict):
        raise UserError(
            f"messages[{i}].tool_calls[{j}].function.arguments: not a JSON object ({tool_call.function.arguments!r})",
            param=f"messages[{i}].tool_calls[{j}].function.arguments",
        )
    return arguments


@dataclass
class Prepared:
    """A chat request ready for the engine: adapter, conversation, settings, tools and how calls are read back."""

    adapter: str | None
    turns: list[dict[str, Any]]
    params: GenerationParams
    tools: list[dict[str, Any]] | None
    calls: str | None  # "forced" (the grammar's JSON array), "parsed" (the model's response parser) or None


class ChatService:
    """Chat requests answered by one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def models(self, first: str | None = None) -> ModelList:
        """The models served: the deployment's own model first, the other adapters, then the base.

        ``first``: the model of a deployment served from this instance, first instead. Adapters have the base as parent.
        """
        engine = self.engine
        cards = [
            ModelCard(id=name, created=engine.created, root=engine.base_name, parent=parent)
            for name, parent in engine.models(first)
        ]
        return ModelList(data=cards)

    async def score(self, req: ScoreRequest, model: str | None = None) -> list[ScoreOutput]:
        """Azure's /score: one answer per conversation, with the deployment's own model.

        ``model``: the model of a deployment served from this instance, instead.
        """
        p = req.input_data.parameters
        params = GenerationParams(
            max_new_tokens=p.max_new_tokens, temperature=p.temperature, top_p=p.top_p, do_sample=p.do_sample
        )
        conversations = [[m.model_dump() for m in conv] for conv in req.input_data.conversations()]
        results = await self.engine.generate(conversations, params, self.engine.resolve(model))
        return [
            ScoreOutput(
                output=r.text, finish_reason=r.finish_reason, usage=Usage.of(r.prompt_tokens, r.completion_tokens)
            )
            for r in results
        ]

    async def _prepared(self, req: ChatCompletionRequest) -> Prepared:
        """The request checked against the model (off the event loop) and ready for the engine."""
        adapter = self.engine.resolve(req.model)
        turns = conversation(req)
        params = chat_params(req)
        tools = req.tool_dicts()
        forced, _ = req.forced_tool()
        calls = None if not tools or req.tool_choice == "none" else "forced" if forced else "parsed"
        kind = "tool_choice" if forced else req.response_format.type if req.response_format else None
        await asyncio.to_thread(self.engine.check, params, kind, turns, tools, calls == "parsed")
        return Prepared(adapter, turns, params, tools, calls)

    def _message(self, result: Generation, p: Prepared) -> tuple[ChoiceMessage, str]:
        """A choice's message and finish reason: its text, or the tool calls read from it (``tool_calls``)."""
        calls = p.calls
        found: list[dict[str, Any]] = []
        content: str | None = result.text
        if calls == "forced":
            found = tool_calls.forced_calls(result.text)
            content = None if found else result.text
        elif calls == "parsed":
            content, found = self.engine.read_tool_calls(result.text, p.turns, p.tools)
        if found:
            return ChoiceMessage(content=content, tool_calls=found), "tool_calls"  # type: ignore[arg-type]
        return ChoiceMessage(content=content if content is not None else ""), result.finish_reason

    async def complete(self, req: ChatCompletionRequest) -> ChatCompletion:
        """A non-streamed chat completion with ``req.n`` choices."""
        p = await self._prepared(req)
        results = await self.engine.generate([p.turns] * req.n, p.params, p.adapter, p.tools)
        choices = []
        for i, r in enumerate(results):
            message, finish = self._message(r, p)
            choices.append(
                Choice(index=i, message=message, finish_reason=finish, logprobs=self._logprobs(r.token_logprobs))
            )
        return ChatCompletion(
            id=_completion_id(),
            created=int(time.time()),
            model=req.model or self.engine.served_name,
            choices=choices,
            usage=Usage.of(results[0].prompt_tokens, sum(r.completion_tokens for r in results)),
        )

    def _logprobs(self, entries: list[TokenLogprob] | None) -> ChoiceLogprobs | None:
        """OpenAI's ``logprobs`` of a choice (or of a stream chunk's tokens); None when the request did not ask."""
        if entries is None:
            return None

        def top(token: int, logprob: float) -> TopLogprob:
            text = self.engine.token_text(token)
            return TopLogprob(token=text, logprob=logprob, bytes=list(text.encode("utf-8")))

        content = [
            WireTokenLogprob(**top(token, logprob).model_dump(), top_logprobs=[top(t, lp) for t, lp in ranked])
            for token, logprob, ranked in entries
        ]
        return ChoiceLogprobs(content=content)

    async def stream(self, req: ChatCompletionRequest) -> AsyncIterator[bytes]:
        """A streamed chat completion as SSE bytes.

        Its generations are submitted here, before the 200 is sent, so that a prompt too long, a field the model
        cannot honour or an unknown model is still a 4xx.
        """
        p = await self._prepared(req)
        pendings = [self.engine.submit(p.turns, p.params, p.adapter, p.tools) for _ in range(req.n)]
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        wants_logprobs = p.params.logprobs is not None
        return self._events(pendings, req.model or self.engine.served_name, include_usage, wants_logprobs, p)

    async def _events(
        self, pendings: list[Pending], model: str, include_usage: bool, wants_logprobs: bool, p: Prepared
    ) -> AsyncIterator[bytes]:
        """OpenAI's stream: a role delta, content deltas, a finish_reason chunk per choice, usage if asked, [DONE].

        With tools, an answer is read whole before it is sent (its tool calls can only be read from all of it): one
        delta with its content or its tool calls, then its finish_reason.
        """
        completion_id, created = _completion_id(), int(time.time())
        calls = p.calls

        def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> bytes:
            fields: dict[str, Any] = {"usage": usage} if include_usage else {}
            return sse.event(
                ChatCompletionChunk(id=completion_id, created=created, model=model, choices=choices, **fields)
            )

        merged: asyncio.Queue[tuple[int, str, Any]] = asyncio.Queue()

        async def pump(index: int, pending: Pending) -> None:
            try:
                async for kind, value in self.engine.stream(pending):
                    await merged.put((index, kind, value))
            except Exception as exc:
                await merged.put((index, "error", exc))

        tasks = [asyncio.create_task(pump(i, p)) for i, p in enumerate(pendings)]
        finished: list[Generation] = []
        try:
            for i in range(len(pendings)):
                yield chunk([ChunkChoice(index=i, delta=ChunkDelta(role="assistant", content=""))])
            while len(finished) < len(pendings):
                index, kind, value = await merged.get()
                if kind == "delta":
                    if calls is None:  # with tools the answer is read whole first
                        text, entries = value
                        logprobs = self._logprobs(entries) if wants_logprobs else None
                        yield chunk([ChunkChoice(index=index, delta=ChunkDelta(content=text), logprobs=logprobs)])
                elif kind == "done":
                    finished.append(value)
                    finish = value.finish_reason
                    if calls is not None:
                        answer, finish = self._message(value, p)
                        made = [{"index": k, **c.model_dump()} for k, c in enumerate(answer.tool_calls or [])]
                        delta = ChunkDelta(content=answer.content, tool_calls=made or None)
                        logprobs = self._logprobs(value.token_logprobs) if wants_logprobs else None
                        yield chunk([ChunkChoice(index=index, delta=delta, logprobs=logprobs)])
                    yield chunk([ChunkChoice(index=index, delta=ChunkDelta(), finish_reason=finish)])
                else:  # after the 200 an error travels as an event, as OpenAI sends it
                    message = getattr(value, "message", None) or f"{type(value).__name__}: {value}"
                    yield sse.event(error_body(message, "server_error", "generation_failed"))
                    return
            if include_usage:
                prompt = finished[0].prompt_tokens if finished else 0
                yield chunk([], Usage.of(prompt, sum(g.completion_tokens for g in finished)))
            yield sse.DONE
        finally:
            for task in tasks:
                task.cancel()
            for pending in pendings:
                pending.cancelled = True


def _completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"
