"""A user's own dataset: an .npz file, an ImageFolder folder and a torchvision dataset by name (from
files the tests write in its own on-disk format; nothing is downloaded), their checks before any job
(eosflow.config.datasets) and their prepared files (eosflow.data.prepare_dataset)."""

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from eosflow.config import ConfigError, validate_config
from eosflow.config.datasets import (DATASET_TAG_PATTERN, dataset_for_tag, dataset_problems, dataset_shape,
                                     dataset_spec, dataset_tag)
from eosflow.data import DataError, load_prepared, prepare_dataset
from eosflow.data_sources import load_source

ROOT = Path(__file__).resolve().parents[1]
KEY = "config key settings.fmnist_mlp.dataset"


@pytest.fixture()
def cfg(tmp_path):
    c = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    c["data"].update(download=False, cache_dir=str(tmp_path / "cache"))
    return c


def with_dataset(cfg, value, **setting):
    """The real config with a setting ``mine``: fmnist_mlp's with ``dataset: value``."""
    c = copy.deepcopy(cfg)
    c["settings"]["mine"] = {**c["settings"]["fmnist_mlp"], "dataset": value, "n_train": 20, "n_test": 10, **setting}
    return c


def problems(cfg, value, **setting):
    """The dataset problems of fmnist_mlp with ``dataset: value`` (the config with defaults filled in)."""
    c = copy.deepcopy(cfg)
    c["settings"] = {"fmnist_mlp": {**cfg["settings"]["fmnist_mlp"], "dataset": value, "n_train": 20, "n_test": 10,
                                    **setting}}
    c["data"] = {"fashion_mnist_dir": None, "cifar10_dir": None, "torchvision_dir": None, **cfg["data"]}
    return dataset_problems(c)


def assert_one(found, *words):
    assert len(found) == 1, found
    assert found[0].startswith(KEY + ": "), found
    for w in words:
        assert w in found[0], (w, found[0])


# ------------------------------------------------------------------------------- writers ---


def write_npz(path, n_train=40, n_test=20, shape=(6, 5, 3), k=4, dtype=np.uint8, **override):
    rng = np.random.default_rng(0)
    hi = 256 if dtype == np.uint8 else 1
    arrays = {"x_train": (rng.random((n_train, *shape)) * hi).astype(dtype), "y_train": np.arange(n_train) % k,
              "x_test": (rng.random((n_test, *shape)) * hi).astype(dtype), "y_test": np.arange(n_test) % k}
    arrays.update(override)
    arrays = {a: v for a, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


def write_folder(root, classes=("cat", "dog", "eel"), n=(4, 2), size=(6, 5), mode="RGB", odd=None):
    """train/<class>/<i>.png and test/<class>/<i>.png; pixel value of image i of class c: 10 c + i."""
    for split, count in zip(("train", "test"), n):
        for c, name in enumerate(classes):
            d = Path(root) / split / name
            d.mkdir(parents=True)
            for i in range(count):
                h, w = odd if (odd and split == "train" and c == 1 and i == 0) else size
                Image.new(mode, (w, h), (10 * c + i,) * (1 if mode == "L" else 3)).save(d / f"{i}.png")
    return root


def idx_bytes(a):
    a = np.ascontiguousarray(a, dtype=np.uint8)
    return bytes([0, 0, 8, a.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in a.shape) + a.tobytes()


def write_mnist(root, n_train=50, n_test=30, name="MNIST"):
    """torchvision's on-disk MNIST: the four uncompressed idx files under root/MNIST/raw/."""
    raw = Path(root) / name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x, y = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(x))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(y))
        arrays[prefix] = (x, y)
    return arrays


# --------------------------------------------------------------------------------- npz -----


def test_npz_channels_last_uint8(tmp_path):
    a = write_npz(tmp_path / "d.npz")
    d = prepare_dataset({"npz": str(tmp_path / "d.npz")}, 20, 8, seed=1, out=str(tmp_path / "p.pt"))
    x = d["x_train"]
    assert x.shape == (20, 3, 6, 5) and x.dtype == torch.float32 and d["x_test"].shape == (8, 3, 6, 5)
    assert d["n_classes"] == 4 and d["classes"] == ["0", "1", "2", "3"]
    assert torch.bincount(d["y_train"]).tolist() == [5] * 4
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    i = d["meta"]["train_indices"][0]  # (N, H, W, C) -> (N, C, H, W), uint8 scaled to [0, 1]
    raw = x[0] * d["std"][:, None, None] + d["mean"][:, None, None]
    assert round(raw[2, 4, 1].item() * 255) == a["x_train"][i, 4, 1, 2]
    m = load_prepared(tmp_path / "p.pt")["meta"]
    assert m["kind"] == "npz" and m["spec"]["path"] == str(tmp_path / "d.npz") and m["dataset"] == m["tag"]
    assert m["tag"] == dataset_tag({"npz": str(tmp_path / "d.npz")})


