"""Generative recommendation (OneRec / TIGER family): item embeddings, semantic-ID tokenizer.

The semantic IDs and their prefix trie, shared with export and the edge runtime, live in
:mod:`edgewise.rec_ids` (torch-free). Submodules are imported where they are used.
"""
