"""Tests for eosflow.data on small hand-written IDX files and CIFAR-10 pickles."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from eosflow import data
from eosflow.data import (
    DataError,
    balanced_subset,
    load_cifar10,
    load_fashion_mnist,
    load_prepared,
    prepare_dataset,
    read_idx,
)


def idx_bytes(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a, dtype=np.uint8)
    return bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def write_idx(path, a, gz=True):
    b = idx_bytes(a)
    path.write_bytes(gzip.compress(b) if gz else b)
    return path


def fake_fmnist(folder, n_train=200, n_test=50, seed=0, gz=True):
    """Write the four Fashion-MNIST files (small) into ``folder``; return the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, a in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), a, gz=gz)
    return arrays


def cifar_pixel(i, r, c, ch):
    """Known pattern: the value expected at x[i, r, c, ch]."""
    return (i * 7 + r * 3 + c * 5 + ch * 11) % 256


def fake_cifar(folder, n_batch=50, n_test=20):
    folder.mkdir(parents=True, exist_ok=True)
    r, c, ch = np.meshgrid(np.arange(32), np.arange(32), np.arange(3), indexing="ij")

    def batch(start, n):
        imgs = np.stack([cifar_pixel(start + i, r, c, ch) for i in range(n)]).astype(np.uint8)
        # Krizhevsky layout: channel-major rows of 3072.
        flat = imgs.transpose(0, 3, 1, 2).reshape(n, 3072)
        return {b"data": flat, b"labels": [(start + i) % 10 for i in range(n)]}

    for k in range(5):
        with open(folder / f"data_batch_{k + 1}", "wb") as f:
            pickle.dump(batch(k * n_batch, n_batch), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(0, n_test), f)


