//! The generation loop: scheduler, prompt and AU conditioning, initial latents, denoising with
//! classifier-free and semantic guidance, decoding.

use burn::tensor::{Tensor, TensorData};

use super::Pipeline;
use super::output::{GenerateOutput, StepEvent};
use super::request::{self, GenerateRequest, StartMode};
use super::start::{LAYOUT_PROMPT, img2img_start, layout_steps};
use crate::au::conditioning;
use crate::error::{Error, Result};
use crate::guidance::cfg::combine_halves;
use crate::guidance::semantic::{GuideClassifier, SemanticGuider};
use crate::image::to_u8;
use crate::rng::seeded_noise;
use crate::scheduler::{Scheduler, SchedulerConfig, SchedulerKind, StepNoise};
use crate::tensor::{HostTensor, check_finite};
use crate::unet::attention::AuContext;
use crate::unet::guidance_scale_embedding;

/// How a generation runs, beside what it asks for ([`GenerateRequest`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct GenerateOptions<'a> {
    /// The semantic-guidance classifiers for requests with `semantic_guidance` (default: the
    /// pipeline's, [`Pipeline::enable_semantic_guidance`]).
    pub guider: Option<&'a SemanticGuider>,
    /// Initial latents `[n, c, h/f, w/f]` replacing the seeded noise exactly as diffusers'
    /// `latents=` does (single requests only).
    pub latents: Option<&'a HostTensor>,
    /// Decode the first image's `x̂0` (the scheduler's `pred_original_sample`) into
    /// [`StepEvent::preview`] every this many steps (0: never; never on the last step, whose
    /// image is the result). Each preview costs one VAE decode of one image and a readback.
    pub preview_every: usize,
    /// The start images of requests with a [`start`](GenerateRequest::start), one per image
    /// of the batch in request order, any size (resized to the output size).
    pub images: Option<&'a [::image::RgbImage]>,
}

impl<'a> GenerateOptions<'a> {
    /// Options that only replace the seeded noise with `latents`.
    pub fn with_latents(latents: &'a HostTensor) -> Self {
        GenerateOptions {
            latents: Some(latents),
            ..GenerateOptions::default()
        }
    }
}

/// One denoising step as semantic guidance sees it: the scaled model input at timestep `t`,
/// with the AU tokens and the classifier-free scale of the generation.
#[derive(Debug, Clone)]
pub struct GuidedStep<'a> {
    /// The scaled model input `[n, c, h, w]`.
    pub input: Tensor<4>,
    /// The timestep.
    pub t: f64,
    /// AU tokens (both guidance halves), if the model has an adapter.
    pub au: Option<&'a AuContext>,
    /// Classifier-free guidance scale (the context has an unconditional half when > 1).
    pub guidance_scale: f64,
    /// The scheduler of the generation (its prediction type and ᾱ give `x̂0`).
    pub scheduler: &'a Scheduler,
    /// The guidance-scale embedding of an LCM-distilled UNet.
    pub guidance_embedding: Option<&'a Tensor<2>>,
}

impl Pipeline {
    /// Runs a request to the end (blocking).
    #[cfg(not(target_family = "wasm"))]
    pub fn generate(&self, req: &GenerateRequest) -> Result<GenerateOutput> {
        self.generate_with(req, &GenerateOptions::default(), |_| {})
    }

    /// Runs a request with `options`, calling `on_step` after every denoising step (blocking).
    #[cfg(not(target_family = "wasm"))]
    pub fn generate_with(
        &self,
        req: &GenerateRequest,
        options: &GenerateOptions,
        on_step: impl FnMut(&StepEvent),
    ) -> Result<GenerateOutput> {
        pollster::block_on(self.generate_async(req, options, on_step))
    }

    /// [`Pipeline::generate_with`] for the browser, where a blocking wait is impossible.
    pub async fn generate_async(
        &self,
        req: &GenerateRequest,
        options: &GenerateOptions<'_>,
        on_step: impl FnMut(&StepEvent),
    ) -> Result<GenerateOutput> {
        let mut outs = self
            .run(std::slice::from_ref(req), options, on_step)
            .await?;
        Ok(outs.remove(0))
    }

