"""Network architectures: MLP, a small CNN, a small VGG (optional BatchNorm).

Every model maps a batch ``x`` of shape ``(n, C, H, W)`` to logits ``(n, n_classes)``. The
two-parameter diagonal linear network of the paper's figure 1 has closed forms and lives in
:mod:`eosflow.dln`.

BatchNorm: the layers are built with ``track_running_stats=False``, so a BN net always
normalises with the statistics of the batch it is given. The training loss, its gradient and
its Hessian are then all defined over the same fixed chunks of the training set ("ghost batch"
normalisation with the configured ``chunk_size``), and no running buffer is mutated inside
``torch.func`` transforms.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
}
ARCHITECTURES = ("mlp", "cnn", "vgg")


def _act(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; allowed: {sorted(ACTIVATIONS)}") from None


class MLP(nn.Sequential):
    """Flatten, then ``Linear -> activation`` for each hidden width, then a linear read-out."""

    def __init__(self, input_shape, n_classes: int, widths=(200, 200), activation: str = "tanh", bias: bool = True):
        layers: list[nn.Module] = [nn.Flatten()]
        d = math.prod(input_shape)
        for w in widths:
            layers += [nn.Linear(d, w, bias=bias), _act(activation)]
            d = w
        layers.append(nn.Linear(d, n_classes, bias=bias))
        super().__init__(*layers)


class SmallCNN(nn.Sequential):
    """``[Conv3x3 -> activation -> MaxPool2]`` per channel count, then a linear read-out.
    ``input_pool`` > 1 first average-pools the image by that factor (28x28 -> 14x14 at 2: about 5x
    cheaper a step, which sizes the default scale's convolutional setting for a 2-core CPU)."""

    def __init__(self, input_shape, n_classes: int, channels=(16, 32), activation: str = "relu",
                 input_pool: int = 1):
        c, h, w = input_shape
        layers: list[nn.Module] = []
        if input_pool > 1:
            layers.append(nn.AvgPool2d(input_pool))
            h, w = h // input_pool, w // input_pool
        for ch in channels:
            layers += [nn.Conv2d(c, ch, 3, padding=1), _act(activation), nn.MaxPool2d(2)]
            c, h, w = ch, h // 2, w // 2
        layers += [nn.Flatten(), nn.Linear(c * h * w, n_classes)]
        super().__init__(*layers)


class SmallVGG(nn.Sequential):
    """VGG-style: ``blocks`` blocks of two 3x3 convolutions (width ``base_width * 2**i``), each
    followed by optional BatchNorm and the activation, then MaxPool2; then either global average
    pooling and a linear read-out (``dense`` None) or, as in the authors' CIFAR-10 VGG, the flattened
    features through ``Dense(dense)``, BatchNorm (with ``batch_norm``), the activation and
    ``Dense(n_classes)``."""

    def __init__(self, input_shape, n_classes: int, blocks: int = 3, base_width: int = 8,
                 batch_norm: bool = True, activation: str = "relu", dense: int | None = None):
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for i in range(blocks):
            ch = base_width * 2**i
            for _ in range(2):
                layers.append(nn.Conv2d(c, ch, 3, padding=1, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(ch, track_running_stats=False))
                layers.append(_act(activation))
                c = ch
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        if dense is None:
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_classes)]
        else:
            layers += [nn.Flatten(), nn.Linear(c * h * w, dense, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm1d(dense, track_running_stats=False))
            layers += [_act(activation), nn.Linear(dense, n_classes)]
        super().__init__(*layers)


INITS = ("lecun", "torch")
_TRUNC_STD = 0.8796256610342398  # standard deviation of N(0, 1) truncated to [-2, 2]


def lecun_init_(model: nn.Module) -> nn.Module:
    """LeCun-normal weights (variance 1/fan_in, flax's ``nn.Dense``/``nn.Conv`` default, as in the
    authors' JAX code) and zero biases, for every linear and convolution layer."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            # a normal truncated to ±2 standard units, rescaled to variance 1/fan_in
            std = 1.0 / math.sqrt(m.weight[0].numel()) / _TRUNC_STD
            nn.init.trunc_normal_(m.weight, std=std, a=-2.0 * std, b=2.0 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def build_model(spec: dict, input_shape, n_classes: int, seed: int, perturb: float = 0.0) -> nn.Module:
    """Build the architecture ``spec["arch"]``, initialised under ``seed``.

    ``spec`` is a setting's ``model`` block of the config (see ``config/config.yaml``);
    ``spec["init"]``: ``"lecun"`` (default; :func:`lecun_init_`) or ``"torch"`` (PyTorch's
    default Kaiming-uniform layers). ``perturb`` (the config's ``perturb_theta0``): every initial
    parameter times ``1 + perturb * s`` with ``s = ±1`` drawn from ``seed`` (:func:`perturb_`).
    """
    spec = dict(spec)
    if "arch" not in spec:
        return build_user_model(spec, input_shape, n_classes, seed, perturb)
    arch = spec.pop("arch")
    init = spec.pop("init", "lecun")
    if init not in INITS:
        raise ValueError(f"unknown model.init {init!r}; allowed: {list(INITS)}")
    classes = {"mlp": MLP, "cnn": SmallCNN, "vgg": SmallVGG}
    if arch not in classes:
        raise ValueError(f"unknown model.arch {arch!r}; allowed: {list(ARCHITECTURES)}")
    return _seeded(lambda: classes[arch](input_shape, n_classes, **spec), seed, init, perturb)


def _seeded(make, seed: int, init: str | None, perturb: float) -> nn.Module:
    """``make()`` under ``torch.manual_seed(seed)`` (the global generator restored after), then
    :func:`lecun_init_` when ``init == "lecun"`` and :func:`perturb_` when ``perturb``."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = make()
        if init == "lecun":
            lecun_init_(model)
        if perturb:
            perturb_(model, perturb, seed)
    finally:
        torch.random.set_rng_state(gen_state)
    return model


def _factory_call(fn, kwargs: dict, input_shape, n_classes: int, what: str):
    """``fn(**kwargs)``, adding ``input_shape`` and ``n_classes`` / ``num_classes`` where ``fn``
    takes them and ``kwargs`` does not give them."""
    kwargs = dict(kwargs)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    for name, value in (("input_shape", tuple(input_shape)), ("n_classes", n_classes), ("num_classes", n_classes)):
        if name in params and name not in kwargs:
            kwargs[name] = value
    try:
        return fn(**kwargs)
    except Exception as e:
        raise ValueError(f"{what}: calling it with {kwargs} failed: {type(e).__name__}: {e}") from e


def build_user_model(spec: dict, input_shape, n_classes: int, seed: int, perturb: float = 0.0,
                     what: str = "model") -> nn.Module:
    """A user's network: ``spec["factory"]`` (``"pkg.module:function"`` or ``"file.py:function"``,
    a function or ``nn.Module`` class called with ``spec["kwargs"]``, plus ``input_shape``,
    ``n_classes`` / ``num_classes`` where it takes them and the kwargs do not), or
    ``spec["torchvision"]``, a torchvision classification model by name (``weights=None``,
    ``num_classes`` = the data's classes, then the kwargs). Built under ``seed`` with its own
    initialisation; ``spec["init"] = "lecun"`` re-initialises its Linear and Conv2d layers as
    eosflow's own nets. ``what`` names the config key in errors."""
    from .losses import load_object

    kwargs = dict(spec.get("kwargs") or {})

    def make() -> nn.Module:
        if "factory" in spec:
            fn = load_object(spec["factory"], f"{what}.factory")
            if not callable(fn):
                raise ValueError(f"{what}.factory: {spec['factory']} is a {type(fn).__name__}, not a function or class")
            model = _factory_call(fn, kwargs, input_shape, n_classes, f"{what}.factory {spec['factory']}")
            if not isinstance(model, nn.Module):
                raise ValueError(f"{what}.factory: {spec['factory']} returned {type(model).__name__}, not a "
                                 "torch.nn.Module")
            return model
        if "torchvision" in spec:
            import torchvision

            name = spec["torchvision"]
            if name not in torchvision.models.list_models(module=torchvision.models):
                raise ValueError(f"{what}.torchvision: {name!r} is not a torchvision classification model; allowed: "
                                 f"{', '.join(torchvision.models.list_models(module=torchvision.models))}")
            kwargs.setdefault("num_classes", n_classes)
            try:
                return torchvision.models.get_model(name, weights=None, **kwargs)
            except Exception as e:
                raise ValueError(f"{what}.torchvision: {name}({kwargs}) failed: {type(e).__name__}: {e}") from e
        raise ValueError(f"{what}: needs arch (mlp, cnn, vgg), factory or torchvision")

    return _seeded(make, seed, spec.get("init"), perturb)


def model_provenance(spec: dict) -> dict:
    """What a cube records about a user's network: the factory's qualified name and the sha256 of
    its source file, or the torchvision model and version (empty for eosflow's own)."""
    from .losses import load_object, qualified_name, source_hash

    if "factory" in spec:
        fn = load_object(spec["factory"], "model.factory")
        return {"model_factory": spec["factory"], "model_qualname": qualified_name(fn),
                "model_source_sha256": source_hash(fn) or ""}
    if "torchvision" in spec:
        import torchvision

        return {"model_torchvision": spec["torchvision"], "torchvision_version": torchvision.__version__}
    return {}


def perturb_(model: nn.Module, delta: float, seed: int) -> nn.Module:
    """Multiply every parameter entry by ``1 + delta * s``, ``s = ±1`` from a generator seeded with
    ``seed`` (computed in float64, rounded once to the parameter's dtype): a relative perturbation of
    θ₀ as small as another machine's rounding (``delta = 1e-7`` moves float32 entries by about one ulp)."""
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for p in model.parameters():
            s = torch.randint(0, 2, p.shape, generator=gen, dtype=torch.float64) * 2 - 1
            p.copy_(p.double() * (1 + delta * s))
    return model


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
