"""chattune: fine-tune and serve chat models, self-hosted, from catalog to endpoint."""

from chattune.settings import Settings
from chattune.workspace import Workspace

__version__ = "0.1.0"
__all__ = ["Settings", "Workspace", "__version__"]
