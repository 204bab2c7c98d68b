//! `expression`, `aus` and `au_scale` resolve into the AU vector and prompt exactly as documented
//! (prototype first, explicit units over it; zero AUs for the unconditional half).

mod common;

use std::collections::BTreeMap;

use burn::tensor::Device;
use common::{fixture, host};
use synfer::Error;
use synfer::GenerateOptions;
use synfer::au::{AdapterWeights, AuAdapterConfig};
use synfer::au::{AuVector, FINEFACE};
use synfer::expression::Expression;
use synfer::pipeline::source::DirSource;
use synfer::pipeline::{GenerateRequest, Pipeline};
use synfer::weights::TensorStore;

fn with_adapter() -> Pipeline {
    with_adapter_config(AuAdapterConfig::fineface())
}

fn with_adapter_config(base: AuAdapterConfig) -> Pipeline {
    // A randomly initialised FineFace-layout adapter (hidden 4: 12 raw + 4 = 16 = cross dim).
    let config = AuAdapterConfig {
        hidden_dim: 4,
        ..base
    };
    let adapter = AdapterWeights {
        config,
        store: TensorStore::synthetic("random adapter", 7),
    };
    let src = DirSource::new(fixture("sd1-tiny")).unwrap();
    Pipeline::builder(&src).adapter(adapter).build().unwrap()
}

fn aus(pairs: &[(&str, f32)]) -> Option<BTreeMap<String, f32>> {
    Some(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect())
}

#[test]
fn expression_prototype_then_explicit_units() {
    let p = with_adapter();
    assert!(p.unet().has_au_adapter());
    let req = GenerateRequest {
        expression: Some(Expression::Happy),
        aus: aus(&[("AU12", 2.0), ("AU26", 1.0)]),
        ..GenerateRequest::new("a photo of a man")
    };
    let (v, ctx) = p.au_conditioning(&req, 1, true).unwrap();
    let v = v.unwrap();
    let expected = AuVector::parse(FINEFACE, "AU6=3,AU12=2,AU26=1").unwrap();
    assert_eq!(v, expected);
    assert_eq!(
        req.effective_prompt(),
        "a photo of a man, happy facial expression"
    );
    let ctx = ctx.unwrap();
    assert_eq!(ctx.scale, 1.0);
    // Unconditional half = encoded zeros, conditional half = encoded request.
    let enc = &p.au_adapter().unwrap().encoder;
    let zeros = AuVector::zeros(FINEFACE);
    let (_, want) = host(enc.encode(&[&zeros, &expected], p.device()));
    let (shape, got) = host(ctx.tokens);
    assert_eq!(shape, vec![2, 1, 16]);
    assert_eq!(got, want);
    // Raw AUs lead the token (FineFace layout).
    assert_eq!(&got[16..28], expected.values());
}

#[test]
fn an_explicit_zero_switches_a_prototype_unit_off() {
    let p = with_adapter();
    // Happy's prototype sets AU6 = 3 and AU12 = 4; AU6 = 0 given explicitly must win.
    let req = GenerateRequest {
        expression: Some(Expression::Happy),
        aus: aus(&[("AU6", 0.0)]),
        ..GenerateRequest::new("a photo of a man")
    };
    let (v, _) = p.au_conditioning(&req, 1, false).unwrap();
    assert_eq!(v.unwrap(), AuVector::parse(FINEFACE, "AU12=4").unwrap());
}

#[test]
fn au_range_scales_requests_before_the_encoder() {
    // Labels that reach 2.0 on AU12 and 1.5 on AU6: a request of 5 means 2.0, of 3 means 0.9.
    let range: BTreeMap<String, f64> = [("AU12".to_string(), 2.0), ("AU6".to_string(), 1.5)].into();
    let p = with_adapter_config(AuAdapterConfig {
        au_range: Some(range),
        ..AuAdapterConfig::fineface()
    });
    let req = GenerateRequest {
        expression: Some(Expression::Happy), // AU6=3, AU12=4
        aus: aus(&[("AU12", 5.0), ("AU26", 2.0)]),
        ..GenerateRequest::new("a photo of a man")
    };
    let (v, ctx) = p.au_conditioning(&req, 1, true).unwrap();
    // The request keeps the FACS scale (it is what the sidecar records)...
    assert_eq!(
        v.unwrap(),
        AuVector::parse(FINEFACE, "AU6=3,AU12=5,AU26=2").unwrap()
    );
    // ...and the encoder sees 3 · 1.5/5 = 0.9, 5 · 2/5 = 2, AU26 (no range) unchanged.
    let model = AuVector::parse(FINEFACE, "AU6=0.9,AU12=2,AU26=2").unwrap();
    let (_, got) = host(ctx.unwrap().tokens);
    let raw = &got[16..28];
    for (g, w) in raw.iter().zip(model.values()) {
        assert!((g - w).abs() < 1e-6, "{raw:?} vs {:?}", model.values());
    }
}

