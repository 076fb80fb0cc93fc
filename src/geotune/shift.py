"""Domain shift between scene datasets: simulate it, measure it, map classes across it.

- Simulators imitate what changes between collections: another sensor (coarser ground resolution,
  other band gains and offsets, more noise), another season (hue and saturation), haze. They act
  on batched tensors with one strength knob in [0, 1], so a shifted copy of any dataset can be
  built for experiments (``simulate_folder``, ``geotune simulate``).
- Distances are measured in a backbone's feature space: MMD (Gaussian kernel, median-heuristic
  bandwidth), the Frechet distance of Gaussian fits, and a domain classifier's held-out accuracy
  (proxy A-distance), overall and per shared class, each with a bootstrap interval
  (``measure_shift``, ``geotune shift A B``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from rich.console import Console

from geotune.data import SceneFolder, read_rgb, scan_folder
from geotune.errors import ConfigError, DataError
from geotune.rundir import RunDir, atomic_write_csv, atomic_write_json, atomic_write_text

SHIFT_KINDS = ("sensor", "resolution", "blur", "gain", "noise", "season", "haze")


# ----------------------------------------------------------------------------------------------
# Simulators
# ----------------------------------------------------------------------------------------------
def _band_gains(bands: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One fixed calibration difference per simulated sensor: directions of gain and offset per
    band, drawn once from ``seed`` (a sensor does not change its calibration per image)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    gain = torch.rand(bands, generator=g) * 2 - 1  # in [-1, 1]
    gain = gain / gain.abs().max().clamp(min=1e-6)  # the strongest band moves the most
    offset = torch.rand(bands, generator=g) * 2 - 1
    return gain, offset


@torch.no_grad()
def simulate_shift(x: torch.Tensor, kind: str, strength: float, seed: int = 0) -> torch.Tensor:
    """A shifted copy of ``x`` (float N x C x H x W in [0, 1]); ``strength`` 0 leaves it as is.

    - ``resolution``: ground sampling distance up to 3x coarser (antialiased down, then back up);
    - ``blur``: Gaussian point-spread function, sigma up to 2 px;
    - ``gain``: per-band gain up to +-35% and offset up to +-0.08 (radiometric calibration);
    - ``noise``: Gaussian sensor noise, sigma up to 0.06;
    - ``season``: hue rotation up to 0.5 rad, saturation down to 60%, slight warm tint;
    - ``haze``: a scattering veil, transmission down to 0.5;
    - ``sensor``: resolution + gain + noise at this strength (half strength for noise).
    """
    import kornia

    if kind not in SHIFT_KINDS:
        raise ConfigError(f"unknown shift '{kind}'; choose one of {', '.join(SHIFT_KINDS)}")
    if not 0 <= strength <= 1:
        raise ConfigError(f"shift strength must be in [0, 1], got {strength}")
    if strength == 0:
        return x.clone()
    s = float(strength)
    n, c, h, w = x.shape
    if kind == "sensor":
        x = simulate_shift(x, "resolution", s, seed)
        x = simulate_shift(x, "gain", s, seed)
        return simulate_shift(x, "noise", s / 2, seed)
    if kind == "resolution":
        factor = 1 + 2 * s
        small = (max(1, round(h / factor)), max(1, round(w / factor)))
        y = F.interpolate(x, size=small, mode="bilinear", antialias=True, align_corners=False)
        y = F.interpolate(y, size=(h, w), mode="bicubic", align_corners=False)
    elif kind == "blur":
        sigma = 2.0 * s
        k = 2 * math.ceil(3 * sigma) + 1
        y = kornia.filters.gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="reflect")
    elif kind == "gain":
        gain, offset = _band_gains(c, seed)
        y = x * (1 + 0.35 * s * gain.view(1, c, 1, 1)) + 0.08 * s * offset.view(1, c, 1, 1)
    elif kind == "noise":
        g = torch.Generator().manual_seed(20_000 + seed)
        y = x + 0.06 * s * torch.randn(x.shape, generator=g)
    elif kind == "season":
        if c != 3:
            raise DataError(f"the season shift needs RGB chips, got {c} bands")
        y = kornia.enhance.adjust_hue(x, 0.5 * s)
        y = kornia.enhance.adjust_saturation(y, 1 - 0.4 * s)
        y = y * torch.tensor([1 + 0.06 * s, 1.0, 1 - 0.06 * s]).view(1, 3, 1, 1)
    else:  # haze: I = J t + A (1 - t), the atmospheric scattering model
        t = 1 - 0.5 * s
        airlight = torch.full((1, c, 1, 1), 0.85)
        if c == 3:
            airlight = torch.tensor([0.82, 0.85, 0.9]).view(1, 3, 1, 1)  # bluish scattered light
        y = x * t + airlight * (1 - t)
    return y.clamp(0, 1)


def simulate_folder(
    src: Path,
    dst: Path,
    kind: str,
    strength: float,
    seed: int = 0,
    per_class: int | None = None,
    split: Path | None = None,
    part: str | None = None,
    batch_size: int = 64,
    console: Console | None = None,
) -> Path:
    """Write a shifted copy of an ImageFolder dataset at its own resolution.

    ``per_class`` keeps the first N chips of each class (in a seeded order); ``split`` + ``part``
    keep only the chips of one part of a run's split (e.g. the test chips), so a model can be
    evaluated on a shifted copy of data it never saw. JPEGs are written at quality 95, other
    formats as PNG. ``shift.json`` in the copy records where it came from.
    """
    from geotune.data import read_split

    console = console or Console(stderr=True)
    simulate_shift(torch.zeros(1, 3, 4, 4), kind, strength)  # validate kind / strength first
    folder = scan_folder(src)
    keep = np.ones(len(folder), dtype=bool)
    if split is not None:
        if part is None:
            raise ConfigError("give --part (train, val or test) together with --split")
        keep &= read_split(split, folder) == part
    if per_class is not None:
        rng = np.random.default_rng(seed)
        chosen = np.zeros(len(folder), dtype=bool)
        for c in range(len(folder.classes)):
            idx = np.flatnonzero((folder.labels == c) & keep)
            chosen[rng.permutation(idx)[:per_class]] = True
        keep = chosen
    folder = folder.subset(keep)
    dst = Path(dst)
    if dst.exists():
        raise ConfigError(f"{dst} already exists; choose a new folder for the shifted copy")
    out = RunDir(dst.parent, dst.name)
    out.create()
    try:
        by_size: dict[tuple[int, int], list[str]] = {}
        for rel in folder.paths:
            im = read_rgb(folder.root / rel)
            by_size.setdefault(im.size, []).append(rel)
        done = 0
        for rels in by_size.values():  # chips of one size are shifted as one batch
            for start in range(0, len(rels), batch_size):
                chunk = rels[start : start + batch_size]
                x = torch.stack(
                    [
                        torch.from_numpy(np.array(read_rgb(folder.root / r))).permute(2, 0, 1)
                        for r in chunk
                    ]
                )
                y = simulate_shift(x.float() / 255, kind, strength, seed)
                y = (y * 255).round().byte().permute(0, 2, 3, 1).numpy()
                for rel, arr in zip(chunk, y, strict=True):
                    _write_chip(out.path / rel, arr)
                done += len(chunk)
        atomic_write_json(
            out.path / "shift.json",
            {
                "source": str(Path(src).resolve()),
                "kind": kind,
                "strength": strength,
                "seed": seed,
                "images": done,
                "split": str(split) if split else None,
                "part": part,
                "per_class": per_class,
            },
        )
        final = out.commit()
    except BaseException:
        out.discard()
        raise
    (final / "status.json").unlink(missing_ok=True)  # a dataset, not a run
    console.log(f"wrote {done} chips shifted by '{kind}' at strength {strength} to {final}")
    return final


def _write_chip(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        im.save(path, quality=95)
    else:
        im.save(path.with_suffix(".png"))


# ----------------------------------------------------------------------------------------------
# Distances between feature samples
# ----------------------------------------------------------------------------------------------
def _project(a: np.ndarray, b: np.ndarray, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Both samples in the first ``dim`` principal components of their union, standardised
    by the union's spread: covariance estimates from a few hundred chips are only stable in a
    few dozen dimensions, and a common frame keeps the three distances comparable."""
    from sklearn.decomposition import PCA

    both = np.concatenate([a, b]).astype(np.float64)
    # At most one dimension per 5 chips of the smaller sample, or the covariances are noise.
    dim = max(2, min(dim, both.shape[1], min(len(a), len(b)) // 5))
    pca = PCA(dim, svd_solver="full", random_state=seed).fit(both)
    z = pca.transform(both)
    z /= z.std() + 1e-12
    return z[: len(a)], z[len(a) :]


def _sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T
    return np.maximum(d, 0)


def _mmd2(k: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> float:
    """Unbiased MMD^2 from a kernel matrix over the union and index sets of A and B.

    Pairs of a chip with itself are left out (the U-statistic); in a bootstrap resample that
    includes pairs of a chip with its own duplicates, which would bias the estimate upwards.
    """
    kaa, kbb, kab = k[np.ix_(ia, ia)], k[np.ix_(ib, ib)], k[np.ix_(ia, ib)]
    same_a, same_b = ia[:, None] == ia[None, :], ib[:, None] == ib[None, :]
    return float(kaa[~same_a].mean() + kbb[~same_b].mean() - 2 * kab.mean())


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(ca @ cb)
    if np.iscomplexobj(covmean):
        covmean = covmean.real  # round-off gives tiny imaginary parts
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * covmean))


def _domain_predictions(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """Held-out correctness of a logistic-regression domain classifier (5-fold), on equal-size
    samples so that chance is 50%."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    rng = np.random.default_rng(seed)
    n = min(len(a), len(b))
    a, b = a[rng.permutation(len(a))[:n]], b[rng.permutation(len(b))[:n]]
    x = np.concatenate([a, b])
    y = np.r_[np.zeros(n), np.ones(n)]
    folds = StratifiedKFold(n_splits=min(5, n), shuffle=True, random_state=seed)
    pred = cross_val_predict(LogisticRegression(C=1.0, max_iter=2000), x, y, cv=folds)
    return (pred == y).astype(float)


def feature_distances(
    a: np.ndarray, b: np.ndarray, n_boot: int = 200, seed: int = 0, dim: int = 32
) -> dict[str, Any]:
    """MMD^2, Frechet distance and domain-classifier accuracy / proxy A-distance between two
    feature samples, each with a 95% percentile bootstrap interval (resampling chips of both
    domains; for the classifier, resampling its held-out predictions)."""
    if len(a) < 4 or len(b) < 4:
        raise DataError(
            f"too few chips to measure a shift ({len(a)} and {len(b)}; at least 4 each)"
        )
    za, zb = _project(a, b, dim, seed)
    both = np.concatenate([za, zb])
    d2 = _sq_dists(both, both)
    bandwidth = float(np.median(d2[np.triu_indices(len(both), 1)]))  # median heuristic
    k = np.exp(-d2 / max(bandwidth, 1e-12))
    ia, ib = np.arange(len(za)), len(za) + np.arange(len(zb))
    correct = _domain_predictions(za, zb, seed)
    rng = np.random.default_rng(seed)
    boots: dict[str, list[float]] = {"mmd2": [], "frechet": [], "domain_accuracy": []}
    for _ in range(n_boot):
        ra, rb = rng.choice(ia, len(ia)), rng.choice(ib, len(ib))
        boots["mmd2"].append(_mmd2(k, ra, rb))
        boots["frechet"].append(_frechet(both[ra], both[rb]))
        boots["domain_accuracy"].append(
            float(correct[rng.integers(0, len(correct), len(correct))].mean())
        )
    acc = float(correct.mean())
    values = {
        "mmd2": _mmd2(k, ia, ib),
        "frechet": _frechet(za, zb),
        "domain_accuracy": acc,
    }
    out: dict[str, Any] = {"n_a": len(a), "n_b": len(b), "dim": za.shape[1]}
    for name, v in values.items():
        lo, hi = np.percentile(boots[name], [2.5, 97.5])
        out[name] = {"value": v, "ci_low": float(lo), "ci_high": float(hi)}
    # Proxy A-distance (Ben-David et al.): 2 (1 - 2 err), with err the classifier's error.
    pad = [2 * (2 * x - 1) for x in (acc, *np.percentile(boots["domain_accuracy"], [2.5, 97.5]))]
    out["proxy_a_distance"] = {"value": pad[0], "ci_low": pad[1], "ci_high": pad[2]}
    out["mmd_bandwidth"] = bandwidth
    return out


# ----------------------------------------------------------------------------------------------
# Class maps between datasets
# ----------------------------------------------------------------------------------------------
def load_class_map(path: Path | str | dict | None) -> dict[str, str] | None:
    """A YAML mapping ``other dataset class: model (or reference dataset) class``; several
    classes may map onto one. None: classes are paired by identical names."""
    if path is None or isinstance(path, dict):
        return path
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"class map {path} not found; write a YAML file of 'theirs: ours' pairs")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(
            f"class map {path} is not valid YAML ({str(err).splitlines()[0]})"
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ConfigError(
            f"class map {path} must be a mapping of class names, e.g. 'Forest: forest'"
        )
    return data


def pair_classes(
    theirs: list[str], ours: list[str], class_map: dict[str, str] | None, where: str = "--data"
) -> tuple[dict[str, str], list[str]]:
    """(their class -> our class for every usable pair, their classes left out)."""
    if class_map is None:
        mapped = {c: c for c in theirs if c in ours}
        if not mapped:
            raise DataError(
                f"{where} shares no class name with the model ({', '.join(theirs[:4])} vs "
                f"{', '.join(ours[:4])}); pass --class-map MAP.yaml pairing their classes with ours"
            )
        return mapped, [c for c in theirs if c not in mapped]
    unknown_keys = [k for k in class_map if k not in theirs]
    if unknown_keys:
        raise ConfigError(
            f"class map names {', '.join(unknown_keys[:4])}, not a class of {where} "
            f"(its classes: {', '.join(theirs[:6])}{', ...' if len(theirs) > 6 else ''})"
        )
    unknown_values = sorted({v for v in class_map.values() if v not in ours})
    if unknown_values:
        raise ConfigError(
            f"class map pairs onto {', '.join(unknown_values[:4])}, not a class of the model "
            f"(it knows: {', '.join(ours[:6])}{', ...' if len(ours) > 6 else ''})"
        )
    return dict(class_map), [c for c in theirs if c not in class_map]


def label_remap(theirs: list[str], ours: list[str], mapping: dict[str, str]) -> np.ndarray:
    """Index array from their label indices to ours; -1 for their classes left unmapped."""
    return np.array([ours.index(mapping[c]) if c in mapping else -1 for c in theirs])


# ----------------------------------------------------------------------------------------------
# `geotune shift A B`
# ----------------------------------------------------------------------------------------------
def _features_of(folder: SceneFolder, backbone, backbone_id: str, weights_id: str, prep, workers):
    from geotune.data import decode_folder
    from geotune.probe import cached_features

    images = decode_folder(folder, prep.size, prep.interpolation, workers)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    feats, _, _ = cached_features(backbone, backbone_id, weights_id, prep, images, device=device)
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


def measure_shift(
    a: Path,
    b: Path,
    backbone: str = "tf_efficientnet_lite0",
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

    The backbone is a timm name + weights, or the fine-tuned backbone of a finished ``run`` (what
    that model sees). ``class_map`` pairs B's classes with A's (YAML ``b_class: a_class``).
    """
    from geotune.backbones import Preprocessing, create_backbone
    from geotune.model import load_classifier
    from geotune.rundir import require_complete_run

    console = console or Console(stderr=True)
    t0 = time.perf_counter()
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
    fa, feats_a = _features_of(scan_folder(a), net, backbone, weights_id, prep, workers)
    fb, feats_b = _features_of(scan_folder(b), net, backbone, weights_id, prep, workers)
    mapping, unmapped = pair_classes(fb.classes, fa.classes, load_class_map(class_map), "B")
    sa, sb = _sample(fa.labels, per_class, seed), _sample(fb.labels, per_class, seed + 1)
    overall = feature_distances(feats_a[sa], feats_b[sb], n_boot, seed, dim)
    per_class_rows = []
    b_names = np.array(fb.classes)[fb.labels]
    for a_class in sorted(set(mapping.values()), key=fa.classes.index):
        ia = sa[fa.labels[sa] == fa.classes.index(a_class)]
        theirs = [k for k, v in mapping.items() if v == a_class]
        ib = sb[np.isin(b_names[sb], theirs)]
        if len(ia) < 4 or len(ib) < 4:
            continue
        d = feature_distances(feats_a[ia], feats_b[ib], max(50, n_boot // 4), seed, min(dim, 8))
        per_class_rows.append(
            {
                "class": a_class,
                "b_classes": "+".join(theirs),
                "n_a": len(ia),
                "n_b": len(ib),
                **{
                    f"{m}{suffix}": d[m][key]
                    for m in ("mmd2", "frechet", "domain_accuracy", "proxy_a_distance")
                    for suffix, key in (
                        ("", "value"),
                        ("_ci_low", "ci_low"),
                        ("_ci_high", "ci_high"),
                    )
                },
            }
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
    out.create()
    try:
        atomic_write_json(out.path / "shift.json", result)
        if per_class_rows:
            atomic_write_csv(
                out.path / "per_class.csv",
                list(per_class_rows[0]),
                ([r[k] for k in per_class_rows[0]] for r in per_class_rows),
            )
        if embedding:
            _embedding_figure(
                feats_a[sa],
                feats_b[sb],
                fa.labels[sa],
                b_names[sb],
                mapping,
                fa.classes,
                seed,
                out.path / "embedding.png",
                (Path(a).name, Path(b).name),
            )
        atomic_write_text(out.path / "shift.md", shift_markdown(result, per_class_rows))
        final = out.commit()
    except BaseException:
        out.discard()
        raise
    return result, final


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
    cls_b = np.array([classes.index(mapping[c]) if c in mapping else -1 for c in lb_names[kb]])
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
