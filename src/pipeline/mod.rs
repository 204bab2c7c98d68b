//! The text-to-image pipeline, in diffusers' phases: `check_request` → `encode_prompt` →
//! `prepare_latents` → `denoise` → `decode` → 8-bit RGB.

pub mod adapter;
pub mod latents;
pub mod memory;
pub mod model;
pub mod request;
pub mod source;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::au::AuVector;
use crate::au::encoder::AuAdapterConfig;
use crate::error::{Error, Result};
use crate::guidance::semantic::{GuideClassifier, SemanticGuidance, SemanticGuide, class_index};
use crate::scheduler::schedule::interp_on_index_grid;
use crate::scheduler::{SchedulerConfig, SchedulerKind};
use crate::text_encoder::{ClipTextConfig, ClipTextModel};
use crate::tokenizer::{ClipTokenizer, TokenizerSettings};
use crate::unet::attention::AuContext;
use crate::unet::{UNet2DConditionModel, UNetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};
pub use adapter::{AdapterWeights, AuAdapter, LoadOptions, LoraWeights};
pub use latents::{HostTensor, seeded_noise};
pub use request::GenerateRequest;
use source::FileSource;

/// Facts about a loaded model that callers need (sizes, channels, names).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    /// Where the model came from.
    pub source: String,
    /// Latent channels of the UNet.
    pub latent_channels: usize,
    /// Pixels per latent cell.
    pub vae_scale_factor: usize,
    /// Default output size in pixels (UNet `sample_size` × VAE factor).
    pub default_size: usize,
    /// The scheduler class configured in the folder.
    pub scheduler_class: String,
    /// What sets the largest buffers of a generation.
    pub buffers: memory::BufferProfile,
}

/// What happened at one denoising step.
#[derive(Debug, Clone)]
pub struct StepEvent {
    /// Steps done (1-based).
    pub step: usize,
    /// Total steps: the scheduler's timesteps (model evaluations), which for PNDM is more
    /// than the requested number.
    pub total: usize,
    /// The timestep just processed.
    pub timestep: f64,
    /// The first image's current prediction of the clean image `x̂0`, decoded (RGB bytes,
    /// output size), on the steps [`Pipeline::generate_with_preview`] asks for.
    pub preview: Option<Vec<u8>>,
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct GenerateOutput {
    /// One RGB image per request image: `height × width × 3` bytes.
    pub images: Vec<Vec<u8>>,
    /// The same images as f32 in `[0, 1]` (`height × width × 3`), before rounding.
    pub images_f32: Vec<Vec<f32>>,
    /// Pixel width.
    pub width: usize,
    /// Pixel height.
    pub height: usize,
    /// Seed of each image (`seed + i`; `None` when latents were supplied).
    pub seeds: Vec<Option<u64>>,
    /// Non-fatal notes (e.g. prompt truncation).
    pub warnings: Vec<String>,
    /// The prompt that was encoded (see [`GenerateRequest::effective_prompt`]).
    pub prompt: String,
    /// The AU vector used, when the model has an AU adapter.
    pub aus: Option<AuVector>,
    /// The AU branch weight used.
    pub au_scale: Option<f64>,
}

/// A loaded Stable-Diffusion-class model, ready to generate.
#[derive(Debug)]
pub struct Pipeline {
    /// CLIP tokenizer.
    pub tokenizer: ClipTokenizer,
    /// CLIP text encoder.
    pub text_encoder: ClipTextModel,
    /// Denoiser.
    pub unet: UNet2DConditionModel,
    /// Autoencoder.
    pub vae: AutoencoderKL,
    /// The folder's scheduler config.
    pub scheduler: SchedulerConfig,
    /// AU adapter, when the model has one.
    pub au_adapter: Option<AuAdapter>,
    /// The classifiers of semantic guidance, once [`Pipeline::enable_semantic_guidance`] loaded
    /// them.
    pub semantic: Option<SemanticGuide>,
    /// Model facts.
    pub info: ModelInfo,
    /// Device the weights live on.
    pub device: Device,
    /// The device's largest buffer in bytes, when known (wgpu adapters): generations that
    /// would need a larger one are refused before they start (see [`memory`]).
    pub buffer_limit: Option<u64>,
}

/// Loads a tokenizer from the `tokenizer/` folder of `src`.
pub fn load_tokenizer(src: &dyn FileSource) -> Result<ClipTokenizer> {
    let settings = TokenizerSettings::from_json(
        src.read("tokenizer/tokenizer_config.json")?.as_deref(),
        src.read("tokenizer/special_tokens_map.json")?.as_deref(),
    )?;
    match src.read("tokenizer/tokenizer.json")? {
        Some(json) => ClipTokenizer::from_tokenizer_json(&json, &settings),
        None => ClipTokenizer::from_vocab_merges(
            &src.require("tokenizer/vocab.json")?,
            &src.require("tokenizer/merges.txt")?,
            &settings,
        ),
    }
}

impl Pipeline {
    /// Loads a diffusers-layout folder from disk.
    #[cfg(not(target_family = "wasm"))]
    pub fn load(dir: impl AsRef<std::path::Path>, device: &Device) -> Result<Self> {
        Self::from_source(&source::DirSource::new(dir.as_ref())?, device)
    }

