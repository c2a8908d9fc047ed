"""A task's models as ONNX: the folded UNet (4, 8 or 9 input channels), the text encoder and the VAE's two halves.

The exporter is torch.onnx's TorchScript tracer (`dynamo=False`): on this project's CPUs it exports the tiny test
UNet in ~5 s where the torch.export-based exporter takes ~60 s, both matching PyTorch to 1e-6. Tracing bakes in
the shape checks diffusers' UNet makes in Python; the graphs keep batch, latent height and width (multiples of
`latent_multiple`) and prompt length dynamic. A model over protobuf's 2 GB limit keeps its weights in one
`model.onnx_data` file beside `model.onnx`.

onnx and onnxruntime come with the `export` extra and are imported on first use (`require_onnx`).
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError, MissingExtraError  # noqa: F401  (MissingExtraError: re-exported)

INSTALL_HINT = 'pip install "mtu-diffusion[export]"'
MODEL_FILE, DATA_FILE = "model.onnx", "model.onnx_data"
OPSET = 17  # LayerNormalization is an ONNX op from 17; onnxruntime >= 1.14 runs it
TWO_GB = 2**31


def require_onnx():
    """(onnx, onnxruntime), or `MissingExtraError` naming the extra that brings them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise MissingExtraError(f"ONNX export needs onnx and onnxruntime ({error.name} is not installed): "
                                f"{INSTALL_HINT}") from None
    return onnx, onnxruntime


# ---- graphs: what each exported model computes, as a module of tensors in and one tensor out ----

class UNetGraph(nn.Module):
    """(sample, timestep, encoder_hidden_states[, text_embeds, time_ids]) -> noise prediction, for a stock UNet
    (SDXL's added conditions as two more inputs)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds=None, time_ids=None):
        added = None if text_embeds is None else {"text_embeds": text_embeds, "time_ids": time_ids}
        return self.unet(sample, timestep, encoder_hidden_states, added_cond_kwargs=added, return_dict=False)[0]


class TextEncoderGraph(nn.Module):
    """input_ids (B, L) -> last hidden states (B, L, D), as `MTUPipeline.encode_text` reads them."""

    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return self.text_encoder(input_ids)[0]


class VaeEncoderGraph(nn.Module):
    """Images (B, 3, H, W) in [-1, 1] -> the mode of the latent distribution (B, 4, H/f, W/f), unscaled, as
    `mtu.conditioning.condition_channels` encodes a task's image."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, sample):
        return self.vae.encode(sample).latent_dist.mode()


