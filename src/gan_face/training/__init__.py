"""The training wing (``pip install "gan-face[train]"``): data trees and splits, the face and crop caches,
augmentation and evaluation conditions, the training loop, the metrics, fitting the checks and the fusion, and
fine-tuning. Scoring never imports it; ``scripts/`` are thin entry points over it.

Importing it checks for the training extras first, so a missing one is named before any work starts rather
than minutes into a run.
"""

import importlib.util

# scipy, also used here, comes with scikit-image, a core dependency. Torch is not one: scoring runs on OpenVINO,
# and pip's default Linux torch would bring ~5.5 GB of CUDA libraries to every install.
_EXTRAS = {"torch": "torch", "sklearn": "scikit-learn"}
_missing = [package for module, package in _EXTRAS.items() if importlib.util.find_spec(module) is None]
if _missing:
    raise ImportError(
        f"training and fine-tuning need the training extra ({', '.join(_missing)} not installed): "
        'pip install "gan-face[train]"'
    )