    /// Loads every component from `src` (strict: any missing, unused or mis-shaped weight fails).
    pub fn from_source(src: &dyn FileSource, device: &Device) -> Result<Self> {
        Self::from_source_with(src, device, LoadOptions::default())
    }

    /// Loads a folder from disk with extra LoRAs and/or an AU adapter.
    #[cfg(not(target_family = "wasm"))]
    pub fn load_with(
        dir: impl AsRef<std::path::Path>,
        device: &Device,
        options: LoadOptions,
    ) -> Result<Self> {
        Self::from_source_with(&source::DirSource::new(dir.as_ref())?, device, options)
    }

    /// [`from_source`](Self::from_source) with LoRAs merged and/or an AU adapter attached. The
    /// folder's own `au_adapter/` (config.json + safetensors) is used unless `options` has one.
    pub fn from_source_with(
        src: &dyn FileSource,
        device: &Device,
        options: LoadOptions,
    ) -> Result<Self> {
        let LoadOptions { loras, adapter } = options;
        model::check_model_index(src)?;
        let mut tokenizer = load_tokenizer(src)?;

        let te_cfg = ClipTextConfig::from_json(
            &src.require("text_encoder/config.json")?,
            "text_encoder/config.json",
        )?;
        let mut te_store = model::load_store(src, "text_encoder", "model")?;
        for lora in &loras {
            te_store.merge_lora(&lora.store, "text_encoder", lora.scale)?;
        }
        let text_encoder = ClipTextModel::load(&te_store, &te_cfg, device)?;
        drop(te_store);
        tokenizer.set_max_length(tokenizer.max_length().min(text_encoder.max_positions()));

        let unet_file = "unet/config.json";
        let unet_cfg = UNetConfig::from_json(&src.require(unet_file)?, unet_file)?;
        let mut unet_store = model::load_store(src, "unet", "diffusion_pytorch_model")?;
        for lora in &loras {
            unet_store.merge_lora(&lora.store, "unet", lora.scale)?;
            lora.store.finish()?;
        }
        let mut unet = UNet2DConditionModel::load(&unet_store, &unet_cfg, device)?;
        drop(unet_store);
        let adapter = match adapter {
            Some(a) => Some(a),
            None => match src.read("au_adapter/config.json")? {
                Some(bytes) => Some(AdapterWeights {
                    config: AuAdapterConfig::from_json(&bytes, "au_adapter/config.json")?,
                    store: model::load_store(src, "au_adapter", "diffusion_pytorch_model")?,
                }),
                None => None,
            },
        };
        let au_adapter = adapter
            .map(|a| AuAdapter::attach(a, &mut unet, device))
            .transpose()?;

        let vae_file = "vae/config.json";
        let vae_cfg = VaeConfig::from_json(&src.require(vae_file)?, vae_file)?;
        let mut vae_store = model::load_store(src, "vae", "diffusion_pytorch_model")?;
        let vae = AutoencoderKL::load(&mut vae_store, &vae_cfg, device)?;
        drop(vae_store);

        let sched_file = "scheduler/scheduler_config.json";
        let sched_err = |source| Error::Scheduler {
            file: sched_file.into(),
            source,
        };
        let sched_text = String::from_utf8(src.require(sched_file)?).map_err(|_| Error::Json {
            file: sched_file.into(),
            message: "not UTF-8".into(),
        })?;
        let mut scheduler = SchedulerConfig::from_json_str(&sched_text).map_err(sched_err)?;
        sd_pipeline_scheduler_fixups(&mut scheduler);
        // Validate now rather than at the first request. A class we cannot build (e.g.
        // LMSDiscreteScheduler) is checked through DDIM, the kind its shared keys carry over to;
        // requests must then name a scheduler.
        let probe = match scheduler.kind() {
            Ok(_) => scheduler.clone(),
            Err(_) => scheduler.clone().with_kind(SchedulerKind::Ddim),
        };
        probe.build(10).map_err(sched_err)?;

        let context_dims = unet_cfg.down_plans(unet_file)?;
        if let Some(p) = context_dims
            .iter()
            .find(|p| p.context_dim != te_cfg.hidden_size)
        {
            return Err(Error::config(
                unet_file,
                "cross_attention_dim",
                p.context_dim,
                format!("text_encoder hidden_size is {}", te_cfg.hidden_size),
            ));
        }
        if unet_cfg.in_channels != vae_cfg.latent_channels {
            return Err(Error::config(
                unet_file,
                "in_channels",
                unet_cfg.in_channels,
                format!("vae latent_channels is {}", vae_cfg.latent_channels),
            ));
        }
        let vae_scale_factor = vae_cfg.scale_factor();
        let sample_size = unet_cfg
            .sample_size
            .as_ref()
            .and_then(|v| v.as_u64().or_else(|| v.get(0).and_then(|x| x.as_u64())))
            .unwrap_or(64) as usize;
        Ok(Pipeline {
            tokenizer,
            text_encoder,
            unet,
            vae,
            au_adapter,
            semantic: None,
            info: ModelInfo {
                source: src.describe(),
                latent_channels: unet_cfg.in_channels,
                vae_scale_factor,
                default_size: sample_size * vae_scale_factor,
                scheduler_class: scheduler.class_name.clone(),
                buffers: memory::BufferProfile {
                    unet_levels: unet_cfg
                        .block_out_channels
                        .iter()
                        .zip(unet_cfg.down_plans(unet_file)?)
                        .map(|(&c, plan)| (c, if plan.cross_attn { plan.heads } else { 0 }))
                        .collect(),
                    vae_channels: vae_cfg.block_out_channels.clone(),
                    vae_factor: vae_scale_factor,
                    decode_budget: memory::DECODE_BUDGET,
                },
            },
            scheduler,
            device: device.clone(),
            buffer_limit: None,
        })
    }

