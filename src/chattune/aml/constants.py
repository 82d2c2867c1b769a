"""Asset type names as ``azure.ai.ml.constants.AssetTypes`` spells them."""

from __future__ import annotations


class AssetTypes:
    """Azure's asset type names (``azure.ai.ml.constants.AssetTypes``)."""

    MLFLOW_MODEL = "mlflow_model"
    CUSTOM_MODEL = "custom_model"
    URI_FILE = "uri_file"
    URI_FOLDER = "uri_folder"