#[test]
fn au_scale_and_guidance_layout() {
    let p = with_adapter();
    let req = GenerateRequest {
        au_scale: Some(2.5),
        aus: aus(&[("AU1", 5.0)]),
        ..GenerateRequest::new("x")
    };
    let (_, ctx) = p.au_conditioning(&req, 3, false).unwrap();
    let ctx = ctx.unwrap();
    assert_eq!(ctx.scale, 2.5);
    assert_eq!(ctx.tokens.dims(), [3, 1, 16]);
}

#[test]
fn invalid_units_are_refused_by_name() {
    let p = with_adapter();
    let req = GenerateRequest {
        aus: aus(&[("AU7", 1.0)]),
        ..GenerateRequest::new("x")
    };
    let err = p.au_conditioning(&req, 1, true).unwrap_err();
    assert!(
        matches!(err, Error::InvalidRequest { ref field, .. } if field == "aus.AU7"),
        "{err}"
    );
}

#[test]
fn aus_without_an_adapter_are_refused() {
    let src = DirSource::new(fixture("sd1-tiny")).unwrap();
    let p = Pipeline::from_source(&src, &Device::flex()).unwrap();
    let req = GenerateRequest {
        aus: aus(&[("AU12", 1.0)]),
        ..GenerateRequest::new("x")
    };
    let err = p.generate(&req).unwrap_err();
    assert!(
        matches!(err, Error::InvalidRequest { ref field, .. } if field == "aus"),
        "{err}"
    );
    // An expression alone still works (text only) on a model without an adapter.
    let req = GenerateRequest {
        expression: Some(Expression::Sad),
        steps: 2,
        ..GenerateRequest::new("a woman")
    };
    let out = p.generate(&req).unwrap();
    assert_eq!(out.prompt, "a woman, sad facial expression");
    assert!(out.aus.is_none());
}

/// `generate_batch` runs requests with different prompts, negative prompts, AUs and seeds in
/// one UNet batch; every image matches its request run alone.
#[test]
fn a_batch_of_different_requests_equals_each_request_alone() {
    let p = with_adapter();
    let a = GenerateRequest {
        expression: Some(Expression::Happy),
        seed: 3,
        num_images: 2,
        steps: 4,
        ..GenerateRequest::new("a photo of a man")
    };
    let b = GenerateRequest {
        aus: aus(&[("AU26", 4.0)]),
        negative_prompt: Some("blurry".into()),
        seed: 11,
        steps: 4,
        ..GenerateRequest::new("a surprised child")
    };
    let batch = p
        .generate_batch(&[a.clone(), b.clone()], &GenerateOptions::default(), |_| {})
        .unwrap();
    assert_eq!(batch.len(), 2);
    for (req, out) in [&a, &b].into_iter().zip(&batch) {
        let alone = p.generate(req).unwrap();
        assert_eq!(out.seeds, alone.seeds);
        assert_eq!(out.prompt, alone.prompt);
        assert_eq!(out.aus, alone.aus);
        assert_eq!(out.images.len(), req.num_images);
        for (x, y) in out.images_f32.iter().zip(&alone.images_f32) {
            let diff = x
                .iter()
                .zip(y)
                .map(|(u, v)| (u - v).abs())
                .fold(0.0, f32::max);
            assert!(diff <= 1e-4, "batched image differs by {diff}");
        }
    }
    // Settings one UNet batch must share are checked, naming the field.
    let c = GenerateRequest { steps: 5, ..b };
    let err = p
        .generate_batch(&[a, c], &GenerateOptions::default(), |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("steps"), "{err}");
}
