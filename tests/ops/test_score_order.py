"""detkit.ops.score_order: topk_stable is the stable descending sort cut to k, eagerly, traced and in ONNX."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from detkit.ops.score_order import topk_stable


def stable_top(scores, k):
    """The rule's reference: torch's stable descending sort (NaN as +inf), first k."""
    key = torch.nan_to_num(scores, nan=float("inf"), posinf=float("inf"), neginf=float("-inf"))
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices[..., :k]
    return scores.gather(-1, order), order


def tied_scores(shape, seed, levels=7):
    """Scores with few distinct values (as bf16 logits or ReLU-dead regions give): ties everywhere."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, shape, generator=g).float() / 3 - 1


@pytest.mark.parametrize("k", [1, 5, 37, 199, 200])
@pytest.mark.parametrize("seed", [0, 1])
def test_topk_stable_is_the_stable_descending_sort(seed, k):
    scores = tied_scores((3, 200), seed)
    values, indices = topk_stable(scores, k)
    ref_values, ref_indices = stable_top(scores, k)
    assert indices.dtype == torch.int64
    assert torch.equal(indices, ref_indices) and torch.equal(values, ref_values)


def test_torch_topk_breaks_ties_otherwise():
    """Why the function exists: torch.topk orders equal values (and picks among them at the k-th place)
    in no specified order, which on the CPU is not the index order."""
    scores = torch.zeros(20000)
    scores[:100] = 1.0
    assert not torch.equal(scores.topk(1000).indices, stable_top(scores, 1000)[1])
    assert torch.equal(topk_stable(scores, 1000)[1], stable_top(scores, 1000)[1])


def test_topk_stable_non_finite_and_edge_sizes():
    scores = torch.tensor([0.5, float("nan"), float("inf"), 0.5, float("-inf"), float("nan"), 0.5])
    values, indices = topk_stable(scores, 5)
    assert indices.tolist() == [1, 2, 5, 0, 3]  # NaN and +inf rank alike, then by index
    assert torch.isnan(values[0]) and values[1] == float("inf")
    for k in (0, 7):
        values, indices = topk_stable(scores, k)
        assert torch.equal(indices, stable_top(scores, k)[1])
    values, indices = topk_stable(torch.zeros((2, 0)), 0)
    assert values.shape == (2, 0) and indices.shape == (2, 0)


class _TopK(torch.nn.Module):
    def forward(self, scores):
        k = torch.minimum(torch._shape_as_tensor(scores)[0], torch.tensor(50))
        return topk_stable(scores, k)


@pytest.mark.parametrize("n", [30, 3000])
def test_topk_stable_traced_and_in_onnx_runtime(n, tmp_path):
    """The same order in TorchScript (the traced composite) and in ONNX Runtime (ONNX's TopK)."""
    ort = pytest.importorskip("onnxruntime")
    example = tied_scores((400,), 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(_TopK(), (example,), check_trace=False)
        buffer = io.BytesIO()
        torch.onnx.export(_TopK(), (example,), buffer, input_names=["scores"], dynamic_axes={"scores": {0: "n"}},
                          opset_version=17, dynamo=False)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    scores = tied_scores((n,), 6)
    ref_values, ref_indices = stable_top(scores, min(n, 50))
    values, indices = traced(scores)
    assert torch.equal(indices, ref_indices) and torch.equal(values, ref_values)
    values, indices = session.run(None, {"scores": scores.numpy()})
    assert np.array_equal(indices, ref_indices.numpy()) and np.array_equal(values, ref_values.numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_topk_stable_on_cuda():
    scores = tied_scores((2, 5000), 7)
    values, indices = topk_stable(scores.cuda(), 1000)
    assert indices.is_cuda and torch.equal(indices.cpu(), stable_top(scores, 1000)[1])
