"""diffusers reference cases for the stochastic schedulers (tests/scheduler.rs):
`EulerAncestralDiscreteScheduler` and `LCMScheduler`.

Run from the repository root with diffusers 0.42.1 / torch 2.15.0 (tools/requirements.txt):

    python tests/scheduler_data/gen_stochastic.py

Like gen_extra.py (same shared sample/noise and fake model), plus the noise each `step` draws:
the scheduler gets a seeded `torch.Generator`, and an identically seeded twin replays its
draws (`randn_tensor` of the sample's shape, once per step; LCM skips the last step), recorded
as `step_noise` so that the Rust side can inject exactly the same noise.
Writes tests/scheduler_data/stochastic_cases.json.
"""

import json

import torch
import diffusers
from diffusers.utils.torch_utils import randn_tensor
from safetensors.torch import load_file

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ref = load_file("tests/fixtures/reference/schedulers.safetensors")
SAMPLE, NOISE = ref["sample"], ref["noise"]

SD = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
PNDM_SD15 = {  # runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "trained_betas": None, "clip_sample": False,
}
EA, LCM = "EulerAncestralDiscreteScheduler", "LCMScheduler"

# (name, class of config_json, config, steps, convert_to)
CASES = [
    ("euler-a-sd", EA, SD, 8),
    ("euler-a-defaults", EA, {}, 5),
    ("euler-a-v-leading", EA, {**SD, "prediction_type": "v_prediction", "timestep_spacing": "leading", "steps_offset": 1}, 10),
    ("euler-a-zero-snr-v-trailing", EA, {**SD, "rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}, 6),
    ("euler-a-cosine", EA, {"beta_schedule": "squaredcos_cap_v2"}, 7),
    ("pndm-to-euler-a", "PNDMScheduler", PNDM_SD15, 10, EA),
    ("lcm-defaults-4", LCM, {}, 4),
    ("lcm-1", LCM, {}, 1),
    ("lcm-2", LCM, SD, 2),
    ("lcm-8", LCM, SD, 8),
    ("lcm-v-clip", LCM, {**SD, "prediction_type": "v_prediction", "clip_sample": True, "clip_sample_range": 1.5}, 4),
    ("lcm-sample-threshold", LCM, {**SD, "prediction_type": "sample", "thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5}, 3),
    ("lcm-original-30-scaling-5", LCM, {**SD, "original_inference_steps": 30, "timestep_scaling": 5.0}, 6),
    ("lcm-no-alpha-one", LCM, {**SD, "set_alpha_to_one": False}, 3),
    ("pndm-to-lcm", "PNDMScheduler", PNDM_SD15, 4, LCM),
]


def f32list(t):
    # 9 significant digits round-trip float32 exactly.
    return [float(f"{v:.9g}") for v in t.detach().to(torch.float32).reshape(-1).tolist()]


def run(name, src_cls, config, steps, convert_to=None, seed=7):
    text = json.dumps({"_class_name": src_cls, **config})
    sch = getattr(diffusers, src_cls).from_config(json.loads(text))
    if convert_to is not None:
        sch = getattr(diffusers, convert_to).from_config(sch.config)
    sch.set_timesteps(steps)
    sample, noise = SAMPLE, NOISE
    x = sample * sch.init_noise_sigma
    gen, twin = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    scaled, outputs, prevs, preds, drawn = [], [], [], [], []
    for i, t in enumerate(sch.timesteps):
        xin = sch.scale_model_input(x, t)
        model_output = xin * (float(t) / (float(t) + 1)) + 0.3 * noise
        out = sch.step(model_output, t, x, generator=gen)
        if type(sch).__name__ == EA or i + 1 < len(sch.timesteps):
            drawn.append(f32list(randn_tensor(model_output.shape, generator=twin, dtype=torch.float32)))
        x = out.prev_sample
        pred = out.denoised if type(sch).__name__ == LCM else out.pred_original_sample
        scaled.append(f32list(xin))
        outputs.append(f32list(model_output))
        prevs.append(f32list(x))
        preds.append(f32list(pred))
    # The generator and its twin must have drawn the same numbers.
    assert torch.equal(torch.randn(4, generator=gen), torch.randn(4, generator=twin)), name
    sigmas = getattr(sch, "sigmas", None) if type(sch).__name__ == EA else None
    return {
        "name": name,
        "config_json": text,
        "convert_to": convert_to,
        "num_inference_steps": steps,
        "class": type(sch).__name__,
        "sample_shape": list(sample.shape),
        "timesteps": f32list(sch.timesteps.to(torch.float64)),
        "sigmas": None if sigmas is None else f32list(sigmas),
        "init_noise_sigma": float(sch.init_noise_sigma),
        "scaled_sample": scaled,
        "model_output": outputs,
        "step_noise": drawn,
        "prev_sample": prevs,
        "pred_original_sample": preds,
    }


cases = [run(*c) for c in CASES]
with open("tests/scheduler_data/stochastic_cases.json", "w") as f:
    json.dump({"diffusers": diffusers.__version__, "torch": torch.__version__, "cases": cases}, f, separators=(",", ":"))
print(len(cases), "cases")