    /// Tokenizes and encodes prompts → `[n, 77, d]`; returns truncation warnings too.
    pub fn encode_prompt(
        &self,
        prompts: &[&str],
        clip_skip: usize,
    ) -> Result<(Tensor<3>, Vec<String>)> {
        let mut ids = Vec::new();
        let mut warnings = Vec::new();
        for p in prompts {
            let t = self.tokenizer.encode(p)?;
            if let Some(rest) = &t.truncated {
                warnings.push(format!(
                    "prompt truncated to {} tokens; dropped: {rest:?}",
                    self.tokenizer.max_length()
                ));
            }
            ids.extend(t.ids.iter().map(|&i| i as i64));
        }
        let len = self.tokenizer.max_length();
        let ids =
            Tensor::<2, Int>::from_data(TensorData::new(ids, [prompts.len(), len]), &self.device);
        Ok((self.text_encoder.forward_skip(ids, clip_skip), warnings))
    }

    /// Output size in pixels for a request.
    pub fn output_size(&self, req: &GenerateRequest) -> (usize, usize) {
        let d = self.info.default_size;
        (req.width.unwrap_or(d), req.height.unwrap_or(d))
    }

    /// Pixel multiple that width and height must respect.
    pub fn size_multiple(&self) -> usize {
        self.info.vae_scale_factor.max(8)
    }

    /// Runs a request. `latents` (shape `[n, c, h/f, w/f]`) replaces the seeded noise exactly
    /// as diffusers' `latents=` does. `on_step` is called after every denoising step.
    pub async fn generate(
        &self,
        req: &GenerateRequest,
        latents: Option<&HostTensor>,
        on_step: impl FnMut(&StepEvent),
    ) -> Result<GenerateOutput> {
        self.generate_with_preview(req, latents, 0, on_step).await
    }

