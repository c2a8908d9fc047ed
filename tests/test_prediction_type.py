"""The training loss's target follows the base scheduler's `prediction_type`, read as its samplers read the UNet's
output: the noise ("epsilon"), the velocity ("v_prediction") or the clean latents x0 ("sample"); any other type is
refused by name, never trained as epsilon (issue 13, point 4)."""

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

import mtu
from mtu import InputError, MTUConfig
from mtu.training.components import FrozenParts
from mtu.training.step import micro_step_loss, min_snr_weights

from .diffusers_parts import tiny_vae


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_the_scheduler_reads_the_target_back_as_the_clean_latents(kind):
    """What the loss trains the UNet to output is what the sampler's step turns into the right x0."""
    from mtu.training.step import loss_target

    generator = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(2, 1, 4, 8, 8, generator=generator)
    scheduler = DDPMScheduler(prediction_type=kind, clip_sample=False)
    for step in (10, 500, 990):
        timesteps = torch.tensor([step])
        noisy = scheduler.add_noise(latents, noise, timesteps)
        target = loss_target(scheduler, latents, noise, timesteps)
        x0 = scheduler.step(target, step, noisy).pred_original_sample
        torch.testing.assert_close(x0, latents, rtol=1e-4, atol=1e-4)


def _tiny_loss(base, kind: str):
    """(per-sample losses, the UNet's predictions, the clean latents x0) of one micro-batch of two t2i samples whose
    latents are known exactly (cached mean, zero std), through the real loss and a tiny upcycled model."""
    model = mtu.upcycle(base, MTUConfig(tasks=["t2i"], num_experts=2))
    vae = tiny_vae()
    parts = FrozenParts(vae=vae, text_encoder=None, tokenizer=None,
                        noise_scheduler=DDPMScheduler(prediction_type=kind))
    mean = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    batch = {"task": ["t2i", "t2i"], "slot": [0, 1], "prompt": ["a red square", "a blue square"],
             "target_mean": mean, "target_std": torch.zeros_like(mean)}
    outputs = []
    handle = model.register_forward_hook(lambda module, args, output: outputs.append(output.sample.detach()))
    try:  # every argument by keyword: the call reads the same before and after the signature became keyword-only
        _, per_task = micro_step_loss(
            model=model, batch=batch, parts=parts, step=0, seed=0, dropout_p=0.0, task_loss_weights={},
            encode_text=lambda prompts, tasks: (torch.zeros(len(prompts), 7, 32), {}), weight_dtype=torch.float32,
            task_channels={"t2i": 4})
    finally:
        handle.remove()
    return torch.tensor(per_task["t2i"]), outputs[0], mean * vae.config.scaling_factor


def test_a_sample_predicting_base_trains_towards_the_clean_latents(base):
    losses, prediction, x0 = _tiny_loss(base, "sample")
    expected = F.mse_loss(prediction, x0, reduction="none").mean(dim=(1, 2, 3))
    torch.testing.assert_close(losses, expected, rtol=1e-5, atol=1e-6)


def test_an_unknown_prediction_type_is_refused_by_name(base):
    with pytest.raises(InputError, match=r"^model\.base: the base's noise scheduler predicts 'flow' "
                                         r"\(`prediction_type`\); training supports \('epsilon', 'v_prediction', "
                                         r"'sample'\)\.$"):
        _tiny_loss(base, "flow")
    with pytest.raises(InputError, match="predicts 'flow'"):
        min_snr_weights(DDPMScheduler(prediction_type="flow"), torch.tensor([10]), 5.0)


def test_min_snr_weights_of_x0_prediction_are_min_snr_gamma():
    """Hang et al. 2023, Sec. 3.4: the x0 loss is weighted by min(SNR, gamma) itself."""
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              prediction_type="sample")
    timesteps = torch.tensor([0, 20, 100, 400, 999])
    alpha_bar = scheduler.alphas_cumprod[timesteps]
    snr = alpha_bar / (1 - alpha_bar)
    torch.testing.assert_close(min_snr_weights(scheduler, timesteps, 5.0), torch.minimum(snr, torch.tensor(5.0)))
