"""Single-file checkpoints of the tiny SD fixtures, in the original Stable Diffusion (CompVis
LDM) layout, for tests/single_file.rs.

    python tools/make_single_file_fixtures.py

For tests/fixtures/sd1-tiny (CLIP text encoder) and sd2-tiny (OpenCLIP text encoder, v-prediction)
this writes tests/fixtures/single/<name>.safetensors with the keys A1111 / ComfyUI files use
(`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.transformer.*` or
`cond_stage_model.model.*` with fused `attn.in_proj_*`), plus the LDM training buffers
(`betas`, `alphas_cumprod`, ...) that such files carry. sd1-tiny is also written as a `.ckpt`
(`torch.save({"state_dict": ..., "global_step": 0})`) with an EMA copy (`model_ema.*`, the UNet
weights + 0.01, so that --ema is visible); sd2-tiny's safetensors header says
`modelspec.prediction_type = v`.

The layout is written here from the LDM module names, independently of synfer's reader; each
file is then loaded with diffusers 0.42.1's `StableDiffusionPipeline.from_single_file(file,
config=folder)` and every UNet, VAE and text-encoder tensor must equal the folder's.
"""

import re
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file

FIX = Path("tests/fixtures")
OUT = FIX / "single"


def unet_to_ldm(sd, layers):
    out = {}
    res = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}

    def resnet(rest):
        name, tail = rest.split(".", 1)
        return f"{res[name]}.{tail}"

    attn_up = {int(m.group(1)) for k in sd for m in [re.match(r"up_blocks\.(\d+)\.attentions\.", k)] if m}
    for k, v in sd.items():
        if k.startswith("time_embedding.linear_1."):
            n = "time_embed.0." + k.split(".", 2)[2]
        elif k.startswith("time_embedding.linear_2."):
            n = "time_embed.2." + k.split(".", 2)[2]
        elif k.startswith("conv_in."):
            n = "input_blocks.0.0." + k[len("conv_in."):]
        elif k.startswith("conv_norm_out."):
            n = "out.0." + k[len("conv_norm_out."):]
        elif k.startswith("conv_out."):
            n = "out.2." + k[len("conv_out."):]
        elif m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", k):
            b, l, rest = int(m[1]), int(m[2]), m[3]
            n = f"input_blocks.{1 + b * (layers + 1) + l}.0.{resnet(rest)}"
        elif m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", k):
            b, l, rest = int(m[1]), int(m[2]), m[3]
            n = f"input_blocks.{1 + b * (layers + 1) + l}.1.{rest}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", k):
            b = int(m[1])
            n = f"input_blocks.{(b + 1) * (layers + 1)}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d)\.(.*)", k):
            n = f"middle_block.{2 * int(m[1])}.{resnet(m[2])}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.*)", k):
            n = f"middle_block.1.{m[1]}"
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", k):
            b, l, rest = int(m[1]), int(m[2]), m[3]
            n = f"output_blocks.{b * (layers + 1) + l}.0.{resnet(rest)}"
        elif m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", k):
            b, l, rest = int(m[1]), int(m[2]), m[3]
            n = f"output_blocks.{b * (layers + 1) + l}.1.{rest}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", k):
            b = int(m[1])
            j = 2 if b in attn_up else 1
            n = f"output_blocks.{b * (layers + 1) + layers}.{j}.conv.{m[2]}"
        else:
            raise SystemExit(f"unet key {k} has no LDM name")
        out["model.diffusion_model." + n] = v
    return out


def vae_to_ldm(sd, levels):
    out = {}
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    for k, v in sd.items():
        n = k
        if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(.*)", k):
            n = f"{m[1]}.mid.attn_1.{attn[m[2]]}.{m[3]}"
            if v.dim() == 2:
                v = v[:, :, None, None]
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.*)", k):
            n = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", k):
            n = f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", k):
            n = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", k):
            n = f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", k):
            n = f"decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
        n = n.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        out["first_stage_model." + n] = v
    return out


def text_keys(sd):
    """transformers 5 names CLIPTextModel weights without the `text_model.` level that
    checkpoints (and older transformers) use; put it back."""
    return {k if k.startswith("text_model.") else "text_model." + k: v for k, v in sd.items()}


