"""Prosodic disambiguation (after the DEBATE benchmark): the same words, different meanings.

The same text, spoken with different pauses, stress or intonation, selects a different reading;
a model hears the utterance and picks the intended one.

- :mod:`.templates`: the template table (phrase grouping, contrastive focus, statement vs question),
  each template a text with 2 or 3 readings written as SSML, and its validation
- :mod:`.synth`: ``edgewise data disambig``: every reading by every espeak-ng speaker, split by
  speaker, in the corpus format (the SER trainer reads it as it is)
- :mod:`.debate`: converts a DEBATE-style release (metadata file + audio) into the same format
- :mod:`.corpus`: reads such a corpus with its extra columns (template, kind, reading, meaning)
- :mod:`.features`: audio features (prosodic functionals, a coarse prosodic contour, a frozen SER
  run's pooled state) and text features (MiniLM, or hashed words)
- :mod:`.classifier`: the small text-conditioned classifier and its training with early stopping
- :mod:`.evaluate`: audio only vs audio + text vs text only, over seeds: JSON and Markdown
- :mod:`.commands`: the CLI handlers
"""
