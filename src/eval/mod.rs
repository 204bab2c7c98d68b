//! `synfer eval`: how well a model does what it is asked, measured by independent judges.
//!
//! - **Expressions**: `n` images per expression (`--expression E`, seeds `seed..seed+n`),
//!   each classified by mini-Xception (FER B). The dataset's labels come from face-api.js (FER
//!   A), so FER B is a judge the model never trained against. Agreement = share of images
//!   whose FER B label is the requested expression.
//! - **AU control**: single-AU requests (`AUk = v`, v = 0..=5, neutral prompt) over several
//!   seeds, each measured by the AU estimator (FaceMesh landmarks, mean over the image and its
//!   mirror, as the dataset was labelled); Spearman's ρ between requested and measured
//!   intensity per AU.
//! - **Semantic guidance** (optional): every expression again with guidance, agreement judged by
//!   the classifier that did not guide, with and without, and the cost of a guided step.
//! - **Faces**: the share of expression images in which BlazeFace finds a face
//!   ([`face_score`](crate::label::face_score)), so that agreement is not read off images that show no face.

pub mod reconstruction;
mod report;
pub mod stats;

pub use report::grid;
pub use stats::{diversity, spearman};

use std::collections::BTreeMap;

use serde::Serialize;

use crate::au::FINEFACE;
use crate::error::{Error, Result};
use crate::expression::CLASSES;
use crate::expression::Expression;
use crate::face::analyzer::FaceAnalyzer;
use crate::guidance::semantic::{GuideClassifier, SemanticGuidance};
use crate::image::RgbView;
use crate::label::{FACE_THRESHOLD, judge, mirror_vote};
use crate::layout::{LayoutFaces, StartFlags};
use crate::pipeline::start::fit_start_image;
use crate::pipeline::{GenerateOptions, GenerateRequest, ImageStart, Pipeline};

/// The seven classes both judges know, in [`CLASSES`] order.
pub const EXPRESSIONS: [Expression; 7] = Expression::SEVEN;

/// What to measure (also the flags of `synfer eval`).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "native", derive(clap::Args))]
pub struct EvalConfig {
    /// Images per expression.
    #[cfg_attr(feature = "native", arg(long, default_value_t = 32))]
    pub per_expression: usize,
    /// Seeds per requested AU level.
    #[cfg_attr(feature = "native", arg(long, default_value_t = 4))]
    pub per_level: usize,
    /// AUs probed with single-AU requests, FineFace codes, comma-separated ('' skips the
    /// probe).
    #[cfg_attr(
        feature = "native",
        arg(
            long,
            value_delimiter = ',',
            default_value = "AU1,AU2,AU4,AU5,AU6,AU9,AU12,AU15,AU17,AU20,AU25,AU26"
        )
    )]
    pub aus: Vec<String>,
    /// Requested intensities.
    #[cfg_attr(feature = "native", arg(skip = vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]))]
    pub levels: Vec<f32>,
    /// Prompt of the single-AU requests and base prompt of the expression requests.
    #[cfg_attr(feature = "native", arg(long, default_value = "a photo of a face"))]
    pub prompt: String,
    /// First seed.
    #[cfg_attr(feature = "native", arg(long, default_value_t = 0))]
    pub seed: u64,
    /// Denoising steps.
    #[cfg_attr(feature = "native", arg(long, default_value_t = 25))]
    pub steps: usize,
    /// Guidance scale.
    #[cfg_attr(feature = "native", arg(long, default_value_t = 7.5))]
    pub guidance: f64,
    /// Images per pipeline call.
    #[cfg_attr(feature = "native", arg(long, default_value_t = 8))]
    pub batch: usize,
    /// Also measure semantic guidance: every expression again with these settings, judged by
    /// the classifier that did not guide.
    #[cfg_attr(feature = "native", arg(skip))]
    pub semantic: Option<SemanticGuidance>,
    /// Images per expression in the guided pass (the first seeds of the unguided ones).
    #[cfg_attr(
        feature = "native",
        arg(long = "sg-per-expression", default_value_t = 16)
    )]
    pub semantic_per_expression: usize,
    /// Start every generation from a face (layout initialisation) or an image (img2img);
    /// the report then holds the same evaluation from pure noise beside it.
    #[cfg_attr(feature = "native", command(flatten))]
    pub start: StartFlags,
    /// Also measure the VAE round trip (PSNR, sharpness ratio) on the face images under this
    /// folder (e.g. the real-face dev set).
    #[cfg_attr(feature = "native", arg(long))]
    pub vae_dev: Option<std::path::PathBuf>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            per_expression: 32,
            per_level: 4,
            aus: FINEFACE.codes.iter().map(|c| c.to_string()).collect(),
            levels: vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
            prompt: "a photo of a face".into(),
            seed: 0,
            steps: 25,
            guidance: 7.5,
            batch: 8,
            semantic: None,
            semantic_per_expression: 16,
            start: StartFlags::default(),
            vae_dev: None,
        }
    }
}

