"""Token reduction with ``sf.topk_gather``: keep the k most salient tokens (visual token pruning)."""

from __future__ import annotations

from torch import Tensor, nn

import scanforge as sf

__all__ = ["TopKTokenPruner", "resolve_keep"]


def resolve_keep(keep: int | float, T: int) -> int:
    """``keep`` as a token count for T tokens: an int count (at most T) or a float fraction in (0, 1]."""
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or keep <= 0:
        raise ValueError(f"k: expected a positive int or a fraction in (0, 1], got {keep!r}")
    if isinstance(keep, float):
        if keep > 1:
            raise ValueError(f"k: a fraction must be in (0, 1], got {keep!r}")
        return max(1, round(keep * T))
    return min(keep, T)


class TopKTokenPruner(nn.Module):
    """Keep k of T tokens ``(batch, T, d) -> (batch, k [+1], d)``.

    ``score="l2"``: rank by the token norm (no parameters). ``score="saliency"``: a small MLP scores each
    token; kept tokens are multiplied by ``sigmoid(score)`` inside the gather so that the scorer learns
    through the task loss. ``summary``: None, ``"mean"`` or ``"mean_dropped"`` appends one summary token.
    ``k`` is a count or a fraction of T. ``forward`` returns ``(tokens, idx)``.
    """

    def __init__(self, k: int | float, score: str = "l2", summary: str | None = None, d_model: int | None = None,
                 hidden: int | None = None, *, backend: str | None = None) -> None:
        super().__init__()
        resolve_keep(k, 1 << 30)
        if score not in ("l2", "saliency"):
            raise ValueError(f"score: expected 'l2' or 'saliency', got {score!r}")
        if summary not in (None, "mean", "mean_dropped"):
            raise ValueError(f"summary: expected None, 'mean' or 'mean_dropped', got {summary!r}")
        if score == "saliency" and (not isinstance(d_model, int) or d_model <= 0):
            raise ValueError(f"d_model: score='saliency' needs the token width as a positive int, got {d_model!r}")
        self.k, self.score, self.summary, self.backend = k, score, summary, backend
        self.scorer = None
        if score == "saliency":
            hidden = hidden or max(8, d_model // 4)
            self.scorer = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, hidden), nn.GELU(),
                                        nn.Linear(hidden, 1))

    def kept(self, T: int) -> int:
        """Tokens kept out of T (without the summary token)."""
        return resolve_keep(self.k, T)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(x, Tensor) or x.dim() != 3:
            raise ValueError(f"x: expected a tensor (batch, T, d), got {getattr(x, 'shape', type(x).__name__)}")
        k = self.kept(x.shape[1])
        if self.scorer is None:
            return sf.topk_gather(x, k, summary=self.summary, backend=self.backend)
        scores = self.scorer(x).squeeze(-1)
        return sf.topk_gather(x, k, scores, summary=self.summary, weight="sigmoid", backend=self.backend)
