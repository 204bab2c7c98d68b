#!/usr/bin/env python3
"""diffusers references for SynFER's layout initialisation (DDIM inversion) and for img2img.

Usage (from the repository root, venv as in tools/README.md):

    .venv/bin/python tools/make_layout_fixtures.py            # regenerate + verify
    .venv/bin/python tools/make_layout_fixtures.py --verify   # recompute, compare with the committed files

Writes
    tests/fixtures/layout/face32.png                          the 32x32 RGB input face
    tests/fixtures/reference/layout_sd1.{json,safetensors}    sd1-tiny (DDIMScheduler, epsilon, VAE f=2)
    tests/fixtures/reference/layout_sd2.{json,safetensors}    sd2-tiny (DPMSolverMultistepScheduler config, v_prediction, f=4)

Input: face #1 of tests/fixtures/face/gan_faces.safetensors (`faces` u8 [24, 64, 64, 3]), downscaled 64 -> 32
with PIL's BOX filter (exact 2x2 mean, rounded by PIL), saved as PNG.  Both features read the PNG's
pixels as x = u8 / 127.5 - 1, NCHW float32, and encode with the posterior MEAN:
x0 = vae.encode(x).latent_dist.mean * scaling_factor.

Everything uses the committed tiny pipelines (loaded through tools/make_fixtures.py's `load_pipe`, fp32, CPU,
one thread, deterministic algorithms, no hub).  The loops are written by hand from the diffusers components and
cross-checked against the real StableDiffusionPipeline / StableDiffusionImg2ImgPipeline (see "self_check" in the
JSON).  The exact semantics are written to the JSON under "notes".
"""

from __future__ import annotations

import argparse
import json
import warnings
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_fixtures as mf  # noqa: E402  (sets HF_*_OFFLINE, one thread, deterministic algorithms)

import numpy as np  # noqa: E402
import PIL  # noqa: E402
import torch  # noqa: E402
from diffusers import (  # noqa: E402
    DDIMInverseScheduler,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
)
from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_img2img as img2img_mod  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ROOT = mf.ROOT
REF = mf.REF
LAYOUT_DIR = mf.FIX / "layout"
FACE_PNG = LAYOUT_DIR / "face32.png"
GAN_FACES = mf.FIX / "face" / "gan_faces.safetensors"
GAN_INDEX = 1
GENERATOR = "tools/make_layout_fixtures.py"

LAYOUT = dict(
    num_inference_steps=10,
    strength=0.7,
    layout_prompt="a photo of a face",
    prompt="a photo of a smiling woman",
    negative_prompt="blurry",
    guidance_scale=7.5,
)
IMG2IMG = dict(
    num_inference_steps=10,
    strength=0.6,
    prompt="a photo of a smiling woman",
    negative_prompt="blurry",
    guidance_scale=7.5,
    noise_seed=4321,
)
# (tensor prefix, family, scheduler class or None = the pipeline's own)
IMG2IMG_CASES = {
    "sd1": [("img2img_ddim", DDIMScheduler), ("img2img_euler", EulerDiscreteScheduler)],
    "sd2": [("img2img_dpm", DPMSolverMultistepScheduler)],
}
TOL = 1e-4  # --verify tolerance (absolute, on latents and [0, 1] images); same machine: bit-exact


# ----------------------------------------------------------------------------------------
# input face
# ----------------------------------------------------------------------------------------


def make_face_u8() -> np.ndarray:
    faces = load_file(str(GAN_FACES))["faces"].numpy()
    img = Image.fromarray(faces[GAN_INDEX]).resize((32, 32), Image.BOX)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_face_png() -> np.ndarray:
    a = np.asarray(Image.open(FACE_PNG).convert("RGB"), dtype=np.uint8)
    assert a.shape == (32, 32, 3), a.shape
    return a


def to_pixels(u8: np.ndarray) -> torch.Tensor:
    """x = u8 / 127.5 - 1, NCHW float32."""
    x = torch.from_numpy(u8.astype(np.float32)).permute(2, 0, 1).unsqueeze(0).contiguous()
    return x / 127.5 - 1.0


