"""The 1000 ImageNet (ILSVRC2012) classes: WordNet synset IDs and human-readable names.

Class i of a 1000-class model is line i of `data/imagenet_classes.tsv`, which lists the synsets in
the label order of tfds `imagenet2012` (the sorted synset IDs; tensorflow-datasets ships them as
`datasets/imagenet2012/labels.txt`) and torchvision's, so names fit both this project's models and
converted torchvision weights.

Source of the names: `timm/data/_info/imagenet_synset_to_lemma.txt` from the PyPI package timm
1.0.31 (Apache-2.0 licence), whose lemmas are those of WordNet 3.0 (Princeton University; WordNet
licence, free use with attribution). timm is not a dependency; the table was copied once.
Two classes share the lemma "crane" (n02012849, the bird; n03126707, the machine).
"""

from __future__ import annotations

import dataclasses
from importlib import resources

NUM_CLASSES = 1000
_TABLE = "imagenet_classes.tsv"


@dataclasses.dataclass(frozen=True)
class ImageNetClass:
    """One class: its label index, WordNet synset ID (e.g. "n01440764") and lemmas."""

    index: int
    synset: str
    lemmas: str  # comma-separated WordNet lemmas, e.g. "tench, Tinca tinca"

    @property
    def name(self) -> str:
        """The first lemma, a short name for display (e.g. "tench")."""
        return self.lemmas.split(",")[0].strip()


def load_classes() -> tuple[ImageNetClass, ...]:
    """The 1000 classes in label order, read from the table shipped with the package."""
    text = resources.files("alexnet_jax").joinpath("data", _TABLE).read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    classes = tuple(
        ImageNetClass(index, synset, lemmas) for index, (synset, lemmas) in enumerate(rows)
    )
    if len(classes) != NUM_CLASSES:
        raise RuntimeError(f"{_TABLE} holds {len(classes)} classes, expected {NUM_CLASSES}")
    return classes


def synsets() -> list[str]:
    """Synset IDs in label order."""
    return [c.synset for c in load_classes()]


def names() -> list[str]:
    """Short human-readable names (first lemma) in label order."""
    return [c.name for c in load_classes()]
