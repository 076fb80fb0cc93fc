"""`geotune shift`: the domain shift between two datasets in a backbone's feature space."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from pydantic import Field
from rich.console import Console

from geotune.data.bands import BandRequest
from geotune.data.classmap import load_class_map, pair_classes
from geotune.data.decode import decode_folder
from geotune.data.folder import cache_root
from geotune.data.scan import single_label_chips
from geotune.engine.fabric import resolve_device
from geotune.engine.features import cached_features
from geotune.fileio import atomic_write_csv, atomic_write_json, atomic_write_text
from geotune.models.backbones import create_backbone
from geotune.models.classifier import load_classifier
from geotune.models.names import DEFAULT_BACKBONE
from geotune.models.preprocessing import Preprocessing
from geotune.runs.paths import CACHE, existing_file, refuse_outputs_in_inputs, staging_of
from geotune.runs.rundir import RunDir, require_complete_run
from geotune.shift.distances import feature_distances
from geotune.validation import StrictConfig, path_field, register_config_model


def _features_of(data: Path, backbone, backbone_id: str, weights_id: str, prep, workers):
    folder = single_label_chips(data, "shift pairs the classes of two datasets")
    bands = BandRequest.for_run(prep.bands, "the model")  # the bands it takes, or an error
    images = decode_folder(folder, prep.size, prep.interpolation, workers, bands=bands)
    device = resolve_device("auto")
    feats = cached_features(backbone, backbone_id, weights_id, prep, images, device=device).values
    return images.folder, feats


def _sample(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    return np.sort(
        np.concatenate(
            [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
        )
    )


@register_config_model
class ShiftConfig(StrictConfig):
    """Options of `geotune shift`; its flags are generated from these fields."""

    a: Path = path_field(
        "input-dir", description="reference ImageFolder dataset (e.g. the training data)"
    )
    b: Path = path_field("input-dir", description="the other dataset (e.g. the target)")
    run: Path | None = path_field(
        "input-dir", None, description="measure in the feature space of this run"
    )
    backbone: str = Field(DEFAULT_BACKBONE, description="timm backbone, when no --run")
    weights: str = Field("auto", description="auto | offline | hub | PATH, when no --run")
    class_map: Path | None = path_field(
        "input-file", None, description="YAML 'b_class: a_class' pairs (default: same names)"
    )
    per_class: int = Field(100, ge=0, description="chips per class and dataset (0: all)")
    image_size: int | None = Field(
        None, ge=16, description="input size (default: the weights' or the run's)"
    )
    bootstrap: int = Field(200, ge=10, description="bootstrap resamples")
    output: Path = path_field(
        "output-dir", Path("shifts"), description="folder that holds shift reports"
    )
    name: str | None = Field(None, description="report folder name")

    def run_kwargs(self) -> dict:
        """Keyword arguments of ``measure_shift``."""
        d = self.model_dump()
        d["per_class"] = d["per_class"] or None
        d["n_boot"] = d.pop("bootstrap")
        return d


def measure_shift(
    a: Path,
    b: Path,
    backbone: str = DEFAULT_BACKBONE,
    weights: str = "auto",
    run: Path | None = None,
    class_map: Path | dict | None = None,
    per_class: int | None = 100,
    n_boot: int = 200,
    dim: int = 32,
    seed: int = 0,
    output: Path = Path("shifts"),
    name: str | None = None,
    embedding: bool = True,
    image_size: int | None = None,
    workers: int | None = None,
    console: Console | None = None,
) -> tuple[dict, Path]:
    """Distances between datasets ``a`` and ``b`` in a backbone's feature space, overall and per
    shared class; written to a folder with ``shift.json``, ``per_class.csv`` and a 2-D embedding.

    Args:
        a: ImageFolder dataset, the reference (e.g. the training data).
        b: ImageFolder dataset compared with ``a``.
        backbone: the feature space when no ``run`` is given.
        weights: the backbone's weights when no ``run`` is given.
        run: a finished run whose fine-tuned backbone gives the feature space.
        class_map: YAML ``b_class: a_class`` pairs (default: same names).
        per_class: chips per class and dataset (None: all).
        n_boot: bootstrap resamples for the 95% intervals.
        dim: projection size of the distance estimates.
        seed: seed of the distance estimates.
        output: where the report folder goes.
        name: the report folder's name.
        embedding: also draw the t-SNE figure.
        image_size: input size (default: the weights' or the run's).
        workers: decode threads.
        console: where progress goes.

    Returns:
        (result dict as in shift.json, report folder).
    """

    console = console or Console(stderr=True)
    inputs = {"A": a, "B": b, "--run": run, "--weights": existing_file(weights)}
    if not isinstance(class_map, dict):
        inputs["--class-map"] = class_map
    report = None if name is None else Path(output) / name
    refuse_outputs_in_inputs(
        {"--output/--name": report, "--output/--name (staging)": report and staging_of(report)},
        inputs,
        {CACHE: cache_root(), **({"--output": output} if name is None else {})},
    )
    t0 = time.perf_counter()
    net, prep, backbone, weights_id, source = _feature_space(run, backbone, weights, image_size)
    fa, feats_a = _features_of(a, net, backbone, weights_id, prep, workers)
    fb, feats_b = _features_of(b, net, backbone, weights_id, prep, workers)
    mapping, unmapped = pair_classes(fb.classes, fa.classes, load_class_map(class_map), "B")
    sa, sb = _sample(fa.labels, per_class, seed), _sample(fb.labels, per_class, seed + 1)
    overall = feature_distances(feats_a[sa], feats_b[sb], n_boot, seed, dim)
    b_names = np.array(fb.classes)[fb.labels]
    per_class_rows = _per_class_distances(
        feats_a, feats_b, fa, b_names, sa, sb, mapping, n_boot, seed, dim
    )
    result = {
        "a": str(Path(a).resolve()),
        "b": str(Path(b).resolve()),
        "features": source,
        "preprocessing": prep.to_dict(),
        "per_class_sample": per_class,
        "overall": overall,
        "class_pairs": mapping,
        "b_classes_left_out": unmapped,
        "seconds": time.perf_counter() - t0,
    }
    out = RunDir(output, name, prefix=f"shift-{Path(a).name}-{Path(b).name}")
    figure = None
    if embedding:
        figure = (feats_a[sa], feats_b[sb], fa.labels[sa], b_names[sb], mapping, fa.classes, seed)
    return result, _write_shift(out, result, per_class_rows, figure, (Path(a).name, Path(b).name))


def _write_shift(out: RunDir, result: dict, rows: list[dict], figure, names) -> Path:
    """shift.json, per_class.csv, embedding.png and shift.md, committed together."""
    out.create()
    try:
        atomic_write_json(out.path / "shift.json", result)
        if rows:
            atomic_write_csv(
                out.path / "per_class.csv", list(rows[0]), ([r[k] for k in rows[0]] for r in rows)
            )
        if figure is not None:
            _embedding_figure(*figure, out.path / "embedding.png", names)
        atomic_write_text(out.path / "shift.md", shift_markdown(result, rows))
        return out.commit()
    except BaseException:
        out.discard()
        raise


def _feature_space(run: Path | None, backbone: str, weights: str, image_size: int | None):
    """The backbone whose features are compared: a finished run's, or a pretrained one."""
    if run is not None:
        ckpt_path = require_complete_run(run) / "checkpoints" / "best.pt"
        model, prep, ckpt = load_classifier(ckpt_path)
        net, backbone, weights_id = model.backbone, ckpt["backbone"], f"file:{ckpt_path.resolve()}"
        source = f"run {run}"
    else:
        net, prep, weights_id = create_backbone(backbone, weights)
        source = f"{backbone} ({weights_id})"
    if image_size is not None:
        prep = Preprocessing(image_size, prep.mean, prep.std, prep.interpolation)
    return net, prep, backbone, weights_id, source


