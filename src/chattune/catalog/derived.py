"""What a built-in catalog entry writes by hand, derived from an imported model's own files, each value with its source.

``derive(folder)`` reads config.json, the tokenizer and the safetensors headers (no weights are loaded): the chat
template and its training variant, the assistant-only loss mask checked on a sample conversation, the LoRA target
modules, the context length, the parameter count and the sizes the memory estimate uses. A model whose template
cannot be trained on (no template, or assistant turns that cannot be located) is refused here, at import, with the
reason, instead of mid-training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from chattune.errors import UserError
from chattune.templates import MaskCheck

T = TypeVar("T")

ALL_LINEAR = "all-linear"
PEFT = "peft"
# PEFT's table of default LoRA targets per model_type (the name it has in the peft versions chattune supports).
PEFT_MAPPING = "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING"


class Derived(BaseModel, Generic[T]):
    """One derived value and where it came from (a file and key, a library's table, a check).

    The shape of a resolved job config's record of each parameter and its source.
    """

    model_config = ConfigDict(frozen=True)

    value: T
    source: str


class DerivedFields(BaseModel):
    """Everything derived from an imported model at import, each with its source (``models show NAME``).

    Attributes:
        architecture: The transformers class that loads it (config.json's ``architectures``).
        model_type: config.json's ``model_type`` (the entry's family).
        chat_template: The chat template served and trained with: the tokenizer's own, or ``--chat-template``'s.
        training_chat_template: Which variant of it marks the assistant tokens for the loss.
        assistant_mask: The loss mask on a sample conversation, decoded: what training will learn to produce.
        lora_target_modules: The modules LoRA adapts (chattune's default: every linear layer of the architecture).
        peft_lora_target_modules: PEFT's own default for the architecture (None where PEFT's table has none).
        context_length: The longest sequence: config.json's ``max_position_embeddings`` (or the tokenizer's
            ``model_max_length`` when smaller).
        parameters: The number of parameters (safetensors headers, or the architecture built on the meta device).
        hidden_size: config.json's ``hidden_size`` (memory estimate).
        num_hidden_layers: config.json's ``num_hidden_layers`` (memory estimate).
        vocab_size: config.json's ``vocab_size``, the embedding rows (memory estimate).
        finetune_compute_allow_list: The compute sizes it may be fine-tuned on (None: any).
        inference_compute_allow_list: The compute sizes it may be served on (None: any).
    """

    model_config = ConfigDict(frozen=True)

    architecture: Derived[str]
    model_type: Derived[str]
    chat_template: Derived[str]
    training_chat_template: Derived[str]
    assistant_mask: Derived[MaskCheck]
    lora_target_modules: Derived[list[str] | str]
    peft_lora_target_modules: Derived[list[str] | str | None]
    context_length: Derived[int]
    parameters: Derived[int]
    hidden_size: Derived[int]
    num_hidden_layers: Derived[int]
    vocab_size: Derived[int]
    finetune_compute_allow_list: Derived[list[str] | None]
    inference_compute_allow_list: Derived[list[str] | None]


def derive(
    folder: Path,
    *,
    chat_template: tuple[str, str] | None = None,
    template_source: str | None = None,
    lora_target_modules: str | None = None,
) -> DerivedFields:
    """Derive a model's catalog values from its Hugging Face folder; write ``--chat-template``'s choice into it.

    Args:
        folder: The model folder (config.json, weights, tokenizer files); changed only to add ``chat_template.jinja``
            when ``chat_template`` is given.
        chat_template: ``--chat-template``'s (template, source), replacing the tokenizer's own.
        template_source: Where the tokenizer's own template comes from when its files do not say (a GGUF file).
        lora_target_modules: ``all-linear`` (default: every linear layer), ``peft`` (PEFT's default for the
            architecture) or comma-separated module names.

    Returns:
        Every derived value with its source.

    Raises:
        UserError: The config names no causal LM transformers knows, the tokenizer has no chat template (and none
            was given) or more tokens than the model has embeddings, the template's assistant turns cannot be
            located, or ``lora_target_modules`` names modules the architecture lacks.
    """
    from chattune.inference import load_tokenizer
    from chattune.templates import check_assistant_mask, training_template_source

    config = _config(folder)
    tokenizer = load_tokenizer(folder)
    template = _chat_template(folder, tokenizer, chat_template, template_source)
    mask = check_assistant_mask(tokenizer)
    vocab_size = int(getattr(config, "vocab_size", 0) or 0)
    if vocab_size and len(tokenizer) > vocab_size:
        raise UserError(
            f"{folder}: the tokenizer has {len(tokenizer)} tokens but the model's embedding has {vocab_size} rows, "
            "so training would index past it",
            remedy="Import the tokenizer that belongs to these weights (or resize the embedding and save the model).",
        )
    model = _meta_model(config)
    linear = _linear_layers(model)
    architecture = type(model).__name__
    peft_default = _peft_targets(config.model_type)
    return DerivedFields(
        architecture=Derived(value=architecture, source=_architecture_source(folder, architecture)),
        model_type=Derived(value=config.model_type, source="config.json: model_type"),
        chat_template=template,
        training_chat_template=Derived(
            value=training_template_source(template.value), source="chattune.templates.training_chat_template"
        ),
        assistant_mask=Derived(
            value=mask,
            source="checked at import: the sample conversation tokenized with the training template, mask decoded",
        ),
        lora_target_modules=_lora_targets(lora_target_modules, linear, architecture, config.model_type, peft_default),
        peft_lora_target_modules=peft_default,
        context_length=_context_length(config, tokenizer),
        parameters=_parameters(folder, model),
        hidden_size=Derived(value=int(config.hidden_size), source="config.json: hidden_size"),
        num_hidden_layers=Derived(value=int(config.num_hidden_layers), source="config.json: num_hidden_layers"),
        vocab_size=Derived(value=vocab_size, source="config.json: vocab_size"),
        finetune_compute_allow_list=Derived(value=None, source="none: an imported model may train on any compute"),
        inference_compute_allow_list=Derived(value=None, source="none: an imported model may serve on any compute"),
    )


def _config(folder: Path) -> Any:
    """The model's transformers config; refused when transformers does not ship its architecture."""
    from transformers import AutoConfig

    path = folder / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable JSON file ({exc})") from exc
    try:
        return AutoConfig.from_pretrained(folder)
    except (ValueError, KeyError) as exc:
        code = " (its config names custom code in auto_map)" if raw.get("auto_map") else ""
        raise UserError(
            f"{path}: model_type {raw.get('model_type')!r} is not an architecture this transformers knows{code}",
            remedy="chattune runs no code shipped with a model (trust_remote_code); import a model of an architecture "
            "transformers ships (Llama, Qwen2, Phi-3, Mistral, Gemma, ...), or upgrade transformers.",
        ) from exc


