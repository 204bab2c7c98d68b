//! Semantic guidance: the embedding gradient against central finite differences, λ = 0 equal to
//! no guidance bit for bit, and the request checks.

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::fixture;
use synfer::au::{AdapterWeights, AuAdapterConfig};
use synfer::expression::Expression;
use synfer::expression::class_names;
use synfer::fer::{Arch, FerClassifier, FerConfig};
use synfer::guidance::semantic::{GuideClassifier, SemanticGuidance};
use synfer::pipeline::generate::GuidedStep;
use synfer::pipeline::source::DirSource;
use synfer::pipeline::{GenerateRequest, Pipeline};
use synfer::rng::seeded_noise;
use synfer::train::params;
use synfer::train::tensors::{Precision, to_bytes};
use synfer::weights::TensorStore;

fn pipeline() -> Pipeline {
    let adapter = AdapterWeights {
        config: AuAdapterConfig {
            hidden_dim: 4,
            ..AuAdapterConfig::fineface()
        },
        store: TensorStore::synthetic("random adapter", 3),
    };
    let src = DirSource::new(fixture("sd1-tiny")).unwrap();
    let mut p = Pipeline::builder(&src).adapter(adapter).build().unwrap();
    p.enable_semantic_guidance().unwrap();
    // A randomly initialised classifier in `synfer fer train`'s stored form, as "trained".
    let config = FerConfig {
        arch: Arch::Resnet18,
        input_size: 16,
        channels: 3,
        width: 4,
        classes: class_names(false),
        standardize: false,
    };
    let model = FerClassifier::init(&config, 3, &Device::flex()).unwrap();
    // Sharper logits (fc × 4) than a fresh initialisation gives, so that the gradient stands
    // well above the pipeline's f32 rounding noise in the finite differences.
    let mut values = params::read(&model);
    for v in &mut values.get_mut("net.fc.weight").unwrap().data {
        *v *= 4.0;
    }
    let weights = to_bytes(&values, Precision::F32, None).unwrap();
    p.enable_trained_guidance(&serde_json::to_vec(&config).unwrap(), &weights)
        .unwrap();
    p
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

#[test]
fn the_embedding_gradient_matches_finite_differences() {
    let p = pipeline();
    let device = p.device().clone();
    let (context, _) = p.encode_prompt(&["", "a photo of a face"], 0).unwrap();
    let [_, len, d] = context.dims();
    let uncond = context.clone().slice([0..1, 0..len, 0..d]);
    let cond = context.slice([1..2, 0..len, 0..d]);
    let scheduler = p.scheduler_config().build(10).unwrap();
    let i = 1;
    let t = scheduler.timesteps()[i];
    let shape = [p.info().latent_channels, 8, 8];
    let noise = seeded_noise(11, &shape);
    let input = Tensor::<4>::from_data(TensorData::new(noise.data, [1, shape[0], 8, 8]), &device);
    let req = GenerateRequest {
        expression: Some(Expression::Happy),
        ..GenerateRequest::new("x")
    };
    let (_, au) = p.au_conditioning(&req, 1, true).unwrap();
    let target = [1usize]; // happy
    for classifier in [
        GuideClassifier::FaceApi,
        GuideClassifier::MiniXception,
        GuideClassifier::Trained,
    ] {
        let loss = |c: Tensor<3>| {
            let step = GuidedStep {
                input: input.clone(),
                t,
                au: au.as_ref(),
                guidance_scale: 7.5,
                scheduler: &scheduler,
                guidance_embedding: None,
            };
            p.guidance_gradient(None, classifier, &target, c, Some(uncond.clone()), &step)
                .unwrap()
        };
        let (_, g) = loss(cond.clone());
        assert!(g.dims() == [1, len, d]);
        let g = values(g);
        let base = values(cond.clone());
        let mut order: Vec<usize> = (0..g.len()).collect();
        order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        for &k in order.iter().take(5) {
            let at = |delta: f32| {
                let mut v = base.clone();
                v[k] += delta;
                let l = loss(Tensor::from_data(TensorData::new(v, [1, len, d]), &device)).0;
                f64::from(l.into_scalar::<f32>())
            };
            // Central differences at four step sizes, combined by least squares (the slope of
            // L(c + δ e_k) over δ = ±h): the f32 pipeline's rounding noise averages out and the
            // classifiers' ReLU kinks are not resolved at any single tiny step.
            let steps = [4e-3f32, 8e-3, 12e-3, 16e-3];
            let (mut num, mut den) = (0.0f64, 0.0f64);
            for h in steps {
                let diff = at(h) - at(-h);
                num += diff * f64::from(h);
                den += 2.0 * f64::from(h) * f64::from(h);
            }
            let fd = num / den;
            let rel = (fd - f64::from(g[k])).abs() / f64::from(g[k]).abs();
            println!(
                "{} coordinate {k}: autodiff {} fd {fd} rel {rel:.2e}",
                classifier.name(),
                g[k]
            );
            assert!(
                rel <= 1e-2,
                "{}: coordinate {k}: {} vs {fd}",
                classifier.name(),
                g[k]
            );
        }
    }
}

#[test]
fn zero_strength_is_bit_identical_to_no_guidance() {
    let p = pipeline();
    let base = GenerateRequest {
        expression: Some(Expression::Sad),
        steps: 6,
        seed: 4,
        ..GenerateRequest::new("a photo of a man")
    };
    let plain = p.generate(&base).unwrap();
    let zero = GenerateRequest {
        semantic_guidance: Some(SemanticGuidance {
            scale: 0.0,
            ..SemanticGuidance::default()
        }),
        ..base.clone()
    };
    let same = p.generate(&zero).unwrap();
    assert_eq!(plain.images_f32, same.images_f32);
    // A positive strength changes the image (the window covers steps 3..6 of 6).
    let on = GenerateRequest {
        semantic_guidance: Some(SemanticGuidance::default()),
        ..base
    };
    let guided = p.generate(&on).unwrap();
    assert_ne!(plain.images_f32, guided.images_f32);
}

#[test]
fn guidance_needs_a_target_and_valid_settings() {
    let p = pipeline();
    let no_target = GenerateRequest {
        semantic_guidance: Some(SemanticGuidance::default()),
        ..GenerateRequest::new("a face")
    };
    let err = p.generate(&no_target).unwrap_err().to_string();
    assert!(
        err.contains("semantic_guidance") && err.contains("expression"),
        "{err}"
    );
    let bad = SemanticGuidance {
        window: [0.8, 0.2],
        ..SemanticGuidance::default()
    };
    assert!(bad.validate().unwrap_err().to_string().contains("window"));
    assert!("fer-c".parse::<GuideClassifier>().is_err());
    // Without the classifiers loaded, a clear error.
    let src = DirSource::new(fixture("sd1-tiny")).unwrap();
    let plain = Pipeline::from_source(&src, &Device::flex()).unwrap();
    let req = GenerateRequest {
        expression: Some(Expression::Happy),
        semantic_guidance: Some(SemanticGuidance::default()),
        ..GenerateRequest::new("a face")
    };
    let err = plain.generate(&req).unwrap_err().to_string();
    assert!(err.contains("enable_semantic_guidance"), "{err}");
}
