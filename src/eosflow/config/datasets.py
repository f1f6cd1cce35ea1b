"""Where a setting's dataset comes from, checked without torch (the workflow's parse step imports
this module): the built-ins ``fashion-mnist`` and ``cifar10``, a torchvision dataset by name, an
ImageFolder-layout folder or an ``.npz`` file.

The YAML forms of ``settings.<name>.dataset`` (README "Your own dataset"):

* ``fashion-mnist``, ``cifar10``: the built-ins (:mod:`eosflow.data`);
* ``MNIST`` (a name of :data:`TORCHVISION`) or ``{torchvision: EMNIST, split: balanced, root: dir,
  kwargs: {...}, normalise: true}``;
* ``path/to/data.npz`` (a string ending in ``.npz``) or ``{npz: path, layout: auto, normalise: true}``;
* ``path/to/folder/`` (a string with a ``/`` that does not end in ``.npz``) or ``{image_folder: path,
  size: [H, W], channels: 1, normalise: true}``.

:func:`dataset_spec` turns any of them into one canonical mapping (every option filled in);
:func:`dataset_tag` is its file-name-safe name in ``results/data/{tag}_n..._t..._s....pt``;
:func:`dataset_shape` its input shape and class count; :func:`dataset_problems` the checks that run
before any job (files, arrays, label types, class folders, local copies, subset sizes). Loading is
:mod:`eosflow.data_sources`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from .schema import ConfigError

__all__ = ["BUILTIN", "TORCHVISION", "IMAGE_EXTENSIONS", "dataset_spec", "dataset_tag", "dataset_shape",
           "dataset_problems", "dataset_for_tag", "torchvision_files", "DATASET_TAG_PATTERN"]

#: The built-in datasets (:mod:`eosflow.data`): their input shape and class count.
BUILTIN = {"fashion-mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10)}

_MNIST_RAW = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte"]
#: EMNIST's variants (its ``split``): classes (torchvision's list: ``letters`` has an empty class 0,
#: 'N/A') and the train/test sizes.
EMNIST_SPLITS = {"byclass": (62, 697932, 116323), "bymerge": (47, 697932, 116323), "balanced": (47, 112800, 18800),
                 "letters": (27, 124800, 20800), "digits": (10, 240000, 40000), "mnist": (10, 60000, 10000)}

#: The torchvision (0.29) image-classification datasets with a fixed image size and a train/test split:
#: input shape (C, H, W), classes, (train, test) sizes, how the split is chosen (``train``: a
#: ``train=`` flag; ``split``: ``split='train'/'test'``), the array layout of ``.data`` and the
#: class's on-disk files relative to its root (:func:`torchvision_files`).
TORCHVISION = {
    "MNIST": {"shape": (1, 28, 28), "classes": 10, "sizes": (60000, 10000), "choose": "train", "layout": "nhw"},
    "FashionMNIST": {"shape": (1, 28, 28), "classes": 10, "sizes": (60000, 10000), "choose": "train", "layout": "nhw"},
    "KMNIST": {"shape": (1, 28, 28), "classes": 10, "sizes": (60000, 10000), "choose": "train", "layout": "nhw"},
    "QMNIST": {"shape": (1, 28, 28), "classes": 10, "sizes": (60000, 60000), "choose": "train", "layout": "nhw"},
    "EMNIST": {"shape": (1, 28, 28), "classes": None, "sizes": None, "choose": "train", "layout": "nhw"},
    "CIFAR10": {"shape": (3, 32, 32), "classes": 10, "sizes": (50000, 10000), "choose": "train", "layout": "nhwc"},
    "CIFAR100": {"shape": (3, 32, 32), "classes": 100, "sizes": (50000, 10000), "choose": "train", "layout": "nhwc"},
    "SVHN": {"shape": (3, 32, 32), "classes": 10, "sizes": (73257, 26032), "choose": "split", "layout": "nchw"},
    "USPS": {"shape": (1, 16, 16), "classes": 10, "sizes": (7291, 2007), "choose": "train", "layout": "nhw"},
    "STL10": {"shape": (3, 96, 96), "classes": 10, "sizes": (5000, 8000), "choose": "split", "layout": "nchw"},
}
#: Image files an ImageFolder may hold (other files are ignored).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: The keys of each mapping form (the first one names the form).
FORM_KEYS = {"torchvision": ("torchvision", "root", "split", "kwargs", "normalise"),
             "npz": ("npz", "layout", "normalise"),
             "image_folder": ("image_folder", "size", "channels", "normalise")}
#: torchvision constructor arguments that eosflow sets itself (not allowed in ``kwargs``).
_RESERVED_KWARGS = ("root", "train", "split", "what", "download", "transform", "target_transform")
#: The regular expression of a dataset tag (the ``{dataset}`` wildcard of the prepared files).
DATASET_TAG_PATTERN = r"fashion-mnist|cifar10|(?:tv|npz|folder)-[a-z0-9-]+-[0-9a-f]{8}"
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _forms_help() -> str:
    return ("a built-in (fashion-mnist, cifar10), a torchvision dataset name (" + ", ".join(TORCHVISION)
            + "), a path ending in .npz, a folder path containing '/' (ImageFolder layout), or a mapping "
            "{torchvision: NAME, ...}, {npz: PATH, ...} or {image_folder: PATH, ...}")


def torchvision_files(name: str, split: str | None = None) -> list[list[str]]:
    """The files torchvision's class ``name`` reads, relative to its ``root``: a list of alternatives,
    each a list of files that must all exist (the first: what a download leaves; MNIST-like classes
    also accept their legacy ``processed/*.pt`` pair)."""
    if name in ("MNIST", "FashionMNIST", "KMNIST"):
        return [[f"{name}/raw/{f}" for f in _MNIST_RAW], [f"{name}/processed/{f}" for f in ("training.pt", "test.pt")]]
    if name == "QMNIST":
        return [[f"QMNIST/raw/qmnist-{s}-{k}" for s in ("train", "test")
                 for k in ("images-idx3-ubyte", "labels-idx2-int")]]
    if name == "EMNIST":
        return [[f"EMNIST/raw/emnist-{split}-{s}-{k}-idx{d}-ubyte" for s in ("train", "test")
                 for k, d in (("images", 3), ("labels", 1))]]
    if name == "CIFAR10":
        return [[f"cifar-10-batches-py/{f}" for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]]]
    if name == "CIFAR100":
        return [[f"cifar-100-python/{f}" for f in ("train", "test", "meta")]]
    if name == "SVHN":
        return [["train_32x32.mat", "test_32x32.mat"]]
    if name == "USPS":
        return [["usps.bz2", "usps.t.bz2"]]
    if name == "STL10":
        return [[f"stl10_binary/{f}" for f in ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")]]
    raise ValueError(f"{name!r} is not a supported torchvision dataset; supported: {list(TORCHVISION)}")


def torchvision_local(name: str, split: str | None, root) -> bool:
    """Whether ``root`` holds a local copy of torchvision's ``name`` (see :func:`torchvision_files`)."""
    if root is None:
        return False
    return any(all((Path(root) / f).is_file() for f in alt) for alt in torchvision_files(name, split))


# ------------------------------------------------------------------------------- spec ------


def _path_spec(value: str) -> dict:
    if value.endswith(".npz"):
        return dataset_spec({"npz": value})
    return dataset_spec({"image_folder": value})


def dataset_spec(value) -> dict:
    """The canonical mapping of a ``dataset`` value (every option filled in, paths normalised):
    ``{"kind": "builtin", "name"}``, ``{"kind": "torchvision", "name", "root", "split", "kwargs",
    "normalise"}``, ``{"kind": "npz", "path", "layout", "normalise"}`` or ``{"kind": "image_folder",
    "path", "size", "channels", "normalise"}``. A spec already canonical is returned as a copy. Raises
    :class:`ConfigError` (without the key's name: :func:`dataset_problems` adds it) for a value of no form."""
    if isinstance(value, str):
        if value in BUILTIN:
            return {"kind": "builtin", "name": value}
        if value in TORCHVISION:
            return dataset_spec({"torchvision": value})
        if value.endswith(".npz") or "/" in value or os.sep in value:
            return _path_spec(value)
        close = difflib.get_close_matches(value, [*BUILTIN, *TORCHVISION], n=1, cutoff=0.6)
        if not close:
            close = [n for n in [*BUILTIN, *TORCHVISION] if n.lower() == value.lower()]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{value!r} is not a known dataset{hint}; allowed: {_forms_help()}")
    if not isinstance(value, dict):
        raise ConfigError(f"{value!r} is neither a name, a path nor a mapping; allowed: {_forms_help()}")
    if "kind" in value:  # already canonical
        return json.loads(json.dumps(value))
    forms = sorted(f for f in FORM_KEYS if f in value)
    if len(forms) != 1:
        what = f"has {forms}, choose one" if forms else f"has none of {list(FORM_KEYS)}"
        raise ConfigError(f"the mapping {what}: write {{torchvision: NAME, ...}}, {{npz: PATH, ...}} or "
                          "{image_folder: PATH, ...}")
    form = forms[0]
    extra = sorted(set(value) - set(FORM_KEYS[form]))
    if extra:
        raise ConfigError(f"{extra} do not apply to {'an npz' if form == 'npz' else 'a ' + form} dataset; allowed keys: {list(FORM_KEYS[form])}")
    normalise = value.get("normalise", True)
    if not isinstance(normalise, bool):
        raise ConfigError(f"normalise: {normalise!r} must be true or false")
    target = value[form]
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{form}: {target!r} must be a non-empty string")
    if form == "torchvision":
        return _torchvision_spec(value, normalise)
    path = os.path.normpath(target)
    if form == "npz":
        layout = value.get("layout", "auto")
        if layout not in ("auto", "nchw", "nhwc"):
            raise ConfigError(f"layout: {layout!r} is not allowed; allowed values: ['auto', 'nchw', 'nhwc']")
        return {"kind": "npz", "path": path, "layout": layout, "normalise": normalise}
    size = value.get("size")
    if isinstance(size, int) and not isinstance(size, bool):
        size = [size, size]
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)):
        raise ConfigError(f"size: {value.get('size')!r} must be [height, width] (or one integer: square), in pixels")
    channels = value.get("channels")
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels: {channels!r} must be 1 (greyscale) or 3 (RGB), or left out: from the images")
    return {"kind": "image_folder", "path": path, "size": size, "channels": channels, "normalise": normalise}


def _torchvision_spec(value: dict, normalise: bool) -> dict:
    name = value["torchvision"]
    if name not in TORCHVISION:
        close = difflib.get_close_matches(name, list(TORCHVISION), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"torchvision: {name!r} is not supported{hint}; supported: {list(TORCHVISION)} (image "
                          "classification with a fixed image size and a train/test split; for another, save it as "
                          "an .npz file or an ImageFolder folder)")
    split = value.get("split")
    if name == "EMNIST" and split not in EMNIST_SPLITS:
        raise ConfigError(f"EMNIST needs split: one of {list(EMNIST_SPLITS)} (got {split!r})")
    if name != "EMNIST" and split is not None:
        raise ConfigError(f"split: {split!r} applies to EMNIST only (eosflow picks {name}'s train and test sets)")
    kwargs = value.get("kwargs", {}) or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"kwargs: {kwargs!r} must be a mapping of {name}'s constructor arguments")
    reserved = sorted(set(kwargs) & set(_RESERVED_KWARGS))
    if reserved:
        raise ConfigError(f"kwargs: {reserved} are set by eosflow; remove them (root is a key of its own, "
                          "download is data.download)")
    root = value.get("root")
    if root is not None and (not isinstance(root, str) or not root):
        raise ConfigError(f"root: {root!r} must be a folder path")
    return {"kind": "torchvision", "name": name, "root": None if root is None else os.path.normpath(root),
            "split": split, "kwargs": kwargs, "normalise": normalise}


def _slug(text: str) -> str:
    s = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    while "--" in s:
        s = s.replace("--", "-")
    return s[:40].strip("-") or "data"


def dataset_tag(value) -> str:
    """The file-name-safe name of a dataset in ``results/data/{tag}_n..._t..._s....pt``: a built-in's own
    name; else ``tv-<name>[-<split>]-``, ``npz-<file stem>-`` or ``folder-<folder name>-`` and 8 hex
    digits of the canonical spec's SHA-256 (stable: the same spec, the same tag)."""
    spec = dataset_spec(value)
    if spec["kind"] == "builtin":
        return spec["name"]
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
    if spec["kind"] == "torchvision":
        stem = spec["name"] + (f"-{spec['split']}" if spec["split"] else "")
        return f"tv-{_slug(stem)}-{digest}"
    prefix = "npz" if spec["kind"] == "npz" else "folder"
    return f"{prefix}-{_slug(Path(spec['path']).stem if prefix == 'npz' else Path(spec['path']).name)}-{digest}"


def dataset_for_tag(cfg: dict, tag: str):
    """The ``dataset`` value of the first setting whose :func:`dataset_tag` is ``tag`` (KeyError if none)."""
    for s in cfg["settings"].values():
        try:
            if dataset_tag(s["dataset"]) == tag:
                return s["dataset"]
        except ConfigError:
            continue
    raise KeyError(f"no setting's dataset has the tag {tag!r}")


# --------------------------------------------------------------------------- npz headers ---


def npz_headers(path) -> dict[str, tuple[tuple, np.dtype]]:
    """``{array name: (shape, dtype)}`` of an ``.npz`` file from each member's ``.npy`` header (no
    array is read). Raises :class:`ConfigError` for a file that is not an npz archive."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for member in z.namelist():
                if not member.endswith(".npy"):
                    continue
                with z.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                out[member[:-4]] = (tuple(shape), np.dtype(dtype))
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise ConfigError(f"{path} is not a readable .npz archive ({e}); write it with "
                          "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)") from None
    return out


def _read_npz_labels(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: np.asarray(z[k]) for k in ("y_train", "y_test")}


def npz_input_shape(shape: tuple, layout: str) -> tuple:
    """The per-example shape eosflow trains on for an npz ``x`` of ``shape``: (D,) for (N, D),
    (1, H, W) for (N, H, W), (C, H, W) for 4-D arrays by ``layout`` (``auto``: channels last when the
    last axis has 1, 3 or 4 entries and axis 1 has not; else channels first)."""
    if len(shape) == 2:
        return (shape[1],)
    if len(shape) == 3:
        return (1, shape[1], shape[2])
    if len(shape) == 4:
        return (shape[3], shape[1], shape[2]) if npz_channels_last(shape, layout) else tuple(shape[1:])
    raise ValueError(f"x has shape {shape}; expected (N, D), (N, H, W), (N, C, H, W) or (N, H, W, C)")


def npz_channels_last(shape: tuple, layout: str) -> bool:
    """Whether a 4-D npz ``x`` of ``shape`` is (N, H, W, C) under ``layout`` (see :func:`npz_input_shape`)."""
    return len(shape) == 4 and (layout == "nhwc" or (layout == "auto" and shape[3] in (1, 3, 4)
                                                     and shape[1] not in (1, 3, 4)))


# --------------------------------------------------------------------------- folders -------


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


def folder_index(path) -> tuple[list[str], dict[str, dict[str, list[Path]]]]:
    """An ImageFolder's classes (the sorted subfolders of ``train/``) and ``{split: {class: image
    files}}`` for ``train`` and ``test``. Raises ValueError naming what is missing and the layout."""
    root = Path(path)
    layout = f"{root}/train/<class>/<image> and {root}/test/<class>/<image>"
    if not root.is_dir():
        raise ValueError(f"folder {root} does not exist (relative paths start at the working directory, "
                         f"{os.getcwd()}); fix the path, or lay the dataset out as {layout}")
    out = {}
    for split in ("train", "test"):
        d = root / split
        if not d.is_dir():
            raise ValueError(f"{d} is missing; an ImageFolder dataset is laid out as {layout}")
        names = _class_dirs(d)
        if not names:
            raise ValueError(f"{d} has no class subfolders; put each class's images in a subfolder of its own "
                             f"({layout})")
        out[split] = {c: _images(d / c) for c in names}
    classes = sorted(out["train"])
    extra = sorted(set(out["test"]) - set(classes))
    if extra:
        raise ValueError(f"{root}/test has classes {extra} that {root}/train has not; every test class needs "
                         "training images (the class ids are the sorted train/ subfolder names)")
    for split in ("train", "test"):
        empty = [c for c, files in out[split].items() if not files]
        if empty:
            raise ValueError(f"{root}/{split}: class folders {empty} hold no images ({', '.join(IMAGE_EXTENSIONS)}); "
                             "add images or remove the folders")
    return classes, out


def _first_image(index) -> tuple[Path, tuple[int, int], str]:
    from PIL import Image

    first = next(iter(index["train"].values()))[0]
    with Image.open(first) as im:
        return first, (im.size[1], im.size[0]), im.mode


# ---------------------------------------------------------------------------- shapes -------


def dataset_shape(value, data_cfg: dict | None = None) -> tuple[tuple, int]:
    """``(input_shape, n_classes)`` of a dataset, cheaply: a built-in's and torchvision's from tables,
    an npz file's from its array headers (and its labels), an ImageFolder's from one image and its class
    folders. ``input_shape`` is ``(C, H, W)``, or ``(D,)`` for an npz file of flat features. Raises
    :class:`ConfigError` where the data cannot tell (missing file, bad arrays: see :func:`dataset_problems`)."""
    spec = dataset_spec(value)
    kind = spec["kind"]
    if kind == "builtin":
        return BUILTIN[spec["name"]]
    if kind == "torchvision":
        info = TORCHVISION[spec["name"]]
        n = EMNIST_SPLITS[spec["split"]][0] if spec["name"] == "EMNIST" else info["classes"]
        return info["shape"], n
    if kind == "npz":
        heads, labels = _npz_checked(spec["path"])
        try:
            shape = npz_input_shape(heads["x_train"][0], spec["layout"])
        except ValueError as e:
            raise ConfigError(f"{spec['path']}: {e}") from None
        n_classes = heads["classes"][0][0] if "classes" in heads else int(max(y.max(initial=0) for y in labels.values())) + 1
        return shape, int(n_classes)
    try:
        classes, index = folder_index(spec["path"])
        _, (h, w), mode = _first_image(index)
    except (ValueError, OSError) as e:
        raise ConfigError(str(e)) from None
    h, w = spec["size"] or (h, w)
    c = spec["channels"] or (1 if mode in _GREY_MODES else 3)
    return (c, h, w), len(classes)


# ---------------------------------------------------------------------------- checks -------


def _npz_checked(path) -> tuple[dict, dict]:
    """An npz file's headers and labels after the checks of :func:`_npz_problems` (ConfigError on the first)."""
    problems = _npz_problems(path)
    if problems:
        raise ConfigError(problems[0])
    return npz_headers(path), _read_npz_labels(path)


def _npz_problems(path: str, layout: str = "auto") -> list[str]:
    p = Path(path)
    if not p.is_file():
        return [f"file {path} does not exist (relative paths start at the working directory, {os.getcwd()}); "
                "write it with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...) or fix the path"]
    try:
        heads = npz_headers(p)
    except ConfigError as e:
        return [str(e)]
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in heads]
    if missing:
        return [f"{path} lacks the arrays {missing} (it has {sorted(heads)}); save x_train, y_train, x_test and "
                "y_test: numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"]
    out = []
    for split in ("train", "test"):
        (xs, xd), (ys, yd) = heads[f"x_{split}"], heads[f"y_{split}"]
        if xd.kind not in "biuf":
            out.append(f"{path}: x_{split} has dtype {xd}; images/features must be numbers (uint8 0..255 is scaled "
                       "to [0, 1], floats are used as they are)")
        if yd.kind not in "iu":
            out.append(f"{path}: y_{split} has dtype {yd}; labels must be integer class ids 0..K-1: save "
                       f"y_{split}.astype('int64')")
        if len(ys) != 1:
            out.append(f"{path}: y_{split} has shape {ys}; labels must be 1-D class ids (not one-hot: save "
                       f"y_{split}.argmax(1))")
        elif xs and xs[0] != ys[0]:
            out.append(f"{path}: x_{split} has {xs[0]} examples but y_{split} has {ys[0]} labels; they must match")
        try:
            npz_input_shape(xs, layout)
        except ValueError as e:
            out.append(f"{path}: x_{split}: {e}")
    if not out and heads["x_train"][0][1:] != heads["x_test"][0][1:]:
        out.append(f"{path}: x_train's examples have shape {heads['x_train'][0][1:]} but x_test's "
                   f"{heads['x_test'][0][1:]}; both splits need the same shape")
    if out:
        return out
    labels = _read_npz_labels(p)
    for key, y in labels.items():
        if y.size and y.min() < 0:
            out.append(f"{path}: {key} has negative labels (min {y.min()}); labels must be class ids 0..K-1")
    if "classes" in heads:
        n = heads["classes"][0][0] if heads["classes"][0] else 0
        top = max(int(y.max(initial=0)) for y in labels.values())
        if top >= n:
            out.append(f"{path}: a label {top} is beyond its {n} classes names (array 'classes'); give one name "
                       "per class id 0..K-1 or drop 'classes'")
    return out


def balance_problem(counts: dict, n: int, split: str) -> str | None:
    """What stops :func:`eosflow.data.balanced_subset` from taking ``n`` examples of a split with the
    per-class ``counts`` ({class: count}, classes in increasing order), or None."""
    total = sum(counts.values())
    if n > total:
        return f"n_{split} = {n} but the {split} set has {total} examples; set n_{split} <= {total}"
    classes = [c for c in sorted(counts) if counts[c] > 0]
    base, extra = divmod(n, len(classes)) if classes else (0, 0)
    short = [(c, counts[c], base + (i < extra)) for i, c in enumerate(classes) if counts[c] < base + (i < extra)]
    if short:
        c, have, need = short[0]
        most = min(counts[c] * len(classes) for c in classes)
        return (f"n_{split} = {n} needs {need} examples of class {c} for a class-balanced subset, it has {have}; "
                f"set n_{split} <= {most} (or add examples)")
    return None


def _source_problems(spec: dict, s: dict, data_cfg: dict) -> list[str]:
    """Problems of one setting's (canonical) dataset against the disk, without the key's name."""
    kind = spec["kind"]
    if kind == "builtin":
        return []
    if kind == "torchvision":
        name, split = spec["name"], spec["split"]
        info = TORCHVISION[name]
        sizes = EMNIST_SPLITS[split][1:] if name == "EMNIST" else info["sizes"]
        out = [f"n_{sp} = {s[f'n_{sp}']} but {name}{f' ({split})' if split else ''} has {k} {sp} examples; "
               f"set n_{sp} <= {k}" for sp, k in zip(("train", "test"), sizes) if s[f"n_{sp}"] > k]
        if spec["root"] is not None:
            if not torchvision_local(name, split, spec["root"]):
                need = ", ".join(torchvision_files(name, split)[0])
                out.append(f"root {spec['root']} holds no copy of {name} (torchvision reads {need} there); fix root, "
                           "or leave root out to use data.torchvision_dir / a download into data.cache_dir")
        elif not data_cfg.get("download", False) and not any(
                torchvision_local(name, split, r) for r in (data_cfg.get("torchvision_dir"), data_cfg.get("cache_dir"))):
            need = ", ".join(torchvision_files(name, split)[0])
            places = " or ".join(str(r) for r in (data_cfg.get("torchvision_dir"), data_cfg.get("cache_dir")) if r)
            out.append(f"{name} is not on disk ({need} under {places}) and data.download is false; set "
                       "data.download: true (needs internet), or data.torchvision_dir / the dataset's root: key to "
                       "the folder that holds torchvision's copy")
        return out
    if kind == "npz":
        out = _npz_problems(spec["path"], spec["layout"])
        if not out:
            for key, y in _read_npz_labels(spec["path"]).items():
                split = key.removeprefix("y_")
                problem = balance_problem(dict(zip(*np.unique(y, return_counts=True))), s[f"n_{split}"], split)
                if problem:
                    out.append(f"{spec['path']}: {problem}")
        return out
    try:
        classes, index = folder_index(spec["path"])
    except (ValueError, OSError) as e:
        return [str(e)]
    out = []
    for split in ("train", "test"):
        counts = {classes.index(c): len(files) for c, files in index[split].items()}
        problem = balance_problem(counts, s[f"n_{split}"], split)
        if problem:
            out.append(f"{spec['path']}: {problem}")
    if spec["size"] is None:
        try:
            _first_image(index)
        except ImportError:  # no Pillow where the workflow parses: the job checks the images
            return out
        except OSError as e:
            out.append(f"{spec['path']}: cannot read an image ({e}); remove or replace the file")
    return out


def dataset_problems(cfg: dict) -> list[str]:
    """Problems of every setting's ``dataset`` key, each naming the key, what is wrong and the fix: a
    value of no form, an unknown name or option, a missing file or folder, an npz lacking arrays or with
    non-integer labels, a folder without class subfolders, no local copy where ``data.download`` is
    false, ``n_train``/``n_test`` beyond what the data holds."""
    problems = []
    data_cfg = cfg.get("data", {})
    for name, s in cfg["settings"].items():
        key = f"config key settings.{name}.dataset"
        try:
            spec = dataset_spec(s["dataset"])
        except ConfigError as e:
            problems.append(f"{key}: {e}")
            continue
        problems += [f"{key}: {p}" for p in _source_problems(spec, s, data_cfg)]
    return problems
