import pytest
import torch

from eosflow.models import build_model, has_batch_norm


@pytest.mark.parametrize("spec, shape", [
    ({"arch": "mlp", "widths": [8, 8], "activation": "relu"}, (1, 28, 28)),
    ({"arch": "cnn", "channels": [4, 8]}, (1, 28, 28)),
    ({"arch": "vgg", "blocks": 3, "base_width": 8, "batch_norm": True}, (3, 32, 32)),
])
def test_shapes_and_seeded_init(spec, shape):
    m = build_model(spec, shape, 10, seed=3)
    assert m(torch.zeros(5, *shape)).shape == (5, 10)
    m2 = build_model(spec, shape, 10, seed=3)
    m3 = build_model(spec, shape, 10, seed=4)
    p, p2, p3 = (torch.cat([q.flatten() for q in x.parameters()]) for x in (m, m2, m3))
    assert torch.equal(p, p2) and not torch.equal(p, p3)


def test_mlp_parameter_count_matches_paper_net():
    m = build_model({"arch": "mlp", "widths": [200, 200]}, (1, 28, 28), 10, seed=0)
    assert sum(p.numel() for p in m.parameters()) == 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10


def test_second_setting_parameter_counts():
    """The default scale's CNN (28x28 pooled to 14x14) and the authors' CIFAR-10 VGG (paper.yaml's
    cifar_vgg: widths 8/16/32, two 3x3 convolutions each, BN, then Dense(32), BN, ReLU, Dense(10))."""
    cnn = build_model({"arch": "cnn", "channels": [8, 16], "input_pool": 2}, (1, 28, 28), 10, seed=0)
    assert sum(p.numel() for p in cnn.parameters()) == (9 * 8 + 8) + (9 * 8 * 16 + 16) + (16 * 3 * 3 * 10 + 10)
    assert cnn(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    vgg = build_model({"arch": "vgg", "blocks": 3, "base_width": 8, "batch_norm": True, "dense": 32},
                      (3, 32, 32), 10, seed=0)
    convs = 9 * (3 * 8 + 8 * 8 + 8 * 16 + 16 * 16 + 16 * 32 + 32 * 32)  # no conv biases under BN
    bn = 2 * 2 * (8 + 16 + 32) + 2 * 32
    assert sum(p.numel() for p in vgg.parameters()) == convs + bn + 32 * 4 * 4 * 32 + 32 * 10 + 10
    assert vgg(torch.zeros(3, 3, 32, 32)).shape == (3, 10) and not list(vgg.buffers())


def test_batch_norm_uses_batch_statistics_only():
    m = build_model({"arch": "vgg", "blocks": 1, "base_width": 2, "batch_norm": True}, (3, 8, 8), 10, seed=0)
    assert has_batch_norm(m) and not list(m.buffers())
    assert not has_batch_norm(build_model({"arch": "vgg", "blocks": 1, "batch_norm": False}, (3, 8, 8), 10, 0))


def test_unknown_arch_and_activation():
    with pytest.raises(ValueError, match="allowed"):
        build_model({"arch": "resnet"}, (1, 4, 4), 2, 0)
    with pytest.raises(ValueError, match="tanh"):
        build_model({"arch": "mlp", "activation": "swish"}, (1, 4, 4), 2, 0)


def test_perturbed_theta0_moves_every_entry_by_about_one_rounding():
    """config key perturb_theta0 (the verdicts' robustness check): every nonzero initial parameter times
    1 +- delta, from the seed; zero stays zero; delta = 0 is the unperturbed model bit for bit."""
    from eosflow.config import read_yaml, run_settings, validate_config
    from eosflow.models import build_model

    spec = {"arch": "mlp", "widths": [16], "activation": "relu", "init": "lecun"}
    base = torch.nn.utils.parameters_to_vector(build_model(spec, (1, 8, 8), 10, 3).parameters())
    same = torch.nn.utils.parameters_to_vector(build_model(spec, (1, 8, 8), 10, 3, perturb=0.0).parameters())
    moved = torch.nn.utils.parameters_to_vector(build_model(spec, (1, 8, 8), 10, 3, perturb=1e-7).parameters())
    assert torch.equal(base, same)
    nz = base != 0
    rel = ((moved - base)[nz] / base[nz]).abs()
    assert (rel > 0).all() and rel.max() < 2e-7 and torch.equal(moved[~nz], base[~nz])
    again = torch.nn.utils.parameters_to_vector(build_model(spec, (1, 8, 8), 10, 3, perturb=1e-7).parameters())
    assert torch.equal(moved, again)  # drawn from the seed
    cfg = validate_config(read_yaml("config/config.yaml"))
    assert "perturb_theta0" not in run_settings(cfg, "sweep", "fmnist_mlp")  # the default's jobs are unchanged
    assert run_settings({**cfg, "perturb_theta0": 1e-7}, "fig4", "fmnist_mlp")["perturb_theta0"] == 1e-7
