"""One micro-batch's loss (Eq. 2), with everything random drawn from per-sample seeded generators.

The sample in global slot i of optimizer step s uses `Generator(seed, s, i)` for its VAE latent sample, noise,
timestep and conditioning dropout, so the loss does not depend on how the global batch is split over processes
and accumulation steps, and a resumed run redraws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..conditioning import condition_channels, scaling_factor
from ..errors import InputError
from ..upcycling.tasks import get_task
from .components import FrozenParts


def sample_generator(seed: int, step: int, slot: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, step, slot, 0x4D5455]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def _draws(generators, latent_shape, num_timesteps: int):
    """Per-sample (latent noise for the VAE sample, diffusion noise, timestep, dropout draw)."""
    vae_noise = torch.stack([torch.randn(latent_shape, generator=g) for g in generators])
    noise = torch.stack([torch.randn(latent_shape, generator=g) for g in generators])
    timesteps = torch.stack([torch.randint(0, num_timesteps, (), generator=g) for g in generators])
    dropout = torch.stack([torch.rand((), generator=g) for g in generators])
    return vae_noise, noise, timesteps, dropout


def guidance_dropout(draws: torch.Tensor, guided: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(drop text, keep image) per sample, InstructPix2Pix's classifier-free guidance training.

    A uniform draw u in [0, p) drops the text, [p, 2p) both, [2p, 3p) the image. Tasks without a prompt
    (`guided` False: sr) are sampled without guidance, so nothing is dropped for them.
    """
    drop_text = guided & (draws < 2 * p)
    keep_image = ~(guided & (draws >= p) & (draws < 3 * p))
    return drop_text, keep_image


def unconditional_text(text: torch.Tensor, unet_kwargs: dict, drop_text: torch.Tensor, unconditional: str):
    """(encoder_hidden_states, extra UNet kwargs) with the dropped samples' text as the pipeline's unconditional
    branch: "empty_prompt" keeps the encoded "" (the caller encoded "" for them), "zeros" zeroes their hidden
    states and SDXL's pooled `text_embeds` (the time ids stay, as in diffusers' SDXL pipelines)."""
    if unconditional == "empty_prompt" or not drop_text.any():
        return text, unet_kwargs
    if unconditional != "zeros":
        raise InputError(f"`unconditional` must be 'zeros' or 'empty_prompt', got {unconditional!r}.")
    drop = drop_text.to(text.device)
    text = torch.where(drop.view(-1, 1, 1), torch.zeros_like(text), text)
    added = unet_kwargs.get("added_cond_kwargs")
    if added is not None and "text_embeds" in added:
        pooled = added["text_embeds"]
        pooled = torch.where(drop.to(pooled.device).view(-1, 1), torch.zeros_like(pooled), pooled)
        unet_kwargs = {**unet_kwargs, "added_cond_kwargs": {**added, "text_embeds": pooled}}
    return text, unet_kwargs


def _conditioning(parts: FrozenParts, batch: dict, keep_image: torch.Tensor, extra: int, size, dtype):
    """(B, extra, h, w) conditioning channels: each task's own (from the cache or encoded now), zero-padded."""
    if extra == 0:
        return None
    tasks = batch["task"]
    output = torch.zeros(len(tasks), extra, *size, dtype=dtype, device=keep_image.device)
    if "condition_latents" in batch:  # cached: already per-task channels, zero-padded to the widest task
        cached = batch["condition_latents"][:, :extra]
        output[:, : cached.shape[1]] = cached.to(dtype)
    else:
        for task in dict.fromkeys(tasks):
            spec = get_task(task)
            if not spec.image_inputs:
                continue
            index = [i for i, t in enumerate(tasks) if t == task]
            vae_dtype = parts.vae.dtype  # float32 where an fp16 run keeps the VAE upcast (`FrozenParts.to`)
            channels = condition_channels(parts.vae, spec, batch["condition"][index].to(vae_dtype),
                                          batch["mask"][index].to(vae_dtype), latent_size=size)
            output[index, : channels.shape[1]] = channels.to(dtype)
    return output * keep_image.view(-1, 1, 1, 1).to(dtype)


def _target_moments(parts: FrozenParts, batch: dict, dtype):
    """Mean and std of the target's latent distribution, from the cache or the VAE (in the VAE's dtype: float32
    where an fp16 run keeps it upcast)."""
    if "target_mean" in batch:
        return batch["target_mean"].to(dtype), batch["target_std"].to(dtype)
    distribution = parts.vae.encode(batch["target"].to(parts.vae.dtype)).latent_dist
    return distribution.mean, distribution.std


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def checked_prediction_type(noise_scheduler) -> str:
    """The scheduler's `prediction_type`, or `InputError` naming it when training does not support it."""
    kind = noise_scheduler.config.prediction_type
    if kind not in PREDICTION_TYPES:
        raise InputError(f"the base's noise scheduler predicts {kind!r} (`prediction_type`); training supports "
                         f"{PREDICTION_TYPES}.", field="model.base")
    return kind


