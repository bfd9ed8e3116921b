"""Fixed patterns: shapes, symmetry, exact kept counts, the paper's sparsities, seeding, presets."""

import pytest
import torch

from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.catalogue import presets
from sparsebert_cli.masks.config import MaskConfig
from sparsebert_cli.masks.patterns import (
    PATTERNS,
    bigbird,
    dense,
    fixed,
    logsparse,
    longformer,
    no_diag,
    pattern_mask,
    random,
    star,
    strided,
    window,
)
from sparsebert_cli.masks.stats import sparsity

PRESETS = presets([*PATTERNS, "dam", "dam_s", "from_run"])
SYMMETRIC = ["dense", "no_diag", "strided", "longformer", "logsparse", "star", "window"]
PAPER_SPARSITY = {
    "strided": 70.4,
    "fixed": 72.7,
    "longformer": 88.7,
    "logsparse": 89.8,
    "bigbird": 93.2,
    "star": 96.1,
}


def kept(mask: torch.Tensor) -> int:
    return int(mask.sum())


@pytest.mark.parametrize("name", list(PATTERNS))
@pytest.mark.parametrize("n", [1, 7, 33])
def test_pattern_is_bool_heads_by_n_by_n_at_any_n(name, n):
    mask = pattern_mask(PRESETS[name], n, heads=3)
    assert mask.dtype == torch.bool
    assert mask.shape == (3, n, n)


@pytest.mark.parametrize("name", SYMMETRIC)
def test_symmetric_pattern_equals_its_transpose(name):
    mask = pattern_mask(PRESETS[name], 37, heads=2)
    assert torch.equal(mask, mask.transpose(-1, -2))


@pytest.mark.parametrize("name", [*SYMMETRIC, "fixed"])
def test_deterministic_pattern_gives_every_head_the_same_mask(name):
    mask = pattern_mask(PRESETS[name], 20, heads=4)
    assert all(torch.equal(mask[0], mask[h]) for h in range(4))


@pytest.mark.parametrize("name, expected", PAPER_SPARSITY.items())
def test_preset_reproduces_paper_sparsity_at_128(name, expected):
    assert abs(sparsity(pattern_mask(PRESETS[name], 128, heads=12)) - expected) <= 0.5


@pytest.mark.parametrize("n", [1, 4, 128])
def test_dense_keeps_every_entry(n):
    assert kept(dense(n, 1)) == n * n


@pytest.mark.parametrize("n", [2, 10, 128])
def test_no_diag_masks_exactly_the_diagonal(n):
    mask = no_diag(n, 1)[0]
    assert kept(mask) == n * n - n
    assert not mask.diagonal().any()


@pytest.mark.parametrize("n, w, expected", [(10, 2, 44), (128, 8, 2104), (5, 9, 25)])
def test_window_keeps_band_of_half_width_w(n, w, expected):
    assert kept(window(n, 1, window=w)) == expected


@pytest.mark.parametrize("n, stride, expected", [(8, 3, 48), (16, 4, 148), (128, 4, 4852)])
def test_strided_keeps_near_and_multiple_of_stride_distances(n, stride, expected):
    assert kept(strided(n, 1, stride=stride)) == expected