class VaeDecoderGraph(nn.Module):
    """Latents (B, 4, h, w), already divided by the scaling factor -> images (B, 3, h*f, w*f) in [-1, 1]."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample):
        return self.vae.decode(latent_sample, return_dict=False)[0]


# ---- writing one model ----

def _consolidate(onnx, raw: Path, folder: Path) -> None:
    """Moves the exported model from `raw` to `folder`: as is, or, when the exporter wrote its weights as one file
    per tensor (a model over 2 GB), with every tensor appended to one `DATA_FILE`, one at a time (memory: the
    largest tensor, not the model)."""
    folder.mkdir(parents=True, exist_ok=True)
    if [entry.name for entry in raw.iterdir()] == [MODEL_FILE]:
        os.replace(raw / MODEL_FILE, folder / MODEL_FILE)
        return
    model = onnx.load(str(raw / MODEL_FILE), load_external_data=False)
    with open(folder / DATA_FILE, "wb") as data:
        for tensor in model.graph.initializer:
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            entries = {entry.key: entry.value for entry in tensor.external_data}
            with open(raw / entries["location"], "rb") as source:
                source.seek(int(entries.get("offset", 0)))
                payload = source.read(int(entries["length"])) if "length" in entries else source.read()
            offset = data.tell()
            data.write(payload)
            del tensor.external_data[:]
            for key, value in (("location", DATA_FILE), ("offset", str(offset)), ("length", str(len(payload)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
    onnx.save_model(model, str(folder / MODEL_FILE))


def export_graph(graph: nn.Module, inputs: dict[str, torch.Tensor], output: str, dynamic: dict[str, dict[int, str]],
                 folder) -> Path:
    """Traces `graph` on `inputs` (a name -> example tensor dict, in the order of `graph.forward`'s arguments) and
    writes `folder/model.onnx`; `dynamic` names the dynamic axes of inputs and output. Returns the model's path."""
    onnx, _ = require_onnx()
    folder = Path(folder)
    raw = folder.parent / f".{folder.name}.raw"
    raw.mkdir(parents=True)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The tracer's notes on Python-side shape checks, and the deprecation note of the TorchScript exporter
            warnings.simplefilter("ignore")
            torch.onnx.export(graph.eval(), tuple(inputs.values()), str(raw / MODEL_FILE), dynamo=False,
                              input_names=list(inputs), output_names=[output], dynamic_axes=dynamic,
                              opset_version=OPSET, do_constant_folding=True)
        _consolidate(onnx, raw, folder)
    finally:
        shutil.rmtree(raw, ignore_errors=True)
    return folder / MODEL_FILE


def latent_multiple(unet) -> int:
    """The latent height and width the exported UNet takes are multiples of this (2 per down-sampling level)."""
    return 2 ** (len(unet.config.block_out_channels) - 1)


def export_unet(unet, folder, *, text_length: int = 77, batch: int = 2) -> Path:
    """A stock `UNet2DConditionModel` (e.g. a folded task) as `folder/model.onnx`, in the UNet's dtype.

    Inputs: sample (B, in_channels, h, w), timestep (B,) float32, encoder_hidden_states (B, L, D), and for SDXL
    text_embeds (B, E) and time_ids (B, 6); output: out_sample (B, out_channels, h, w).
    """
    config, dtype = unet.config, unet.dtype
    size = latent_multiple(unet)
    inputs = {"sample": torch.randn(batch, config.in_channels, size, size, dtype=dtype),
              "timestep": torch.tensor([999.0, 1.0][:batch] + [500.0] * max(0, batch - 2)),
              "encoder_hidden_states": torch.randn(batch, text_length, config.cross_attention_dim, dtype=dtype)}
    dynamic = {"sample": {0: "batch", 2: "height", 3: "width"}, "timestep": {0: "batch"},
               "encoder_hidden_states": {0: "batch", 1: "text_length"}, "out_sample": {0: "batch", 2: "height",
                                                                                       3: "width"}}
    if config.get("addition_embed_type") == "text_time":
        embeds = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        inputs |= {"text_embeds": torch.randn(batch, embeds, dtype=dtype),
                   "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * batch, dtype=dtype)}
        dynamic |= {"text_embeds": {0: "batch"}, "time_ids": {0: "batch"}}
    elif config.get("addition_embed_type") is not None:
        raise InputError(f"ONNX export takes UNets with `addition_embed_type` None (SD 1.x/2.x) or 'text_time' "
                         f"(SDXL), got {config.addition_embed_type!r}.")
    return export_graph(UNetGraph(unet), inputs, "out_sample", dynamic, folder)


def export_text_encoder(text_encoder, folder, text_length: int = 77) -> Path:
    """A CLIP text encoder as `folder/model.onnx`: input_ids (B, L) int64 -> last_hidden_state (B, L, D)."""
    inputs = {"input_ids": torch.zeros(1, text_length, dtype=torch.int64)}
    dynamic = {"input_ids": {0: "batch"}, "last_hidden_state": {0: "batch"}}
    return export_graph(TextEncoderGraph(text_encoder), inputs, "last_hidden_state", dynamic, folder)


def export_vae_encoder(vae, folder) -> Path:
    """The VAE's encoder as `folder/model.onnx`: sample (B, 3, H, W) -> latent_mode (B, C, H/f, W/f)."""
    size = 2 ** (len(vae.config.block_out_channels) - 1) * 2
    inputs = {"sample": torch.zeros(1, vae.config.in_channels, size, size, dtype=vae.dtype)}
    dynamic = {"sample": {0: "batch", 2: "height", 3: "width"}, "latent_mode": {0: "batch", 2: "height", 3: "width"}}
    return export_graph(VaeEncoderGraph(vae), inputs, "latent_mode", dynamic, folder)


def export_vae_decoder(vae, folder) -> Path:
    """The VAE's decoder as `folder/model.onnx`: latent_sample (B, C, h, w) -> sample (B, 3, h*f, w*f)."""
    inputs = {"latent_sample": torch.zeros(1, vae.config.latent_channels, 2, 2, dtype=vae.dtype)}
    dynamic = {"latent_sample": {0: "batch", 2: "height", 3: "width"}, "sample": {0: "batch", 2: "height",
                                                                                   3: "width"}}
    return export_graph(VaeDecoderGraph(vae), inputs, "sample", dynamic, folder)


def session(path, providers: list[str] | None = None, threads: int | None = None):
    """An onnxruntime `InferenceSession` of `path` (default the CPU provider; `threads` intra-op threads)."""
    _, onnxruntime = require_onnx()
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