def _per_class_distances(feats_a, feats_b, fa, b_names, sa, sb, mapping, n_boot, seed, dim):
    """Distances between the chips of each shared class (B's classes paired through mapping)."""
    rows = []
    for a_class in sorted({c for v in mapping.values() for c in v}, key=fa.classes.index):
        ia = sa[fa.labels[sa] == fa.classes.index(a_class)]
        theirs = [k for k, v in mapping.items() if a_class in v]
        ib = sb[np.isin(b_names[sb], theirs)]
        if len(ia) < 4 or len(ib) < 4:
            continue
        d = feature_distances(feats_a[ia], feats_b[ib], max(50, n_boot // 4), seed, min(dim, 8))
        row = {"class": a_class, "b_classes": "+".join(theirs), "n_a": len(ia), "n_b": len(ib)}
        for m in ("mmd2", "frechet", "domain_accuracy", "proxy_a_distance"):
            for suffix, key in (("", "value"), ("_ci_low", "ci_low"), ("_ci_high", "ci_high")):
                row[f"{m}{suffix}"] = d[m][key]
        rows.append(row)
    return rows


def shift_markdown(result: dict, rows: list[dict]) -> str:
    o = result["overall"]

    def fmt(d, pct=False):
        f = (lambda x: f"{100 * x:.1f}%") if pct else (lambda x: f"{x:.4g}")
        return f"{f(d['value'])} [{f(d['ci_low'])}, {f(d['ci_high'])}]"

    lines = [
        f"# Domain shift: {Path(result['a']).name} vs {Path(result['b']).name}",
        "",
        f"Features: {result['features']}; {o['n_a']} and {o['n_b']} chips; "
        f"{o['dim']} principal components; 95% bootstrap intervals.",
        "",
        "| distance | value [95% CI] | no shift |",
        "|---|---|---|",
        f"| MMD² (Gaussian kernel, median bandwidth) | {fmt(o['mmd2'])} | 0 |",
        f"| Fréchet distance | {fmt(o['frechet'])} | ≈ 0 (small-sample bias) |",
        f"| domain classifier accuracy (5-fold) | {fmt(o['domain_accuracy'], True)} | 50% |",
        f"| proxy A-distance | {fmt(o['proxy_a_distance'])} | 0 (max 2) |",
        "",
    ]
    if result["b_classes_left_out"]:
        lines += [f"B classes left out (no pair): {', '.join(result['b_classes_left_out'])}", ""]
    if rows:
        lines += [
            "## Per shared class (largest shift first)",
            "",
            "| class | MMD² | Fréchet | domain acc. |",
            "|---|---|---|---|",
        ]
        for r in sorted(rows, key=lambda r: -r["mmd2"]):
            lines.append(
                f"| {r['class']} | {r['mmd2']:.4g} | {r['frechet']:.4g} | {100 * r['domain_accuracy']:.1f}% |"
            )
    return "\n".join(lines) + "\n"


def _embedding_figure(fa, fb, la, lb_names, mapping, classes, seed, path, names) -> None:
    """t-SNE of both samples: left coloured by domain, right by (shared) class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    cap = 600  # t-SNE cost grows with n^2 on CPU; 600 per domain keeps it to seconds
    ka = rng.permutation(len(fa))[:cap]
    kb = rng.permutation(len(fb))[:cap]
    x = np.concatenate([fa[ka], fb[kb]]).astype(np.float64)
    x = PCA(min(50, x.shape[1], len(x) - 1), random_state=seed).fit_transform(x)
    emb = TSNE(
        2, perplexity=min(30, (len(x) - 1) / 3), init="pca", random_state=seed
    ).fit_transform(x)
    dom = np.r_[np.zeros(len(ka)), np.ones(len(kb))]
    cls_b = np.array([classes.index(mapping[c][0]) if c in mapping else -1 for c in lb_names[kb]])
    cls = np.r_[la[ka], cls_b]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for d, (colour, label) in enumerate((("tab:blue", names[0]), ("tab:orange", names[1]))):
        m = dom == d
        axes[0].scatter(emb[m, 0], emb[m, 1], s=6, c=colour, label=label, alpha=0.6)
    axes[0].legend(markerscale=3)
    axes[0].set_title("by dataset")
    n_colours = 10 if len(classes) <= 10 else 20
    cmap = plt.get_cmap(f"tab{n_colours}")
    for d, marker in ((0, "o"), (1, "^")):
        m = (dom == d) & (cls >= 0)
        axes[1].scatter(
            emb[m, 0],
            emb[m, 1],
            s=8,
            c=[cmap(c % n_colours) for c in cls[m]],
            marker=marker,
            alpha=0.6,
        )
    axes[1].set_title(f"by class (o {names[0]}, ^ {names[1]})")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def describe(result: dict) -> str:
    """The overall distances in one line each, for the CLI."""
    o = result["overall"]
    return "\n".join(
        f"{k}: {o[k]['value']:.4g} [{o[k]['ci_low']:.4g}, {o[k]['ci_high']:.4g}]"
        for k in ("mmd2", "frechet", "domain_accuracy", "proxy_a_distance")
    )
