"""Mask statistics and the universal-approximation checks."""

import torch

from sparsebert_cli.masks.patterns import dense, longformer, no_diag, star, window
from sparsebert_cli.masks.stats import (
    connectivity,
    hamiltonian_path,
    reach_layers,
    row_density,
    rows_without_other_key,
    sparsity,
    sparsity_per_head,
    sparsity_per_layer,
)


def path_mask(order: list[int]) -> torch.Tensor:
    """[1, n, n]: each token of `order` attends only to the one before it."""
    mask = torch.zeros(1, len(order), len(order), dtype=torch.bool)
    for before, after in zip(order, order[1:], strict=False):
        mask[0, after, before] = True
    return mask


def test_sparsity_is_the_masked_percentage():
    assert sparsity(no_diag(4, 1)) == 25.0


def test_sparsity_per_layer_and_head():
    mask = torch.stack([torch.stack([dense(4, 1)[0], no_diag(4, 1)[0]]), window(4, 2, window=0)])
    assert sparsity_per_layer(mask) == [12.5, 75.0]
    assert sparsity_per_head(mask) == [[0.0, 25.0], [75.0, 75.0]]


def test_row_density_reports_min_mean_max_percent_of_keys():
    assert row_density(window(4, 1, window=1)) == {"min": 50.0, "mean": 62.5, "max": 75.0}


def test_identity_rows_attend_to_no_other_token():
    assert rows_without_other_key(window(5, 2, window=0)) == 10


def test_no_diag_rows_all_attend_to_another_token():
    assert rows_without_other_key(no_diag(5, 2)) == 0


def test_hamiltonian_path_follows_the_natural_order():
    assert hamiltonian_path(window(6, 1, window=1)) is True


def test_hamiltonian_path_is_found_in_a_shuffled_order():
    assert hamiltonian_path(path_mask([2, 0, 4, 1, 3])) is True


def test_hamiltonian_path_is_impossible_with_two_unfed_tokens():
    mask = path_mask([0, 1, 2, 3])
    mask[0, 1, 0] = False  # tokens 0 and 1 now attend to nobody
    assert hamiltonian_path(mask) is False


def test_hamiltonian_path_is_impossible_through_a_single_hub():
    # Global [CLS] only: tokens 1, 2, 3 talk to 0 alone, so no path visits all three.
    assert hamiltonian_path(longformer(4, 1, window=0, global_tokens=1)) is False


def test_hamiltonian_path_is_undecided_when_the_budget_runs_out():
    assert hamiltonian_path(path_mask([2, 0, 4, 1, 3]), budget=0) is None


def test_dense_reaches_everyone_in_one_layer():
    assert reach_layers(dense(5, 1)) == 1


def test_band_of_half_width_one_reaches_across_n_minus_one_layers():
    assert reach_layers(window(5, 1, window=1)) == 4


def test_star_reaches_everyone_in_two_layers_through_the_relay():
    assert reach_layers(star(9, 1)) == 2


def test_a_sparse_layer_graph_reaches_as_the_dense_product(monkeypatch):
    """Below SPARSE_HOP_DENSITY a layer's graph multiplies as CSR (`masks --seq-len 4096` took
    minutes of dense n × n products); the layers it counts are the dense product's."""
    from sparsebert_cli.masks import stats

    assert reach_layers(window(200, 1, window=1)) == 199  # 1.5 % dense: the CSR path
    graphs = torch.rand(2, 1, 120, 120, generator=torch.Generator().manual_seed(0)) < 0.03
    found = {}
    for density in (0.0, 1.0):  # every graph dense, every graph sparse
        monkeypatch.setattr(stats, "SPARSE_HOP_DENSITY", density)
        found[density] = reach_layers(graphs)
    assert found[0.0] == found[1.0] is not None


def test_reach_is_not_computed_beyond_its_limit():
    assert reach_layers(window(5, 1, window=1), limit=3) is None
    assert reach_layers(window(5, 1, window=1), limit=4) == 4


def test_identity_never_reaches_other_tokens():
    assert reach_layers(window(4, 1, window=0)) is None


def test_per_layer_masks_apply_in_turn():
    forward = path_mask([0, 1, 2, 3])  # information flows 0 → 1 → 2 → 3
    backward = path_mask([3, 2, 1, 0])
    # Token 0 hears token 3 after three backward layers: the 2nd, 4th and 6th.
    assert reach_layers(torch.stack([forward, backward])) == 6


def test_connectivity_flags_a_band_too_narrow_for_the_depth():
    assert connectivity(window(9, 1, window=1), layers=4) == {
        "attends_other": True,
        "hamiltonian_path": True,
        "reach_layers": None,  # 8: more than the depth, not computed further
        "reaches_all_within_layers": False,
    }
