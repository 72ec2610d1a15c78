import pytest
import torch

from ihas.gates import (InstanceAgnosticGate, InstanceWiseGate, deterministic_probs, gate_log_probs,
                        gate_regularizer, straight_through_mask)


def test_instance_wise_gate_is_affine():
    torch.manual_seed(0)
    gate = InstanceWiseGate(4)
    e = torch.randn(3, 4)
    expected = e @ gate.linear.weight.T + gate.linear.bias
    torch.testing.assert_close(gate(e), expected)
    # Two different samples get different logits.
    assert not torch.allclose(gate(e)[0], gate(e)[1])


def test_gates_start_mostly_open():
    e = torch.randn(8, 6)
    for gate in (InstanceWiseGate(6), InstanceAgnosticGate(6)):
        assert bool((deterministic_probs(gate(e)) > 0.9).all())


def test_agnostic_gate_same_for_every_sample():
    gate = InstanceAgnosticGate(5)
    with torch.no_grad():
        gate.logits.copy_(torch.tensor([-1.0, 0.0, 1.0, 2.0, 3.0]))
    logits = gate(torch.randn(3, 5))
    assert logits.shape == (3, 5)
    for row in logits:
        torch.testing.assert_close(row, gate.logits)


def test_gate_rejects_wrong_width():
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        InstanceWiseGate(4)(torch.randn(2, 5))


def test_log_probs_stable_for_large_logits():
    logits = torch.tensor([-200.0, 0.0, 200.0])
    log_p, log_q = gate_log_probs(logits)
    assert bool(torch.isfinite(log_p).all())
    assert bool(torch.isfinite(log_q).all())
    # log sigmoid(-200) = -200 (to float precision); log sigmoid(0) = -ln 2.
    torch.testing.assert_close(log_p, torch.tensor([-200.0, -0.693147, 0.0]))
    torch.testing.assert_close(log_q, torch.tensor([0.0, -0.693147, -200.0]))


def test_straight_through_forward_binary():
    logits = torch.randn(64, 32) * 3
    mask = straight_through_mask(logits, tau=0.1, generator=torch.Generator().manual_seed(1))
    assert mask.shape == logits.shape
    assert mask.dtype == logits.dtype
    assert bool(((mask == 0) | (mask == 1)).all())
    assert 0 < int(mask.sum()) < mask.numel()


def test_straight_through_passes_gradient():
    logits = torch.zeros(16, 8, requires_grad=True)
    mask = straight_through_mask(logits, tau=0.5, generator=torch.Generator().manual_seed(2))
    mask.sum().backward()
    assert logits.grad is not None
    # d sigmoid(z / tau) / d a = s (1 - s) / tau > 0 for every finite z.
    assert bool((logits.grad > 0).all())


def test_straight_through_gradient_matches_relaxation():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 5, requires_grad=True)
    mask = straight_through_mask(logits, tau=0.3, generator=generator)
    weights = torch.randn(4, 5)
    (mask * weights).sum().backward()

    # Rebuild the same noise and differentiate the relaxation by hand.
    u = torch.rand((4, 5), generator=torch.Generator().manual_seed(3))
    z = logits.detach() + torch.log(u) - torch.log1p(-u)
    soft = torch.sigmoid(z / 0.3)
    torch.testing.assert_close(mask, (z > 0).float())
    torch.testing.assert_close(logits.grad, weights * soft * (1 - soft) / 0.3)


def test_straight_through_keep_rate_matches_probability():
    # P(a + L > 0) = sigmoid(a): with a = ln 3, sigmoid(a) = 0.75.
    logits = torch.full((200_000,), float(torch.log(torch.tensor(3.0))))
    mask = straight_through_mask(logits, tau=0.1, generator=torch.Generator().manual_seed(4))
    assert float(mask.mean()) == pytest.approx(0.75, abs=0.005)


def test_straight_through_reproducible_with_generator():
    logits = torch.randn(10, 10)
    first = straight_through_mask(logits, 0.1, torch.Generator().manual_seed(5))
    second = straight_through_mask(logits, 0.1, torch.Generator().manual_seed(5))
    assert torch.equal(first, second)


def test_straight_through_rejects_bad_tau():
    with pytest.raises(ValueError, match="tau"):
        straight_through_mask(torch.zeros(2, 2), tau=0.0)


def test_regularizer_hand_computed():
    probs = torch.tensor([[0.9, 0.1, 0.5, 0.5],
                          [1.0, 1.0, 0.0, 0.2]])
    # Sample 0: sum = 2.0, mean = 0.5, sum |p - mean| = 0.4 + 0.4 + 0 + 0 = 0.8.
    # Sample 1: sum = 2.2, mean = 0.55, sum |p - mean| = 0.45 + 0.45 + 0.55 + 0.35 = 1.8.
    # Batch means: L0 term = (2.0 + 2.2) / 2 = 2.1, polarization term = (0.8 + 1.8) / 2 = 1.3.
    # R = 0.1 * 2.1 - 2.0 * 1.3 = 0.21 - 2.6 = -2.39.
    value = gate_regularizer(probs, reg_lambda=0.1, polarization=2.0)
    assert value.dim() == 0
    assert float(value) == pytest.approx(-2.39, abs=1e-6)
    # Without polarization only the L0 term remains: 0.1 * 2.1 = 0.21.
    assert float(gate_regularizer(probs, 0.1, 0.0)) == pytest.approx(0.21, abs=1e-6)