    /// [`Pipeline::generate`], also decoding the first image's `x̂0` (the scheduler's
    /// `pred_original_sample`) into [`StepEvent::preview`] every `preview_every` steps (0:
    /// never; never on the last step, whose image is the result). Each preview costs one VAE
    /// decode of one image and a readback.
    pub async fn generate_with_preview(
        &self,
        req: &GenerateRequest,
        latents: Option<&HostTensor>,
        preview_every: usize,
        on_step: impl FnMut(&StepEvent),
    ) -> Result<GenerateOutput> {
        let mut outs = self
            .run(std::slice::from_ref(req), latents, preview_every, on_step)
            .await?;
        Ok(outs.remove(0))
    }

    /// Runs several requests as one UNet batch (dataset synthesis): each contributes its
    /// `num_images` images with its own prompt, negative prompt, expression, AUs and seeds;
    /// steps, guidance, size, scheduler, clip skip and AU scale must be the same for all. Each
    /// image equals the one its request alone would give (up to batched float rounding).
    pub async fn generate_batch(
        &self,
        reqs: &[GenerateRequest],
        on_step: impl FnMut(&StepEvent),
    ) -> Result<Vec<GenerateOutput>> {
        self.run(reqs, None, 0, on_step).await
    }

    /// Checks that every request of a batch shares the settings one UNet batch needs.
    fn check_batch(&self, reqs: &[GenerateRequest]) -> Result<()> {
        let Some(first) = reqs.first() else {
            return Err(Error::request("batch", "no requests"));
        };
        let total: usize = reqs.iter().map(|r| r.num_images).sum();
        if total > request::MAX_IMAGES {
            return Err(Error::request(
                "num_images",
                format!(
                    "{total} images in one batch; at most {}",
                    request::MAX_IMAGES
                ),
            ));
        }
        let adapter_scale = self.au_adapter.as_ref().map(|a| a.config.default_au_scale);
        for (i, r) in reqs.iter().enumerate() {
            r.validate(self.size_multiple())?;
            let differs = if r.steps != first.steps {
                Some("steps")
            } else if r.guidance_scale != first.guidance_scale {
                Some("guidance_scale")
            } else if self.output_size(r) != self.output_size(first) {
                Some("width/height")
            } else if r.scheduler != first.scheduler {
                Some("scheduler")
            } else if r.clip_skip != first.clip_skip {
                Some("clip_skip")
            } else if r.au_scale.or(adapter_scale) != first.au_scale.or(adapter_scale) {
                Some("au_scale")
            } else if r.semantic_guidance != first.semantic_guidance {
                Some("semantic_guidance")
            } else {
                None
            };
            if let Some(field) = differs {
                return Err(Error::request(
                    field,
                    format!("request {i} of the batch differs from request 0; one batch shares it"),
                ));
            }
        }
        Ok(())
    }

