"""Instability (loss-spike) detection on synthetic traces with known spikes."""

import numpy as np
import pytest

from eosflow.instability import Instability, align_sharpness, branch_epochs, detect_instabilities

LR = 0.1  # 2 / LR = 20


def synthetic_trace(n=300, spikes=((50, 8, 12, 1.0), (140, 5, 20, 1.5), (230, 10, 10, 0.8)), wobble=0.03, seed=0):
    """A decaying loss with period-two wobble (EoS oscillation, below ``min_rise``) and triangular
    spikes (onset, rise steps, fall steps, relative height); sharpness 20.5-25 (unstable) during
    spikes and at the wobble's up-steps, 18 (stable) elsewhere. Returns loss, sharpness, truth."""
    rng = np.random.default_rng(seed)
    full = n
    n = max(n, 400)  # build the whole trace, then cut it at the requested length
    t = np.arange(n)
    loss = 2.0 * np.exp(-t / 150.0) * (1 + wobble * (t % 2))
    sharp = np.where(t % 2 == 0, 20.5, 18.0) + 0.1 * rng.random(n)
    truth = []
    for onset, up, down, amp in spikes:
        base = loss[onset]
        peak = onset + up
        for s in range(onset + 1, peak + down):
            frac = (s - onset) / up if s <= peak else (peak + down - s) / down
            loss[s] = max(loss[s], base * (1 + amp * frac))
        end = peak + down
        while loss[end] > base:
            end += 1
        sharp[onset:peak + 1] = 25.0
        truth.append(Instability(onset=onset, peak=peak, end=end, rise=float(loss[peak] / base - 1), returned=True))
    truth = [s for s in truth if s.onset < full]
    if truth and truth[-1].end >= full:  # the last spike is cut open
        s = truth[-1]
        peak = s.onset + int(np.argmax(loss[s.onset:full]))
        truth[-1] = Instability(s.onset, peak, full - 1, float(loss[peak] / loss[s.onset] - 1), False)
    return loss[:full], sharp[:full], truth


def test_finds_the_known_spikes_and_ignores_the_wobble():
    loss, sharp, truth = synthetic_trace()
    found = detect_instabilities(loss, sharp, LR, min_rise=0.2)
    assert [(f.onset, f.peak, f.end) for f in found] == [(s.onset, s.peak, s.end) for s in truth]
    for f, s in zip(found, truth):
        assert f.rise == pytest.approx(s.rise)
        assert f.rise > 0.7 and f.returned
    # with no margin, the wobble's up-steps at unstable steps count as spikes too
    assert len(detect_instabilities(loss, sharp, LR, min_rise=0.0)) > 3 * len(truth)


def test_stable_steps_do_not_start_a_spike():
    loss, sharp, truth = synthetic_trace()
    assert detect_instabilities(loss, sharp * 0 + 19.0, LR) == []  # η·S = 1.9 < 2 everywhere
    # a smaller η makes the same trace stable
    assert detect_instabilities(loss, sharp, LR / 2) == []
    # per-step η: stable (small η) only during the second spike's onset
    lr = np.full(loss.size, LR)
    lr[truth[1].onset] = 0.01
    onsets = [f.onset for f in detect_instabilities(loss, sharp, lr)]
    assert truth[1].onset not in onsets and truth[0].onset in onsets


def test_open_spike_at_the_end_and_step_labels():
    loss, sharp, truth = synthetic_trace(n=240)  # the third spike (onset 230) never returns
    found = detect_instabilities(loss, sharp, LR, steps=np.arange(240) + 1000)
    assert [f.onset for f in found] == [s.onset + 1000 for s in truth]
    assert found[-1].returned is False and found[-1].end == 1239
    assert found[0].returned is True


def test_nan_loss_inside_a_spike_keeps_it_open():
    loss, sharp, truth = synthetic_trace(n=120)
    loss[60] = np.nan
    (first,) = detect_instabilities(loss, sharp, LR)
    assert first.onset == truth[0].onset and first.end == truth[0].end
    assert first.peak == 60 and first.rise == np.inf


def test_bad_input():
    with pytest.raises(ValueError, match="align_sharpness"):
        detect_instabilities(np.ones(10), np.ones(5), LR)
    with pytest.raises(ValueError, match="min_rise"):
        detect_instabilities(np.ones(10), np.ones(10), LR, min_rise=-1)


def test_align_sharpness_takes_the_latest_measurement():
    out = align_sharpness(np.arange(7), [1, 4], [10.0, 40.0])
    np.testing.assert_array_equal(out, [np.nan, 10, 10, 10, 40, 40, 40])
    assert np.isnan(align_sharpness(np.arange(3), [], [])).all()


def test_branch_epochs():
    inst = Instability(onset=100, peak=110, end=130, rise=1.0, returned=True)
    assert branch_epochs(inst, [0.0, 0.25, 0.5, 1.0, 0.5]) == [100, 108, 115, 130]
    with pytest.raises(ValueError, match="outside"):
        branch_epochs(inst, [1.5])
