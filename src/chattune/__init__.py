"""chattune: fine-tune and serve chat models, self-hosted, from catalog to endpoint.

The public surface: ``Workspace.from_env()`` holds every service as a typed attribute (``ws.catalog``,
``ws.compute``, ``ws.data``, ``ws.jobs``, ``ws.registry``, ``ws.endpoints``); ``chattune.schemas`` has the response
schemas every ``--json`` answer is written from; ``chattune.errors`` the coded errors and their one table of exit
codes, HTTP statuses and OpenAI error types. ``Workspace.from_env().jobs.create({...})`` takes the job YAML's mapping
(or a ``JobSpec``, or ``load_spec(path)``) and runs the same checks and the same pipeline as ``chattune jobs create``.
"""

from chattune.errors import ChattuneError
from chattune.pipeline.config import JobSpec, load_spec
from chattune.settings import Settings
from chattune.workspace import Workspace

__version__ = "0.1.0"
__all__ = ["ChattuneError", "JobSpec", "Settings", "Workspace", "__version__", "load_spec"]
