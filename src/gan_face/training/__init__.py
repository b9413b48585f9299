"""The training wing (``pip install "gan-face[train]"``): data trees and splits, the face and crop caches,
augmentation and evaluation conditions, the training loop, the metrics, fitting the checks and the fusion, and
fine-tuning. Scoring never imports it; ``scripts/`` are thin entry points over it."""
