"""An SDK shaped like ``azure.ai.ml``, running on a local chattune workspace.

Notebooks written for Azure ML run here with only their imports changed (``from chattune.aml import MLClient, Input``,
``from chattune.aml.entities import ...``, ``from chattune.aml.dsl import pipeline``, ``from chattune.aml.identity
import DefaultAzureCredential``).

Every operation goes through the same services as the CLI, so the CLI and the SDK see the same jobs, models and
endpoints. Mapping of the seed notebook's steps: docs/sdk.md.
"""

from chattune.aml._client import LocalOnlyWarning, MLClient
from chattune.aml.entities import Input

__all__ = ["Input", "LocalOnlyWarning", "MLClient"]
