"""vqdoctor.Monitor on live Hugging Face VQ models (issue 14: "HF VQ modules"), every family of
the adapters: hooked through the detectors (Encodec, Mimi and X-Codec quantizers have no forward:
their ``encode`` is hooked), its counts equal the codes the model's own encode picks in the same
calls, level by level."""

from __future__ import annotations

import numpy as np
import pytest

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
