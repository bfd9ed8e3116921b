"""`sparsebert report --occlusion RUN`: what removing one attention band costs a trained model.

A DAM's keep probabilities σ(α) say which positions the search kept; occlusion asks the model
itself. For the dense model a run starts from (a pretrain run's own model, or the model a search
run was warm-started from), each band is removed in every layer and head in turn — the diagonal
(|i − j| = 0), each distance 1…D, the [CLS] column — and the held-out MLM loss and the mean
squared change of the final hidden states are measured against the dense model on the same
examples (the hidden states only when the model has no trained MLM head: MiniLM without a
search's warmed-up head). Beside each band: the dense model's attention mass there and, for a search run, the
mean σ(α) of the band at the end of the search, with the Spearman correlations of σ(α) with both.
A band the search drops while occlusion shows it costs a lot is a sign of a biased estimator or
objective, not of an unimportant position.
"""

import copy
import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from sparsebert_cli import runs
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.progress import table_console

OCCLUSION_FILE = "occlusion.json"


def band_masks(n: int, heads: int, max_distance: int) -> dict[str, torch.Tensor]:
    """Bool masks [1, H, n, n] that keep everything but one band."""
    distance = (torch.arange(n)[:, None] - torch.arange(n)[None]).abs()
    removed = {"diag" if d == 0 else f"d={d}": distance == d for d in range(max_distance + 1)}
    cls = torch.zeros(n, n, dtype=torch.bool)
    cls[1:, 0] = True  # every other query loses [CLS]; [CLS] itself keeps its own row
    removed["cls"] = cls
    return {
        name: (~band)[None, None].expand(1, heads, n, n).clone() for name, band in removed.items()
    }


def _starting_model(run_dir: Path, manifest: dict, cfg) -> DictConfig:
    """The model config whose weights occlusion reads: the run's own model (a pretrain run, or a
    search run that saved its frozen encoder with the heads it warmed up) or the model a search
    started from."""
    model_cfg = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
    stage = manifest["stage"]
    source = manifest["inputs"].get("model")  # the run a search started from
    if stage == "pretrain" or (stage == "search" and runs.layout(run_dir).model.is_dir()):
        model_cfg.from_run = str(run_dir)
    elif stage == "search":
        if source is not None:
            model_cfg.from_run = source["run_dir"]
        elif not model_cfg.get("name_or_path"):
            raise SparseBertError(
                f"{run_dir} searched its mask on a randomly initialised model; occlusion needs a "
                "trained one: pass a pretrain run, or a search run started from model.from=<run> "
                "or model=minilm."
            )
    else:
        raise SparseBertError(
            f"{run_dir} is {runs.a_run_of(stage)}; --occlusion reads a pretrain run or a search run."
        )
    # the pretrain run that trained the encoder (a search's frozen encoder is its input's)
    trained = run_dir if stage == "pretrain" else source["run_dir"] if source else None
    if trained is not None:
        from sparsebert_cli.modeling import recorded_mask

        kind = recorded_mask(runs.layout(trained).model)
        if kind not in (None, "dense"):
            raise SparseBertError(
                f"{trained} pre-trained with the {kind} mask; occlusion removes bands "
                "from a model trained dense (without its mask this one computes something it "
                "never learned): pass a pretrain run with mask=dense, or a search run started "
                "from one."
            )
    return model_cfg


def _final_keep_probabilities(run_dir: Path):
    """σ(α) of the last trace snapshot averaged over layers: [H, n, n]; None without a trace."""
    from safetensors.torch import load_file

    path = runs.layout(run_dir).importance_trace
    if not path.is_file():
        return None
    return load_file(str(path))["probs"][-1].float().mean(0)


def _spearman(a: list[float], b: list[float]) -> float:
    """The tasks' Spearman ρ (0 where a side is constant, e.g. σ(α) after a short search)."""
    import numpy as np

    from sparsebert_cli.data.metrics import spearman

    return spearman(np.array(a), np.array(b))