def loss_target(noise_scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to output for `latents` noised with `noise` at `timesteps`, read as the base's schedulers
    read it when sampling (their `prediction_type`): the noise ("epsilon"), the velocity ("v_prediction") or the
    clean latents x0 ("sample"). Any other type raises `InputError` naming it."""
    kind = checked_prediction_type(noise_scheduler)
    if kind == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    return latents if kind == "sample" else noise


def min_snr_weights(noise_scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weights of `timesteps` for the scheduler's prediction type (see `micro_step_loss`)."""
    from diffusers.training_utils import compute_snr

    kind = checked_prediction_type(noise_scheduler)
    snr = compute_snr(noise_scheduler, timesteps)
    clipped = torch.clamp(snr, max=gamma)
    if kind == "sample":
        return clipped  # Hang et al. 2023, Sec. 3.4: min(SNR, gamma) is the weight of the x0 loss itself
    return clipped / (snr + 1) if kind == "v_prediction" else clipped / snr


def micro_step_loss(model, batch: dict, *, parts: FrozenParts, step: int, seed: int, dropout_p: float,
                    task_loss_weights: dict[str, float], encode_text, weight_dtype,
                    task_channels: dict[str, int], snr_gamma: float | None = None,
                    unconditional: str = "empty_prompt") -> tuple[torch.Tensor, dict]:
    """(weighted mean loss, {task: [per-sample losses]}) for one micro-batch of optimizer step `step`.

    The target is the scheduler's `prediction_type`'s (`loss_target`): noise, velocity or the clean latents.

    `snr_gamma`: Min-SNR-gamma loss weighting (Hang et al. 2023, diffusers' `--snr_gamma`): each sample's loss
    times min(SNR(t), gamma) / SNR(t) (epsilon), / (SNR(t) + 1) (v-prediction) or as is (sample); None weighs all
    timesteps alike. The per-sample losses returned for logging are unweighted.

    `unconditional`: how a dropped text is encoded (`unconditional_text`): "empty_prompt" or "zeros", as the
    pipeline that samples the adapter makes its unconditional branch (`FrozenParts.unconditional_text`).

    `model` may be wrapped (DDP, FSDP); `encode_text(prompts, tasks)` gives (encoder_hidden_states, extra UNet
    kwargs) for the prompts of samples of those tasks;
    `task_channels` gives each task's UNet input channels. A batch holds images, or cached latents.
    """
    tasks = batch["task"]
    device = (batch["target_mean"] if "target_mean" in batch else batch["target"]).device
    specs = [get_task(task) for task in tasks]
    generators = [sample_generator(seed, step, slot) for slot in batch["slot"]]
    with torch.no_grad():
        mean, std = _target_moments(parts, batch, weight_dtype)
        vae_noise, noise, timesteps, dropout = _draws(generators, mean.shape[1:],
                                                      parts.noise_scheduler.config.num_train_timesteps)
        latents = (mean + std * vae_noise.to(device, mean.dtype)) * scaling_factor(parts.vae)
        latents, noise, timesteps = latents.float(), noise.to(device), timesteps.to(device)
        drop_text, keep_image = guidance_dropout(dropout, torch.tensor([spec.uses_prompt for spec in specs]),
                                                 dropout_p)
        prompts = ["" if drop or not spec.uses_prompt else prompt
                   for drop, spec, prompt in zip(drop_text.tolist(), specs, batch["prompt"])]
        text, unet_kwargs = unconditional_text(*encode_text(prompts, tasks), drop_text, unconditional)
        noisy = parts.noise_scheduler.add_noise(latents, noise, timesteps)
        extra = max(task_channels[task] for task in tasks) - latents.shape[1]
        conditioning = _conditioning(parts, batch, keep_image.to(device), extra, tuple(latents.shape[-2:]),
                                     weight_dtype)
        sample = noisy if conditioning is None else torch.cat([noisy, conditioning.float()], dim=1)
        target = loss_target(parts.noise_scheduler, latents, noise, timesteps)
    prediction = model(sample, timesteps, text.float(), task=tasks, **unet_kwargs).sample
    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    weights = torch.tensor([task_loss_weights.get(task, 1.0) for task in tasks], device=device)
    if snr_gamma is not None:
        weights = weights * min_snr_weights(parts.noise_scheduler, timesteps, snr_gamma)
    per_task: dict[str, list[float]] = {}
    for task, value in zip(tasks, per_sample.detach().tolist()):
        per_task.setdefault(task, []).append(value)
    return (weights * per_sample).mean(), per_task
