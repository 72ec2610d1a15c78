"""Bernoulli gates over the N* = F*D embedding dimensions, their masks and their regularizer.

A gate logit a gives the keep probability p = sigmoid(a). The search stage samples binary masks
with the straight-through Gumbel-Softmax estimator; later stages use p without noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Gates start with logit INITIAL_GATE_LOGIT (keep probability sigmoid(3) ~= 0.95), so almost every
# dimension stays open when the search starts, as it was during pretraining with all gates open.
INITIAL_GATE_LOGIT = 3.0
# The instance-wise weights start as N(0, INITIAL_WEIGHT_STD^2): small enough that the bias sets
# the first probabilities, but not zero, so samples differ from the first step.
INITIAL_WEIGHT_STD = 0.01


def _check_num_dims(num_dims: int) -> int:
    if num_dims < 1:
        raise ValueError(f"num_dims must be >= 1, got {num_dims}")
    return int(num_dims)


def _check_embedding(e: torch.Tensor, num_dims: int) -> None:
    if e.dim() != 2 or e.shape[1] != num_dims:
        raise ValueError(f"gate input must have shape [B, {num_dims}], got {tuple(e.shape)}")


class InstanceWiseGate(nn.Module):
    """Gate logits a = W e + b computed from each sample's flattened embedding e (W is N* x N*)."""

    def __init__(self, num_dims: int) -> None:
        super().__init__()
        self.num_dims = _check_num_dims(num_dims)
        self.linear = nn.Linear(self.num_dims, self.num_dims)
        nn.init.normal_(self.linear.weight, mean=0.0, std=INITIAL_WEIGHT_STD)
        nn.init.constant_(self.linear.bias, INITIAL_GATE_LOGIT)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """Map embeddings e (float [B, N*]) to gate logits (float [B, N*])."""
        _check_embedding(e, self.num_dims)
        return self.linear(e)


class InstanceAgnosticGate(nn.Module):
    """Gate logits a = w*, one learned vector of length N* shared by every sample (ablation iHAS-4)."""

    def __init__(self, num_dims: int) -> None:
        super().__init__()
        self.num_dims = _check_num_dims(num_dims)
        self.logits = nn.Parameter(torch.full((self.num_dims,), INITIAL_GATE_LOGIT))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """Return w* broadcast to float [B, N*]; e (float [B, N*]) only sets B."""
        _check_embedding(e, self.num_dims)
        return self.logits.expand(e.shape[0], self.num_dims)


def gate_log_probs(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (log p, log(1 - p)) for p = sigmoid(logits), finite for any finite logit."""
    return F.logsigmoid(logits), F.logsigmoid(-logits)


def deterministic_probs(logits: torch.Tensor) -> torch.Tensor:
    """Return the keep probabilities sigmoid(logits) without noise."""
    return torch.sigmoid(logits)


class _StraightThroughStep(torch.autograd.Function):
    """Forward: the exact step [z > 0]. Backward: the gradient of sigmoid(z / tau)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, tau: float) -> torch.Tensor:
        ctx.save_for_backward(z)
        ctx.tau = tau
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (z,) = ctx.saved_tensors
        soft = torch.sigmoid(z / ctx.tau)
        return grad_output * soft * (1.0 - soft) / ctx.tau, None


def straight_through_mask(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample a binary mask (float [B, N*], 1 keeps a dim) from gate logits (float [B, N*]).

    Each bit is [a + L > 0] with L ~ Logistic(0, 1), which equals the hard Gumbel-Softmax choice
    between keep (log p) and drop (log(1 - p)), because the difference of two Gumbel(0, 1) draws is
    Logistic(0, 1). The forward value is exactly 0 or 1; the gradient with respect to the logits is
    that of the relaxation sigmoid((a + L) / tau). Pass `generator` (on the logits' device) to make
    the noise reproducible.
    """
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
    # Keep u inside (0, 1) so that the logistic noise log(u) - log(1 - u) stays finite.
    tiny = torch.finfo(logits.dtype).tiny
    u = u.clamp(min=tiny, max=1.0 - torch.finfo(logits.dtype).eps)
    noise = torch.log(u) - torch.log1p(-u)
    return _StraightThroughStep.apply(logits + noise, float(tau))


def gate_regularizer(probs: torch.Tensor, reg_lambda: float, polarization: float) -> torch.Tensor:
    """Return R = reg_lambda * mean_i sum_j p_ij - polarization * mean_i sum_j |p_ij - mean_j p_ij|.

    `probs` is float [B, N*]. The first term is the expected L0 norm of a sample's mask; the second
    (polarization) term rewards spreading one sample's probabilities away from their mean.
    """
    if probs.dim() != 2:
        raise ValueError(f"probs must have shape [B, N*], got {tuple(probs.shape)}")
    expected_l0 = probs.sum(dim=1).mean()
    spread = (probs - probs.mean(dim=1, keepdim=True)).abs().sum(dim=1).mean()
    return reg_lambda * expected_l0 - polarization * spread
