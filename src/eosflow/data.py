"""Datasets: locate, read and validate Fashion-MNIST / CIFAR-10, take class-balanced subsets,
normalise them and save the tensors that training reads.

Where data comes from (first hit wins):

* Fashion-MNIST: ``root`` (config ``data.fashion_mnist_dir``; it is an error if it is given
  and lacks the files), then the Debian package ``dataset-fashion-mnist``
  (:data:`DEBIAN_FASHION_MNIST`), then a previous torchvision download in ``cache_dir``,
  then (only with ``download=True``) a fresh torchvision download into ``cache_dir``.
* CIFAR-10: ``root`` (config ``data.cifar10_dir``, torchvision's ``cifar-10-batches-py``
  folder or its parent), then a previous torchvision download in ``cache_dir``, then (only
  with ``download=True``) a fresh download.

A user's dataset (a torchvision dataset by name, an ImageFolder folder, an ``.npz`` file) is read by
:mod:`eosflow.data_sources`; :func:`prepare_dataset` subsets, normalises and saves every source alike.

Every problem with the data raises :class:`DataError` with a message naming the file and
saying how to get or fix it. Files are written only through :func:`eosflow.files.save_torch`, so
nothing is ever half-written.
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import zlib
from pathlib import Path

import numpy as np

from eosflow.config.datasets import dataset_tag
from eosflow.data_sources import DataError, load_source
from eosflow.files import save_torch

log = logging.getLogger(__name__)

#: Where the Debian package ``dataset-fashion-mnist`` installs the IDX files.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]
DATASETS = ("fashion-mnist", "cifar10")

# Base names of the four Fashion-MNIST IDX files; each may also carry a ``.gz`` suffix.
_FMNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR_TEST = "test_batch"

_FMNIST_HOWTO = (
    "apt-get install dataset-fashion-mnist, or set data.fashion_mnist_dir in "
    "config/config.yaml to a folder holding the four IDX files, or data.download: true "
    "where internet is available"
)
_CIFAR_HOWTO = (
    "CIFAR-10 is not on disk: set data.cifar10_dir in config/config.yaml to a folder with "
    f"torchvision's {_CIFAR_DIR} layout (data_batch_1..5, test_batch), or data.download: "
    "true where internet is available"
)


# ----------------------------------------------------------------------------------- IDX ----


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an unsigned-byte IDX file (raw or gzip-compressed) into a ``uint8`` array.

    Compression is detected by the gzip magic bytes ``1f 8b``, not by the file name. The
    header must be ``00 00 08 ndim`` followed by ``ndim`` big-endian uint32 sizes, and the
    payload must hold exactly ``prod(sizes)`` bytes.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read IDX file ({e})") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
            raise DataError(
                f"{path}: corrupt gzip data ({e}); delete it and fetch it again"
            ) from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    if raw[2] != 0x08:
        raise DataError(f"{path}: IDX dtype code 0x{raw[2]:02x} unsupported (expected 0x08, uint8)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated/corrupt IDX header (ndim={ndim}, {len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected, got = int(np.prod(dims, dtype=np.int64)), len(raw) - header
    if got != expected:
        raise DataError(
            f"{path}: truncated/corrupt, expected {expected} bytes got {got} "
            f"for shape {dims}; delete it and fetch it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


# ----------------------------------------------------------------------------- checks -----


def _check_split(
    x: np.ndarray, y: np.ndarray, image_shape: tuple, name: str, where, expect_n: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate one split; return (x uint8, y int64).

    ``expect_n`` (the full dataset size) is enforced only for the canonical sources (Debian
    package, torchvision download); a user-given folder may hold a smaller subset.
    """
    if x.ndim != 1 + len(image_shape) or tuple(x.shape[1:]) != tuple(image_shape):
        raise DataError(f"{where}: {name} images have shape {x.shape}, expected (N, {image_shape})")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{where}: {name} has {len(x)} images but labels of shape {y.shape}")
    if len(y) == 0:
        raise DataError(f"{where}: {name} is empty")
    if y.min() < 0 or y.max() > 9:
        raise DataError(f"{where}: {name} labels outside 0..9 (min {y.min()}, max {y.max()})")
    if expect_n is not None and len(x) != expect_n:
        raise DataError(f"{where}: {name} has {len(x)} examples, expected {expect_n}; "
                        "delete the files and fetch them again")
    return np.ascontiguousarray(x, dtype=np.uint8), y.astype(np.int64)


# ---------------------------------------------------------------------- Fashion-MNIST -----


