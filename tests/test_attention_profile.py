"""The "uses attention" gate: attention mass per head at offsets −1, 0, +1, on [CLS] and the final
[SEP], against the uniform mass, on hand-built attention patterns; and the held-out evaluation
that records it."""

import json

import pytest
import torch

from sparsebert_cli.attention.profile import AttentionProfile
from sparsebert_cli.config import ModelConfig
from sparsebert_cli.masks.source import MaskSource
from sparsebert_cli.modeling import build_pretraining_model
from sparsebert_cli.training.evaluation import PROFILE_FILE, HeldOutMLM

N = 8


def previous_token_and_uniform_heads(n: int = N) -> torch.Tensor:
    """[1, 2, n, n]: head 0 attends to the previous token (query 0 to itself), head 1 uniformly."""
    prev = torch.zeros(n, n)
    prev[0, 0] = 1.0
    prev[torch.arange(1, n), torch.arange(n - 1)] = 1.0
    return torch.stack([prev, torch.full((n, n), 1.0 / n)])[None]


def test_a_previous_token_head_shows_eight_times_the_uniform_mass_at_offset_minus_one():
    profile = AttentionProfile()
    profile.add(0, previous_token_and_uniform_heads(), None, None)
    prev_head, uniform_head = profile.heads()[0]
    assert prev_head["prev"] == pytest.approx(1.0)
    assert prev_head["next"] == pytest.approx(0.0)
    assert prev_head["diag"] == pytest.approx(1.0 / N)  # only query 0 looks at itself
    assert prev_head["cls"] == pytest.approx(2.0 / N)  # queries 0 and 1 look at key 0
    assert prev_head["uniform"] == pytest.approx(1.0 / N)
    for stat in ("prev", "diag", "next", "cls", "sep", "uniform"):
        assert uniform_head[stat] == pytest.approx(1.0 / N)
    metrics = profile.metrics(mlm_accuracy=0.25)
    assert metrics["eval/attn_neighbour_ratio"] == pytest.approx(8.0)
    assert metrics["eval/uses_attention"] == 1.0


def test_distances_beyond_a_batch_hold_no_mass_rather_than_failing():
    """report --occlusion --max-distance D on batches shorter than D stopped with a shape error."""
    profile = AttentionProfile(distances=N + 2)
    profile.add(0, previous_token_and_uniform_heads(), None, None)
    prev_head, uniform_head = profile.heads()[0]
    assert prev_head["dist1"] == pytest.approx((N - 1) / N)  # queries 1… at distance 1
    assert uniform_head["dist1"] == pytest.approx(2 * (N - 1) / N / N)
    assert [uniform_head[f"dist{d}"] for d in (N, N + 1, N + 2)] == [0, 0, 0]


@pytest.mark.parametrize(
    ("accuracy", "probs", "passed"),
    [
        (0.19, previous_token_and_uniform_heads(), 0.0),  # attends, but predicts too poorly
        (0.50, previous_token_and_uniform_heads()[:, 1:], 0.0),  # only the uniform head
        (0.20, previous_token_and_uniform_heads(), 1.0),
    ],
)
def test_the_gate_needs_both_a_neighbour_head_and_the_accuracy(accuracy, probs, passed):
    profile = AttentionProfile()
    profile.add(0, probs, None, None)
    assert profile.metrics(accuracy)["eval/uses_attention"] == passed


def test_padding_and_a_sparse_mask_change_the_uniform_baseline_and_the_final_sep():
    n, real = 6, 4
    padding = torch.zeros(1, n, dtype=torch.bool)
    padding[0, real:] = True
    probs = torch.zeros(1, 1, n, n)
    probs[0, 0, :, real - 1] = 1.0  # every query on the last real token: the final [SEP]
    band = (torch.arange(n)[:, None] - torch.arange(n)[None]).abs() <= 1
    profile = AttentionProfile()
    profile.add(0, probs, band[None], padding)
    head = profile.heads()[0][0]
    assert head["sep"] == pytest.approx(1.0)
    # real queries 0..3 may attend to 2, 3, 3, 2 real keys of the band
    assert head["uniform"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 3 + 1 / 2) / 4)
    assert head["next"] == pytest.approx(1 / 3)  # queries 0, 1, 2 have a real next key; 2 → 3


def test_held_out_evaluation_records_the_gate_for_every_head(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, norm="pre")
    model = build_pretraining_model(cfg, MaskSource("dense"), vocab_size=40, nsp=False)
    rows = [
        dict(
            input_ids=torch.randint(1, 40, (N,)),
            attention_mask=torch.ones(N, dtype=torch.long),
            token_type_ids=torch.zeros(N, dtype=torch.long),
            masked_lm_positions=torch.tensor([2, 5]),
            masked_lm_ids=torch.tensor([3, 4]),
            masked_lm_weights=torch.ones(2),
        )
        for _ in range(5)
    ]

    def collate(batch):
        return {k: torch.stack([row[k] for row in batch]) for k in batch[0]}

    evaluate = HeldOutMLM(model, rows, collate, batch_size=2)
    metrics = evaluate()
    assert metrics["eval/uses_attention"] == 0.0  # a random model has not learned attention
    assert metrics["eval/attn_neighbour_ratio"] > 0
    evaluate.write_profile(tmp_path)
    record = json.loads((tmp_path / PROFILE_FILE).read_text())
    assert [len(layer) for layer in record["heads"]] == [2, 2]
    assert record["gate"]["passed"] is False
    assert record["metrics"]["eval/mlm_accuracy"] == metrics["eval/mlm_accuracy"]


def test_the_profile_of_a_batch_taken_a_few_examples_at_a_time_is_the_same(monkeypatch):
    """Long n: the evaluation profiles chunks of the batch (bounded memory), not all at once."""
    from sparsebert_cli.attention import interface

    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32)
    model = build_pretraining_model(cfg, MaskSource("dense"), vocab_size=40, nsp=False).eval()
    ids = torch.randint(1, 40, (5, N))
    attention = torch.ones_like(ids)
    attention[3, 5:] = 0  # padding inside one chunk

    def profile_heads() -> list:
        profile = AttentionProfile()
        with torch.no_grad():
            model.bert(ids, attention_mask=attention, sparse_mask=model.sparse_mask(N),
                       attention_profile=profile)  # fmt: skip
        return profile.heads()

    whole = profile_heads()
    assert len(whole) == 2 and len(whole[0]) == 2  # layers × heads were profiled
    per_example = 2 * N * N * interface.PROFILE_TEMPORARIES * 4
    monkeypatch.setattr(interface, "PROFILE_CHUNK_BYTES", 2 * per_example)  # chunks of 2
    chunked = profile_heads()
    for layer_whole, layer_chunked in zip(whole, chunked, strict=True):
        for a, b in zip(layer_whole, layer_chunked, strict=True):
            assert a.keys() == b.keys()
            assert all(a[k] == pytest.approx(b[k], abs=1e-6) for k in a)
