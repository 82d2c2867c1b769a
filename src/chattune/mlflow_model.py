"""Registered versions as MLflow models.

``mlflow.pyfunc.load_model("models:/NAME/VERSION")`` answers chat requests with the serving engine's own generation
code, so greedy answers are the same text as the endpoint's.

A LoRA version trained with ``merge_lora_weights: true`` (Azure's default) is the base with the adapter merged into
its weights, copied into the MLflow artifact store as a standalone model (artifact ``model``): it loads anywhere
chattune is installed, without the workspace's base model. With ``merge_lora_weights: false`` the adapter alone
(with its tokenizer and the chat template used in training) is copied, and the base is referenced by path in
``model_config`` (``base_model_path``, overridable at load time). A full fine-tune's weights are referenced the same
way (``model_path``), as large weights are nowhere else copied in chattune.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pydantic
from mlflow.pyfunc import PythonModel


class Message(pydantic.BaseModel):
    """One message of a chat request."""

    role: str
    content: str


class ChatRequest(pydantic.BaseModel):
    """A chat request to the pyfunc model: the conversation and, optionally, a token budget."""

    messages: list[Message]
    max_tokens: int | None = None


class AnswerMessage(pydantic.BaseModel):
    """The assistant message of an answer."""

    role: str = "assistant"
    content: str


class Choice(pydantic.BaseModel):
    """One choice of an answer."""

    index: int
    finish_reason: str
    message: AnswerMessage


class Usage(pydantic.BaseModel):
    """Token counts of an answer."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatResponse(pydantic.BaseModel):
    """The pyfunc model's answer, shaped like an OpenAI chat completion."""

    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class ChattuneChatModel(PythonModel):  # type: ignore[misc]
    """Greedy chat completions over a merged model, a base model plus LoRA adapter, or a full fine-tune."""

    def __getstate__(self) -> dict[str, Any]:
        # Never pickle loaded weights into python_model.pkl.
        return {k: v for k, v in self.__dict__.items() if k != "generator"}

    def load_context(self, context: Any) -> None:
        """Load the model from the artifacts: a merged model, a base plus adapter, or a full fine-tune."""
        from chattune.inference import ChatGenerator, load_model, load_tokenizer

        config = context.model_config
        if "model" in context.artifacts:  # merged LoRA: a standalone model
            model = load_model(context.artifacts["model"])
            tokenizer = load_tokenizer(context.artifacts["model"])
        elif "adapter" in context.artifacts:
            adapter = context.artifacts["adapter"]
            model = load_model(config["base_model_path"], adapter)
            tokenizer = load_tokenizer(adapter)
        else:
            model = load_model(config["model_path"])
            tokenizer = load_tokenizer(config["model_path"])
        self.model_name = str(config.get("model_name", "chattune"))
        self.max_new_tokens = int(config.get("max_new_tokens", 256))
        self.generator = ChatGenerator(model, tokenizer)

    def predict(  # type: ignore[override]  # MLflow 3 reads the signature from these type hints
        self, model_input: list[ChatRequest], params: dict[str, Any] | None = None
    ) -> list[ChatResponse]:
        """Answer each chat request greedily."""
        from chattune.inference import GenerationParams

        answers = []
        for request in model_input:
            conversation = [m.model_dump() for m in request.messages]
            gen = self.generator.generate(
                [conversation], GenerationParams(max_new_tokens=request.max_tokens or self.max_new_tokens)
            )[0]
            answers.append(
                ChatResponse(
                    id=f"chatcmpl-{uuid.uuid4().hex[:24]}",
                    created=int(time.time()),
                    model=self.model_name,
                    choices=[Choice(index=0, finish_reason=gen.finish_reason, message=AnswerMessage(content=gen.text))],
                    usage=Usage(
                        prompt_tokens=gen.prompt_tokens,
                        completion_tokens=gen.completion_tokens,
                        total_tokens=gen.prompt_tokens + gen.completion_tokens,
                    ),
                )
            )
        return answers