def test_npz_flat_features_and_no_normalisation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a plain relative path, as in the workflow
    a = write_npz(tmp_path / "f.npz", shape=(7,), dtype=np.float32)
    d = prepare_dataset("f.npz", 12, 8, seed=0, out="p.pt")
    assert d["x_train"].shape == (12, 7) and d["mean"].shape == (7,)
    assert torch.allclose(d["x_train"].mean(0), torch.zeros(7), atol=1e-5)  # per feature
    assert "per-feature" in d["meta"]["normalisation"]
    raw = prepare_dataset({"npz": "f.npz", "normalise": False}, 12, 8, seed=0, out="q.pt")
    i = raw["meta"]["train_indices"]
    assert np.array_equal(raw["x_train"].numpy(), a["x_train"][i])  # floats kept as they are
    assert raw["meta"]["normalisation"].startswith("none") and torch.equal(raw["std"], torch.ones(7))
    assert dataset_shape("f.npz") == ((7,), 4)


def test_npz_greyscale_and_channels_first(tmp_path):
    write_npz(tmp_path / "g.npz", shape=(9, 9))
    assert prepare_dataset(str(tmp_path / "g.npz"), 8, 4, 0, out=str(tmp_path / "g.pt"))["x_train"].shape == (8, 1, 9, 9)
    write_npz(tmp_path / "c.npz", shape=(3, 6, 5))
    assert dataset_shape(str(tmp_path / "c.npz")) == ((3, 6, 5), 4)
    assert prepare_dataset(str(tmp_path / "c.npz"), 8, 4, 0, out=str(tmp_path / "c.pt"))["x_train"].shape == (8, 3, 6, 5)
    # an explicit layout wins over the guess: (N, 3, 6, 5) read as channels last has 5 channels
    assert dataset_shape({"npz": str(tmp_path / "c.npz"), "layout": "nhwc"}) == ((5, 3, 6), 4)


def test_npz_problems(tmp_path, cfg):
    p = str(tmp_path / "d.npz")
    assert_one(problems(cfg, str(tmp_path / "absent.npz")), "does not exist", "numpy.savez")
    write_npz(p, y_test=None)
    assert_one(problems(cfg, p), "lacks the arrays ['y_test']", "numpy.savez")
    write_npz(p, y_train=np.zeros(40, dtype=np.float32))
    assert_one(problems(cfg, p), "y_train has dtype float32", "astype('int64')")
    write_npz(p, y_train=np.eye(4)[np.arange(40) % 4].astype(np.int64))
    assert_one(problems(cfg, p), "y_train has shape (40, 4)", "argmax(1)")
    write_npz(p, x_test=np.zeros((19, 6, 5, 3), np.uint8))
    assert_one(problems(cfg, p), "x_test has 19 examples but y_test has 20", "must match")
    write_npz(p, y_test=-np.ones(20, dtype=np.int64))
    assert_one(problems(cfg, p), "negative labels", "0..K-1")
    write_npz(p)
    assert_one(problems(cfg, p, n_train=60), "n_train = 60", "set n_train <= 40")
    write_npz(p, y_train=np.r_[np.zeros(37), np.ones(3)].astype(np.int64))
    assert_one(problems(cfg, p), "needs 10 examples of class 1", "set n_train <= 6")
    (tmp_path / "bad.npz").write_text("not a zip")
    assert_one(problems(cfg, str(tmp_path / "bad.npz")), "not a readable .npz", "numpy.savez")
    with pytest.raises(DataError, match="lacks the arrays"):
        write_npz(p, x_train=None)
        prepare_dataset(p, 8, 4, 0, out=str(tmp_path / "x.pt"))


# ----------------------------------------------------------------------------- ImageFolder ---


def test_image_folder(tmp_path):
    root = write_folder(tmp_path / "pets")
    d = prepare_dataset(str(root) + "/", 9, 6, seed=0, out=str(tmp_path / "p.pt"))
    assert d["x_train"].shape == (9, 3, 6, 5) and d["classes"] == ["cat", "dog", "eel"] and d["n_classes"] == 3
    assert d["meta"]["kind"] == "image_folder" and d["meta"]["source"] == str(root)
    raw = d["x_train"] * d["std"][:, None, None] + d["mean"][:, None, None]
    # image i of class c is filled with 10 c + i: its label is its class folder's index
    for k, label in enumerate(d["y_train"].tolist()):
        v = round(raw[k, 0, 0, 0].item() * 255)
        assert v // 10 == label and v % 10 < 4
    assert dataset_shape(str(root) + "/") == ((3, 6, 5), 3)
    grey = write_folder(tmp_path / "grey", mode="L")
    assert dataset_shape(str(grey) + "/") == ((1, 6, 5), 3)
    g = prepare_dataset({"image_folder": str(grey), "channels": 3}, 6, 3, 0, out=str(tmp_path / "g.pt"))
    assert g["x_train"].shape == (6, 3, 6, 5)


