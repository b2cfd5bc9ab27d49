"""CIF: the vectorised integrate-and-fire against a plain per-frame reference loop."""

from __future__ import annotations

import math

import pytest
import torch

from xllm_cli.models.cif import CifPredictor, cif, quantity_loss

torch.set_num_threads(1)


def reference_cif(h, alpha, length, threshold=1.0, tail_threshold=0.5, target=None):
    """The textbook loop (one utterance): integrate, fire at the threshold, split the crossing frame."""
    alpha = alpha[:length].clone()
    h = h[:length]
    if target is not None:
        alpha = alpha * (target * threshold / alpha.sum())
    fired, acc, frame = [], 0.0, torch.zeros(h.shape[1], dtype=h.dtype)
    for t in range(length):
        a = float(alpha[t])
        while acc + a >= threshold:  # a scaled weight may exceed the threshold: several fires
            part = threshold - acc
            fired.append(frame + part * h[t])
            a -= part
            acc, frame = 0.0, torch.zeros_like(frame)
        acc += a
        frame = frame + a * h[t]
    if target is not None:
        while len(fired) < target:  # float rounding may leave the last token a hair short
            fired.append(frame)
            frame = torch.zeros_like(frame)
        fired = fired[:target]
    elif acc > tail_threshold * threshold:
        fired.append(frame * (threshold / acc))  # tail token, rescaled to a full token's weight
    return torch.stack(fired) if fired else torch.zeros(0, h.shape[1], dtype=h.dtype)


