"""The sixteenth round's sr guidance diagnosis (benchmarks/sr_guidance.py): sr's condition dropped in training, and
guidance on it at sampling."""

from .scripts import load_benchmark


def test_condition_dropout_drops_only_prompt_less_samples_below_p():
    import torch

    guidance = load_benchmark("sr_guidance")
    from mtu.training.step import guidance_dropout

    draws = torch.tensor([0.02, 0.08, 0.12, 0.02, 0.12, 0.5])
    guided = torch.tensor([False, False, False, True, True, True])  # sr, sr, sr, edit, edit, edit
    drop_text, keep_image = guidance.with_condition_dropout(guidance_dropout, 0.1)(draws, guided, 0.05)
    plain_text, plain_image = guidance_dropout(draws, guided, 0.05)
    assert torch.equal(drop_text, plain_text)  # text dropout as before
    assert keep_image.tolist() == [False, False, True, True, False, True]
    assert torch.equal(keep_image[3:], plain_image[3:])  # the prompted tasks' images as before


def test_condition_guidance_combines_with_and_without_the_condition_for_sr_only(base):
    import torch

    import mtu
    from mtu import MTUConfig

    from .conftest import nudge, tiny_inputs

    guidance = load_benchmark("sr_guidance")
    model = mtu.upcycle(base, MTUConfig(tasks=["t2i", "sr"], num_experts=2)).eval()
    nudge(model)
    inputs = tiny_inputs(channels=8)
    empty = {**inputs, "sample": torch.cat([inputs["sample"][:, :4], torch.zeros_like(inputs["sample"][:, 4:])], 1)}
    with torch.no_grad():
        conditional = model(**inputs, task="sr").sample
        unconditional = model(**empty, task="sr").sample
        plain_t2i = model(**tiny_inputs(channels=4), task="t2i", return_dict=False)[0]
        assert not torch.allclose(conditional, unconditional)  # the condition matters once nudged
        with guidance.condition_guidance(model, 4, 3.0):
            guided = model(**inputs, task="sr").sample
            guided_tuple = model(**inputs, task="sr", return_dict=False)[0]
            assert torch.equal(model(**tiny_inputs(channels=4), task="t2i", return_dict=False)[0], plain_t2i)
        with guidance.condition_guidance(model, 4, 1.0):
            assert torch.equal(model(**inputs, task="sr").sample, conditional)
        assert torch.allclose(guided, unconditional + 3.0 * (conditional - unconditional), atol=1e-6)
        assert torch.allclose(guided_tuple, guided, atol=1e-6)
        assert "forward" not in vars(model)  # the plain forward back after the block
        assert torch.equal(model(**inputs, task="sr").sample, conditional)


def test_bad_scales_and_dropout_are_refused_in_one_line(capsys):
    import pytest

    guidance = load_benchmark("sr_guidance")
    for arguments, message in ((["--scales", "0.5,2"], "--scales '0.5,2': every scale must be 1 or more"),
                               (["--scales", "a"], "--scales 'a': expected numbers"),
                               (["--dropout", "0"], "--dropout 0.0: must be in (0, 0.5]"),
                               (["--count", "0"], "--count 0: must be 1 or more"),
                               (["--step-offset", "-5"], "--step-offset -5: must be 0 or more")):
        with pytest.raises(SystemExit):
            guidance.main(["--out", "x", "--log-prefix", "y", *arguments])
        assert message in capsys.readouterr().err