def _fmnist_files(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Map split keys to existing files in ``folder`` (``name.gz`` or ``name``); list missing."""
    found, missing = {}, []
    for key, base in _FMNIST_FILES.items():
        for cand in (folder / f"{base}.gz", folder / base):
            if cand.is_file():
                found[key] = cand
                break
        else:
            missing.append(f"{base}[.gz]")
    return found, missing


def _read_fmnist(folder: Path, full: bool) -> tuple[np.ndarray, ...]:
    files, missing = _fmnist_files(folder)
    if missing:
        raise DataError(f"{folder}: Fashion-MNIST files missing ({', '.join(missing)}); {_FMNIST_HOWTO}")
    a = {k: read_idx(p) for k, p in files.items()}
    x_tr, y_tr = _check_split(a["x_train"], a["y_train"], (28, 28), "train", folder,
                              60000 if full else None)
    x_te, y_te = _check_split(a["x_test"], a["y_test"], (28, 28), "test", folder,
                              10000 if full else None)
    return x_tr, y_tr, x_te, y_te


def _find_fashion_mnist(root, download: bool, cache_dir) -> tuple[Path, bool]:
    """Return (folder, is_full_canonical_copy), downloading if allowed and needed."""
    if root is not None:
        root = Path(root)
        for cand in (root, root / "FashionMNIST" / "raw"):
            if not _fmnist_files(cand)[1]:
                return cand, False
        missing = ", ".join(_fmnist_files(root)[1])
        raise DataError(f"data.fashion_mnist_dir={root}: Fashion-MNIST files missing there "
                        f"({missing}); {_FMNIST_HOWTO}")
    cache_raw = Path(cache_dir) / "FashionMNIST" / "raw"
    for cand in (Path(DEBIAN_FASHION_MNIST), cache_raw):
        if not _fmnist_files(cand)[1]:
            return cand, True
    if not download:
        raise DataError(f"Fashion-MNIST not found in {DEBIAN_FASHION_MNIST} or {cache_raw}; "
                        f"{_FMNIST_HOWTO}")
    try:
        from torchvision.datasets import FashionMNIST

        log.info("downloading Fashion-MNIST into %s", cache_dir)
        FashionMNIST(str(cache_dir), train=True, download=True)
    except Exception as e:  # network, disk, checksum: all end the same way
        raise DataError(f"Fashion-MNIST download into {cache_dir} failed ({e!r}); "
                        f"{_FMNIST_HOWTO}") from e
    if _fmnist_files(cache_raw)[1]:
        raise DataError(f"{cache_raw}: torchvision download left no IDX files; {_FMNIST_HOWTO}")
    return cache_raw, True


def load_fashion_mnist(
    root: str | None = None, download: bool = False, cache_dir: str = "results/data/raw"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load Fashion-MNIST as ``(x_train, y_train, x_test, y_test)``.

    Images are ``uint8 (N, 28, 28)``, labels ``int64 (N,)`` in 0..9. See the module
    docstring for the search order. The archive md5 is not checked (Debian recompresses the
    gzip files); the IDX headers and lengths are.
    """
    return _load_fashion_mnist(root, download, cache_dir)[0]


def _load_fashion_mnist(root, download, cache_dir) -> tuple[tuple[np.ndarray, ...], str]:
    """:func:`load_fashion_mnist` plus the folder it read from."""
    folder, full = _find_fashion_mnist(root, download, cache_dir)
    out = _read_fmnist(folder, full)
    log.info("Fashion-MNIST read from %s: train %s, test %s", folder, out[0].shape, out[2].shape)
    return out, str(folder)


# ---------------------------------------------------------------------------- CIFAR-10 -----


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles what a CIFAR-10 batch holds (dicts, lists, bytes, strings, numbers and numpy
    arrays) and refuses every other global, so reading a batch never runs code."""

    ALLOWED = {(m, name) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
               for name in ("_reconstruct", "scalar")} | {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused {module}.{name}: a CIFAR-10 batch holds only dicts, lists, "
                                     "bytes, strings, numbers and numpy arrays")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One torchvision/Krizhevsky pickle -> (x uint8 (n,32,32,3), y int64 (n,)), read with
    :class:`_BatchUnpickler` (no code runs)."""
    try:
        with open(path, "rb") as f:
            d = _BatchUnpickler(f, encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except FileNotFoundError as e:
        raise DataError(f"{path}: missing; {_CIFAR_HOWTO}") from e
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: not a CIFAR-10 batch ({e}); nothing in it was run. Delete it and fetch "
                        "CIFAR-10 again from its official source") from None
    except Exception as e:  # unpickling errors come in many types
        raise DataError(f"{path}: not a readable CIFAR-10 batch ({e!r}); delete it and "
                        "fetch CIFAR-10 again") from e
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(f"{path}: CIFAR-10 batch has data {data.shape} and {len(labels)} labels, "
                        "expected (n, 3072) and n labels; delete it and fetch CIFAR-10 again")
    # Rows are channel-major: 1024 red, 1024 green, 1024 blue values, each row-major 32x32.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _has_cifar(folder: Path) -> bool:
    return all((folder / f).is_file() for f in [*_CIFAR_TRAIN, _CIFAR_TEST])


def _find_cifar10(root, download: bool, cache_dir) -> tuple[Path, bool]:
    """Return (cifar-10-batches-py folder, is_full_canonical_copy)."""
    if root is not None:
        root = Path(root)
        for cand in (root, root / _CIFAR_DIR):
            if _has_cifar(cand):
                return cand, False
        raise DataError(f"data.cifar10_dir={root}: no data_batch_1..5/test_batch there or in "
                        f"{root / _CIFAR_DIR}; {_CIFAR_HOWTO}")
    cached = Path(cache_dir) / _CIFAR_DIR
    if _has_cifar(cached):
        return cached, True
    if not download:
        raise DataError(f"{cached}: {_CIFAR_HOWTO}")
    try:
        from torchvision.datasets import CIFAR10

        log.info("downloading CIFAR-10 into %s", cache_dir)
        CIFAR10(str(cache_dir), train=True, download=True)
    except Exception as e:
        raise DataError(f"CIFAR-10 download into {cache_dir} failed ({e!r}); {_CIFAR_HOWTO}") from e
    if not _has_cifar(cached):
        raise DataError(f"{cached}: torchvision download left no batch files; {_CIFAR_HOWTO}")
    return cached, True


def load_cifar10(
    root: str | None = None, download: bool = False, cache_dir: str = "results/data/raw"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load CIFAR-10 as ``(x_train, y_train, x_test, y_test)``; images ``uint8 (N, 32, 32, 3)``.

    ``root`` may be torchvision's ``cifar-10-batches-py`` folder or its parent.
    """
    return _load_cifar10(root, download, cache_dir)[0]


def _load_cifar10(root, download, cache_dir) -> tuple[tuple[np.ndarray, ...], str]:
    """:func:`load_cifar10` plus the folder it read from."""
    folder, full = _find_cifar10(root, download, cache_dir)
    parts = [_read_cifar_batch(folder / f) for f in _CIFAR_TRAIN]
    x_tr, y_tr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    x_te, y_te = _read_cifar_batch(folder / _CIFAR_TEST)
    x_tr, y_tr = _check_split(x_tr, y_tr, (32, 32, 3), "train", folder, 50000 if full else None)
    x_te, y_te = _check_split(x_te, y_te, (32, 32, 3), "test", folder, 10000 if full else None)
    log.info("CIFAR-10 read from %s: train %s, test %s", folder, x_tr.shape, x_te.shape)
    return (x_tr, y_tr, x_te, y_te), str(folder)


# ---------------------------------------------------------------------------- subsets ------


def balanced_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a deterministic, class-balanced random subset of size ``n``.

    Classes are the distinct values of ``y`` in increasing order. Each class gets
    ``n // n_classes`` examples and the remainder goes one each to the lowest class ids. Picks
    within a class are random (``numpy.random.default_rng(seed)``). The result is ordered in
    *rounds*: round ``j`` holds the ``j``-th pick of every class that has one, in a random
    order. Hence any prefix of the result is balanced to within one example per class.

    Raises ``ValueError`` if ``n`` is negative, exceeds ``len(y)``, or a class has too few
    examples.
    """
    y = np.asarray(y)
    if n < 0 or n > len(y):
        raise ValueError(f"balanced_subset: n={n} must be in 0..{len(y)} (len(y))")
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    base, extra = divmod(n, len(classes)) if len(classes) else (0, 0)
    picks = []
    for i, c in enumerate(classes):
        need = base + (i < extra)
        members = np.flatnonzero(y == c)
        if len(members) < need:
            raise ValueError(f"balanced_subset: class {c} has {len(members)} examples, "
                             f"{need} needed for a balanced subset of {n}")
        picks.append(rng.permutation(members)[:need])
    rounds = []
    for j in range(base + (extra > 0)):
        members = np.array([p[j] for p in picks if len(p) > j], dtype=np.int64)
        rounds.append(rng.permutation(members))
    return np.concatenate(rounds) if rounds else np.zeros(0, dtype=np.int64)


# ------------------------------------------------------------------------- prepared file ---


def prepare_dataset(
    dataset: str | dict,
    n_train: int,
    n_test: int,
    seed: int,
    out: str,
    root: str | None = None,
    download: bool = False,
    cache_dir: str = "results/data/raw",
) -> dict:
    """Take balanced subsets, scale to [0, 1], normalise per channel and save to ``out``.

    Images become ``float32 (N, C, H, W)`` (C=1 for Fashion-MNIST, 3 for CIFAR-10),
    normalised with the per-channel mean/std of the *training subset* (applied to both
    splits). The saved (and returned) dict holds ``x_train, y_train, x_test, y_test`` (torch,
    labels int64), ``mean, std`` (C,), ``n_classes``, ``classes`` and ``meta`` (dataset,
    sizes, seed, source folder, chosen indices, normalisation).

    ``dataset`` may also be a user's dataset, any form of
    :func:`eosflow.config.datasets.dataset_spec` (a torchvision name, an ``.npz`` file, an ImageFolder
    folder), read by :func:`eosflow.data_sources.load_source` (``root``: ``data.torchvision_dir``):
    uint8 is scaled to [0, 1], floats are kept; flat ``(N, D)`` features stay flat and are normalised
    per feature; ``normalise: false`` keeps mean 0 / std 1. Its ``meta`` adds ``tag``, ``kind`` and
    ``spec`` (the canonical spec) and ``dataset`` is its tag.
    """
    import torch

    user = None
    if dataset == "fashion-mnist":
        loader, classes = _load_fashion_mnist, FASHION_MNIST_CLASSES
    elif dataset == "cifar10":
        loader, classes = _load_cifar10, CIFAR10_CLASSES
    else:  # a user's dataset (a name of no form: ConfigError, a ValueError naming the allowed ones)
        user = load_source(dataset, root, download, cache_dir)
        classes, tag = user.classes, dataset_tag(user.spec)
        loader = lambda *_: ((user.x_train, user.y_train, user.x_test, user.y_test), user.source)  # noqa: E731
    (x_tr, y_tr, x_te, y_te), source = loader(root, download, cache_dir)
    try:
        i_tr, i_te = balanced_subset(y_tr, n_train, seed), balanced_subset(y_te, n_test, seed)
    except ValueError as e:
        if user is None:
            raise
        raise DataError(f"{source}: {e}; lower the setting's n_train/n_test (or add examples)") from None

    def to_nchw(x: np.ndarray) -> np.ndarray:
        if user is not None:  # already (N, C, H, W) or (N, D); only uint8 is scaled
            return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        x = x.astype(np.float32) / 255.0
        return x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)

    xs_tr, xs_te = to_nchw(x_tr[i_tr]), to_nchw(x_te[i_te])
    axes = (0, 2, 3) if xs_tr.ndim == 4 else 0
    mean = xs_tr.mean(axis=axes, dtype=np.float64)
    std = xs_tr.std(axis=axes, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)  # a constant channel (only in toy data) stays unscaled
    if user is not None and not user.spec["normalise"]:
        mean, std = np.zeros_like(mean), np.ones_like(std)
    shape = (1, -1, 1, 1) if xs_tr.ndim == 4 else (1, -1)
    norm = lambda x: ((x - mean.reshape(shape)) / std.reshape(shape)).astype(np.float32)  # noqa: E731

    result = {
        "x_train": torch.from_numpy(norm(xs_tr)),
        "y_train": torch.from_numpy(y_tr[i_tr].astype(np.int64)),
        "x_test": torch.from_numpy(norm(xs_te)),
        "y_test": torch.from_numpy(y_te[i_te].astype(np.int64)),
        "mean": torch.tensor(mean, dtype=torch.float32),
        "std": torch.tensor(std, dtype=torch.float32),
        "n_classes": 10 if user is None else int(user.n_classes),
        "classes": list(classes),
        "meta": {
            "dataset": dataset,
            "n_train": int(n_train),
            "n_test": int(n_test),
            "seed": int(seed),
            "source": source,
            "train_indices": [int(i) for i in i_tr],
            "test_indices": [int(i) for i in i_te],
            "normalisation": "per-channel mean/std of the training subset",
        },
    }
    if user is not None:
        result["meta"].update(dataset=tag, tag=tag, kind=user.spec["kind"], spec=user.spec)
        if not user.spec["normalise"]:
            result["meta"]["normalisation"] = "none (normalise: false)"
        elif xs_tr.ndim == 2:
            result["meta"]["normalisation"] = "per-feature mean/std of the training subset"
    save_torch(result, out)
    log.info("saved %s: x_train %s, x_test %s", out, tuple(result["x_train"].shape),
             tuple(result["x_test"].shape))
    return result


def load_prepared(path: str | os.PathLike) -> dict:
    """Load a file written by :func:`prepare_dataset` (tensors/lists/str only: weights_only)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: prepared dataset missing; the snakemake rule 'prepare_data' "
                        "makes it")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(f"{path}: unreadable prepared dataset ({e!r}); delete it and rerun "
                        "the snakemake rule 'prepare_data'") from e
