"""chattune: fine-tune and serve chat models, self-hosted, from catalog to endpoint.

In Python: ``Workspace().jobs.create({...})`` takes the job YAML's mapping (or a ``JobSpec``, or
``load_spec(path)``) and runs the same checks and the same pipeline as ``chattune jobs create``.
"""

from chattune.pipeline.config import JobSpec, load_spec
from chattune.settings import Settings
from chattune.workspace import Workspace

__version__ = "0.1.0"
__all__ = ["JobSpec", "Settings", "Workspace", "__version__", "load_spec"]
