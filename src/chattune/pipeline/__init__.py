"""Pipeline jobs: the typed job spec, the runner, and one module per step."""

STEPS = ("validate", "model_import", "preprocess", "finetune", "evaluate")
