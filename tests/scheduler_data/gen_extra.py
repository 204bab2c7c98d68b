"""Extra diffusers reference cases for tests/scheduler.rs (features the shared fixtures skip).

Run from the repository root with diffusers 0.42.1 / torch 2.15.0 (see tools/requirements.txt)
plus scipy (diffusers needs it for `use_beta_sigmas`; scipy 1.17.1 was used):

    python tests/scheduler_data/gen_extra.py

Reads the shared `sample`/`noise` from tests/fixtures/reference/schedulers.safetensors and
writes tests/scheduler_data/extra_cases.json. Each case builds a scheduler from a config JSON
text (`config_json`, parsed as diffusers would: `Source.from_config(json)`), optionally converts
it with `Target.from_config(source.config)` (`convert_to`), runs the same fake-model loop as the
shared fixtures and records timesteps, sigmas, init_noise_sigma and every step's outputs.
"""

import json
import math

import numpy as np
import torch
import diffusers
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
SD2_DPM = open("tests/scheduler_data/sd2_dpm_scheduler_config.json").read()

DDIM, DPM, EULER = "DDIMScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler"
LINEAR_BETAS = [0.0001 + i * (0.02 - 0.0001) / 999 for i in range(1000)]

# (name, class of config_json, config, steps, convert_to, sample channels)
CASES = [
    ("dpm-karras", DPM, {**SD, "use_karras_sigmas": True}, 8),
    ("dpm-karras-v-leading", DPM, {**SD, "use_karras_sigmas": True, "prediction_type": "v_prediction", "timestep_spacing": "leading", "steps_offset": 1}, 12),
    ("dpm-exponential", DPM, {**SD, "use_exponential_sigmas": True}, 8),
    ("dpm-beta", DPM, {**SD, "use_beta_sigmas": True}, 8),
    ("dpm-beta-v-order3", DPM, {**SD, "use_beta_sigmas": True, "prediction_type": "v_prediction", "solver_order": 3}, 10),
    ("euler-beta", EULER, {**SD, "use_beta_sigmas": True}, 8),
    ("euler-beta-sigma-range-leading", EULER, {**SD, "use_beta_sigmas": True, "sigma_min": 0.05, "sigma_max": 12.0, "timestep_spacing": "leading", "steps_offset": 1}, 7),
    ("dpm-lu", DPM, {**SD, "use_lu_lambdas": True}, 8),
    ("dpm-lu-over-exponential", DPM, {**SD, "use_lu_lambdas": True, "use_exponential_sigmas": True, "timestep_spacing": "trailing"}, 7),
    ("dpm-cosine-clipped", DPM, {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1}, 10),
    ("dpm-cosine-clipped-trailing", DPM, {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1, "timestep_spacing": "trailing"}, 10),
    ("dpm-noise-pred-midpoint", DPM, {**SD, "algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}, 8),
    ("dpm-noise-pred-heun-order3-v", DPM, {**SD, "algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "solver_order": 3, "solver_type": "heun", "prediction_type": "v_prediction"}, 8),
    ("dpm-noise-pred-sample-threshold", DPM, {**SD, "algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "prediction_type": "sample", "thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5}, 6),
    ("dpm-order3-heun-euler-at-final", DPM, {**SD, "solver_order": 3, "solver_type": "heun", "euler_at_final": True, "final_sigmas_type": "sigma_min"}, 9),
    ("dpm-threshold", DPM, {**SD, "thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5}, 6),
    ("dpm-threshold-sample", DPM, {**SD, "thresholding": True, "prediction_type": "sample", "dynamic_thresholding_ratio": 0.8, "sample_max_value": 3.0}, 6),
    ("dpm-zero-snr-v-trailing", DPM, {**SD, "rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}, 6),
    ("dpm-deis-bh2-sigmamin", DPM, {**SD, "algorithm_type": "deis", "solver_type": "bh2", "final_sigmas_type": "sigma_min"}, 7),
    ("dpm-sample-pred-n20", DPM, {**SD, "prediction_type": "sample"}, 20),
    ("dpm-learned-range", DPM, {**SD, "variance_type": "learned_range"}, 5, None, 3),
    ("euler-karras", EULER, {**SD, "use_karras_sigmas": True}, 8),
    ("euler-karras-sigma-range", EULER, {**SD, "use_karras_sigmas": True, "sigma_min": 0.1, "sigma_max": 10.0, "timestep_spacing": "leading", "steps_offset": 1}, 8),
    ("euler-exponential", EULER, {**SD, "use_exponential_sigmas": True}, 8),
    ("euler-log-linear", EULER, {**SD, "interpolation_type": "log_linear"}, 6),
    ("euler-continuous-v", EULER, {**SD, "timestep_type": "continuous", "prediction_type": "v_prediction"}, 6),
    ("euler-sample", EULER, {**SD, "prediction_type": "sample"}, 6),
    ("euler-original-sample", EULER, {**SD, "prediction_type": "original_sample"}, 3),
    ("euler-zero-snr-v-trailing", EULER, {**SD, "rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}, 6),
    ("euler-sigmamin-cosine", EULER, {"beta_schedule": "squaredcos_cap_v2", "final_sigmas_type": "sigma_min"}, 6),
    ("ddim-threshold", DDIM, {**SD, "thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5}, 6),
    ("ddim-sample-clip-range", DDIM, {**SD, "prediction_type": "sample", "clip_sample_range": 0.5}, 6),
    ("ddim-cosine-linspace", DDIM, {"beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "linspace"}, 9),
    ("ddim-zero-snr-v-trailing", DDIM, {**SD, "rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing", "clip_sample": False}, 6),
    ("ddim-trained-betas", DDIM, {"trained_betas": LINEAR_BETAS, "clip_sample": False}, 5),
    ("ddim-defaults-n50", DDIM, {}, 50),
    # with_kind conversions: Target.from_config(Source.from_config(config_json).config)
    ("pndm-to-ddim", "PNDMScheduler", PNDM_SD15, 10, DDIM),
    ("pndm-to-dpm", "PNDMScheduler", PNDM_SD15, 10, DPM),
    ("pndm-to-euler", "PNDMScheduler", PNDM_SD15, 10, EULER),
    ("sd2dpm-to-ddim", DPM, SD2_DPM, 10, DDIM),
    ("sd2dpm-to-euler", DPM, SD2_DPM, 10, EULER),
    ("sd2dpm-as-is", DPM, SD2_DPM, 10),
    ("ddim-to-dpm", DDIM, {**SD, "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False, "prediction_type": "v_prediction"}, 10, DPM),
    ("ddim-to-euler", DDIM, {**SD, "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": True, "prediction_type": "v_prediction"}, 10, EULER),
    ("euler-to-ddim", EULER, {**SD, "timestep_spacing": "trailing", "use_karras_sigmas": True}, 10, DDIM),
    ("euler-to-dpm-karras-sigma-range", EULER, {**SD, "use_karras_sigmas": True, "sigma_min": 0.1, "sigma_max": 10.0}, 10, DPM),
    ("euler-to-dpm-karras-cosine-v", EULER, {"beta_schedule": "squaredcos_cap_v2", "use_karras_sigmas": True, "sigma_max": 50.0, "prediction_type": "v_prediction"}, 6, DPM),
    ("dpm-to-euler-karras", DPM, {**SD, "use_karras_sigmas": True, "final_sigmas_type": "sigma_min", "solver_order": 3}, 10, EULER),
]


def f32list(t):
    # 9 significant digits round-trip float32 exactly.
    return [float(f"{v:.9g}") for v in t.detach().to(torch.float32).reshape(-1).tolist()]


def run(name, src_cls, config, steps, convert_to=None, channels=4):
    text = config if isinstance(config, str) else json.dumps({"_class_name": src_cls, **config})
    cfg = json.loads(text)  # Python's json reads -Infinity
    sch = getattr(diffusers, src_cls).from_config(cfg)
    if convert_to is not None:
        sch = getattr(diffusers, convert_to).from_config(sch.config)
    sch.set_timesteps(steps)
    sample, noise = SAMPLE[:, :channels], NOISE[:, :channels]
    x = sample * sch.init_noise_sigma
    scaled, outputs, prevs, preds = [], [], [], []
    for t in sch.timesteps:
        xin = sch.scale_model_input(x, t)
        model_output = xin * (float(t) / (float(t) + 1)) + 0.3 * noise
        if channels == 3:  # learned variance: 3 mean channels + 3 variance channels
            model_output = torch.cat([model_output, torch.full_like(model_output, 5.0)], dim=1)
        x_in = x
        out = sch.step(model_output, t, x)
        x = out.prev_sample
        if hasattr(out, "pred_original_sample"):
            pred = out.pred_original_sample
        elif sch.config.algorithm_type == "dpmsolver":
            # model_outputs hold the noise prediction; report the x0 it implies.
            alpha_t, sigma_t = sch._sigma_to_alpha_sigma_t(sch.sigmas[sch.step_index - 1])
            pred = (x_in - sigma_t * sch.model_outputs[-1]) / alpha_t
        else:
            pred = sch.model_outputs[-1]  # the x0 prediction of DPM-Solver++
        scaled.append(f32list(xin))
        outputs.append(f32list(model_output))
        prevs.append(f32list(x))
        preds.append(f32list(pred))
    sigmas = getattr(sch, "sigmas", None) if type(sch).__name__ != DDIM else None
    return {
        "name": name,
        "config_json": text,
        "convert_to": convert_to,
        "num_inference_steps": steps,
        "class": type(sch).__name__,
        "sample_shape": list(sample.shape),
        "model_output_shape": [1, 6 if channels == 3 else channels, 2, 2],
        "timesteps": f32list(sch.timesteps.to(torch.float64)),
        "sigmas": None if sigmas is None else f32list(sigmas),
        "init_noise_sigma": float(sch.init_noise_sigma),
        "scaled_sample": scaled,
        "model_output": outputs,
        "prev_sample": prevs,
        "pred_original_sample": preds,
    }


cases = []
for c in CASES:
    print(c[0], flush=True)
    cases.append(run(*c))
for c in cases:
    for k in ("timesteps", "sigmas"):
        if c[k] is not None:
            assert all(math.isfinite(v) for v in c[k]), (c["name"], k)
with open("tests/scheduler_data/extra_cases.json", "w") as f:
    json.dump({"diffusers": diffusers.__version__, "torch": torch.__version__, "cases": cases}, f, separators=(",", ":"))
print(len(cases), "cases")
