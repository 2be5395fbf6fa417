"""``edgewise eval semisup``: multi-view semi-supervised pseudo-labelling for speech emotion.

With a fraction of the training split labelled, the rest is labelled by views that must agree:

- :mod:`.acoustic`: per frozen encoder (the paralinguistic benchmark's, :mod:`edgewise.cloud.para`),
  the Frechet distance between a candidate's neighbourhood in the encoder's space and each class's
  labelled distribution; the nearest class is the view's vote;
- :mod:`.text_view`: transcripts from the offline pocketsphinx recognizer and a text classifier
  behind a hook (TF-IDF by default; an LLM served by the cloud half through ``chat:URL``; any
  Python factory), and MiniLM embeddings of the transcripts for the bimodal classifier;
- :mod:`.labeller`: views weighed by their accuracy on the labelled data, confident labels where
  the informative views and the classifier agree, a bimodal classifier (audio features and
  transcript embeddings) retrained round by round until a stopping rule holds; next to it the
  baselines: supervised training on the labelled fraction and plain confidence-threshold
  self-training with the same classifier;
- :mod:`.report` and :mod:`.command`: UA against the labelled fraction as JSON, Markdown and a plot.
"""
