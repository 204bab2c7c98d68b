//! The payoff, measured on real faces: the classifier trained only on synfer-tiny's synthetic
//! images (`models/fer-synfer-tiny`) separates happy from neutral on scikit-image's LFW faces.
//!
//! Labels are the consensus of the ORIGINAL tfjs classifiers (face-api.js and human's
//! mini-Xception, outputs recorded by `tools/face/make_face_assets.js` in
//! `tests/fixtures/face/fer_reference.safetensors`): only faces where both argmaxes agree count.
//! This is a proxy for human labels, not a substitute. The faces go through the same decoding
//! as `synfer fer eval` (`LabelledImages`: triangle-filter resize to the model's input).
//!
//! The target is ≥ 85 % (issue 24); the committed model, trained on synfer-tiny images started
//! from real faces by layout initialisation, reaches 88.4 % (38 of 43 faces; always answering
//! happy gives 55.8 %) — see the README's "FER models on synthetic data".

mod common;

use burn::tensor::Device;
use common::fixture;
use safetensors::SafeTensors;
use synfer::dataset::LabelledImages;
use synfer::expression::argmax;
use synfer::expression::class_names;
use synfer::face::mini_xception::TO_CANONICAL;
use synfer::fer::FerClassifier;
use synfer::fer::train::evaluate;
use synfer::image::square_resize;

const FACES: usize = 100;
const SIDE: usize = 112;

fn floats(st: &SafeTensors, name: &str) -> Vec<f32> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The consensus faces at `side` px with their canonical labels.
fn lfw_consensus(side: usize) -> LabelledImages {
    let bytes = std::fs::read(fixture("face/fer_reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let faces = st.tensor("fer_a.input").unwrap();
    assert_eq!(faces.shape(), [FACES, SIDE, SIDE]);
    let (a, b) = (floats(&st, "fer_a.probs"), floats(&st, "fer_b.probs"));
    let mut data = LabelledImages {
        side,
        classes: class_names(false),
        ..Default::default()
    };
    for i in 0..FACES {
        let label_a = argmax(&a[i * 7..(i + 1) * 7]);
        let native_b = &b[i * 7..(i + 1) * 7];
        let label_b = argmax(&TO_CANONICAL.map(|j| native_b[j]));
        if label_a != label_b {
            continue;
        }
        let grey = &faces.data()[i * SIDE * SIDE..(i + 1) * SIDE * SIDE];
        let rgb: Vec<u8> = grey.iter().flat_map(|&v| [v, v, v]).collect();
        let img = image::RgbImage::from_raw(SIDE as u32, SIDE as u32, rgb).unwrap();
        data.pixels.extend(square_resize(&img, side));
        data.labels.push(label_a);
        data.synthetic.push(false);
        data.ids.push(format!("lfw_{i:03}"));
    }
    data
}

#[test]
fn the_synthetic_only_classifier_separates_happy_from_neutral_on_lfw() {
    let device = Device::flex();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fer-synfer-tiny");
    let model = FerClassifier::load_dir(&dir, &device).unwrap();
    let data = lfw_consensus(model.input_size);
    let counts = data.class_counts();
    println!("consensus faces per class: {counts:?}");
    // neutral, happy are the classes the consensus covers (19 and 24 faces).
    assert!(counts[0] >= 15 && counts[1] >= 15, "{counts:?}");
    let all: Vec<usize> = (0..7).collect();
    let seven = evaluate(&model, &data, &all, &device).unwrap().metrics();
    for (name, m) in &seven.per_class {
        println!("7-way: {name}: n={} accuracy {:?}", m.support, m.accuracy);
    }
    let binary = evaluate(&model, &data, &[0, 1], &device).unwrap();
    let m = binary.metrics();
    println!(
        "happy vs neutral: accuracy {:.3} ({:?}), macro-F1 {:.3}",
        m.accuracy, binary.matrix, m.macro_f1
    );
    assert!(
        m.accuracy >= 0.85,
        "happy vs neutral accuracy {}",
        m.accuracy
    );
}