/// Results for one requested expression.
#[derive(Debug, Clone, Serialize)]
pub struct ExpressionResult {
    /// Images generated.
    pub images: usize,
    /// Share of images in which BlazeFace finds a face ([`face_score`](crate::label::face_score) ≥ [`FACE_THRESHOLD`]).
    pub face_rate: f64,
    /// Images FER B labelled as requested / images.
    pub agreement: f64,
    /// FER B's labels: class → count.
    pub judged: BTreeMap<String, usize>,
    /// Images FER A (face-api.js) labelled as requested / images. FER A labels the training
    /// data, so it is not an independent judge of a model trained on it.
    pub face_api_agreement: f64,
    /// FER A's labels: class → count.
    pub face_api_judged: BTreeMap<String, usize>,
    /// How different the images are: the mean over pairs of their RMS pixel difference (values
    /// in `[0, 1]`; near 0: near copies).
    pub diversity: f64,
}

/// Results for one AU.
#[derive(Debug, Clone, Serialize)]
pub struct AuResult {
    /// Spearman's ρ between requested and measured intensity (`null` when undefined).
    pub spearman: Option<f64>,
    /// Mean measured intensity per requested level.
    pub measured_mean: Vec<f64>,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The model folder.
    pub model: String,
    /// Settings.
    pub config: EvalConfig,
    /// Per expression.
    pub expressions: BTreeMap<String, ExpressionResult>,
    /// Mean agreement over the seven expressions.
    pub average_agreement: f64,
    /// Mean FER A agreement over the seven expressions.
    pub average_face_api_agreement: f64,
    /// Share of the expression images with a face ([`face_score`](crate::label::face_score) ≥ [`FACE_THRESHOLD`]).
    pub face_rate: f64,
    /// Per AU.
    pub aus: BTreeMap<String, AuResult>,
    /// Mean diversity over the seven expressions ([`ExpressionResult::diversity`]).
    pub average_diversity: f64,
    /// Semantic guidance, when measured.
    pub semantic: Option<SemanticReport>,
    /// How the generations started (`None`: from noise).
    pub start: Option<ImageStart>,
    /// With a start from images: the same evaluation from pure noise.
    pub from_noise: Option<Box<EvalReport>>,
    /// The VAE round trip on `--vae-dev`, when asked for.
    pub reconstruction: Option<reconstruction::ReconstructionReport>,
    /// Seconds spent generating and judging.
    pub seconds: f64,
}

/// Agreement with and without semantic guidance, judged by the classifier that did not guide.
#[derive(Debug, Clone, Serialize)]
pub struct SemanticReport {
    /// The guidance settings.
    pub settings: SemanticGuidance,
    /// The judging classifier (never the guiding one).
    pub judge: String,
    /// Per expression: `[without, with]` agreement over the same seeds.
    pub agreement: BTreeMap<String, [f64; 2]>,
    /// Mean over the seven expressions: `[without, with]`.
    pub average: [f64; 2],
    /// Seconds per denoising step: `[unguided, guided]` (guided steps only), and their ratio.
    pub step_seconds: [f64; 2],
    /// `step_seconds[1] / step_seconds[0]`.
    pub step_cost_ratio: f64,
}

/// Images kept for the grid: per expression, then per AU (one seed, every level).
#[derive(Debug, Default)]
pub struct EvalImages {
    /// `(expression, FER B label, RGB)` in generation order.
    pub expressions: Vec<(Expression, String, Vec<u8>)>,
    /// The layout face each expression image started from (same order, same side), when the
    /// evaluation starts from faces; empty from noise.
    pub layouts: Vec<Vec<u8>>,
    /// `(AU, level, RGB)` for the first seed.
    pub aus: Vec<(String, f32, Vec<u8>)>,
    /// Image side.
    pub side: usize,
}

