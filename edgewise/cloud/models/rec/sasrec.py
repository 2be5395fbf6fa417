"""SASRec (Kang & McAuley, 2018): the classic sequential baseline, trained and evaluated beside the generators.

Causal self-attention over the history (left-padded, 1-based item indices, 0 = padding), absolute
positions, and a score for every item from the shared item embedding. Trained with cross-entropy
over all items at every position (RecBole's ``CE`` loss), evaluated by full ranking.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgewise.cloud.models.rec.blocks import EncoderBlock
from edgewise.cloud.models.rec.config import RecModelConfig


class SASRec(nn.Module):
    kind = "sasrec"

    def __init__(self, config: RecModelConfig, n_items: int) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        hrf = config.hrf.hidden_dim(d) if config.hrf is not None else None
        self.items = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.position = nn.Embedding(config.max_len, d)
        nn.init.normal_(self.items.weight, std=0.02)
        nn.init.normal_(self.position.weight, std=0.02)
        with torch.no_grad():
            self.items.weight[0].zero_()
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            EncoderBlock(d, config.n_heads, config.d_ff, config.dropout, hrf) for _ in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(d)

    @property
    def n_items(self) -> int:
        return self.items.num_embeddings - 1

    def forward(self, history: Tensor) -> Tensor:
        """(B, T) -> hidden states (B, T, D); position t summarizes items 0..t."""
        t = history.shape[1]
        valid = history > 0
        # positions count back from the most recent item, so the last one is always max_len - 1
        pos = (self.config.max_len - t + torch.arange(t, device=history.device)).clamp(min=0)
        x = self.drop(self.items(history) * valid.unsqueeze(-1) + self.position(pos))
        idx = torch.arange(t, device=history.device)
        mask = (idx[None, :] <= idx[:, None])[None, None] & valid[:, None, None, :]
        mask = mask | ~mask.any(-1, keepdim=True)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def scores(self, hidden: Tensor) -> Tensor:
        """Scores of items 1..n (column i - 1 is item i) for each hidden state."""
        return hidden @ self.items.weight[1:].t()
