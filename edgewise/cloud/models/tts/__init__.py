"""The TTS family: a prosody-aware flow-matching acoustic model (after ProsodyFM, on a
Matcha-TTS-style backbone) and a Vocos-style iSTFT vocoder, both with HRF FFNs."""