    /// Runs several requests as one UNet batch (dataset synthesis): each contributes its
    /// `num_images` images with its own prompt, negative prompt, expression, AUs and seeds;
    /// steps, guidance, size, scheduler, clip skip and AU scale must be the same for all. Each
    /// image equals the one its request alone would give (up to batched float rounding).
    #[cfg(not(target_family = "wasm"))]
    pub fn generate_batch(
        &self,
        reqs: &[GenerateRequest],
        options: &GenerateOptions,
        on_step: impl FnMut(&StepEvent),
    ) -> Result<Vec<GenerateOutput>> {
        pollster::block_on(self.run(reqs, options, on_step))
    }

    /// The semantic-guidance loss and its gradient with respect to the conditional embedding
    /// `cond` `[n, len, d]` at one step ([`SemanticGuider::gradient`]): `x̂0` from the (guided)
    /// model output for `step`, decoded by the VAE, scored by `classifier` of `guider` (default:
    /// the pipeline's).
    pub fn guidance_gradient(
        &self,
        guider: Option<&SemanticGuider>,
        classifier: GuideClassifier,
        targets: &[usize],
        cond: Tensor<3>,
        uncond: Option<Tensor<3>>,
        step: &GuidedStep,
    ) -> Result<(Tensor<1>, Tensor<3>)> {
        self.guider(guider)?
            .gradient(classifier, targets, cond, uncond, |context| {
                self.predict_image(step, context)
            })
    }

    /// `given`, else the pipeline's guider, else an error saying how to get one.
    fn guider<'a>(&'a self, given: Option<&'a SemanticGuider>) -> Result<&'a SemanticGuider> {
        given.or(self.guider.as_ref()).ok_or_else(|| {
            Error::request(
                "semantic_guidance",
                "the pipeline has no guidance classifiers; call enable_semantic_guidance first \
                 (or pass GenerateOptions::guider)",
            )
        })
    }

    /// The decoded `x̂0` in `[0, 1]` of `step` under text `context` (differentiable).
    fn predict_image(&self, step: &GuidedStep, context: Tensor<3>) -> Tensor<4> {
        let cfg = context.dims()[0] == 2 * step.input.dims()[0];
        let model_in = if cfg {
            Tensor::cat(vec![step.input.clone(), step.input.clone()], 0)
        } else {
            step.input.clone()
        };
        let out = self.unet.forward_guided(
            model_in,
            &[step.t as f32],
            context,
            step.au,
            step.guidance_embedding,
        );
        let out = if cfg {
            combine_halves(out, step.guidance_scale)
        } else {
            out
        };
        let x0 = step
            .scheduler
            .pred_original_sample(out, step.input.clone(), step.t);
        let image = self.vae.decode(x0 / self.vae.scaling_factor);
        (image / 2.0 + 0.5).clamp(0.0, 1.0)
    }

    /// Checks a batch as [`Pipeline::generate_batch`] does before it computes anything: every
    /// request's ranges, what one batch must share, and the device's buffer limit.
    pub fn check_batch(&self, reqs: &[GenerateRequest]) -> Result<()> {
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
            } else if r.start.as_ref().map(|s| (s.mode, s.strength, &s.prompt))
                != first
                    .start
                    .as_ref()
                    .map(|s| (s.mode, s.strength, &s.prompt))
            {
                Some("start")
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
        if let Some(limit) = self.buffer_limit {
            let (width, height) = self.output_size(first);
            let float_bytes = burn::tensor::DType::from(self.device.settings().float_dtype).size();
            self.info.buffers.check(
                total,
                self.uses_cfg(first),
                height,
                width,
                float_bytes,
                limit,
            )?;
        }
        Ok(())
    }

    /// Whether `req` runs classifier-free guidance: a scale above 1, unless the UNet takes the
    /// scale as an embedding (LCM-distilled).
    fn uses_cfg(&self, req: &GenerateRequest) -> bool {
        req.uses_cfg() && self.unet.guidance_embedding_dim().is_none()
    }

    /// The scheduler config a request runs with (see [`ImageStart::scheduler_config`] for
    /// starts from an image).
    fn scheduler_config_for(&self, req: &GenerateRequest) -> Result<SchedulerConfig> {
        if let Some(start) = &req.start {
            return start.scheduler_config(&self.scheduler, req.scheduler);
        }
        Ok(match req.scheduler {
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
        })
    }

