"""Training corpora: the corpus contract, the espeak-ng synthesizer and real-corpus loaders.

The trainer needs only :func:`load_corpus` and the types below; the synthesizer
(:mod:`edgewise.cloud.data.synth`) and the loaders (:mod:`edgewise.cloud.data.corpora`) are
imported where they are used.
"""

from edgewise.cloud.data.corpus import (
    EMOTIONS,
    SPLITS,
    Corpus,
    Utterance,
    load_corpus,
    write_manifests,
)

__all__ = ["EMOTIONS", "SPLITS", "Corpus", "Utterance", "load_corpus", "write_manifests"]