def occlusion(run_dir: Path, max_distance: int, examples: int) -> dict:
    """The occlusion record of a pretrain or search run (see the module docstring)."""
    from sparsebert_cli.attention.profile import AttentionProfile
    from sparsebert_cli.data.tokenizer import load_tokenizer
    from sparsebert_cli.modeling import MaskSource, build_pretraining_model
    from sparsebert_cli.pretrained import resolve_pretrained
    from sparsebert_cli.stages.inputs import cache_dir, pretraining_data
    from sparsebert_cli.training.distill import DistillationObjective
    from sparsebert_cli.training.evaluation import evaluate_mlm

    manifest = runs.load_manifest(run_dir)
    if manifest is None or manifest.get("status") != "completed":
        raise SparseBertError(
            f"{run_dir} is not a completed run (no completed {runs.MANIFEST}); pass the folder of a "
            "completed pretrain or search run."
        )
    cfg = OmegaConf.load(run_dir / runs.CONFIG)
    if max_distance >= cfg.data.seq_len:
        raise SparseBertError(
            f"--max-distance {max_distance} reaches past the run's sequences (data.seq_len="
            f"{cfg.data.seq_len}): a band |i − j| = d ≥ {cfg.data.seq_len} holds no entry to "
            f"remove; use --max-distance {cfg.data.seq_len - 1} or less."
        )
    model_cfg = _starting_model(run_dir, manifest, cfg)
    weights = resolve_pretrained(model_cfg.from_run or model_cfg.name_or_path)
    tokenizer = load_tokenizer(cfg.data, cache_dir(cfg), source=weights)
    splits, collate = pretraining_data(cfg, tokenizer)
    held_out = [splits["eval"][i] for i in range(min(examples, len(splits["eval"])))]
    dense = build_pretraining_model(model_cfg, MaskSource("dense"), len(tokenizer), cfg.data.nsp)
    dense.eval()
    batch_size = cfg.trainer.eval_batch_size
    profile = AttentionProfile(distances=max_distance)
    base = evaluate_mlm(dense, held_out, collate, batch_size, profile)
    n, heads = cfg.data.seq_len, dense.config.num_attention_heads
    mass_by_head = [h for layer in profile.heads() for h in layer]
    keep = _final_keep_probabilities(run_dir) if manifest["stage"] == "search" else None
    occluded = copy.deepcopy(dense)
    objective = DistillationObjective(occluded, dense)
    rows = []
    for name, mask in band_masks(n, heads, max_distance).items():
        occluded.sparse_mask = MaskSource("fixed", mask=mask)
        stat = name if name in ("cls", "diag") else f"dist{name[2:]}"
        row = {"band": name}
        if dense.trained_mlm_head:  # a new head's loss says nothing about the encoder
            loss = evaluate_mlm(occluded, held_out, collate, batch_size)[runs.MLM_LOSS]
            row["delta_mlm_loss"] = loss - base[runs.MLM_LOSS]
        row["hidden_mse"] = objective.evaluate(held_out, collate, batch_size)["eval/distill_mse"]
        row["attention_mass"] = sum(h[stat] for h in mass_by_head) / len(mass_by_head)
        if keep is not None:
            m = min(n, keep.shape[-1])  # the searched mask may be longer than data.seq_len
            row["keep_probability"] = float(keep[:, :m, :m][:, ~mask[0, 0, :m, :m]].mean())
        rows.append(row)
    record = {
        "run": str(run_dir),
        "model": str(weights),
        "examples": len(held_out),
        "dense": {k: base[k] for k in (runs.MLM_LOSS, runs.MLM_ACCURACY, runs.USES_ATTENTION)},
        "trained_mlm_head": dense.trained_mlm_head,
        "bands": rows,
    }
    if keep is not None:
        sigma = [r["keep_probability"] for r in rows]
        record["spearman"] = {
            f"keep_vs_{measure}": _spearman(sigma, [r[measure] for r in rows])
            for measure in ("attention_mass", "delta_mlm_loss", "hidden_mse")
            if measure in rows[0]
        }
    return record


def write_occlusion(run_dir: Path, out_dir: Path, max_distance: int, examples: int) -> Path:
    """Compute the record, write it as `occlusion.json` in `out_dir` and print it as a table."""
    from rich.table import Table

    record = occlusion(run_dir, max_distance, examples)
    path = out_dir / OCCLUSION_FILE
    runs.atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    dense = record["dense"]
    model = "no trained MLM head"
    if record["trained_mlm_head"]:
        model = (
            f"dense MLM loss {dense['eval/mlm_loss']:.3f}, accuracy "
            f"{100 * dense['eval/mlm_accuracy']:.1f} %, uses attention: "
            f"{'yes' if dense['eval/uses_attention'] else 'no'}"
        )
    table = Table(
        title=f"occlusion of {run_dir.name} ({record['examples']} held-out examples; {model})"
    )
    columns = [c for c in record["bands"][0] if c != "band"]
    if not record["trained_mlm_head"]:
        table.caption = (
            "the model has no trained MLM head (a sentence encoder, or a search that did not "
            "warm one up on a frozen encoder): the cost of a band is its hidden-state MSE only"
        )
    for column in ["band", *columns]:
        table.add_column(column, justify="left" if column == "band" else "right")
    for row in record["bands"]:
        table.add_row(row["band"], *(f"{row[c]:.4g}" for c in columns))  # MSEs of ~1e-6
    console = table_console()
    console.print(table)
    for name, value in record.get("spearman", {}).items():
        console.print(f"spearman {name}: {value:+.3f}")
    return path
