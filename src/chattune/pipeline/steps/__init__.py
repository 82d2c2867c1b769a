"""One module per step; each exposes ``STEP``, an object of the step protocol (chattune.pipeline.context.Step)."""

from chattune.pipeline.context import Step
from chattune.pipeline.outputs import StepOutput
from chattune.pipeline.steps import evaluate, finetune, model_import, preprocess, validate

# In the order they run (chattune.pipeline.STEPS names the same order).
PIPELINE: tuple[Step[StepOutput], ...] = (
    validate.STEP,
    model_import.STEP,
    preprocess.STEP,
    finetune.STEP,
    evaluate.STEP,
)