    async fn run(
        &self,
        reqs: &[GenerateRequest],
        latents: Option<&HostTensor>,
        preview_every: usize,
        mut on_step: impl FnMut(&StepEvent),
    ) -> Result<Vec<GenerateOutput>> {
        self.check_batch(reqs)?;
        let req = &reqs[0];
        let (width, height) = self.output_size(req);
        let n: usize = reqs.iter().map(|r| r.num_images).sum();
        let f = self.info.vae_scale_factor;
        let shape = [n, self.info.latent_channels, height / f, width / f];
        if let Some(limit) = self.buffer_limit {
            let float_bytes = burn::tensor::DType::from(self.device.settings().float_dtype).size();
            let cfg = req.uses_cfg();
            self.info
                .buffers
                .check(n, cfg, height, width, float_bytes, limit)?;
        }

        // 1. Scheduler.
        let sched_cfg = match req.scheduler {
            Some(kind) => self.scheduler.clone().with_kind(kind),
            None if self.scheduler.kind().is_err() => {
                return Err(Error::request(
                    "scheduler",
                    format!(
                        "the model's {} is not implemented; choose one of: {}",
                        self.scheduler.class_name,
                        SchedulerKind::ALL
                            .map(request::scheduler_short_name)
                            .join(", ")
                    ),
                ));
            }
            None => self.scheduler.clone(),
        };
        let mut scheduler = sched_cfg
            .build(req.steps)
            .map_err(|source| Error::Scheduler {
                file: "scheduler/scheduler_config.json".into(),
                source,
            })?;

        // 2. Prompt embeddings ([uncond × n; cond × n] with guidance).
        let cfg = req.uses_cfg();
        let clip_skip = req.clip_skip.unwrap_or(0);
        let effective: Vec<String> = reqs.iter().map(GenerateRequest::effective_prompt).collect();
        let mut prompts: Vec<&str> = Vec::with_capacity(2 * n);
        if cfg {
            for r in reqs {
                let negative = r.negative_prompt.as_deref().unwrap_or("");
                prompts.extend(std::iter::repeat_n(negative, r.num_images));
            }
        }
        for (r, p) in reqs.iter().zip(&effective) {
            prompts.extend(std::iter::repeat_n(p.as_str(), r.num_images));
        }
        let (context, warnings) = self.encode_prompt(&prompts, clip_skip)?;
        let (aus, au_context) = self.au_batch(reqs, cfg)?;

        // 3. Initial latents.
        let (host, seeds) = match latents {
            Some(t) => {
                if t.shape != shape {
                    return Err(Error::request(
                        "latents",
                        format!("shape {:?} does not match the request's {shape:?}", t.shape),
                    ));
                }
                (t.clone(), vec![None; n])
            }
            None => {
                let per = shape[1] * shape[2] * shape[3];
                let mut data = Vec::with_capacity(n * per);
                let mut seeds = Vec::with_capacity(n);
                for r in reqs {
                    for i in 0..r.num_images {
                        let seed = r.seed.wrapping_add(i as u64);
                        data.extend(seeded_noise(seed, &shape[1..]).data);
                        seeds.push(Some(seed));
                    }
                }
                (
                    HostTensor {
                        shape: shape.to_vec(),
                        data,
                    },
                    seeds,
                )
            }
        };
        let mut x = Tensor::<4>::from_data(TensorData::new(host.data, shape), &self.device)
            * scheduler.init_noise_sigma();

        // 4. Denoising loop (with semantic guidance of the conditional embedding in its window).
        let timesteps = scheduler.timesteps().to_vec();
        let total = timesteps.len();
        let guidance = self.semantic_targets(reqs)?;
        let mut context = context;
        for (i, &t) in timesteps.iter().enumerate() {
            if let Some((sg, targets)) = &guidance
                && sg.guides(i, total)
            {
                let input = scheduler.scale_model_input(x.clone(), i);
                context = self.guide_embedding(
                    sg,
                    targets,
                    context,
                    input,
                    t,
                    au_context.as_ref(),
                    req.guidance_scale,
                    &scheduler,
                )?;
            }
            let input = if cfg {
                Tensor::cat(vec![x.clone(), x.clone()], 0)
            } else {
                x.clone()
            };
            let input = scheduler.scale_model_input(input, i);
            let out =
                self.unet
                    .forward_au(input, &[t as f32], context.clone(), au_context.as_ref());
            let noise = if cfg {
                crate::guidance::cfg::combine_halves(out, req.guidance_scale)
            } else {
                out
            };
            let stepped = scheduler.step(noise, i, x);
            x = stepped.prev_sample;
            let preview = if preview_every > 0 && (i + 1) % preview_every == 0 && i + 1 < total {
                let [_, c, h, w] = stepped.pred_original_sample.dims();
                let first = stepped.pred_original_sample.slice([0..1, 0..c, 0..h, 0..w]);
                Some(self.decode_rgb(first).await?)
            } else {
                None
            };
            on_step(&StepEvent {
                step: i + 1,
                total,
                timestep: t,
                preview,
            });
        }

        // 5. Decode to [0, 1], read back and split per request.
        let values = self.decode_f32(x).await?;
        let per = height * width * 3;
        let mut images_f32: Vec<Vec<f32>> = values.chunks(per).map(<[f32]>::to_vec).collect();
        let mut seeds = seeds.into_iter();
        let au_scale = au_context.as_ref().map(|c| c.scale);
        let mut outs = Vec::with_capacity(reqs.len());
        for ((r, prompt), aus) in reqs.iter().zip(effective).zip(aus) {
            let images_f32: Vec<Vec<f32>> = images_f32.drain(..r.num_images).collect();
            let warnings = if outs.is_empty() {
                warnings.clone()
            } else {
                Vec::new()
            };
            outs.push(GenerateOutput {
                images: images_f32.iter().map(|img| to_u8(img)).collect(),
                images_f32,
                width,
                height,
                seeds: seeds.by_ref().take(r.num_images).collect(),
                warnings,
                prompt,
                au_scale,
                aus,
            });
        }
        Ok(outs)
    }