def _meta_model(config: Any) -> Any:
    """The architecture built on the meta device: its modules and parameter count, no weights allocated."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError) as exc:
        raise UserError(
            f"config.json: {type(config).__name__} ({config.model_type}) is not a causal language model",
            remedy="Import a chat (causal) language model; encoders and sequence-to-sequence models do not fine-tune "
            "here.",
        ) from exc


def _architecture_source(folder: Path, architecture: str) -> str:
    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    named = raw.get("architectures") or []
    if architecture in named:
        return "config.json: architectures"
    return "transformers' AutoModelForCausalLM for config.json's model_type"


def _chat_template(
    folder: Path, tokenizer: Any, choice: tuple[str, str] | None, template_source: str | None
) -> Derived[str]:
    """The chat template, with its source; ``choice`` is written into the folder as ``chat_template.jinja``."""
    from chattune.templates import shipped_template_names

    if choice is not None:
        tokenizer.chat_template = choice[0]
        (folder / "chat_template.jinja").write_text(choice[0], encoding="utf-8")
        return Derived(value=choice[0], source=choice[1])
    template: Any = tokenizer.chat_template
    if isinstance(template, dict):  # named variants: the default one is what apply_chat_template uses
        template = template.get("default")
        tokenizer.chat_template = template
    if not template:
        raise UserError(
            "the model's tokenizer has no chat template (neither chat_template.jinja nor a chat_template in "
            "tokenizer_config.json), so chattune cannot tell how its conversations are formatted",
            remedy=f"Pass --chat-template NAME (shipped: {', '.join(shipped_template_names())}) or --chat-template "
            "FILE (a Jinja template), or import the instruct version of the model.",
        )
    if template_source is None:
        if (folder / "chat_template.jinja").is_file():
            template_source = "chat_template.jinja"
        else:
            template_source = "tokenizer_config.json: chat_template"
    return Derived(value=str(template), source=template_source)


def _linear_layers(model: Any) -> list[str]:
    """The names of the architecture's linear layers, the output projection (LM head) left out.

    PEFT's ``all-linear`` rule, spelled out as a built-in entry spells its ``lora_target_modules``.
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, Conv1D)) and module is not head
    }
    return sorted(names)


