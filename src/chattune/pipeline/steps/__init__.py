"""One module per step; each exposes ``run(ctx) -> outputs``."""

from chattune.pipeline.steps import evaluate, finetune, model_import, preprocess, validate

REGISTRY = {
    "validate": validate.run,
    "model_import": model_import.run,
    "preprocess": preprocess.run,
    "finetune": finetune.run,
    "evaluate": evaluate.run,
}