def test_image_folder_sizes(tmp_path, cfg):
    root = write_folder(tmp_path / "mixed", odd=(8, 8))
    with pytest.raises(DataError) as e:
        prepare_dataset(str(root) + "/", 6, 3, 0, out=str(tmp_path / "m.pt"))
    assert "8x8" in str(e.value) and f"image_folder: {root}, size: [6, 5]" in str(e.value)
    d = prepare_dataset({"image_folder": str(root), "size": [4, 4]}, 6, 3, 0, out=str(tmp_path / "r.pt"))
    assert d["x_train"].shape == (6, 3, 4, 4)
    assert dataset_shape({"image_folder": str(root), "size": 7}) == ((3, 7, 7), 3)
    assert problems(cfg, {"image_folder": str(root), "size": [4, 4]}, n_train=6, n_test=3) == []


def test_image_folder_problems(tmp_path, cfg):
    assert_one(problems(cfg, str(tmp_path / "nope") + "/"), "does not exist", "train/<class>/<image>")
    (tmp_path / "flat" / "train").mkdir(parents=True)
    (tmp_path / "flat" / "test").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "flat" / "train" / "a.png")
    assert_one(problems(cfg, str(tmp_path / "flat") + "/"), "no class subfolders", "subfolder of its own")
    (tmp_path / "notest" / "train" / "a").mkdir(parents=True)
    assert_one(problems(cfg, str(tmp_path / "notest") + "/"), "test is missing", "test/<class>/<image>")
    root = write_folder(tmp_path / "pets")
    assert_one(problems(cfg, {"image_folder": str(root)}, n_train=9, n_test=9), "n_test = 9", "set n_test <= 6")
    assert_one(problems(cfg, {"image_folder": str(root), "size": [0, 3]}, n_train=9, n_test=6),
               "size: [0, 3]", "[height, width]")
    (root / "test" / "fox").mkdir()
    assert_one(problems(cfg, {"image_folder": str(root)}, n_train=9, n_test=6), "classes ['fox']", "training images")


# ------------------------------------------------------------------------------ torchvision ---


def test_torchvision_mnist_from_folders(tmp_path, cfg):
    arrays = write_mnist(tmp_path / "tv")
    d = prepare_dataset({"torchvision": "MNIST", "root": str(tmp_path / "tv")}, 20, 10, 0, out=str(tmp_path / "m.pt"))
    assert d["x_train"].shape == (20, 1, 28, 28) and d["n_classes"] == 10 and d["classes"][0].startswith("0")
    i = d["meta"]["train_indices"][3]
    raw = d["x_train"][3, 0] * d["std"][0] + d["mean"][0]
    assert np.array_equal(np.round(raw.numpy() * 255).astype(np.uint8), arrays["train"][0][i])
    assert d["y_train"][3].item() == arrays["train"][1][i]
    # the plain name, from data.torchvision_dir (prepare_dataset's root): the same data
    e = prepare_dataset("MNIST", 20, 10, 0, out=str(tmp_path / "n.pt"), root=str(tmp_path / "tv"))
    assert torch.equal(e["x_train"], d["x_train"]) and e["meta"]["source"] == str(tmp_path / "tv")
    assert dataset_shape("MNIST") == ((1, 28, 28), 10)
    assert dataset_shape({"torchvision": "EMNIST", "split": "letters"}) == ((1, 28, 28), 27)
    ok = copy.deepcopy(cfg)
    ok["data"]["torchvision_dir"] = str(tmp_path / "tv")
    assert problems(ok, "MNIST") == [] and problems(cfg, {"torchvision": "MNIST", "root": str(tmp_path / "tv")}) == []


def test_torchvision_problems(tmp_path, cfg):
    assert_one(problems(cfg, "KMNIST"), "data.download is false", "data.download: true", "KMNIST/raw/")
    dl = copy.deepcopy(cfg)
    dl["data"]["download"] = True
    assert problems(dl, "KMNIST") == []  # fetched into data.cache_dir by the job
    assert_one(problems(dl, {"torchvision": "MNIST", "root": str(tmp_path)}), f"root {tmp_path} holds no copy",
               "fix root")
    assert_one(problems(dl, "USPS", n_train=9000), "n_train = 9000", "set n_train <= 7291")
    assert_one(problems(dl, {"torchvision": "EMNIST"}), "EMNIST needs split", "balanced")
    assert_one(problems(dl, {"torchvision": "MNIST", "split": "digits"}), "applies to EMNIST only")
    assert_one(problems(dl, {"torchvision": "ImageNet"}), "'ImageNet' is not supported", "CIFAR100", ".npz")
    assert_one(problems(dl, {"torchvision": "MNIST", "kwargs": {"train": False}}), "['train']", "set by eosflow")
    with pytest.raises(DataError, match="data.download: true"):
        load_source("KMNIST", root=None, download=False, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match="no copy of MNIST"):
        load_source({"torchvision": "MNIST", "root": str(tmp_path)})


