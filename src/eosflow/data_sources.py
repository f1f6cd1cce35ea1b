"""Where a user's dataset comes from: a torchvision dataset by name, an ImageFolder-layout folder or an
``.npz`` file, read into arrays that :func:`eosflow.data.prepare_dataset` subsets, scales, normalises
and saves like the built-ins (Fashion-MNIST and CIFAR-10 are :mod:`eosflow.data`'s own readers).

:func:`load_source` returns a :class:`Source`: ``x`` as ``(N, C, H, W)`` (or ``(N, D)`` for an npz file
of flat features), uint8 (scaled to [0, 1] later) or float (used as it is), labels ``int64``, the class
names and count, and where it was read from. The YAML forms and their options are
:mod:`eosflow.config.datasets` (:func:`~eosflow.config.datasets.dataset_spec`). Every problem raises
:class:`DataError` (also ``eosflow.data.DataError``) naming the file and the fix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config.datasets import (EMNIST_SPLITS, TORCHVISION, dataset_spec, folder_index, npz_channels_last,
                              torchvision_files, torchvision_local, _npz_problems)
log = logging.getLogger(__name__)

__all__ = ["DataError", "Source", "load_source", "load_npz", "load_image_folder", "load_torchvision"]


class DataError(Exception):
    """A dataset is missing, corrupt or malformed; the message says which file and what to do (raised
    here and by :mod:`eosflow.data`'s built-in readers, which import it from here)."""


@dataclass
class Source:
    """A dataset read from its source: both splits, the class names and count, where it came from
    (``source``: a file or folder) and its canonical spec (``spec``)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list
    n_classes: int
    source: str
    spec: dict


def load_source(dataset, root: str | None = None, download: bool = False,
                cache_dir: str = "results/data/raw") -> Source:
    """Read a user's dataset (any form of :func:`~eosflow.config.datasets.dataset_spec` but a built-in).
    ``root``: ``data.torchvision_dir`` (torchvision datasets without a ``root`` key of their own);
    ``download``/``cache_dir``: ``data.download``/``data.cache_dir``."""
    spec = dataset_spec(dataset)  # a value of no form: ConfigError (a ValueError) naming the allowed forms
    if spec["kind"] == "npz":
        return load_npz(spec)
    if spec["kind"] == "image_folder":
        return load_image_folder(spec)
    if spec["kind"] == "torchvision":
        return load_torchvision(spec, root, download, cache_dir)
    raise DataError(f"dataset {spec['name']!r} is a built-in: eosflow.data reads it")


# ------------------------------------------------------------------------------- npz -------


def load_npz(spec: dict) -> Source:
    """An ``.npz`` file with ``x_train, y_train, x_test, y_test`` (and optionally ``classes``)."""
    path = spec["path"]
    problems = _npz_problems(path, spec["layout"])
    if problems:
        raise DataError(problems[0])
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: np.asarray(z[k]) for k in ("x_train", "y_train", "x_test", "y_test")}
        names = [str(c) for c in z["classes"]] if "classes" in z.files else None
    xs = []
    for split in ("train", "test"):
        x = arrays[f"x_{split}"]
        if x.ndim == 3:
            x = x[:, None]
        elif npz_channels_last(x.shape, spec["layout"]):
            x = x.transpose(0, 3, 1, 2)
        if x.dtype == np.bool_:
            x = x.astype(np.uint8) * 255
        xs.append(np.ascontiguousarray(x))
    y_tr, y_te = arrays["y_train"].astype(np.int64), arrays["y_test"].astype(np.int64)
    n_classes = len(names) if names is not None else int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1
    classes = names if names is not None else [str(i) for i in range(n_classes)]
    log.info("npz %s: train %s, test %s, %d classes", path, xs[0].shape, xs[1].shape, n_classes)
    return Source(xs[0], y_tr, xs[1], y_te, classes, n_classes, str(path), spec)


# ---------------------------------------------------------------------------- folder -------


def load_image_folder(spec: dict) -> Source:
    """An ImageFolder folder: ``train/<class>/<image>`` and ``test/<class>/<image>``; class ids are the
    sorted ``train/`` subfolder names. Every image has the first one's size (else an error naming
    ``size: [H, W]``) or is resized to ``size`` (bilinear); channels: ``channels`` or the first image's
    (greyscale modes: 1, else RGB)."""
    from PIL import Image

    from .config.datasets import _GREY_MODES

    root = spec["path"]
    try:
        classes, index = folder_index(root)
    except (ValueError, OSError) as e:
        raise DataError(str(e)) from None
    size, channels = spec["size"], spec["channels"]
    first = next(iter(index["train"].values()))[0]
    with Image.open(first) as im:
        first_size, first_mode = (im.size[1], im.size[0]), im.mode
    channels = channels or (1 if first_mode in _GREY_MODES else 3)
    mode = "L" if channels == 1 else "RGB"
    out = {}
    for split in ("train", "test"):
        xs, ys = [], []
        for label, cls in enumerate(classes):
            for f in index[split].get(cls, []):
                try:
                    with Image.open(f) as im:
                        if size is None and (im.size[1], im.size[0]) != first_size:
                            raise DataError(
                                f"{f} is {im.size[1]}x{im.size[0]} (height x width) but {first} is "
                                f"{first_size[0]}x{first_size[1]}; give the dataset a common size to resize every "
                                f"image to: dataset: {{image_folder: {root}, size: [{first_size[0]}, {first_size[1]}]}}")
                        im = im.convert(mode)
                        if size is not None and (im.size[1], im.size[0]) != tuple(size):
                            im = im.resize((size[1], size[0]), Image.BILINEAR)
                        a = np.asarray(im, dtype=np.uint8)
                except OSError as e:
                    raise DataError(f"{f}: not a readable image ({e}); remove or replace it") from None
                xs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
                ys.append(label)
        out[split] = (np.stack(xs), np.asarray(ys, dtype=np.int64))
    log.info("image folder %s: train %s, test %s, %d classes", root, out["train"][0].shape, out["test"][0].shape,
             len(classes))
    return Source(*out["train"], *out["test"], list(classes), len(classes), str(root), spec)


# ------------------------------------------------------------------------------ torchvision ---


def _split_kwargs(name: str, train: bool, split: str | None) -> dict:
    if name == "EMNIST":
        return {"split": split, "train": train}
    if TORCHVISION[name]["choose"] == "split":
        return {"split": "train" if train else "test"}
    return {"train": train}


def _arrays(ds, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x (N, C, H, W) uint8, y int64)`` from a torchvision dataset object's ``data`` and targets."""
    x = ds.data
    x = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
    y = getattr(ds, "targets", None)
    if y is None:
        y = ds.labels
    y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
    if y.ndim == 2:  # QMNIST's extended targets: the class is column 0
        y = y[:, 0]
    layout = TORCHVISION[name]["layout"]
    if layout == "nhw":
        x = x[:, None]
    elif layout == "nhwc":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.uint8), y.astype(np.int64)


