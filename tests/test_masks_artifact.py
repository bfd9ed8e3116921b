"""Mask artifacts and fixed-mask building: round trip, metadata, cropping, and refused files."""

import hashlib
import json
import pickle

import pytest
import torch

from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.artifact import fit_to_length, load_mask, save_mask
from sparsebert_cli.masks.build import build_fixed_mask
from sparsebert_cli.masks.config import MaskConfig
from sparsebert_cli.masks.patterns import star


def small_mask() -> torch.Tensor:
    """[L=2, H=2, n=4, n=4]: layer 0 dense + no-diagonal, layer 1 identity + empty."""
    eye = torch.eye(4, dtype=torch.bool)
    return torch.stack(
        [torch.stack([torch.ones(4, 4, dtype=torch.bool), ~eye]), torch.stack([eye, eye & False])]
    )


@pytest.fixture
def saved(tmp_path):
    save_mask(
        tmp_path, small_mask(), {"kind": "dam_u", "params": {"lam": 1e-4}, "source_run": "r1"}
    )
    return tmp_path


def test_save_writes_tensor_plot_and_metadata(tmp_path):
    paths = save_mask(tmp_path, small_mask(), {"kind": "dam_u"})
    assert [p.name for p in paths] == ["mask.safetensors", "mask.png", "mask.json"]
    assert (tmp_path / "mask.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mask.json",
        "mask.png",
        "mask.safetensors",
    ]


def test_round_trip_returns_the_identical_mask(saved):
    mask, _ = load_mask(saved)
    assert mask.dtype == torch.bool
    assert torch.equal(mask, small_mask())


def test_metadata_records_shape_sparsity_and_source(saved):
    _, meta = load_mask(saved)
    assert (meta["kind"], meta["n"], meta["layers"], meta["heads"]) == ("dam_u", 4, 2, 2)
    assert meta["params"] == {"lam": 1e-4} and meta["source_run"] == "r1"
    assert meta["sparsity"] == {
        "overall": 50.0,
        "per_layer": [12.5, 87.5],
        "per_head": [[0.0, 25.0], [75.0, 100.0]],
    }


def test_load_crops_to_a_shorter_sequence(saved):
    mask, _ = load_mask(saved, n=3)
    assert torch.equal(mask, small_mask()[..., :3, :3])


def test_load_refuses_a_longer_sequence(saved):
    """The fix named mask.seq_len=5 alone, which a search at data.seq_len=4 refuses."""
    with pytest.raises(SparseBertError, match="at most n=4 tokens but got length 5") as refused:
        load_mask(saved, n=5)
    assert "data.seq_len=5, with mask.seq_len=5 for a DAM" in str(refused.value)


def test_fit_to_length_crops_float_masks_too():
    probs = torch.rand(1, 2, 6, 6)
    assert torch.equal(fit_to_length(probs, 2), probs[..., :2, :2])


def test_load_refuses_another_head_count(saved):
    with pytest.raises(SparseBertError, match="has 2 heads but the model has 12"):
        load_mask(saved, heads=12)


def test_load_refuses_another_layer_count(saved):
    with pytest.raises(SparseBertError, match="has 2 layers but the model has 6"):
        load_mask(saved, layers=6)


def test_a_shared_mask_serves_any_layer_count(tmp_path):
    save_mask(tmp_path, small_mask()[:1], {"kind": "dam_s"})
    mask, _ = load_mask(tmp_path, heads=2, layers=12)
    assert mask.shape == (1, 2, 4, 4)


def test_missing_artifact_is_refused(tmp_path):
    with pytest.raises(SparseBertError, match="mask.safetensors does not exist"):
        load_mask(tmp_path)


def test_truncated_tensor_file_is_refused(saved):
    path = saved / "mask.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(SparseBertError, match="sha256 differs"):
        load_mask(saved)


def test_truncated_metadata_is_refused(saved):
    path = saved / "mask.json"
    path.write_text(path.read_text()[:40])
    with pytest.raises(SparseBertError, match="not valid JSON"):
        load_mask(saved)


def test_pickle_in_place_of_safetensors_is_refused_without_unpickling(saved):
    payload = pickle.dumps({"mask": small_mask()})
    (saved / "mask.safetensors").write_bytes(payload)
    meta = json.loads((saved / "mask.json").read_text())
    meta["sha256"] = hashlib.sha256(payload).hexdigest()
    (saved / "mask.json").write_text(json.dumps(meta))
    with pytest.raises(SparseBertError, match="not a valid safetensors file"):
        load_mask(saved)


def test_metadata_of_another_mask_is_refused(saved, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    save_mask(other, small_mask()[:, :1], {"kind": "dam_u"})
    (saved / "mask.json").write_bytes((other / "mask.json").read_bytes())
    with pytest.raises(SparseBertError, match="sha256 differs"):
        load_mask(saved)


def test_shape_disagreeing_with_metadata_is_refused(saved):
    meta = json.loads((saved / "mask.json").read_text())
    meta["heads"] = 3
    (saved / "mask.json").write_text(json.dumps(meta))
    with pytest.raises(SparseBertError, match=r"says 'mask': bool \[2, 3, 4, 4\]"):
        load_mask(saved)


def test_unknown_kind_is_refused(saved):
    meta = json.loads((saved / "mask.json").read_text())
    meta["kind"] = "magic"
    (saved / "mask.json").write_text(json.dumps(meta))
    with pytest.raises(SparseBertError, match="kind 'magic'"):
        load_mask(saved)


def test_build_fixed_mask_of_a_pattern_is_shared_by_all_layers():
    mask = build_fixed_mask(MaskConfig(name="star"), n=6, heads=2, layers=4)
    assert torch.equal(mask, star(6, 2)[None])


def test_build_fixed_mask_loads_a_searched_mask_from_the_run_directory(tmp_path):
    save_mask(tmp_path / "artifacts", small_mask(), {"kind": "dam_u"})
    cfg = MaskConfig(name="from_run", from_run=str(tmp_path))
    mask = build_fixed_mask(cfg, n=3, heads=2, layers=2)
    assert torch.equal(mask, small_mask()[..., :3, :3])


def test_build_fixed_mask_leaves_latest_to_the_caller():
    with pytest.raises(SparseBertError, match="mask.from='latest' is not a run directory"):
        build_fixed_mask(MaskConfig(name="from_run", from_run="latest"), n=4, heads=2, layers=2)


@pytest.mark.parametrize("name", ["dam", "attention_topk"])
def test_build_fixed_mask_refuses_the_searched_masks(name):
    with pytest.raises(SparseBertError, match=f"mask={name} is made by `sparsebert search"):
        build_fixed_mask(MaskConfig(name=name), n=4, heads=2, layers=2)