impl EvalConfig {
    /// Checks the settings against `pipe` (an AU adapter with FineFace AUs is needed for the
    /// AU part).
    pub fn validate(&self, pipe: &Pipeline) -> Result<()> {
        if self.per_expression == 0 || self.batch == 0 {
            return Err(Error::request(
                "per-expression",
                "--per-expression and --batch must be at least 1",
            ));
        }
        if !self.aus.is_empty() {
            match &pipe.au_adapter {
                Some(a) if a.set == FINEFACE => {}
                _ => {
                    return Err(Error::request(
                        "aus",
                        "the AU probe needs a model with a FineFace AU adapter (pass --aus '' to skip it)",
                    ));
                }
            }
            if let Some(bad) = self
                .aus
                .iter()
                .find(|c| !FINEFACE.codes.contains(&c.as_str()))
            {
                return Err(Error::request(
                    "aus",
                    format!("{bad} is not a FineFace AU ({})", FINEFACE.codes.join(", ")),
                ));
            }
        }
        Ok(())
    }
}

/// The images of [`generate_all`]: RGB bytes, the start faces resized to the output's side
/// (empty from noise), and that side.
struct Generated {
    images: Vec<Vec<u8>>,
    starts: Vec<Vec<u8>>,
    side: usize,
}

/// Generates `count` images for `base` in batches.
fn generate_all(
    pipe: &Pipeline,
    base: &GenerateRequest,
    start: Option<&(ImageStart, LayoutFaces)>,
    count: usize,
    batch: usize,
) -> Result<Generated> {
    let mut out = Vec::with_capacity(count);
    let mut starts = Vec::new();
    let mut side = 0;
    while out.len() < count {
        let n = batch.min(count - out.len());
        let req = GenerateRequest {
            seed: base.seed + out.len() as u64,
            num_images: n,
            start: start.map(|(s, _)| s.clone()),
            ..base.clone()
        };
        let images = start
            .map(|(_, faces)| {
                (0..n)
                    .map(|i| Ok(faces.face(out.len() + i, req.seed + i as u64)?.0))
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?;
        let options = GenerateOptions {
            images: images.as_deref(),
            ..GenerateOptions::default()
        };
        let res = pipe.generate_with(&req, &options, |_| {})?;
        side = res.width;
        // The faces as the pipeline encoded them.
        let fit = |img| {
            fit_start_image(img, res.width, res.height)
                .into_owned()
                .into_raw()
        };
        starts.extend(images.iter().flatten().map(fit));
        out.extend(res.images);
    }
    Ok(Generated {
        images: out,
        starts,
        side,
    })
}

/// The request of expression `e` (first seed; [`generate_all`] advances it).
fn expression_request(
    cfg: &EvalConfig,
    e: Expression,
    semantic_guidance: Option<SemanticGuidance>,
) -> GenerateRequest {
    GenerateRequest {
        prompt: cfg.prompt.clone(),
        steps: cfg.steps,
        guidance_scale: cfg.guidance,
        seed: cfg.seed,
        expression: Some(e),
        semantic_guidance,
        ..Default::default()
    }
}

/// Runs the evaluation; `progress(done, total)` counts generated images. With a start from
/// images ([`EvalConfig::start`]) it runs twice, the second time from pure noise
/// ([`EvalReport::from_noise`]).
pub fn evaluate(
    pipe: &Pipeline,
    analyzer: &FaceAnalyzer,
    cfg: &EvalConfig,
    mut progress: impl FnMut(usize, usize),
) -> Result<(EvalReport, EvalImages)> {
    cfg.validate(pipe)?;
    let once =
        EXPRESSIONS.len() * cfg.per_expression + cfg.aus.len() * cfg.levels.len() * cfg.per_level;
    let Some(started) = cfg.start.open(pipe.device())? else {
        let once = evaluate_once(pipe, analyzer, cfg, None, |d, _| progress(d, once))?;
        return with_reconstruction(pipe, cfg, once);
    };
    let (mut report, images) = evaluate_once(pipe, analyzer, cfg, Some(&started), |d, _| {
        progress(d, 2 * once)
    })?;
    let noise_cfg = EvalConfig {
        start: StartFlags::default(),
        ..cfg.clone()
    };
    let (from_noise, _) = evaluate_once(pipe, analyzer, &noise_cfg, None, |d, _| {
        progress(once + d, 2 * once)
    })?;
    report.from_noise = Some(Box::new(from_noise));
    with_reconstruction(pipe, cfg, (report, images))
}

/// [`evaluate`]'s report gains the VAE round trip on `cfg.vae_dev`.
fn with_reconstruction(
    pipe: &Pipeline,
    cfg: &EvalConfig,
    (mut report, images): (EvalReport, EvalImages),
) -> Result<(EvalReport, EvalImages)> {
    if let Some(dir) = &cfg.vae_dev {
        report.reconstruction = Some(reconstruction::reconstruction(pipe, dir, cfg.batch)?);
    }
    Ok((report, images))
}

/// One evaluation, from noise or from `start`'s images.
fn evaluate_once(
    pipe: &Pipeline,
    analyzer: &FaceAnalyzer,
    cfg: &EvalConfig,
    start_from: Option<&(ImageStart, LayoutFaces)>,
    mut progress: impl FnMut(usize, usize),
) -> Result<(EvalReport, EvalImages)> {
    let start = std::time::Instant::now();
    let total =
        EXPRESSIONS.len() * cfg.per_expression + cfg.aus.len() * cfg.levels.len() * cfg.per_level;
    let mut done = 0;
    let mut images = EvalImages::default();
    let mut expressions = BTreeMap::new();
    // Both classifiers' labels of every unguided image, and the time spent generating them.
    let mut unguided_labels: BTreeMap<&str, Vec<[String; 2]>> = BTreeMap::new();
    let mut unguided_seconds = 0.0;
    for e in EXPRESSIONS {
        let req = expression_request(cfg, e, None);
        let t0 = std::time::Instant::now();
        let Generated {
            images: rgbs,
            starts,
            side,
        } = generate_all(pipe, &req, start_from, cfg.per_expression, cfg.batch)?;
        images.layouts.extend(starts);
        unguided_seconds += t0.elapsed().as_secs_f64();
        let variety = diversity(&rgbs.iter().map(Vec::as_slice).collect::<Vec<_>>());
        images.side = side;
        let mut judged: BTreeMap<String, usize> =
            CLASSES.iter().map(|c| (c.to_string(), 0)).collect();
        let mut face_api_judged = judged.clone();
        let mut faces = 0;
        for rgb in rgbs {
            let (score, report) = judge(analyzer, side, &rgb)?;
            faces += usize::from(score >= FACE_THRESHOLD);
            let verdict = report.expression.mini_xception.label.to_string();
            unguided_labels.entry(e.name()).or_default().push([
                report.expression.face_api.label.to_string(),
                verdict.clone(),
            ]);
            *judged.entry(verdict.clone()).or_default() += 1;
            *face_api_judged
                .entry(report.expression.face_api.label.to_string())
                .or_default() += 1;
            images.expressions.push((e, verdict, rgb));
            done += 1;
            progress(done, total);
        }
        let hits = judged.get(e.name()).copied().unwrap_or(0);
        let face_api_hits = face_api_judged.get(e.name()).copied().unwrap_or(0);
        expressions.insert(
            e.name().to_string(),
            ExpressionResult {
                images: cfg.per_expression,
                face_rate: faces as f64 / cfg.per_expression as f64,
                agreement: hits as f64 / cfg.per_expression as f64,
                judged,
                face_api_agreement: face_api_hits as f64 / cfg.per_expression as f64,
                face_api_judged,
                diversity: variety,
            },
        );
    }
    let average_agreement =
        expressions.values().map(|r| r.agreement).sum::<f64>() / expressions.len() as f64;
    let average_face_api_agreement = expressions
        .values()
        .map(|r| r.face_api_agreement)
        .sum::<f64>()
        / expressions.len() as f64;
    let face_rate =
        expressions.values().map(|r| r.face_rate).sum::<f64>() / expressions.len() as f64;
    let average_diversity =
        expressions.values().map(|r| r.diversity).sum::<f64>() / expressions.len() as f64;
    let semantic = match &cfg.semantic {
        Some(sg) => Some(semantic_report(
            pipe,
            analyzer,
            cfg,
            sg,
            start_from,
            &unguided_labels,
            unguided_seconds,
        )?),
        None => None,
    };

    let mut aus = BTreeMap::new();
    for code in &cfg.aus {
        let (mut requested, mut measured) = (Vec::new(), Vec::new());
        let mut means = Vec::new();
        for &level in &cfg.levels {
            let req = GenerateRequest {
                prompt: cfg.prompt.clone(),
                steps: cfg.steps,
                guidance_scale: cfg.guidance,
                seed: cfg.seed,
                aus: Some(BTreeMap::from([(code.clone(), level)])),
                ..Default::default()
            };
            let Generated {
                images: rgbs, side, ..
            } = generate_all(pipe, &req, start_from, cfg.per_level, cfg.batch)?;
            let mut sum = 0.0;
            for (i, rgb) in rgbs.into_iter().enumerate() {
                let value = mirror_vote(analyzer, side, &rgb)?
                    .aus
                    .get(code)
                    .unwrap_or(0.0);
                requested.push(f64::from(level));
                measured.push(f64::from(value));
                sum += f64::from(value);
                if i == 0 {
                    images.aus.push((code.clone(), level, rgb));
                }
                done += 1;
                progress(done, total);
            }
            means.push(sum / cfg.per_level.max(1) as f64);
        }
        aus.insert(
            code.clone(),
            AuResult {
                spearman: spearman(&requested, &measured),
                measured_mean: means,
            },
        );
    }
    Ok((
        EvalReport {
            model: pipe.info.source.clone(),
            config: cfg.clone(),
            expressions,
            average_agreement,
            average_face_api_agreement,
            face_rate,
            average_diversity,
            aus,
            semantic,
            start: start_from.map(|(s, _)| s.clone()),
            from_noise: None,
            reconstruction: None,
            seconds: start.elapsed().as_secs_f64(),
        },
        images,
    ))
}

/// The guided pass of [`evaluate`]: every expression again with `sg`, judged by the other
/// classifier, against the same classifier's labels of the unguided images.
fn semantic_report(
    pipe: &Pipeline,
    analyzer: &FaceAnalyzer,
    cfg: &EvalConfig,
    sg: &SemanticGuidance,
    start_from: Option<&(ImageStart, LayoutFaces)>,
    unguided: &BTreeMap<&str, Vec<[String; 2]>>,
    unguided_seconds: f64,
) -> Result<SemanticReport> {
    let judge = sg.classifier.other();
    let count = cfg.semantic_per_expression.clamp(1, cfg.per_expression);
    let slot = usize::from(judge == GuideClassifier::MiniXception);
    let mut agreement = BTreeMap::new();
    let mut guided_seconds = 0.0;
    for e in EXPRESSIONS {
        let req = expression_request(cfg, e, Some(sg.clone()));
        let t0 = std::time::Instant::now();
        let Generated {
            images: rgbs, side, ..
        } = generate_all(pipe, &req, start_from, count, cfg.batch)?;
        guided_seconds += t0.elapsed().as_secs_f64();
        let mut hits = 0;
        for rgb in rgbs {
            let report = analyzer.analyze_cropped(RgbView::new(side, side, &rgb)?)?;
            let label = if judge == GuideClassifier::MiniXception {
                report.expression.mini_xception.label
            } else {
                report.expression.face_api.label
            };
            hits += usize::from(label == e.name());
        }
        let before = unguided.get(e.name()).map_or(0, |v| {
            v.iter().take(count).filter(|l| l[slot] == e.name()).count()
        });
        let n = count as f64;
        agreement.insert(e.name().to_string(), [before as f64 / n, hits as f64 / n]);
    }
    let k = agreement.len().max(1) as f64;
    let average = [
        agreement.values().map(|a| a[0]).sum::<f64>() / k,
        agreement.values().map(|a| a[1]).sum::<f64>() / k,
    ];
    // Seconds per batched step; guided runs spend unguided time on the steps outside the
    // window (batches of `batch` images either way).
    let calls = |n: usize| (EXPRESSIONS.len() * n.div_ceil(cfg.batch)) as f64;
    let unguided_step = unguided_seconds / (calls(cfg.per_expression) * cfg.steps as f64);
    let window = (0..cfg.steps).filter(|&i| sg.guides(i, cfg.steps)).count() as f64;
    let guided_step = if window > 0.0 {
        let outside = (cfg.steps as f64 - window) * unguided_step;
        (guided_seconds / calls(count) - outside) / window
    } else {
        unguided_step
    };
    Ok(SemanticReport {
        settings: sg.clone(),
        judge: judge.name().to_string(),
        agreement,
        average,
        step_seconds: [unguided_step, guided_step],
        step_cost_ratio: guided_step / unguided_step.max(1e-12),
    })
}