def _peft_targets(model_type: str) -> Derived[list[str] | str | None]:
    """PEFT's default LoRA targets for the architecture, from PEFT's own table."""
    from peft.utils import constants

    mapping = getattr(constants, PEFT_MAPPING)
    where = f"peft.utils.constants.{PEFT_MAPPING}"
    value = mapping.get(model_type)
    if value is None:
        return Derived(value=None, source=f"{where}: no entry for {model_type!r}")
    return Derived(value=value if isinstance(value, str) else list(value), source=f"{where}[{model_type!r}]")


def _lora_targets(
    choice: str | None,
    linear: list[str],
    architecture: str,
    model_type: str,
    peft_default: Derived[list[str] | str | None],
) -> Derived[list[str] | str]:
    """``--lora-target-modules``: every linear layer (default), PEFT's default, or the user's names (checked)."""
    choice = (choice or ALL_LINEAR).strip()
    if choice == ALL_LINEAR:
        return Derived(
            value=linear,
            source=f"default: every linear layer of {architecture} but the LM head (PEFT's all-linear rule, as "
            "chattune's built-in entries)",
        )
    if choice == PEFT:
        if peft_default.value is None:
            raise UserError(
                f"--lora-target-modules peft: PEFT's table has no default for {model_type!r}",
                remedy=f"Use all-linear (the default) or name modules of {architecture}: {', '.join(linear)}.",
            )
        return Derived(value=peft_default.value, source=f"--lora-target-modules peft: {peft_default.source}")
    named = [m.strip() for m in choice.split(",") if m.strip()]
    unknown = [m for m in named if m not in linear]
    if unknown or not named:
        raise UserError(
            f"--lora-target-modules {choice}: {', '.join(unknown) or 'no module'} is not a linear layer of "
            f"{architecture}",
            remedy=f"Use all-linear, peft, or names from: {', '.join(linear)}.",
        )
    return Derived(value=named, source="--lora-target-modules")


def _context_length(config: Any, tokenizer: Any) -> Derived[int]:
    """The longest sequence, as preprocess and serving take it: the smaller of the config's and the tokenizer's."""
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        raise UserError(
            "config.json has no max_position_embeddings, so the model's context length is unknown",
            remedy="Add max_position_embeddings to config.json.",
        )
    tokenizer_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_max, int) and 0 < tokenizer_max < positions:
        return Derived(
            value=tokenizer_max,
            source=f"tokenizer_config.json: model_max_length (config.json's max_position_embeddings is {positions})",
        )
    return Derived(value=positions, source="config.json: max_position_embeddings")


def _parameters(folder: Path, model: Any) -> Derived[int]:
    """The parameter count from the safetensors headers (shapes only), else from the meta-device model."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return Derived(
            value=int(model.num_parameters()),
            source=f"{type(model).__name__} built on the meta device from config.json (no weights loaded)",
        )
    shapes: dict[str, int] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                count = 1
                for dim in handle.get_slice(key).get_shape():
                    count *= dim
                shapes[key] = count
    names = ", ".join(f.name for f in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return Derived(value=sum(shapes.values()), source=f"safetensors headers ({names}: {len(shapes)} tensors)")