    /// The initial latents `[n, c, h, w]` (given, or seeded noise per image) and each image's
    /// seed.
    fn initial_latents(
        &self,
        reqs: &[GenerateRequest],
        given: Option<&HostTensor>,
        shape: [usize; 4],
    ) -> Result<(HostTensor, Vec<Option<u64>>)> {
        if let Some(t) = given {
            if t.shape != shape {
                return Err(Error::request(
                    "latents",
                    format!("shape {:?} does not match the request's {shape:?}", t.shape),
                ));
            }
            check_finite(&t.data, shape[1..].iter().product(), "the given latents")?;
            return Ok((t.clone(), vec![None; shape[0]]));
        }
        let per = shape[1] * shape[2] * shape[3];
        let mut data = Vec::with_capacity(shape[0] * per);
        let mut seeds = Vec::with_capacity(shape[0]);
        for r in reqs {
            for i in 0..r.num_images {
                let seed = r.seed.wrapping_add(i as u64);
                data.extend(seeded_noise(seed, &shape[1..]).data);
                seeds.push(Some(seed));
            }
        }
        Ok((
            HostTensor {
                shape: shape.to_vec(),
                data,
            },
            seeds,
        ))
    }

    async fn run(
        &self,
        reqs: &[GenerateRequest],
        options: &GenerateOptions<'_>,
        mut on_step: impl FnMut(&StepEvent),
    ) -> Result<Vec<GenerateOutput>> {
        self.check_batch(reqs)?;
        let req = &reqs[0];
        let (width, height) = self.output_size(req);
        let n: usize = reqs.iter().map(|r| r.num_images).sum();
        let f = self.info.vae_scale_factor;
        let shape = [n, self.info.latent_channels, height / f, width / f];

        // 1. Scheduler.
        let sched_cfg = self.scheduler_config_for(req)?;
        let mut scheduler = sched_cfg
            .build(req.steps)
            .map_err(|source| Error::Scheduler {
                file: "scheduler/scheduler_config.json".into(),
                source,
            })?;
        let timesteps = scheduler.timesteps().to_vec();
        let total = timesteps.len();

        // 2. Prompt embeddings ([uncond × n; cond × n] with guidance) and AU tokens.
        let cfg = self.uses_cfg(req);
        // An LCM-distilled UNet takes the guidance scale as an embedding instead (diffusers:
        // `timestep_cond` of `w = guidance_scale − 1`, no classifier-free guidance).
        let guidance_embedding = self.unet.guidance_embedding_dim().map(|d| {
            guidance_scale_embedding(&vec![(req.guidance_scale - 1.0) as f32; n], d, &self.device)
        });
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
        let (context, mut warnings) = self.encode_prompt(&prompts, clip_skip)?;
        if self.au_adapter.is_none() && reqs.iter().any(|r| r.expression.is_some()) {
            warnings.push(
                "this model has no AU adapter: the expression conditions the prompt only, not \
                 the face's action units"
                    .into(),
            );
        }
        let au_requests: Vec<_> = reqs.iter().map(GenerateRequest::au_request).collect();
        let (aus, au_context) =
            conditioning::condition(self.au_adapter.as_ref(), &au_requests, cfg, &self.device)?;
        let guidance = match req.semantic_guidance.clone().filter(|sg| sg.scale > 0.0) {
            Some(sg) => {
                let guider = self.guider(options.guider)?;
                let targets =
                    SemanticGuider::targets(reqs.iter().map(|r| (r.expression, r.num_images)))?;
                Some((sg, guider, targets))
            }
            None => None,
        };

        // 3. Initial latents: seeded noise, or the start images (layout: inverted up to the
        // first denoising step; img2img: noised to it). `first` is that step's index.
        let (host, seeds) = self.initial_latents(reqs, options.latents, shape)?;
        // Stochastic schedulers draw each step's noise from each image's seed (the request's
        // seed when latents were given).
        scheduler.set_step_noise(StepNoise::Seeded(
            seeds.iter().map(|s| s.unwrap_or(req.seed)).collect(),
        ));
        let noise = Tensor::<4>::from_data(TensorData::new(host.data, shape), &self.device);
        let mut inverted = 0;
        let (mut x, first) = match &req.start {
            None => (noise * scheduler.init_noise_sigma(), 0),
            Some(start) => {
                let images = options.images.ok_or_else(|| {
                    Error::request(
                        "start",
                        "starting from an image needs the images (GenerateOptions::images)",
                    )
                })?;
                if images.len() != n {
                    return Err(Error::request(
                        "start",
                        format!("{} start images for a batch of {n} images", images.len()),
                    ));
                }
                let x0 = self.encode_images(images, width, height)?;
                match start.mode {
                    StartMode::Layout => {
                        let k = layout_steps(start.strength, req.steps).min(total);
                        let prompt = start.prompt.as_deref().unwrap_or(LAYOUT_PROMPT);
                        let total_events = 2 * k;
                        let x = self.invert(
                            x0,
                            &sched_cfg,
                            req.steps,
                            k,
                            prompt,
                            clip_skip,
                            req.au_scale,
                            |i, t| {
                                on_step(&StepEvent {
                                    step: i + 1,
                                    total: total_events,
                                    timestep: t,
                                    preview: None,
                                })
                            },
                        )?;
                        inverted = k;
                        (x, total - k)
                    }
                    StartMode::Img2img => match img2img_start(start.strength, req.steps) {
                        s if s >= req.steps || s >= total => (x0, total),
                        s => (scheduler.add_noise(x0, noise, s), s),
                    },
                }
            }
        };

        // 4. Denoising loop (with semantic guidance of the conditional embedding in its window).
        let steps_run = total - first;
        let mut context = context;
        for (i, &t) in timesteps.iter().enumerate().skip(first) {
            if let Some((sg, guider, targets)) = &guidance
                && sg.guides(i - first, steps_run)
            {
                let step = GuidedStep {
                    input: scheduler.scale_model_input(x.clone(), i),
                    t,
                    au: au_context.as_ref(),
                    guidance_scale: req.guidance_scale,
                    scheduler: &scheduler,
                    guidance_embedding: guidance_embedding.as_ref(),
                };
                context =
                    guider.update(sg, targets, context, n, |c| self.predict_image(&step, c))?;
            }
            let input = if cfg {
                Tensor::cat(vec![x.clone(), x.clone()], 0)
            } else {
                x.clone()
            };
            let input = scheduler.scale_model_input(input, i);
            let out = self.unet.forward_guided(
                input,
                &[t as f32],
                context.clone(),
                au_context.as_ref(),
                guidance_embedding.as_ref(),
            );
            let noise = if cfg {
                combine_halves(out, req.guidance_scale)
            } else {
                out
            };
            let stepped = scheduler.step(noise, i, x);
            x = stepped.prev_sample;
            let every = options.preview_every;
            let done = i + 1 - first;
            let preview = if every > 0 && done % every == 0 && i + 1 < total {
                let [_, c, h, w] = stepped.pred_original_sample.dims();
                let first = stepped.pred_original_sample.slice([0..1, 0..c, 0..h, 0..w]);
                Some(to_u8(&self.decode_f32(first).await?))
            } else {
                None
            };
            on_step(&StepEvent {
                step: inverted + done,
                total: inverted + steps_run,
                timestep: t,
                preview,
            });
        }

        // 5. Check the final latents (a small readback), decode to [0, 1], read back and split
        //    per request. NaN or ±Inf from weights, latents or settings is an error here, never a
        //    black image.
        let latents = x
            .clone()
            .into_data_async()
            .await
            .map_err(|e| Error::Device(format!("reading the latents back: {e:?}")))?
            .try_into_vec_as::<f32>()
            .map_err(|e| Error::Device(format!("reading the latents back: {e:?}")))?;
        check_finite(
            &latents,
            latents.len() / n.max(1),
            "the final latents (denoising)",
        )?;
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
                scheduler: scheduler.kind(),
            });
        }
        Ok(outs)
    }

    /// Latents `[n, c, h, w]` decoded to `[0, 1]` and read back, `n × height × width × 3`.
    /// Decodes in slices of [`super::memory::BufferProfile::images_per_decode`] images, so that the
    /// VAE's full-resolution activations stay bounded whatever the batch.
    pub(super) async fn decode_f32(&self, latents: Tensor<4>) -> Result<Vec<f32>> {
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
        let image = image / 2.0 + 0.5;
        let data = image
            .permute([0, 2, 3, 1])
            .into_data_async()
            .await
            .map_err(|e| Error::Device(format!("reading the image back: {e:?}")))?;
        let mut values = data
            .try_into_vec_as::<f32>()
            .map_err(|e| Error::Device(format!("reading the image back: {e:?}")))?;
        // Clamped on the host, after the check: a NaN pixel is an error, not a black one.
        check_finite(&values, values.len() / n.max(1), "the VAE decode")?;
        for v in &mut values {
            *v = v.clamp(0.0, 1.0);
        }
        Ok(values)
    }
}