# ------------------------------------------------------------------------------ forms/tags ---


def test_form_problems(cfg):
    assert_one(problems(cfg, "mnist"), "'mnist' is not a known dataset", "did you mean 'MNIST'", "fashion-mnist",
               "cifar10", ".npz")
    assert_one(problems(cfg, {"npz": "a.npz", "image_folder": "b"}), "['image_folder', 'npz']", "choose one")
    assert_one(problems(cfg, {"path": "a.npz"}), "has none of", "{npz: PATH, ...}")
    assert_one(problems(cfg, {"npz": "a.npz", "size": 3}), "['size'] do not apply to an npz", "layout")
    assert_one(problems(cfg, {"npz": "a.npz", "normalise": "no"}), "normalise: 'no'", "true or false")
    assert_one(problems(cfg, 7), "neither a name", "{torchvision: NAME, ...}")


def test_builtin_tags_unchanged(tmp_path):
    assert dataset_tag("fashion-mnist") == "fashion-mnist" and dataset_tag("cifar10") == "cifar10"
    assert dataset_spec("cifar10") == {"kind": "builtin", "name": "cifar10"}
    tags = [dataset_tag(v) for v in ("MNIST", {"torchvision": "EMNIST", "split": "balanced"}, "data/my_set.npz",
                                     "data/pets/", {"image_folder": "data/pets", "size": [32, 32]})]
    assert [t.rsplit("-", 1)[0] for t in tags] == ["tv-mnist", "tv-emnist-balanced", "npz-my-set", "folder-pets",
                                                  "folder-pets"]
    assert len(set(tags)) == len(tags)
    assert all(re.fullmatch(DATASET_TAG_PATTERN, t) for t in tags + ["fashion-mnist", "cifar10"])
    assert "_" not in "".join(tags)  # the prepared file's name splits at _n, _t, _s
    # stable: the same spec, however it is written, has the same tag
    assert dataset_tag("data/pets/") == dataset_tag({"image_folder": "data/pets"}) == dataset_tag("./data/pets")
    assert dataset_tag("MNIST") == dataset_tag({"torchvision": "MNIST", "normalise": True})
    assert dataset_tag("MNIST") == "tv-mnist-" + dataset_tag("MNIST")[-8:] == dataset_tag(dataset_spec("MNIST"))
    with pytest.raises(ConfigError):
        dataset_tag("mnist")


def test_validate_config_with_a_user_dataset(tmp_path, cfg):
    write_npz(tmp_path / "d.npz")
    out = validate_config(with_dataset(cfg, str(tmp_path / "d.npz")))
    assert out["settings"]["mine"]["dataset"] == str(tmp_path / "d.npz") and out["data"]["torchvision_dir"] is None
    assert dataset_for_tag(out, dataset_tag(str(tmp_path / "d.npz"))) == str(tmp_path / "d.npz")
    with pytest.raises(ConfigError) as e:
        validate_config(with_dataset(cfg, str(tmp_path / "d.npz"), n_train=100))
    assert f"config key settings.mine.dataset: {tmp_path / 'd.npz'}: n_train = 100" in str(e.value)
    assert "n_train <= 40" in str(e.value)
    with pytest.raises(ConfigError, match="settings.mine.dataset: 'Mnist' is not a known"):
        validate_config(with_dataset(cfg, "Mnist"))


# -------------------------------------------------------------------------------- workflow ---


@pytest.mark.workflow
def test_workflow_prepares_a_user_dataset(tmp_path):
    """Snakemake builds a setting's npz dataset under its tag, from the full spec in the rule's params."""
    import subprocess
    import sys

    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text((ROOT / "config/config.yaml").read_text())
    write_npz(tmp_path / "mine.npz")
    value = {"npz": "mine.npz", "normalise": False}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"settings": {"mine": {
        "dataset": value, "n_train": 20, "n_test": 10, "model": {"arch": "mlp", "widths": [4]}, "loss": "ce"}}}))
    target = f"results/data/{dataset_tag(value)}_n20_t10_s0.pt"
    out = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--cores", "1",
                          target, "--configfile", "mine.yaml"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    d = load_prepared(tmp_path / target)
    assert d["meta"]["spec"] == dataset_spec(value) and d["meta"]["tag"] == dataset_tag(value)
    assert d["x_train"].shape == (20, 3, 6, 5) and torch.equal(d["std"], torch.ones(3))