    /// Loads the semantic-guidance classifiers (FER A and FER B, embedded) on the pipeline's
    /// device.
    pub fn enable_semantic_guidance(&mut self) -> Result<()> {
        if self.semantic.is_none() {
            self.semantic = Some(SemanticGuide::embedded(&self.device)?);
        }
        Ok(())
    }

    /// Loads the embedded guidance classifiers (if needed) plus a classifier trained by
    /// `synfer fer train` (its `fer.json` and `model.safetensors` bytes), which requests select
    /// with `classifier: "trained"`.
    pub fn enable_trained_guidance(&mut self, config: &[u8], weights: &[u8]) -> Result<()> {
        self.enable_semantic_guidance()?;
        if let Some(guide) = self.semantic.take() {
            self.semantic = Some(guide.with_trained(config, weights, &self.device)?);
        }
        Ok(())
    }

    /// The loaded guidance classifiers, or an error saying how to load them.
    fn guide(&self) -> Result<&SemanticGuide> {
        self.semantic.as_ref().ok_or_else(|| {
            Error::request(
                "semantic_guidance",
                "the pipeline has no guidance classifiers; call enable_semantic_guidance first",
            )
        })
    }

    /// The batch's semantic-guidance settings and per-image target classes, when it is on.
    fn semantic_targets(
        &self,
        reqs: &[GenerateRequest],
    ) -> Result<Option<(SemanticGuidance, Vec<usize>)>> {
        let Some(sg) = reqs[0]
            .semantic_guidance
            .clone()
            .filter(|sg| sg.scale > 0.0)
        else {
            return Ok(None);
        };
        self.guide()?;
        let mut targets = Vec::new();
        for r in reqs {
            let name = r.expression.map(|e| e.name()).unwrap_or("");
            let class = class_index(name).ok_or_else(|| {
                Error::request(
                    "semantic_guidance",
                    format!("{name:?} is not one of the classifiers' 7 classes"),
                )
            })?;
            targets.extend(std::iter::repeat_n(class, r.num_images));
        }
        Ok(Some((sg, targets)))
    }

    /// One semantic-guidance update of the conditional half of `context` (`[uncond; cond]`
    /// under classifier-free guidance, else `cond`): `c ← c − λ · g / ‖g‖` with `g` from
    /// [`Pipeline::guidance_gradient`].
    #[allow(clippy::too_many_arguments)]
    fn guide_embedding(
        &self,
        sg: &SemanticGuidance,
        targets: &[usize],
        context: Tensor<3>,
        input: Tensor<4>,
        t: f64,
        au: Option<&AuContext>,
        guidance_scale: f64,
        scheduler: &crate::scheduler::Scheduler,
    ) -> Result<Tensor<3>> {
        let n = input.dims()[0];
        let [b, len, d] = context.dims();
        let (uncond, cond) = if b == 2 * n {
            (
                Some(context.clone().slice([0..n, 0..len, 0..d])),
                context.slice([n..b, 0..len, 0..d]),
            )
        } else {
            (None, context)
        };
        let (_, g) = self.guidance_gradient(
            sg.classifier,
            targets,
            cond.clone(),
            uncond.clone(),
            input,
            t,
            au,
            guidance_scale,
            scheduler,
        )?;
        let norm = if sg.per_token {
            g.clone().powi_scalar(2).sum_dim(2).sqrt()
        } else {
            g.clone()
                .powi_scalar(2)
                .reshape([n, len * d])
                .sum_dim(1)
                .sqrt()
                .reshape([n, 1, 1])
        };
        let cond = cond - g / (norm + 1e-12) * sg.scale;
        Ok(match uncond {
            Some(u) => Tensor::cat(vec![u, cond], 0),
            None => cond,
        })
    }

