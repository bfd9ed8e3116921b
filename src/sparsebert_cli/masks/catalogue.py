"""The catalogue of fixed patterns with their sparsity and connectivity at n (`sparsebert masks`,
tools.masks_main, prints it).

Each pattern is built from its preset conf/mask/<name>.yaml. The searched masks (`dam`, `dam_s`,
`dam_block`, `attention_topk`) and `from_run` (needs a run) are not listed. Torch is imported
inside the functions, so importing this module stays instant.
"""

from collections.abc import Callable


def presets(names: list[str]) -> dict:
    """The `mask` config of each conf/mask/<name>.yaml, on top of the MaskConfig defaults."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from sparsebert_cli.config import HYDRA_VERSION_BASE, conf_dir
    from sparsebert_cli.errors import SparseBertError
    from sparsebert_cli.masks.config import MaskConfig

    configs = {}
    with initialize_config_dir(str(conf_dir()), version_base=HYDRA_VERSION_BASE):
        for name in names:
            preset = compose(overrides=[f"+mask={name}"]).mask
            try:
                configs[name] = OmegaConf.merge(OmegaConf.structured(MaskConfig), preset)
            except OmegaConfBaseException as error:  # a key MaskConfig has no field for
                raise SparseBertError(
                    f"conf/mask/{name}.yaml does not fit the mask schema: "
                    f"{str(error).splitlines()[0]}. A pattern's parameter needs a field in "
                    "MaskConfig (masks/config.py); see docs/extending.md."
                ) from None
    return configs


def catalogue(
    n: int, heads: int, layers: int, progress: Callable[[str], None] | None = None
) -> list[dict]:
    """One row per fixed pattern, from its preset: name, params, sparsity (%), row density (%),
    connectivity; `progress` is told each pattern's name before it is measured."""
    from sparsebert_cli.masks.patterns import PATTERNS, pattern_mask, pattern_params
    from sparsebert_cli.masks.stats import connectivity, row_density, sparsity

    rows = []
    for name, cfg in presets(list(PATTERNS)).items():
        if progress is not None:
            progress(name)
        mask = pattern_mask(cfg, n, heads)[None]  # [1, H, n, n]: shared by all layers
        rows.append(
            {
                "name": name,
                "params": pattern_params(cfg),
                "sparsity": sparsity(mask),
                "row_density": row_density(mask),
                "connectivity": connectivity(mask, layers),
            }
        )
    return rows
