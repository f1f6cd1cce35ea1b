"""The CIFAR-10 second setting end to end, on tiny files in CIFAR-10's own format that the test
writes (CIFAR-10 cannot be fetched on these machines), and the message when the data is absent."""
import json

import pytest
import yaml

from test_data import fake_cifar
from test_workflow import copy_workflow, snakemake

pytestmark = pytest.mark.workflow

# A tiny stand-in for paper.yaml's cifar_vgg: the authors' VGG layout (BN convolutions, a BN dense
# head) at a few hundred parameters, BatchNorm over chunks of 20 images.
TINY_CIFAR_VGG = {
    "dataset": "cifar10", "n_train": 40, "n_test": 20, "subset_seed": 0,
    "model": {"arch": "vgg", "blocks": 1, "base_width": 2, "batch_norm": True, "activation": "relu", "dense": 4},
    "loss": "ce", "chunk_size": 20,
}


@pytest.fixture(scope="module")
def cifar_workdir(tmp_path_factory):
    d = copy_workflow(tmp_path_factory.mktemp("wfc"))
    fake_cifar(d / "cifar" / "cifar-10-batches-py")
    cfg = yaml.safe_load((d / "tiny.yaml").read_text())
    cfg["settings"]["cifar_vgg"] = TINY_CIFAR_VGG
    cfg["fig5"] = {**cfg["fig5"], "settings": ["cifar_vgg"], "lrs": [0.05, 500.0]}
    for block in ("fig6", "fig9", "fig12"):  # the second setting's figures, as config/paper.yaml sets them
        cfg[block]["setting"] = "cifar_vgg"
    (d / "nodata.yaml").write_text(yaml.safe_dump({**cfg, "data": {**cfg["data"], "cifar10_dir": None,
                                                                    "download": False}}))
    cfg["data"] = {**cfg["data"], "cifar10_dir": str(d / "cifar")}
    (d / "cifar.yaml").write_text(yaml.safe_dump(cfg))
    return d


def test_cifar_target_without_data_stops_at_once_with_the_fix(cifar_workdir):
    out = snakemake(cifar_workdir, "figures/fig5.pdf", check=False, configs=("nodata.yaml",))
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "CIFAR-10 is not on disk" in text and "data.cifar10_dir" in text
    # it stopped at the data: no training job of the setting ran
    assert not list((cifar_workdir / "results/runs").glob("*/cifar_vgg/**/cube.nc"))


def test_tiny_cifar_vgg_builds_every_second_setting_target(cifar_workdir):
    targets = [f"figures/fig{n}.pdf" for n in (5, 6, 7, 8, 9, 12)]
    snakemake(cifar_workdir, *targets, configs=("cifar.yaml",))
    claims = json.loads((cifar_workdir / "figures/fig5.claims.json").read_text())
    assert claims["runs"]["diverged"] == 1 and claims["diverged_runs"][0]["setting"] == "cifar_vgg"
    assert (cifar_workdir / "results/runs/sweep/cifar_vgg/const/lr0.05/seed0/cube.nc").exists()
    for fig in ("fig6", "fig7", "fig8", "fig9", "fig12"):
        assert json.loads((cifar_workdir / f"figures/{fig}.claims.json").read_text())["claims"], fig
    for fig in ("fig6", "fig9", "fig12"):
        assert list((cifar_workdir / f"results/runs/{fig}/cifar_vgg").glob("*/*/seed0/cube.nc")), fig