    /// The semantic-guidance loss `Σᵢ −log p(targetᵢ | x̂0ᵢ)` (a 1-element tensor) at one step
    /// and its gradient with respect to the conditional embedding `cond` `[n, len, d]`: x̂0
    /// from the (guided) model output for the scaled model input `input` at timestep `t`,
    /// decoded by the VAE, scored by `classifier`. Needs [`Pipeline::enable_semantic_guidance`].
    #[allow(clippy::too_many_arguments)]
    pub fn guidance_gradient(
        &self,
        classifier: GuideClassifier,
        targets: &[usize],
        cond: Tensor<3>,
        uncond: Option<Tensor<3>>,
        input: Tensor<4>,
        t: f64,
        au: Option<&AuContext>,
        guidance_scale: f64,
        scheduler: &crate::scheduler::Scheduler,
    ) -> Result<(Tensor<1>, Tensor<3>)> {
        let guide = self.guide()?;
        let leaf = cond.detach().autodiff().require_grad();
        let cfg = uncond.is_some();
        let ctx = match uncond {
            Some(u) => Tensor::cat(vec![u.detach().autodiff(), leaf.clone()], 0),
            None => leaf.clone(),
        };
        let model_in = if cfg {
            Tensor::cat(vec![input.clone(), input.clone()], 0)
        } else {
            input.clone()
        };
        let out = self.unet.forward_au(model_in, &[t as f32], ctx, au);
        let out = if cfg {
            crate::guidance::cfg::combine_halves(out, guidance_scale)
        } else {
            out
        };
        // ᾱ at a possibly fractional timestep (Euler), linear between training steps.
        let acp = interp_on_index_grid(&[t], scheduler.alphas_cumprod())[0];
        let (sa, sb) = (acp.sqrt(), (1.0 - acp).sqrt());
        let x0 = if self.scheduler.prediction_type.as_deref() == Some("v_prediction") {
            input * sa - out * sb
        } else {
            (input - out * sb) / sa
        };
        let image = self.vae.decode(x0 / self.vae.scaling_factor);
        let image = (image / 2.0 + 0.5).clamp(0.0, 1.0);
        let loss = guide.loss(classifier, image, targets)?;
        // Returned as a tensor: a synchronous read-back is impossible on WebGPU in the browser.
        let value = loss.clone().detach();
        let grads = loss.backward();
        let g = leaf.grad(&grads).ok_or_else(|| {
            Error::Device("semantic guidance: no gradient reached the text embedding".into())
        })?;
        Ok((value, g))
    }

    /// Latents `[n, c, h, w]` decoded to `[0, 1]` and read back, `n × height × width × 3`.
    /// Decodes in slices of [`memory::BufferProfile::images_per_decode`] images, so that the
    /// VAE's full-resolution activations stay bounded whatever the batch.
    async fn decode_f32(&self, latents: Tensor<4>) -> Result<Vec<f32>> {
        let [n, _, h, w] = latents.dims();
        let f = self.info.vae_scale_factor;
        let per = self.info.buffers.images_per_decode(h * f, w * f);
        let latents = latents / self.vae.scaling_factor;
        let image = if per >= n {
            self.vae.decode(latents)
        } else {
            let slices = (0..n)
                .step_by(per)
                .map(|s| {
                    self.vae
                        .decode(latents.clone().narrow(0, s, per.min(n - s)))
                })
                .collect();
            Tensor::cat(slices, 0)
        };
        let image = (image / 2.0 + 0.5).clamp(0.0, 1.0);
        let data = image
            .permute([0, 2, 3, 1])
            .into_data_async()
            .await
            .map_err(|e| Error::Device(format!("reading the image back: {e:?}")))?;
        data.try_into_vec_as::<f32>()
            .map_err(|e| Error::Device(format!("reading the image back: {e:?}")))
    }

    /// Latents of one image decoded to RGB bytes.
    async fn decode_rgb(&self, latents: Tensor<4>) -> Result<Vec<u8>> {
        Ok(to_u8(&self.decode_f32(latents).await?))
    }