def load_torchvision(spec: dict, root: str | None = None, download: bool = False,
                     cache_dir: str = "results/data/raw") -> Source:
    """torchvision's dataset ``spec['name']``, read from the first folder that holds it: the spec's
    ``root`` (an error if it does not), ``root`` (``data.torchvision_dir``), ``cache_dir``; else, only
    with ``download``, downloaded into ``cache_dir``."""
    name, split = spec["name"], spec["split"]
    need = ", ".join(torchvision_files(name, split)[0])
    fix = ("set data.download: true (needs internet), or data.torchvision_dir (or the dataset's root: key) to a "
           f"folder holding torchvision's copy ({need})")
    if spec["root"] is not None:
        if not torchvision_local(name, split, spec["root"]):
            raise DataError(f"{spec['root']}: no copy of {name} there (torchvision reads {need}); fix the "
                            "dataset's root: key, or leave it out to use data.torchvision_dir / a download")
        folder, dl = spec["root"], False
    else:
        found = [r for r in (root, cache_dir) if torchvision_local(name, split, r)]
        if found:
            folder, dl = found[0], False
        elif download:
            folder, dl = cache_dir, True
        else:
            places = " or ".join(str(r) for r in (root, cache_dir) if r)
            raise DataError(f"{name} not found under {places}; {fix}")
    try:
        import torchvision.datasets as tvd

        cls = getattr(tvd, name)
        if dl:
            log.info("downloading %s into %s", name, folder)
        parts = [cls(str(folder), **_split_kwargs(name, train, split), download=dl, **spec["kwargs"])
                 for train in (True, False)]
    except Exception as e:  # missing/corrupt files, md5 mismatch, network: all end the same way
        raise DataError(f"{name} in {folder}: torchvision could not read it ({e!r}); the files must be the "
                        f"originals (torchvision checks some of them by md5): delete them and {fix}") from e
    (x_tr, y_tr), (x_te, y_te) = (_arrays(p, name) for p in parts)
    classes = [str(c) for c in getattr(parts[0], "classes", [])]
    n_classes = EMNIST_SPLITS[split][0] if name == "EMNIST" else TORCHVISION[name]["classes"]
    if len(classes) != n_classes:
        classes = [str(i) for i in range(n_classes)]
    log.info("torchvision %s from %s: train %s, test %s", name, folder, x_tr.shape, x_te.shape)
    return Source(x_tr, y_tr, x_te, y_te, classes, n_classes, str(folder), spec)
