"""The recommendation family's models: SASRec, the encoder-decoder and the lazy decoder-only generator."""
