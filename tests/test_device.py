import logging

import pytest
import torch

from eosflow.device import resolve_device


def test_cpu_and_auto(monkeypatch, caplog):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO):
        assert resolve_device("auto") == torch.device("cpu")
    assert "falls back" in caplog.text or "-> cpu" in caplog.text


def test_cuda_absent_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="device: 'cuda' but no CUDA GPU"):
        resolve_device("cuda")


def test_unknown_device():
    with pytest.raises(ValueError, match=r"allowed values: \['auto', 'cpu', 'cuda'\]"):
        resolve_device("tpu")
