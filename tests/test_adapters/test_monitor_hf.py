"""vqdoctor.Monitor on live Hugging Face VQ models (issue 14: "HF VQ modules"), every family of
the adapters: hooked through the detectors (Encodec, Mimi and X-Codec quantizers have no forward:
their ``encode`` is hooked), its counts equal the codes the model's own encode picks in the same
calls, level by level."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

import test_cross_check as C  # noqa: E402  (the cross-check's tiny models, inputs and own codes)

import vqdoctor  # noqa: E402

data, folders = C.data, C.folders  # the same module-scoped fixtures


@pytest.mark.parametrize("family", C.IMAGE_FAMILIES + C.AUDIO_FAMILIES)
def test_monitor_counts_equal_the_models_own_codes(family, folders, data):
    model = C._model(folders(family))
    x = C._prepared(family, model, data)
    monitor = vqdoctor.Monitor(model, every_n_steps=1, warn=False)
    own = [[] for _ in range(8)]
    for batch in x.split(3):  # several calls, as in training
        for level, codes in enumerate(C._own_codes(family, model, batch)):  # the hooks fire inside encode
            own[level].append(codes)
    own = [np.concatenate(c) for c in own if c]
    report = monitor.report()
    names = [cb.name for cb in report.codebooks]
    assert len(names) == len(own), (names, monitor.quantizers)
    for level, i in enumerate(C._level_order(names)):
        cb = report.codebooks[i]
        assert cb.counts == np.bincount(own[level], minlength=cb.size).tolist(), (family, cb.name)
        assert cb.usage.used_codes > 1
    calls = monitor.recorded_calls
    assert min(calls.values()) >= len(x.split(3))  # every call recorded (chunked codecs: one per chunk)
    monitor.remove()
    C._own_codes(family, model, x[:2])
    assert monitor.recorded_calls == calls  # removed: nothing more recorded


@pytest.mark.parametrize("family", ["encodec", "xcodec", "mimi"])
def test_a_lower_bandwidth_counts_only_the_levels_the_codec_ran(family, folders, data):
    """Codecs train and run at several bandwidths: a call that asks for fewer levels is counted
    on those levels only, the same codes the model picked, the other levels untouched."""
    model = C._model(folders(family))
    x = C._prepared(family, model, data)
    monitor = vqdoctor.Monitor(model, every_n_steps=1, warn=False)
    with torch.no_grad():
        if family == "mimi":
            codes = model.encode(x, num_quantizers=2).audio_codes  # semantic + first acoustic level
        else:
            low = min(model.config.target_bandwidths)
            codes = model.encode(x, bandwidth=low).audio_codes
            codes = codes[0] if family == "encodec" else codes  # encodec: (chunks, b, levels, T)
    report = monitor.report()
    names = [cb.name for cb in report.codebooks]
    order = C._level_order(names)
    assert 1 <= codes.shape[1] < len(names)
    for level, i in enumerate(order):
        cb = report.codebooks[i]
        if level < codes.shape[1]:
            assert cb.counts == np.bincount(codes[:, level].numpy().ravel(), minlength=cb.size).tolist(), cb.name
        else:
            assert cb.usage is None, cb.name  # never reached at this bandwidth