@pytest.fixture
def no_default_sources(tmp_path, monkeypatch):
    """No Debian Fashion-MNIST; return an empty cache dir."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(empty))
    return str(tmp_path / "cache")


# ------------------------------------------------------------------------- read_idx ----


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip(tmp_path, gz):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    # A gzipped file without .gz suffix: detection is by magic bytes.
    p = write_idx(tmp_path / "f.idx", a, gz=gz)
    out = read_idx(p)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, a)


def test_read_idx_bad_magic(tmp_path):
    p = tmp_path / "bad.idx"
    p.write_bytes(b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(DataError, match="bad.idx"):
        read_idx(p)


def test_read_idx_truncated_and_extra(tmp_path):
    b = idx_bytes(np.zeros((4, 5), np.uint8))
    p = tmp_path / "short.idx.gz"
    p.write_bytes(gzip.compress(b[:-3]))
    with pytest.raises(DataError, match=r"short\.idx\.gz.*truncated/corrupt, expected 20 bytes got 17"):
        read_idx(p)
    p2 = tmp_path / "long.idx"
    p2.write_bytes(b + b"xx")
    with pytest.raises(DataError, match="expected 20 bytes got 22"):
        read_idx(p2)


def test_read_idx_corrupt_gzip(tmp_path):
    z = gzip.compress(idx_bytes(np.zeros((100, 10), np.uint8)))
    p = tmp_path / "cut.gz"
    p.write_bytes(z[: len(z) // 2])
    with pytest.raises(DataError, match="cut.gz"):
        read_idx(p)
    p2 = tmp_path / "garbled.gz"
    p2.write_bytes(z[:10] + b"\xff" * 20 + z[30:])
    with pytest.raises(DataError, match="garbled.gz"):
        read_idx(p2)


# -------------------------------------------------------------------- Fashion-MNIST ----


@pytest.mark.parametrize("gz", [True, False])
def test_fmnist_from_root(tmp_path, no_default_sources, gz):
    arrays = fake_fmnist(tmp_path / "fm", gz=gz)
    x_tr, y_tr, x_te, y_te = load_fashion_mnist(root=str(tmp_path / "fm"), cache_dir=no_default_sources)
    assert x_tr.shape == (200, 28, 28) and x_tr.dtype == np.uint8
    assert y_tr.dtype == np.int64 and x_te.shape == (50, 28, 28) and y_te.shape == (50,)
    np.testing.assert_array_equal(x_te, arrays["t10k-images-idx3-ubyte"])


def test_fmnist_missing_everywhere(no_default_sources):
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        load_fashion_mnist(download=False, cache_dir=no_default_sources)


def test_fmnist_root_missing_files(tmp_path, no_default_sources):
    (tmp_path / "fm").mkdir()
    with pytest.raises(DataError, match=r"fashion_mnist_dir=.*fm"):
        load_fashion_mnist(root=str(tmp_path / "fm"), cache_dir=no_default_sources)


def test_fmnist_bad_labels(tmp_path, no_default_sources):
    fake_fmnist(tmp_path / "fm")
    write_idx(tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz", np.full(50, 12, np.uint8))
    with pytest.raises(DataError, match="0..9"):
        load_fashion_mnist(root=str(tmp_path / "fm"), cache_dir=no_default_sources)
    write_idx(tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz", np.zeros(49, np.uint8))
    with pytest.raises(DataError, match="50 images"):
        load_fashion_mnist(root=str(tmp_path / "fm"), cache_dir=no_default_sources)


@pytest.mark.skipif(
    not os.path.isdir(data.DEBIAN_FASHION_MNIST), reason="dataset-fashion-mnist not installed"
)
def test_fmnist_debian_package(tmp_path):
    x_tr, y_tr, x_te, y_te = load_fashion_mnist(cache_dir=str(tmp_path))
    assert x_tr.shape == (60000, 28, 28) and x_te.shape == (10000, 28, 28)
    assert x_tr.dtype == np.uint8 and y_tr.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y_tr, minlength=10), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(y_te, minlength=10), np.full(10, 1000))


# ------------------------------------------------------------------------- CIFAR-10 ----


@pytest.mark.parametrize("parent", [False, True])
def test_cifar_loader_layout(tmp_path, parent):
    fake_cifar(tmp_path / "cifar-10-batches-py")
    root = tmp_path if parent else tmp_path / "cifar-10-batches-py"
    x_tr, y_tr, x_te, y_te = load_cifar10(root=str(root), cache_dir=str(tmp_path / "c"))
    assert x_tr.shape == (250, 32, 32, 3) and x_te.shape == (20, 32, 32, 3)
    assert x_tr.dtype == np.uint8 and y_tr.dtype == np.int64
    np.testing.assert_array_equal(y_tr, np.arange(250) % 10)
    for i, r, c, ch in [(0, 0, 0, 0), (3, 1, 2, 0), (120, 31, 0, 2), (249, 17, 29, 1)]:
        assert x_tr[i, r, c, ch] == cifar_pixel(i, r, c, ch)
    assert x_te[19, 5, 6, 2] == cifar_pixel(19, 5, 6, 2)


def test_cifar_missing(tmp_path):
    with pytest.raises(DataError, match="cifar10_dir"):
        load_cifar10(root=str(tmp_path / "nope"), cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataError, match="cifar10_dir"):
        load_cifar10(cache_dir=str(tmp_path / "c"))


def test_cifar_bad_pickle(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    fake_cifar(d)
    (d / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar10(root=str(d))
    with open(d / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((5, 3072), np.uint8), b"labels": [0] * 4}, f)
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar10(root=str(d))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_of_every_protocol_load(tmp_path, protocol):
    d = tmp_path / "cifar-10-batches-py"
    fake_cifar(d)
    with open(d / "test_batch", "wb") as f:  # as the real files: batch label, file names, data, labels
        pickle.dump({b"batch_label": b"testing batch 1 of 1", b"filenames": [b"a.png"] * 20,
                     b"data": np.full((20, 3072), 7, np.uint8), b"labels": list(range(10)) * 2}, f, protocol=protocol)
    x_tr, y_tr, x_te, y_te = load_cifar10(root=str(d))
    assert x_te.shape == (20, 32, 32, 3) and int(x_te[3, 4, 5, 1]) == 7 and list(y_te[:3]) == [0, 1, 2]


def test_crafted_cifar_batch_runs_no_code(tmp_path, code_marker):
    """A batch whose pickle would call os.system is refused before anything runs; the error names it."""
    d = tmp_path / "cifar-10-batches-py"
    fake_cifar(d)
    payload, marker = code_marker
    with open(d / "data_batch_2", "wb") as f:
        pickle.dump({b"data": payload, b"labels": [0]}, f)
    with pytest.raises(DataError, match=r"data_batch_2: not a CIFAR-10 batch \(refused posix.system"):
        load_cifar10(root=str(d))
    assert not marker.exists()


# -------------------------------------------------------------------- balanced_subset ----


def test_balanced_subset():
    y = np.repeat(np.arange(10), 30)
    np.random.default_rng(1).shuffle(y)
    idx = balanced_subset(y, 103, seed=5)
    assert len(idx) == 103 and len(set(idx.tolist())) == 103
    counts = np.bincount(y[idx], minlength=10)
    np.testing.assert_array_equal(counts, [11, 11, 11] + [10] * 7)  # remainder to lowest ids
    for m in (7, 10, 25, 60):  # every prefix is balanced to within one
        c = np.bincount(y[idx[:m]], minlength=10)
        assert c.max() - c.min() <= 1
    np.testing.assert_array_equal(idx, balanced_subset(y, 103, seed=5))
    assert not np.array_equal(idx, balanced_subset(y, 103, seed=6))
    with pytest.raises(ValueError):
        balanced_subset(y, 301, seed=0)
    with pytest.raises(ValueError, match="class"):
        balanced_subset(np.r_[np.zeros(50, int), np.ones(3, int)], 10, seed=0)


# ---------------------------------------------------------------- prepare / load ----


def test_prepare_fmnist(tmp_path, no_default_sources):
    fake_fmnist(tmp_path / "fm")
    out = tmp_path / "prep" / "fm.pt"
    d = prepare_dataset("fashion-mnist", 100, 30, seed=3, out=str(out),
                        root=str(tmp_path / "fm"), cache_dir=no_default_sources)
    assert sorted(os.listdir(out.parent)) == ["fm.pt"]  # no temp files left behind
    loaded = load_prepared(out)
    for k in ("x_train", "y_train", "x_test", "y_test", "mean", "std"):
        assert torch.equal(loaded[k], d[k])
    assert loaded["x_train"].shape == (100, 1, 28, 28) and loaded["x_train"].dtype == torch.float32
    assert loaded["x_test"].shape == (30, 1, 28, 28)
    assert loaded["y_train"].dtype == torch.int64
    assert torch.bincount(loaded["y_train"]).tolist() == [10] * 10
    xt = loaded["x_train"]
    assert abs(xt.mean().item()) < 1e-4 and abs(xt.std(unbiased=False).item() - 1) < 1e-4
    assert loaded["mean"].shape == (1,) and loaded["n_classes"] == 10
    assert len(loaded["classes"]) == 10
    m = loaded["meta"]
    assert m["dataset"] == "fashion-mnist" and m["seed"] == 3 and m["n_train"] == 100
    assert m["source"] == str(tmp_path / "fm") and len(m["train_indices"]) == 100
    assert len(m["test_indices"]) == 30


def test_prepare_cifar(tmp_path):
    fake_cifar(tmp_path / "cifar-10-batches-py")
    d = prepare_dataset("cifar10", 40, 10, seed=0, out=str(tmp_path / "c.pt"), root=str(tmp_path))
    x = d["x_train"]
    assert x.shape == (40, 3, 32, 32) and d["mean"].shape == (3,) and d["std"].shape == (3,)
    ch_mean = x.mean(dim=(0, 2, 3))
    ch_std = x.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=False)
    assert torch.allclose(ch_mean, torch.zeros(3), atol=1e-4)
    assert torch.allclose(ch_std, torch.ones(3), atol=1e-4)
    # channel order: raw pixel (i, r, c, ch) -> x[k, ch, r, c] after de-normalising
    i = d["meta"]["train_indices"][0]
    raw = x[0] * d["std"][:, None, None] + d["mean"][:, None, None]
    assert round(raw[2, 4, 9].item() * 255) == cifar_pixel(i, 4, 9, 2)


def test_prepare_errors(tmp_path):
    with pytest.raises(ValueError, match="fashion-mnist"):
        prepare_dataset("mnist", 10, 10, 0, out=str(tmp_path / "x.pt"))
    with pytest.raises(DataError, match="prepare_data"):
        load_prepared(tmp_path / "absent.pt")