def clip_to_ldm(sd):
    return {"cond_stage_model.transformer." + k: v for k, v in text_keys(sd).items() if not k.endswith("position_ids")}


def open_clip_to_ldm(sd, layers):
    sd = text_keys(sd)
    out = {}
    p = "cond_stage_model.model."
    out[p + "token_embedding.weight"] = sd["text_model.embeddings.token_embedding.weight"]
    out[p + "positional_embedding"] = sd["text_model.embeddings.position_embedding.weight"]
    out[p + "ln_final.weight"] = sd["text_model.final_layer_norm.weight"]
    out[p + "ln_final.bias"] = sd["text_model.final_layer_norm.bias"]
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    for i in range(layers):
        q = f"text_model.encoder.layers.{i}."
        r = f"{p}transformer.resblocks.{i}."
        for a, b in names.items():
            for w in ("weight", "bias"):
                out[f"{r}{b}.{w}"] = sd[f"{q}{a}.{w}"]
        for w in ("weight", "bias"):
            out[f"{r}attn.in_proj_{w}"] = torch.cat([sd[f"{q}self_attn.{x}_proj.{w}"] for x in "qkv"])
    hidden = out[p + "ln_final.weight"].shape[0]
    # What OpenCLIP files carry beside the layers SD runs: the projection and logit scale.
    out[p + "text_projection"] = torch.zeros(hidden, hidden)
    out[p + "logit_scale"] = torch.tensor(4.6)
    return out


def buffers():
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
    acp = torch.cumprod(1 - betas, 0)
    return {"betas": betas, "alphas_cumprod": acp, "alphas_cumprod_prev": torch.cat([torch.ones(1), acp[:-1]])}


def check(file: Path, folder: Path, pipe: StableDiffusionPipeline):
    single = StableDiffusionPipeline.from_single_file(str(file), config=str(folder), local_files_only=True,
                                                      safety_checker=None, requires_safety_checker=False)
    for part in ("unet", "vae", "text_encoder"):
        want = getattr(pipe, part).state_dict()
        got = getattr(single, part).state_dict()
        for k, v in want.items():
            if k.endswith("position_ids"):
                continue
            assert torch.equal(got[k].to(v.dtype), v), f"{file}: {part}.{k}"
    print(f"{file}: diffusers from_single_file(config={folder}) gives the folder's weights")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name in ("sd1-tiny", "sd2-tiny"):
        folder = FIX / name
        pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None)
        layers = pipe.unet.config.layers_per_block
        levels = len(pipe.vae.config.block_out_channels)
        sd = {}
        sd.update(unet_to_ldm(pipe.unet.state_dict(), layers))
        sd.update(vae_to_ldm(pipe.vae.state_dict(), levels))
        if name == "sd1-tiny":
            sd.update(clip_to_ldm(pipe.text_encoder.state_dict()))
        else:
            sd.update(open_clip_to_ldm(pipe.text_encoder.state_dict(), pipe.text_encoder.config.num_hidden_layers))
        sd.update(buffers())
        sd = {k: v.contiguous() for k, v in sd.items()}
        meta = {"modelspec.prediction_type": "v"} if name == "sd2-tiny" else None
        path = OUT / f"{name}.safetensors"
        save_file(sd, path, metadata=meta)
        check(path, folder, pipe)
        if name == "sd1-tiny":
            # The .ckpt also carries an EMA copy: every UNet weight + 0.01, under
            # `model_ema.<key without dots>` (diffusers, like synfer without --ema, reads the
            # non-EMA weights).
            ema = dict(sd)
            for k, v in sd.items():
                if k.startswith("model.diffusion_model."):
                    ema["model_ema." + k[len("model."):].replace(".", "")] = v + 0.01
            ema["model_ema.decay"] = torch.tensor(0.9999)
            ema["model_ema.num_updates"] = torch.tensor(10, dtype=torch.int32)
            ckpt = OUT / f"{name}-ema.ckpt"
            torch.save({"state_dict": ema, "global_step": 0}, ckpt)
            check(ckpt, folder, pipe)

if __name__ == "__main__":
    main()