@pytest.mark.parametrize("n, stride, c", [(8, 4, 1), (12, 3, 2), (128, 4, 1)])
def test_fixed_keeps_block_plus_summary_columns(n, stride, c):
    # l | n: n·l in-block + n·c·(n/l) summary keys − n·c counted twice.
    assert kept(fixed(n, 1, stride=stride, c=c)) == n * (stride + c * n // stride - c)


def test_fixed_summary_key_is_attended_by_every_query():
    mask = fixed(8, 1, stride=4, c=1)[0]
    assert mask[:, 3].all() and mask[:, 7].all()
    assert not mask[0, 4]


@pytest.mark.parametrize("n, w, expected", [(16, 2, 100), (128, 6, 1864)])
def test_longformer_keeps_window_plus_global_cls(n, w, expected):
    mask = longformer(n, 1, window=w, global_tokens=1)[0]
    assert kept(mask) == expected
    assert mask[0].all() and mask[:, 0].all()


@pytest.mark.parametrize("n, expected", [(8, 42), (16, 114), (128, 1666)])
def test_logsparse_keeps_zero_and_power_of_two_distances(n, expected):
    assert kept(logsparse(n, 1)) == expected


@pytest.mark.parametrize("n, expected", [(5, 19), (128, 634)])
def test_star_keeps_ring_plus_relay(n, expected):
    assert kept(star(n, 1)) == expected


def test_bigbird_adds_exactly_r_random_keys_per_non_global_query():
    base = longformer(16, 3, window=1, global_tokens=1)
    mask = bigbird(16, 3, window=1, global_tokens=1, random_keys=2, seed=0)
    assert (mask & ~base).sum(dim=-1).tolist() == [[0] + [2] * 15] * 3
    assert (mask >= base).all()


def test_bigbird_same_seed_gives_same_mask():
    params = dict(window=1, global_tokens=1, random_keys=4, seed=7)
    assert torch.equal(bigbird(32, 2, **params), bigbird(32, 2, **params))


def test_bigbird_other_seed_gives_other_mask():
    params = dict(window=1, global_tokens=1, random_keys=4)
    assert not torch.equal(bigbird(32, 2, seed=0, **params), bigbird(32, 2, seed=1, **params))


def test_bigbird_heads_differ_and_head_h_does_not_depend_on_head_count():
    params = dict(window=1, global_tokens=1, random_keys=4, seed=0)
    two, four = bigbird(32, 2, **params), bigbird(32, 4, **params)
    assert not torch.equal(four[0], four[1])
    assert torch.equal(two, four[:2])


@pytest.mark.parametrize("n, density, expected", [(10, 0.25, 25), (7, 0.0, 0), (6, 1.0, 36)])
def test_random_keeps_exactly_round_density_n_squared_per_head(n, density, expected):
    assert random(n, 3, density=density, seed=0).sum(dim=(1, 2)).tolist() == [expected] * 3


def test_random_is_seeded():
    assert torch.equal(random(16, 2, density=0.3, seed=5), random(16, 2, density=0.3, seed=5))
    assert not torch.equal(random(16, 2, density=0.3, seed=5), random(16, 2, density=0.3, seed=6))


def test_pattern_mask_reads_the_parameters_from_the_config():
    cfg = MaskConfig(name="window", window=1)
    assert torch.equal(pattern_mask(cfg, 6, 2), window(6, 2, window=1))


def test_unknown_pattern_name_suggests_the_nearest():
    with pytest.raises(SparseBertError, match="'strided2'.*Did you mean strided"):
        pattern_mask(MaskConfig(name="strided2"), 8, 1)


def test_invalid_parameter_names_the_value_and_a_fix():
    with pytest.raises(SparseBertError, match=r"mask.stride=0.*set mask.stride=4"):
        pattern_mask(MaskConfig(name="strided", stride=0), 8, 1)


def test_random_density_outside_unit_interval_is_refused():
    with pytest.raises(SparseBertError, match=r"mask.density=1.5"):
        pattern_mask(MaskConfig(name="random", density=1.5), 8, 1)


def test_presets_compose_into_the_schema():
    assert PRESETS["dam_s"].name == "dam" and PRESETS["dam_s"].structure == "structured"
    assert PRESETS["dam"].structure == "unstructured"
    assert PRESETS["from_run"].from_run == "latest"
    assert all(PRESETS[name].name == name for name in PATTERNS)


def test_each_pattern_takes_as_keywords_exactly_the_fields_the_registry_lists():
    """PATTERN_FIELDS (torch-free, read by the content hash and the report) and the functions'
    keyword parameters (what pattern_params passes) are one fact."""
    import inspect

    from sparsebert_cli.masks.config import PATTERN_FIELDS

    assert list(PATTERN_FIELDS) == list(PATTERNS)
    for name, function in PATTERNS.items():
        keywords = [
            p.name
            for p in inspect.signature(function).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        ]
        assert keywords == list(PATTERN_FIELDS[name]), name