    /// The AU vector of a request (expression prototype, then explicit units) and the tokens for
    /// the UNet batch (`[zeros × n; aus × n]` under guidance: the unconditional branch gets
    /// all-zero AUs).
    pub fn au_conditioning(
        &self,
        req: &GenerateRequest,
        n: usize,
        cfg: bool,
    ) -> Result<(Option<AuVector>, Option<AuContext>)> {
        let one = GenerateRequest {
            num_images: n,
            ..req.clone()
        };
        let (mut aus, ctx) = self.au_batch(std::slice::from_ref(&one), cfg)?;
        Ok((aus.pop().flatten(), ctx))
    }

    /// Per-request AU vectors and the tokens for a whole batch (`[zeros × n; aus_r × n_r …]`).
    fn au_batch(
        &self,
        reqs: &[GenerateRequest],
        cfg: bool,
    ) -> Result<(Vec<Option<AuVector>>, Option<AuContext>)> {
        let Some(adapter) = &self.au_adapter else {
            if reqs
                .iter()
                .any(|r| r.aus.as_ref().is_some_and(|a| !a.is_empty()) || r.au_scale.is_some())
            {
                return Err(Error::request(
                    "aus",
                    "this model has no AU adapter; load one (au_adapter/ or --adapter) to use AUs",
                ));
            }
            return Ok((vec![None; reqs.len()], None));
        };
        let mut vectors = Vec::with_capacity(reqs.len());
        for req in reqs {
            let mut aus = match req.expression {
                Some(e) => e.prototype(adapter.set),
                None => AuVector::zeros(adapter.set),
            };
            for (code, value) in req.aus.iter().flatten() {
                aus.set(code, *value)?;
            }
            vectors.push(aus);
        }
        let n: usize = reqs.iter().map(|r| r.num_images).sum();
        let zeros = AuVector::zeros(adapter.set);
        let mut rows: Vec<&AuVector> = Vec::with_capacity(2 * n);
        if cfg {
            rows.extend(std::iter::repeat_n(&zeros, n));
        }
        // The encoder sees the requests in the scale of the training labels.
        let calibrated: Vec<AuVector> = vectors
            .iter()
            .map(|v| adapter.config.calibrate(v))
            .collect();
        for (r, v) in reqs.iter().zip(&calibrated) {
            rows.extend(std::iter::repeat_n(v, r.num_images));
        }
        let tokens = adapter.encoder.encode(&rows, &self.device);
        let scale = reqs[0].au_scale.unwrap_or(adapter.config.default_au_scale);
        Ok((
            vectors.into_iter().map(Some).collect(),
            Some(AuContext { tokens, scale }),
        ))
    }
}

/// The corrections `StableDiffusionPipeline.__init__` applies to a folder's scheduler config
/// (for outdated configs): `steps_offset` becomes 1 for every class that has the key, and
/// `clip_sample` becomes false where it is on (DDIM/DDPM default it to true). Overrides made
/// with `with_kind` inherit the corrected values, as diffusers' `from_config` does.
pub fn sd_pipeline_scheduler_fixups(scheduler: &mut SchedulerConfig) {
    if scheduler.steps_offset.is_some() || scheduler.class_name != "LMSDiscreteScheduler" {
        scheduler.steps_offset = Some(1);
    }
    let clip_default = matches!(
        scheduler.class_name.as_str(),
        "DDIMScheduler" | "DDPMScheduler"
    );
    if scheduler.clip_sample.unwrap_or(clip_default) {
        scheduler.clip_sample = Some(false);
    }
}

/// `[0, 1]` floats → bytes as diffusers' `numpy_to_pil` does: `(x · 255).round()` (numpy
/// rounds half to even) then `astype(uint8)`.
pub fn to_u8(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .map(|v| (v * 255.0).round_ties_even().clamp(0.0, 255.0) as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::to_u8;

    #[test]
    fn rounds_and_clamps() {
        // 0.5 · 255 = 127.5 exactly: numpy's half-to-even gives 128.
        assert_eq!(
            to_u8(&[0.0, 1.0, 0.2, 0.5, 1.5, -0.1, 0.0019]),
            vec![0, 255, 51, 128, 255, 0, 0]
        );
    }
}
