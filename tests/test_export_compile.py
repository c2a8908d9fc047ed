"""torch.compile (inductor) of the folded and of the unfolded MTU model gives the eager outputs.

Tolerance: 1e-4 absolute on outputs of order 1 in float32 (inductor fuses and reorders floating-point operations,
so bit equality is not expected). Compiling takes longer than a minute on a CPU, so the test is slow:
`python -m pytest -q -m slow tests/test_export_compile.py`.
"""

from __future__ import annotations

import pytest
import torch

import mtu
from mtu.architectures import build_unet
from mtu.export import TaskSwitchingUNet

from .conftest import nudge, tiny_inputs

TOLERANCE = 1e-4


@pytest.mark.slow
def test_compiled_equals_eager_folded_and_unfolded():
    torch._dynamo.reset()
    model = mtu.upcycle(build_unet("tiny", seed=0), mtu.MTUConfig(tasks=["t2i", "edit"], num_experts=4)).eval()
    nudge(model)
    inputs = tiny_inputs(batch=2, channels=model.task_in_channels("edit"))
    folded = model.fold("edit").eval()
    with torch.no_grad():
        eager_folded = folded(**inputs).sample
        eager_mtu = model(**inputs, task="edit").sample
        compiled_folded = torch.compile(folded)(**inputs).sample
        compiled_mtu = torch.compile(model)(**inputs, task="edit").sample
    torch.testing.assert_close(compiled_folded, eager_folded, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(compiled_mtu, eager_mtu, rtol=0, atol=TOLERANCE)
    assert eager_mtu.abs().mean() > 0.1  # the tolerance is small against the outputs


@pytest.mark.slow
def test_compiled_switching_unet_follows_set_task():
    """A compiled `TaskSwitchingUNet` computes the new task after `set_task` (the swapped parameters are guarded,
    not baked into the compiled graph)."""
    torch._dynamo.reset()
    model = mtu.upcycle(build_unet("tiny", seed=0), mtu.MTUConfig(tasks=["edit", "sr"], num_experts=4)).eval()
    nudge(model)
    switcher = TaskSwitchingUNet(model)
    compiled = torch.compile(switcher)
    inputs = tiny_inputs(batch=2, channels=8)
    with torch.no_grad():
        for task in ("edit", "sr", "edit"):
            switcher.set_task(task)
            expected = model(**inputs, task=task).sample
            torch.testing.assert_close(compiled(**inputs).sample, expected, rtol=0, atol=TOLERANCE)