def _random(B=5, T=37, H=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, T, H, generator=g, dtype=torch.float64)
    alpha = torch.rand(B, T, generator=g, dtype=torch.float64) * 0.7
    lens = torch.randint(T // 2, T + 1, (B,), generator=g)
    lens[0] = T
    return h, alpha, lens


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inference_matches_reference_loop(seed):
    h, alpha, lens = _random(seed=seed)
    out = cif(h, alpha, lens, threshold=1.0, tail_threshold=0.5)
    for b in range(h.shape[0]):
        ref = reference_cif(h[b], alpha[b], int(lens[b]))
        n = int(out.token_lens[b])
        assert n == ref.shape[0]
        torch.testing.assert_close(out.tokens[b, :n], ref, atol=1e-5, rtol=1e-5)
        assert torch.all(out.tokens[b, n:] == 0)


@pytest.mark.parametrize("seed", [0, 3])
def test_training_matches_reference_and_fires_target_length(seed):
    h, alpha, lens = _random(seed=seed)
    g = torch.Generator().manual_seed(seed + 10)
    # targets both below and above the unscaled sum (weights > 1 after scaling included)
    target = torch.randint(1, 40, (h.shape[0],), generator=g)
    out = cif(h, alpha, lens, target_lens=target)
    assert torch.equal(out.token_lens, target)
    for b in range(h.shape[0]):
        ref = reference_cif(h[b], alpha[b], int(lens[b]), target=int(target[b]))
        n = int(target[b])
        assert ref.shape[0] == n
        torch.testing.assert_close(out.tokens[b, :n], ref, atol=1e-5, rtol=1e-5)
        # every token integrates one threshold's worth of weight
        torch.testing.assert_close(out.weights[b].sum(0)[:n], torch.ones(n, dtype=h.dtype), atol=1e-6, rtol=0)


def test_inference_count_follows_weight_sum():
    h = torch.randn(4, 10, 3)
    alpha = torch.zeros(4, 10)
    alpha[0, :5] = 0.5  # sum 2.5 -> residue 0.5 is not > 0.5: 2 tokens
    alpha[1, :7] = 0.5  # sum 3.5 -> 3
    alpha[2, :6] = 0.6  # sum 3.6 -> residue 0.6 > 0.5: 4 tokens
    alpha[3, :3] = 0.1  # sum 0.3 -> nothing fires
    lens = torch.full((4,), 10)
    out = cif(h, alpha, lens, tail_threshold=0.5)
    for b in range(4):
        s = float(alpha[b].sum())
        expected = math.floor(s + 1e-6) + (1 if s - math.floor(s + 1e-6) > 0.5 + 1e-6 else 0)
        assert int(out.token_lens[b]) == expected
    assert out.token_lens.tolist() == [2, 3, 4, 0]


def test_padding_frames_contribute_nothing():
    torch.manual_seed(0)
    pred = CifPredictor(8, kernel_size=3, dropout=0.0).eval()
    h = torch.randn(1, 12, 8)
    lens = torch.tensor([9])
    padded = h.clone()
    padded[:, 9:] = 1000.0  # garbage in padding
    a1 = pred(h, lens)
    a2 = pred(padded, lens)
    torch.testing.assert_close(a1, a2)
    assert torch.all(a2[:, 9:] == 0)
    o1 = cif(h, a1, lens)
    o2 = cif(padded, a2, lens)
    torch.testing.assert_close(o1.tokens, o2.tokens)
    # batched with a longer utterance gives the same tokens
    hb = torch.cat([padded, torch.randn(1, 12, 8)])
    lb = torch.tensor([9, 12])
    ob = cif(hb, pred(hb, lb), lb)
    n = int(o1.token_lens[0])
    assert int(ob.token_lens[0]) == n
    torch.testing.assert_close(ob.tokens[0, :n], o1.tokens[0, :n])


def test_gradients_reach_predictor_and_quantity_loss_is_unscaled():
    torch.manual_seed(0)
    pred = CifPredictor(8, dropout=0.0)
    h = torch.randn(2, 20, 8, requires_grad=True)
    lens = torch.tensor([20, 15])
    target = torch.tensor([3, 5])
    alphas = pred(h, lens)
    out = cif(h, alphas, lens, target_lens=target)
    torch.testing.assert_close(out.alpha_sum, alphas.sum(1))  # unscaled
    loss = out.tokens.pow(2).sum() + quantity_loss(out.alpha_sum, target)
    loss.backward()
    assert pred.proj.weight.grad is not None and pred.proj.weight.grad.abs().sum() > 0
    assert pred.conv.weight.grad.abs().sum() > 0
    assert h.grad[1, 15:].abs().sum() == 0  # padding frames get no gradient
    # the quantity loss alone also moves the predictor
    pred.zero_grad()
    a = pred(h.detach(), lens)
    quantity_loss(a.sum(1), target).backward()
    assert pred.proj.weight.grad.abs().sum() > 0


def test_cif_integrates_in_float32_under_bf16_autocast(monkeypatch):
    """CPU bf16 autocast must not reach the running sum: every fired token's weights sum to 1.0."""
    import xllm_cli.models.cif as cif_mod
    from xllm_cli.config.schema import CFormerConfig
    from xllm_cli.models.cformer import CFormer

    torch.manual_seed(0)
    cformer = CFormer(32, 50, CFormerConfig(d_model=32, num_layers=1, num_heads=2, dropout=0.0)).eval()
    enc, lens, target = torch.randn(2, 400, 32), torch.tensor([400, 300]), torch.tensor([60, 45])
    seen = {}
    real = cif_mod.cif_weights
    monkeypatch.setattr(cif_mod, "cif_weights", lambda *a, **k: seen.setdefault("w", real(*a, **k)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cformer(enc, lens, target)
    w = seen["w"]
    assert w.dtype == torch.float32
    sums = w.sum(1)
    for b, n in enumerate(target.tolist()):
        assert torch.allclose(sums[b, :n], torch.ones(n), atol=1e-4), sums[b, :n].max()
    assert out.token_lens.tolist() == target.tolist()
    # bf16 inputs (e.g. from a bf16 encoder) are integrated in float32 too
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = cif(enc.bfloat16(), torch.rand(2, 400).bfloat16() * 0.5 + 0.1, lens, target)
    assert res.weights.dtype == torch.float32
    assert torch.allclose(res.weights.sum(1)[0, :60], torch.ones(60), atol=1e-4)
