"""params.yaml section ``evaluate``: how much of the validation split the stage scores, and its views."""

from __future__ import annotations

from dataclasses import dataclass

from doodle.core.params import require

EMBEDDINGS = ("tsne", "pca")


@dataclass
class EvaluateParams:
    """params.yaml section ``evaluate``."""

    # validation drawings scored (the first N, a uniform sample: the shards are shuffled); null = all.
    # Kaggle's validation shard holds ~250,000: all of them take minutes on a CPU for little more
    # precision (the standard error of MAP@3 on 50,000 drawings is about 0.002).
    max_rows: int | None = 50_000
    embedding_samples: int = 2000  # validation images in the embedding (the first N, a uniform sample)
    embedding: str = "tsne"  # tsne | pca
    activation_images: int = 4  # validation images (of different classes) in the activation maps

    def validate(self, where: str = "evaluate") -> None:
        require(self.max_rows is None or self.max_rows >= 1, f"{where}.max_rows", "must be >= 1 or null (all)")
        require(self.embedding_samples >= 2, f"{where}.embedding_samples", "must be >= 2")
        require(self.embedding in EMBEDDINGS, f"{where}.embedding", f"must be one of {', '.join(EMBEDDINGS)}")
        require(self.activation_images >= 1, f"{where}.activation_images", "must be >= 1")