def to_image(dec: torch.Tensor) -> torch.Tensor:
    """VAE output -> (x/2 + 0.5).clamp(0, 1), NHWC float32 (= VaeImageProcessor.postprocess(output_type='np'))."""
    return mf.f32((dec / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1))


def to_u8(img: torch.Tensor) -> torch.Tensor:
    """numpy_to_pil's rounding: (x * 255).round().astype(uint8)."""
    return torch.from_numpy((img.numpy() * 255).round().astype("uint8"))


def psnr(img: torch.Tensor, ref_u8: np.ndarray) -> float:
    ref = torch.from_numpy(ref_u8.astype(np.float32) / 255.0).unsqueeze(0)
    mse = float(((img.double() - ref.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


# ----------------------------------------------------------------------------------------
# pieces
# ----------------------------------------------------------------------------------------


def encode(vae, x: torch.Tensor) -> torch.Tensor:
    mean = vae.encode(x).latent_dist.mean
    shift = getattr(vae.config, "shift_factor", None)
    if shift is not None:
        mean = mean - shift
    return mf.f32(mean * vae.config.scaling_factor)


def decode(vae, lat: torch.Tensor) -> torch.Tensor:
    sf = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None)
    lat = lat / sf
    if shift is not None:
        lat = lat + shift
    return vae.decode(lat).sample


def embed(pipe, prompt: str, negative: str | None, cfg: bool):
    cond, uncond = pipe.encode_prompt(prompt, "cpu", 1, cfg, negative)
    return mf.f32(cond), (None if uncond is None else mf.f32(uncond))


def invert(pipe, x0, emb, steps, k, capture=None):
    """SynFER layout inversion: DDIMInverseScheduler, conditional layout prompt only, no CFG."""
    inv = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    if inv.config.timestep_spacing not in ("leading", "trailing"):
        inv = DDIMInverseScheduler.from_config(pipe.scheduler.config, timestep_spacing="leading")
    inv.set_timesteps(steps)
    ts = inv.timesteps[:k]
    lat = x0.clone()
    lats, outs = [mf.f32(lat)], []
    for t in ts:
        eps = pipe.unet(inv.scale_model_input(lat, t), t, encoder_hidden_states=emb).sample
        new = inv.step(eps, t, lat).prev_sample
        if capture is not None:
            capture.append(manual_inverse_step(inv, eps, int(t), lat, new))
        lat = new
        lats.append(mf.f32(lat))
        outs.append(mf.f32(eps))
    return inv, [int(t) for t in ts], lat, lats, outs


def manual_inverse_step(inv, eps, t, sample, got):
    """DDIMInverseScheduler.step re-derived by hand (documents the formula, checked against diffusers)."""
    c = inv.config
    src = min(t - c.num_train_timesteps // inv.num_inference_steps, c.num_train_timesteps - 1)
    a_src = inv.alphas_cumprod[src] if src >= 0 else inv.initial_alpha_cumprod
    a_tgt = inv.alphas_cumprod[t]
    b_src = 1 - a_src
    if c.prediction_type == "epsilon":
        x0p, e = (sample - b_src**0.5 * eps) / a_src**0.5, eps
    elif c.prediction_type == "v_prediction":
        x0p, e = a_src**0.5 * sample - b_src**0.5 * eps, a_src**0.5 * eps + b_src**0.5 * sample
    else:
        raise NotImplementedError(c.prediction_type)
    n_clipped = 0
    if c.clip_sample:
        n_clipped = int((x0p.abs() > c.clip_sample_range).sum())
        x0p = x0p.clamp(-c.clip_sample_range, c.clip_sample_range)
    mine = a_tgt**0.5 * x0p + (1 - a_tgt) ** 0.5 * e
    diff = float((mine - got).abs().max())
    assert diff <= 1e-6, ("manual inverse step", t, diff)
    return {"t": t, "source_timestep": src, "alpha_prod_source": float(a_src), "alpha_prod_target": float(a_tgt),
            "pred_x0_elements_clipped": n_clipped, "max_abs_diff_vs_diffusers": diff}


def ddim_clip_count(sch, out, t, sample) -> int:
    """How many elements of DDIMScheduler.step's pred_x0 its clip_sample clamps (0 when clip_sample is off)."""
    if not (isinstance(sch, DDIMScheduler) and sch.config.clip_sample):
        return 0
    a = sch.alphas_cumprod[int(t)]
    if sch.config.prediction_type == "epsilon":
        x0p = (sample - (1 - a) ** 0.5 * out) / a**0.5
    else:
        x0p = a**0.5 * sample - (1 - a) ** 0.5 * out
    return int((x0p.abs() > sch.config.clip_sample_range).sum())


def denoise(pipe, sch, lat, timesteps, cond, uncond, g, clip_counts=None):
    """StableDiffusionPipeline.__call__'s loop, by hand. uncond None -> no CFG (guidance 1)."""
    emb = cond if uncond is None else torch.cat([uncond, cond])
    steps, outs = [], []
    for t in timesteps:
        inp = lat if uncond is None else torch.cat([lat] * 2)
        inp = sch.scale_model_input(inp, t)
        out = pipe.unet(inp, t, encoder_hidden_states=emb).sample
        if uncond is None:
            noise = out
        else:
            u, c = out.chunk(2)
            noise = u + g * (c - u)
        if clip_counts is not None:
            clip_counts.append(ddim_clip_count(sch, noise, t, lat))
        lat = sch.step(noise, t, lat).prev_sample
        steps.append(mf.f32(lat))
        outs.append(mf.f32(out))
    return lat, steps, outs


def ddim_tail(pipe, steps, k):
    sch = DDIMScheduler.from_config(pipe.scheduler.config)
    sch.set_timesteps(steps)
    return sch, sch.timesteps[steps - k:]


def ts_list(ts) -> list:
    return [float(t) if ts.is_floating_point() else int(t) for t in ts]


def maxdiff(a, b) -> float:
    return float((a.double() - b.double()).abs().max())


# ----------------------------------------------------------------------------------------
# layout initialisation
# ----------------------------------------------------------------------------------------


@torch.no_grad()
def layout_reference(kind, pipe, u8, T, J):
    L = LAYOUT
    steps, S, g = L["num_inference_steps"], L["strength"], L["guidance_scale"]
    k = int(round(S * steps))
    x = to_pixels(u8)
    x0 = encode(pipe.vae, x)
    T["x0"] = x0
    emb_layout, _ = embed(pipe, L["layout_prompt"], None, False)
    cond, uncond = embed(pipe, L["prompt"], L["negative_prompt"], True)
    T["emb.layout"], T["emb.prompt"], T["emb.negative"] = emb_layout, cond, uncond

    # --- inversion ---------------------------------------------------------------------
    detail = []
    inv, inv_ts, inverted, lats, outs = invert(pipe, x0, emb_layout, steps, k, capture=detail)
    T["inv.latents"] = torch.stack(lats)
    T["inv.unet_out"] = torch.stack(outs)
    T["inv.inverted"] = mf.f32(inverted)
    full_inv = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    full_inv.set_timesteps(steps)

    # --- denoising (CFG) -----------------------------------------------------------------
    ddim, den_ts = ddim_tail(pipe, steps, k)
    den_clips: list[int] = []
    lat, step_lats, unet_outs = denoise(pipe, ddim, inverted.clone(), den_ts, cond, uncond, g, den_clips)
    img = to_image(decode(pipe.vae, lat))
    T["layout.step_latents"] = torch.stack(step_lats)
    T["layout.unet_out"] = torch.stack(unet_outs)
    T["layout.image"] = img
    T["layout.image_u8"] = to_u8(img)

    # cross-check: the real StableDiffusionPipeline from the inverted latents, DDIM limited to the last k timesteps
    with warnings.catch_warnings():  # __init__ warns about (and rewrites) clip_sample=True; that instance is replaced below
        warnings.simplefilter("ignore", FutureWarning)
        sd = StableDiffusionPipeline(**{**pipe.components, "scheduler": DDIMScheduler.from_config(pipe.scheduler.config)})
    sd.set_progress_bar_config(disable=True)
    sch = DDIMScheduler.from_config(pipe.scheduler.config)  # fresh: __init__ above may rewrite clip_sample
    orig = sch.set_timesteps

    def tail_set_timesteps(num_inference_steps, device=None):
        orig(num_inference_steps, device)
        sch.timesteps = sch.timesteps[num_inference_steps - k:]

    sch.set_timesteps = tail_set_timesteps
    sd.scheduler = sch
    res = sd(prompt=L["prompt"], negative_prompt=L["negative_prompt"], num_inference_steps=steps, guidance_scale=g,
             height=u8.shape[0], width=u8.shape[1], latents=inverted.clone(), output_type="np")
    pipe_img = torch.from_numpy(np.ascontiguousarray(res.images)).to(torch.float32)
    d_pipe = maxdiff(pipe_img, img)
    assert d_pipe <= 1e-6, ("layout denoise vs StableDiffusionPipeline", kind, d_pipe)

    # with clip_sample forced off (only informative: does the default clip_sample=True change anything here?)
    clip_info = None
    if inv.config.clip_sample or ddim.config.clip_sample:
        inv2 = DDIMInverseScheduler.from_config(pipe.scheduler.config, clip_sample=False)
        inv2.set_timesteps(steps)
        lat2 = x0.clone()
        for t in inv2.timesteps[:k]:
            lat2 = inv2.step(pipe.unet(lat2, t, encoder_hidden_states=emb_layout).sample, t, lat2).prev_sample
        inv_diff = maxdiff(lat2, inverted)
        d2 = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
        d2.set_timesteps(steps)
        lat2, _, _ = denoise(pipe, d2, lat2, d2.timesteps[steps - k:], cond, uncond, g)
        img2 = to_image(decode(pipe.vae, lat2))
        clip_info = {
            "note": "same layout run with clip_sample=False in both schedulers (informative only)",
            "inverted_max_abs_diff_vs_clip_sample_false": inv_diff,
            "layout_image_max_abs_diff_vs_clip_sample_false": maxdiff(img2, img),
        }

    # --- S = 0: plain VAE round trip -------------------------------------------------------
    rt = to_image(decode(pipe.vae, x0))
    T["roundtrip.image"] = rt
    T["roundtrip.image_u8"] = to_u8(rt)

    # --- S = 1, guidance 1, layout prompt: reconstruction -----------------------------------
    _, rinv_ts, rinv, _, _ = invert(pipe, x0, emb_layout, steps, steps)
    rddim, rden_ts = ddim_tail(pipe, steps, steps)
    rlat, _, _ = denoise(pipe, rddim, rinv.clone(), rden_ts, emb_layout, None, 1.0)
    rimg = to_image(decode(pipe.vae, rlat))
    T["reconstruct.inverted"] = mf.f32(rinv)
    T["reconstruct.image"] = rimg
    T["reconstruct.image_u8"] = to_u8(rimg)

    J["layout"] = {
        "num_inference_steps": steps,
        "strength": S,
        "k": k,
        "k_formula": "k = round(strength * num_inference_steps) (Python round: half to even; 0.7*10 = 7.000000000000001 -> 7)",
        "layout_prompt": L["layout_prompt"],
        "prompt": L["prompt"],
        "negative_prompt": L["negative_prompt"],
        "guidance_scale": g,
        "inverse_scheduler_class": "DDIMInverseScheduler",
        "inverse_scheduler_config": mf.clean_config(inv.config),
        "inverse_timesteps_all": ts_list(full_inv.timesteps),
        "inverse_timesteps": inv_ts,
        "inverse_steps": detail,
        "inverse_initial_alpha_cumprod": float(inv.initial_alpha_cumprod),
        "denoise_scheduler_class": "DDIMScheduler",
        "denoise_scheduler_config": mf.clean_config(ddim.config),
        "denoise_timesteps_all": ts_list(ddim.timesteps),
        "denoise_timesteps": ts_list(den_ts),
        "denoise_final_alpha_cumprod": float(ddim.final_alpha_cumprod),
        "denoise_pred_x0_elements_clipped": den_clips,
        "eta": 0.0,
        "clip_sample_effect": clip_info,
        "roundtrip": {"strength": 0.0, "k": 0, "note": "k = 0: no inversion, no denoising; image = decode(x0 / scaling_factor) clamped"},
        "reconstruct": {
            "strength": 1.0, "k": steps, "guidance_scale": 1.0, "prompt": L["layout_prompt"],
            "inverse_timesteps": rinv_ts, "denoise_timesteps": ts_list(rden_ts),
            "note": "invert all steps with the layout prompt, then denoise all steps with the same (conditional) embedding, no CFG",
        },
    }
    J["psnr_db_vs_input"] = {
        "roundtrip.image": psnr(rt, u8),
        "reconstruct.image": psnr(rimg, u8),
        "layout.image": psnr(img, u8),
    }
    J.setdefault("self_check", {})["layout_denoise_vs_StableDiffusionPipeline"] = {
        "max_abs_diff": d_pipe,
        "how": "StableDiffusionPipeline(**components, scheduler=DDIMScheduler.from_config(config) whose set_timesteps keeps "
        "only the last k timesteps), prompt/negative/guidance as above, latents=inv.inverted, output_type='np'",
    }


# ----------------------------------------------------------------------------------------
# img2img
# ----------------------------------------------------------------------------------------


@torch.no_grad()
def img2img_reference(kind, pipe, u8, T, J):
    I = IMG2IMG
    steps, strength, g = I["num_inference_steps"], I["strength"], I["guidance_scale"]
    x = to_pixels(u8)
    x0 = encode(pipe.vae, x)
    f = pipe.vae_scale_factor
    noise = torch.randn((1, pipe.unet.config.in_channels, u8.shape[0] // f, u8.shape[1] // f),
                        generator=torch.Generator().manual_seed(I["noise_seed"]))
    T["img2img.noise"] = noise
    cond, uncond = embed(pipe, I["prompt"], I["negative_prompt"], True)
    J["img2img"] = {k: v for k, v in I.items()}
    J["img2img"]["noise_shape"] = list(noise.shape)
    J["img2img"]["x0"] = "posterior mean: vae.encode(x).latent_dist.mean * scaling_factor (= tensor x0)"
    u = torch.from_numpy(u8.astype(np.float32))
    J["img2img"]["pixel_formula_max_abs_diff"] = {
        "value": maxdiff(2 * (u / 255) - 1, u / 127.5 - 1),
        "note": "VaeImageProcessor computes 2 * (u8 / 255) - 1; this fixture uses u8 / 127.5 - 1 (float32)",
    }
    cases = {}
    for name, cls in IMG2IMG_CASES[kind]:
        cfg = pipe.scheduler.config
        # --- by hand ------------------------------------------------------------------------
        sch = cls.from_config(cfg)
        sch.set_timesteps(steps)
        all_ts = sch.timesteps.clone()
        init_timestep = min(int(steps * strength), steps)
        t_start = max(steps - init_timestep, 0)
        ts = sch.timesteps[t_start * sch.order:]
        if hasattr(sch, "set_begin_index"):
            sch.set_begin_index(t_start * sch.order)
        lat0 = sch.add_noise(x0, noise, ts[:1])
        sigmas = getattr(sch, "sigmas", None)
        lat, step_lats, _ = denoise(pipe, sch, lat0.clone(), ts, cond, uncond, g)
        img = to_image(decode(pipe.vae, lat))
        T[f"{name}.init_latents"] = mf.f32(lat0)
        T[f"{name}.step_latents"] = torch.stack(step_lats)
        T[f"{name}.image"] = img
        T[f"{name}.image_u8"] = to_u8(img)

        # --- the real pipeline ----------------------------------------------------------------
        checks = {}
        for variant in ("latents_as_image", "pil_image_mode"):
            p = StableDiffusionImg2ImgPipeline(**{**pipe.components, "scheduler": cls.from_config(cfg)})
            p.set_progress_bar_config(disable=True)
            orig_randn, orig_retrieve = img2img_mod.randn_tensor, img2img_mod.retrieve_latents
            calls = []

            def fake_randn(shape, generator=None, device=None, dtype=None, layout=None):
                calls.append(tuple(shape))
                assert tuple(shape) == tuple(noise.shape)
                return noise.clone().to(dtype=dtype)

            img2img_mod.randn_tensor = fake_randn
            if variant == "pil_image_mode":
                img2img_mod.retrieve_latents = lambda enc, generator=None, sample_mode="sample": enc.latent_dist.mode()
                image_arg = Image.fromarray(u8)
            else:
                image_arg = x0.clone()  # 4 channels: preprocess passes it through, prepare_latents uses it as is
            try:
                res = p(prompt=I["prompt"], negative_prompt=I["negative_prompt"], image=image_arg, strength=strength,
                        num_inference_steps=steps, guidance_scale=g, output_type="np")
            finally:
                img2img_mod.randn_tensor, img2img_mod.retrieve_latents = orig_randn, orig_retrieve
            assert calls == [tuple(noise.shape)], calls
            pimg = torch.from_numpy(np.ascontiguousarray(res.images)).to(torch.float32)
            checks[variant] = maxdiff(pimg, img)
        assert checks["latents_as_image"] <= 1e-6, (name, checks)
        assert checks["pil_image_mode"] <= 1e-3, (name, checks)

        cases[name] = {
            "scheduler_class": cls.__name__,
            "scheduler_config": mf.clean_config(sch.config),
            "order": sch.order,
            "timesteps_all": ts_list(all_ts),
            "timesteps_dtype": str(all_ts.dtype).replace("torch.", ""),
            "init_timestep": init_timestep,
            "t_start": t_start,
            "begin_index": t_start * sch.order if hasattr(sch, "set_begin_index") else None,
            "timesteps": ts_list(ts),
            "noise_timestep": ts_list(ts[:1])[0],
            "sigmas": None if sigmas is None else [float(s) for s in sigmas],
            "init_noise_sigma": float(sch.init_noise_sigma),
            "psnr_db_vs_input": psnr(img, u8),
        }
        J.setdefault("self_check", {})[f"{name}_vs_StableDiffusionImg2ImgPipeline"] = {
            "max_abs_diff_latents_as_image": checks["latents_as_image"],
            "max_abs_diff_pil_image_posterior_mode": checks["pil_image_mode"],
            "how": "StableDiffusionImg2ImgPipeline(**components, scheduler=cls.from_config(config)) with the module's "
            "randn_tensor patched to return img2img.noise; 'latents_as_image': image=x0 (a 4-channel tensor is taken "
            "as the init latents unscaled); 'pil_image_mode': image=PIL face, retrieve_latents patched to "
            "latent_dist.mode() (= mean), pixels then come from VaeImageProcessor (2*(u8/255)-1: equal to u8/127.5-1 here, "
            "but a channels-last, non-contiguous NCHW view, which makes the VAE encoder's convs differ in the last bits)",
        }
    J["img2img"]["cases"] = cases


# ----------------------------------------------------------------------------------------


NOTES = {
    "preprocess": "x = u8 / 127.5 - 1 (HWC u8 -> NCHW float32), no resizing (the PNG is already 32x32). "
    "x0 = vae.encode(x).latent_dist.mean * scaling_factor (no shift_factor in the tiny VAEs; with one: (mean - shift) * scaling).",
    "decode": "image = (vae.decode(latents / scaling_factor).sample / 2 + 0.5).clamp(0, 1), NHWC float32; *_u8 = (image * 255).round() as u8 (numpy_to_pil).",
    "ddim_inverse_set_timesteps": "leading: step_ratio = num_train_timesteps // steps; timesteps = arange(steps) * step_ratio + steps_offset, "
    "ASCENDING (steps=10, offset 1: [1, 101, ..., 901]); the inversion uses the first k of them. "
    "trailing: round(arange(num_train, 0, -num_train/steps)[::-1]) - 1. Other spacings raise (treated as leading here).",
    "ddim_inverse_step": "step(eps, t, sample): target = t; source = min(t - num_train_timesteps // num_inference_steps, num_train_timesteps - 1); "
    "alpha_prod_t = alphas_cumprod[source] if source >= 0 else initial_alpha_cumprod (= 1.0 if set_alpha_to_one else alphas_cumprod[0]); "
    "alpha_prod_t_prev = alphas_cumprod[t]; beta_prod_t = 1 - alpha_prod_t; "
    "epsilon: pred_x0 = (sample - sqrt(beta_prod_t) * eps) / sqrt(alpha_prod_t), pred_eps = eps; "
    "v_prediction: pred_x0 = sqrt(alpha_prod_t) * sample - sqrt(beta_prod_t) * v, pred_eps = sqrt(alpha_prod_t) * v + sqrt(beta_prod_t) * sample; "
    "if clip_sample: pred_x0 = clamp(pred_x0, -clip_sample_range, clip_sample_range); "
    "prev_sample = sqrt(alpha_prod_t_prev) * pred_x0 + sqrt(1 - alpha_prod_t_prev) * pred_eps. "
    "The UNet is called with the TARGET timestep t on a sample that sits at the SOURCE level (t - 100); "
    "the first step (t = 1) treats x0 as being at level initial_alpha_cumprod (source -99 < 0). scale_model_input is the identity.",
    "layout_loop": "inv = DDIMInverseScheduler.from_config(pipe.scheduler.config); inv.set_timesteps(steps); lat = x0; "
    "for t in inv.timesteps[:k]: lat = inv.step(unet(lat, t, emb(layout_prompt)).sample, t, lat).prev_sample  (no CFG); "
    "ddim = DDIMScheduler.from_config(pipe.scheduler.config); ddim.set_timesteps(steps); for t in ddim.timesteps[steps-k:]: "
    "u, c = unet(cat([lat, lat]), t, cat([emb(negative), emb(prompt)])).sample.chunk(2); lat = ddim.step(u + g (c - u), t, lat, eta=0).prev_sample; decode. "
    "inv.latents[i] is the latent after i inverse steps (inv.latents[0] = x0, inv.latents[k] = inv.inverted).",
    "from_config_defaults": "from_config only copies keys the config has. sd2's scheduler config is a DPMSolverMultistepScheduler "
    "config without clip_sample / set_alpha_to_one, so DDIMInverseScheduler and DDIMScheduler built from it get their class defaults: "
    "clip_sample TRUE (range 1.0) and set_alpha_to_one TRUE. sd1's DDIM config has both false. See *_scheduler_config "
    "(it also lists the source config's keys the class does not take, e.g. algorithm_type, solver_order: kept by diffusers, unused).",
    "img2img": "init_timestep = min(int(steps * strength), steps); t_start = max(steps - init_timestep, 0); "
    "timesteps = scheduler.timesteps[t_start * order:]; scheduler.set_begin_index(t_start * order) where the scheduler has it "
    "(Euler, DPM; not DDIM); latents = scheduler.add_noise(x0, noise, timesteps[:1]) (no init_noise_sigma multiply); "
    "then the CFG loop with scale_model_input and step (eta 0 for DDIM); decode.",
    "dpm_leading_timesteps": "DPMSolverMultistepScheduler's leading spacing differs from DDIM/Euler: step_ratio = 1000 // (steps + 1) = 90 "
    "for 10 steps, timesteps = (arange(0, steps + 1) * 90)[::-1][:-1] + steps_offset = [901, 811, ..., 91]; order = 1.",
    "euler": "EulerDiscreteScheduler timesteps are float32 ([901.0, ..., 1.0]); scale_model_input divides by sqrt(sigma^2 + 1); "
    "init_noise_sigma (8.45) is NOT applied in img2img (add_noise gives x0 + sigma * noise).",
    "add_noise": "DDIM: sqrt(alphas_cumprod[t]) * x0 + sqrt(1 - alphas_cumprod[t]) * noise. Euler/DPM: sigma = sigmas[begin_index]; "
    "Euler: x0 + sigma * noise; DPM: alpha_t * x0 + sigma_t * noise with alpha_t = 1/sqrt(sigma^2 + 1), sigma_t = sigma * alpha_t.",
}


def build(kind: str, u8: np.ndarray):
    pipe = mf.load_pipe(kind)
    T: dict[str, torch.Tensor] = {}
    J: dict = {
        "versions": {**mf.versions(), "pillow": PIL.__version__},
        "fixture_dir": mf.rel(mf.SD1_DIR if kind == "sd1" else mf.SD2_DIR),
        "input": {
            "png": mf.rel(FACE_PNG),
            "source": f"{mf.rel(GAN_FACES)} faces[{GAN_INDEX}] (u8 64x64 RGB DCGAN face)",
            "how": "PIL.Image.fromarray(face).resize((32, 32), Image.BOX), saved as PNG (lossless, RGB)",
            "height": int(u8.shape[0]),
            "width": int(u8.shape[1]),
        },
        "vae": {"scale_factor": pipe.vae_scale_factor, "scaling_factor": pipe.vae.config.scaling_factor,
                "shift_factor": getattr(pipe.vae.config, "shift_factor", None)},
        "pipeline_scheduler_class": type(pipe.scheduler).__name__,
        "pipeline_scheduler_config": mf.clean_config(pipe.scheduler.config),
    }
    T["input.image_u8"] = torch.from_numpy(u8.copy()).unsqueeze(0)
    layout_reference(kind, pipe, u8, T, J)
    img2img_reference(kind, pipe, u8, T, J)
    J["notes"] = NOTES
    J["tensors"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in sorted(T.items())}
    return T, J


def write(kind: str, T, J) -> None:
    mf.save_tensors(REF / f"layout_{kind}.safetensors", T, {"generator": GENERATOR})
    mf.write_json(REF / f"layout_{kind}.json", J)
    for e in ("json", "safetensors"):
        (REF / f"layout_{kind}.{e}").chmod(0o644)


def verify() -> bool:
    ok = True
    u8 = read_face_png()
    if not np.array_equal(u8, make_face_u8()):
        print("verify: face32.png differs from the recomputed downscale")
        ok = False
    for kind in ("sd1", "sd2"):
        ok_all, ok = ok, True
        T, J = build(kind, u8)
        ref = load_file(str(REF / f"layout_{kind}.safetensors"))
        refj = json.loads((REF / f"layout_{kind}.json").read_text(encoding="utf-8"))
        if set(ref) != set(T):
            print(f"verify: {kind}: tensor keys differ: {sorted(set(ref) ^ set(T))}")
            ok = False
        worst, exact = 0.0, True
        for key in sorted(set(ref) & set(T)):
            a, b = ref[key], T[key]
            if a.shape != b.shape or a.dtype != b.dtype:
                print(f"verify: {kind}: {key}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}")
                ok = False
                continue
            if not torch.equal(a, b):
                exact = False
            if a.dtype == torch.uint8:
                d = float((a.int() - b.int()).abs().max())
                lim = 1
            else:
                d = maxdiff(a, b)
                lim = TOL
            if key.startswith("emb.") or key.endswith("unet_out"):
                lim = TOL * 10 if a.dtype != torch.uint8 else lim
            if d > lim:
                print(f"verify: {kind}: {key}: max |diff| {d:.3g} > {lim}")
                ok = False
            if a.dtype != torch.uint8:
                worst = max(worst, d)
        for sect, keys in (("layout", ("inverse_timesteps", "denoise_timesteps", "k")),):
            for key in keys:
                if refj[sect][key] != J[sect][key]:
                    print(f"verify: {kind}: {sect}.{key} {refj[sect][key]} != {J[sect][key]}")
                    ok = False
        for name, c in J["img2img"]["cases"].items():
            if refj["img2img"]["cases"][name]["timesteps"] != c["timesteps"]:
                print(f"verify: {kind}: {name} timesteps differ")
                ok = False
        print(f"verify: {kind}: {'OK' if ok else 'FAILED'} ({len(T)} tensors, {'bit-exact' if exact else f'max |diff| {worst:.3g}'})")
        ok = ok_all and ok
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verify", action="store_true", help="only recompute and compare with the committed files")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.verify:
        sys.exit(0 if verify() else 1)
    LAYOUT_DIR.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_face_u8()).save(FACE_PNG, optimize=False)
    u8 = read_face_png()
    for kind in ("sd1", "sd2"):
        T, J = build(kind, u8)
        write(kind, T, J)
        print(f"{kind}:")
        for key, v in sorted(T.items()):
            if v.is_floating_point():
                print(mf.stats(key, v))
        print(f"  psnr: {J['psnr_db_vs_input']}")
    if not verify():
        sys.exit(1)
    total = FACE_PNG.stat().st_size + sum((REF / f"layout_{k}.{e}").stat().st_size for k in ("sd1", "sd2") for e in ("json", "safetensors"))
    print(f"total: {total / 1e3:.1f} kB")


if __name__ == "__main__":
    main()
