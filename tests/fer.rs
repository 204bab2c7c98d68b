//! `synfer::fer`: the dataset layouts (tiny fixtures written in each dataset's documented
//! format by `tools/fer/make_fer_fixtures.py`, with labels taken from the datasets' own
//! documentation), training that drives the loss down, evaluation, stored models (round trip,
//! errors) and a trained model voting in the pseudo-label ensemble.

mod common;

use std::collections::BTreeMap;

use burn::tensor::Device;
use common::fixture;
use synfer::dataset::{LabelledImages, Layout, list};
use synfer::expression::class_names;
use synfer::face::analyzer::FaceAnalyzer;
use synfer::fer::augment::Augment;
use synfer::fer::train::{FerStage, evaluate, train_classifier};
use synfer::fer::{Arch, FerClassifier, FerConfig};
use synfer::image::RgbView;
use synfer::label::{Analysis, Voter};
use synfer::train::adamw::AdamWConfig;
use synfer::train::params;
use synfer::train::run::{LoopConfig, RunDir};
use synfer::train::tensors::{Precision, to_bytes};

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("fer/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Decoded labels and splits of `layout_dir` (every split) against expected.json, and the
/// grey level of each decoded image against its label.
fn check_layout(name: &str, layout: Layout) -> LabelledImages {
    let listing = list(&fixture(&format!("fer/{name}"))).unwrap();
    assert_eq!(listing.layout, layout, "{name}");
    let want = expected()[name].as_array().unwrap().clone();
    assert_eq!(listing.items.len(), want.len(), "{name}: item count");
    let classes = class_names(true);
    // Compared as sorted (label, split) lists: folder walks and files order items differently.
    let mut got: Vec<(String, Option<String>)> = listing
        .items
        .iter()
        .map(|i| (classes[i.label].clone(), i.split.clone()))
        .collect();
    let mut want: Vec<(String, Option<String>)> = want
        .iter()
        .map(|w| {
            (
                w[0].as_str().unwrap().to_string(),
                w[1].as_str().map(String::from),
            )
        })
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{name}");
    let data = LabelledImages::decode(&[listing], None, 8, true).unwrap();
    for i in 0..data.len() {
        let level = 30 * data.labels[i] as i32 + 20;
        let px = data.image(i);
        // The centre pixel of the face (JPEG may move flat values by a level or two).
        let centre = px[(4 * 8 + 4) * 3] as i32;
        assert!(
            (centre - level).abs() <= 3,
            "{name}: {}: {centre} vs {level}",
            data.ids[i]
        );
    }
    data
}

#[test]
fn fer2013_csv() {
    let data = check_layout("fer2013", Layout::Fer2013);
    assert_eq!(data.len(), 4);
}

#[test]
fn rafdb_basic() {
    check_layout("rafdb", Layout::RafDb);
}

#[test]
fn affectnet_csv_crops_the_face_box_and_skips_non_expressions() {
    let data = check_layout("affectnet", Layout::AffectNet);
    // The whole 8×8 output is the face: the white border was cropped away.
    for i in 0..data.len() {
        assert!(data.image(i).iter().all(|&v| v < 250), "{}", data.ids[i]);
    }
    let listing = list(&fixture("fer/affectnet")).unwrap();
    let skipped: BTreeMap<String, usize> = listing.skipped.clone();
    assert_eq!(skipped.get("non-face"), Some(&1));
    assert_eq!(skipped.get("none"), Some(&1));
    // A 7-class decode leaves contempt out and says so.
    let seven = LabelledImages::decode(&[listing], None, 8, false).unwrap();
    assert_eq!(seven.len(), 2);
    assert_eq!(seven.skipped.get("contempt"), Some(&1));
}

#[test]
fn image_folder_with_splits_and_aliases() {
    check_layout("imagefolder", Layout::ImageFolder);
    let listing = list(&fixture("fer/imagefolder")).unwrap();
    let test = LabelledImages::decode(&[listing], Some("test"), 8, false).unwrap();
    assert_eq!(test.len(), 1);
    assert_eq!(test.classes[test.labels[0]], "sad");
}

#[test]
fn synfer_metadata() {
    check_layout("synfer", Layout::Synfer);
    let listing = list(&fixture("fer/synfer")).unwrap();
    assert!(
        listing.synthetic,
        "lines with `requested` come from synfer synth"
    );
    // The train split keeps the train item and the one without a split.
    let train = LabelledImages::decode(&[listing], Some("train"), 8, false).unwrap();
    assert_eq!(train.len(), 2);
}

#[test]
fn pseudo_label_filters() {
    let dir = tempdir("pseudo");
    let line = |file: &str, label: &str, conf: f32, b: &str| {
        let probs = |top: &str| {
            let mut m = serde_json::Map::new();
            for c in class_names(false) {
                m.insert(
                    c.clone(),
                    serde_json::json!(if c == top { 0.9 } else { 0.01 }),
                );
            }
            serde_json::Value::Object(m)
        };
        serde_json::json!({
            "file_name": file, "label": label, "confidence": conf, "requested": label,
            "probs": {"face-api": probs(label), "mini-xception": probs(b), "ensemble": probs(label)},
        })
        .to_string()
    };
    let lines = [
        line("a.png", "happy", 0.9, "happy"),
        line("b.png", "happy", 0.3, "happy"),
        line("c.png", "neutral", 0.8, "sad"),
    ];
    std::fs::write(dir.join("metadata.jsonl"), lines.join("\n")).unwrap();
    let all = list(&dir).unwrap();
    let p: Vec<_> = all.items.iter().map(|i| i.pseudo.unwrap()).collect();
    assert_eq!(
        (p[0].consensus, p[1].consensus, p[2].consensus),
        (true, true, false)
    );
    let mut l = all.clone();
    l.filter_pseudo_labels(0.5, false);
    assert_eq!(
        l.items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["a.png", "c.png"]
    );
    let mut l = all.clone();
    l.filter_pseudo_labels(0.0, true);
    assert_eq!(
        l.items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["a.png", "b.png"]
    );
    assert_eq!(l.skipped.get("no consensus"), Some(&1));
    // Real sets carry no pseudo-labels and are never filtered.
    let mut real = list(&fixture("fer/rafdb")).unwrap();
    real.filter_pseudo_labels(0.99, true);
    assert_eq!(real.items.len(), 4);
}

#[test]
fn malformed_datasets_name_the_file_and_line() {
    let dir = tempdir("bad-datasets");
    std::fs::write(
        dir.join("fer2013.csv"),
        "emotion,pixels,Usage\n9,1 2 3 4,Training\n",
    )
    .unwrap();
    let err = list(&dir.join("fer2013.csv")).unwrap_err().to_string();
    assert!(
        err.contains("fer2013.csv") && err.contains("line 2") && err.contains("0–6"),
        "{err}"
    );
    std::fs::write(dir.join("a.csv"), "expression,valence\n1,0.5\n").unwrap();
    let err = list(&dir.join("a.csv")).unwrap_err().to_string();
    assert!(err.contains("a.csv") && err.contains("image path"), "{err}");
    let folder = dir.join("folder");
    std::fs::create_dir_all(folder.join("grumpy")).unwrap();
    let err = list(&folder).unwrap_err().to_string();
    assert!(
        err.contains("grumpy") && err.contains("unknown class"),
        "{err}"
    );
    let meta = dir.join("meta");
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(meta.join("metadata.jsonl"), "{\"file_name\": \"x.png\"}\n").unwrap();
    let err = list(&meta).unwrap_err().to_string();
    assert!(
        err.contains("metadata.jsonl") && err.contains("line 1"),
        "{err}"
    );
    std::fs::write(
        meta.join("metadata.jsonl"),
        "{\"file_name\": \"x.png\", \"label\": \"happy\"}\n",
    )
    .unwrap();
    let err = LabelledImages::decode(&[list(&meta).unwrap()], None, 8, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("x.png"), "{err}");
}

/// Runs `cmd` and asserts that it succeeded (its stderr in the message otherwise).
fn succeed(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("synfer-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Two classes told apart by where a bright bar is: left half (happy) or right half (neutral).
fn bars(n: usize, side: usize) -> LabelledImages {
    let mut data = LabelledImages {
        side,
        classes: class_names(false),
        ..Default::default()
    };
    for i in 0..n {
        let label = i % 2;
        let mut img = vec![30u8; side * side * 3];
        for y in 0..side {
            for x in 0..side {
                let on = if label == 1 {
                    x < side / 2
                } else {
                    x >= side / 2
                };
                if on && (y + i) % 4 < 2 {
                    img[(y * side + x) * 3..][..3].copy_from_slice(&[220, 200, 180]);
                }
            }
        }
        data.pixels.extend(img);
        data.labels.push(label);
        data.synthetic.push(false);
        data.ids.push(format!("bar{i}"));
    }
    data
}

fn tiny_config(arch: Arch) -> FerConfig {
    FerConfig {
        arch,
        input_size: 16,
        channels: 3,
        width: 4,
        classes: class_names(false),
        standardize: false,
    }
}

#[test]
fn training_drives_the_loss_down_and_learns_a_tiny_set() {
    for arch in [Arch::MiniXception, Arch::Resnet18] {
        let dir = tempdir(&format!("fer-train-{}", arch.name()));
        let run = RunDir::open(&dir).unwrap();
        let data = bars(16, 16);
        let stage = FerStage {
            model: tiny_config(arch),
            batch: 16,
            seed: 1,
            augment: Augment::NONE,
            balanced: false,
            synthetic_share: None,
            label_smoothing: 0.0,
        };
        let cfg = LoopConfig {
            steps: 60,
            lr: 1e-2,
            warmup: 5,
            ema_decay: 0.0,
            checkpoint_every: 30,
            adamw: AdamWConfig::default(),
            cosine: true,
        };
        let device = Device::flex().autodiff();
        let mut losses = Vec::new();
        let trained = train_classifier(&run, &data, Some(&data), &stage, &cfg, &device, |e| {
            losses.push(e.loss)
        })
        .unwrap();
        let first = losses[..5].iter().sum::<f64>() / 5.0;
        let last = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
        println!("{}: loss {first:.3} → {last:.3}", arch.name());
        assert!(last < 0.25 * first, "{}: {first} → {last}", arch.name());
        let m = trained.val.unwrap();
        assert_eq!(m.accuracy, 1.0, "{}", arch.name());
        // The saved folder loads back to the same predictions.
        let reloaded = FerClassifier::load_dir(&dir, &Device::flex()).unwrap();
        let c1 = evaluate(&reloaded, &data, &[0, 1], &Device::flex()).unwrap();
        assert_eq!(c1.matrix, vec![vec![8, 0], vec![0, 8]]);
        for f in ["loss.png", "accuracy.png", "accuracy.jsonl", "fer.json"] {
            assert!(dir.join(f).is_file(), "{f}");
        }
    }
}

#[test]
fn balanced_sampling_and_the_synthetic_share() {
    use synfer::fer::train::Sampler;
    let mut data = bars(40, 16);
    // 36 of class 0 ... make the set imbalanced: relabel all but four as class 0.
    for (i, l) in data.labels.iter_mut().enumerate() {
        *l = usize::from(i < 4);
        data.synthetic[i] = i % 2 == 0;
    }
    let stage = |balanced: bool, share: Option<f64>| FerStage {
        model: tiny_config(Arch::MiniXception),
        batch: 10,
        seed: 3,
        augment: Augment::NONE,
        balanced,
        synthetic_share: share,
        label_smoothing: 0.0,
    };
    let count = |balanced: bool, share: Option<f64>| {
        let mut s = Sampler::new(&data, &stage(balanced, share)).unwrap();
        let (mut ones, mut syn, mut n) = (0, 0, 0);
        for step in 0..400 {
            let batch = s.batch(step, balanced);
            assert_eq!(batch.len(), 10);
            // Deterministic per step.
            assert_eq!(
                batch,
                Sampler::new(&data, &stage(balanced, share))
                    .unwrap()
                    .batch(step, balanced)
            );
            ones += batch.iter().filter(|&&i| data.labels[i] == 1).count();
            syn += batch.iter().filter(|&&i| data.synthetic[i]).count();
            n += batch.len();
        }
        (ones as f64 / n as f64, syn as f64 / n as f64)
    };
    let (uniform, _) = count(false, None);
    assert!((uniform - 0.1).abs() < 0.02, "{uniform}");
    let (balanced, _) = count(true, None);
    assert!((balanced - 0.5).abs() < 0.05, "{balanced}");
    let (_, share) = count(false, Some(0.7));
    assert!((share - 0.7).abs() < 1e-9, "{share}");
}

fn random_model_bytes(config: &FerConfig, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let model = FerClassifier::init(config, seed, &Device::flex()).unwrap();
    let weights = to_bytes(&params::read(&model), Precision::F32, None).unwrap();
    (serde_json::to_vec(config).unwrap(), weights)
}

#[test]
fn stored_models_round_trip_and_bad_files_are_named() {
    let config = tiny_config(Arch::Resnet18);
    let (json, weights) = random_model_bytes(&config, 5);
    let device = Device::flex();
    let a = FerClassifier::from_bytes("m", &json, &weights, &device).unwrap();
    let b = FerClassifier::from_bytes("m", &json, &weights, &device).unwrap();
    let img: Vec<u8> = (0..20 * 20 * 3).map(|i| (i * 13 % 256) as u8).collect();
    let view = RgbView::new(20, 20, &img).unwrap();
    let pa = a.classify(&[view], &device).unwrap();
    assert_eq!(pa, b.classify(&[view], &device).unwrap());
    assert!((pa[0].iter().sum::<f32>() - 1.0).abs() < 1e-5);
    // A different architecture's config: the weights do not fit.
    let other = serde_json::to_vec(&tiny_config(Arch::MiniXception)).unwrap();
    let err = FerClassifier::from_bytes("m", &other, &weights, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("m/model.safetensors"), "{err}");
    let bad = br#"{"arch":"resnet18","input_size":8,"channels":3,"width":4,"classes":["neutral","happy"]}"#;
    let err = FerClassifier::from_bytes("m", bad, &weights, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("m/fer.json") && err.contains("input_size"),
        "{err}"
    );
    let bad = br#"{"arch":"resnet18","input_size":16,"channels":3,"width":4,"classes":["neutral","grumpy"]}"#;
    let err = FerClassifier::from_bytes("m", bad, &weights, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("grumpy"), "{err}");
}

#[test]
fn a_trained_model_votes_in_the_pseudo_label_ensemble() {
    let device = Device::flex();
    let config = tiny_config(Arch::MiniXception);
    let (json, weights) = random_model_bytes(&config, 9);
    let dir = tempdir("voter").join("my-fer");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("fer.json"), &json).unwrap();
    std::fs::write(dir.join("model.safetensors"), &weights).unwrap();
    let voters = Voter::load_all(&[dir.display().to_string()], &device).unwrap();
    assert_eq!(voters[0].name, "my-fer");
    let analyzer = FaceAnalyzer::embedded(&device).unwrap();
    let img: Vec<u8> = (0..64 * 64 * 3).map(|i| (i * 7 % 256) as u8).collect();
    let a = Analysis::of(&analyzer, &voters, 64, &img).unwrap();
    assert_eq!(a.probs.len(), 3);
    let direct = voters[0]
        .model
        .classify(&[RgbView::new(64, 64, &img).unwrap()], &device)
        .unwrap();
    assert_eq!(a.probs["my-fer"].to_vec(), direct[0]);
    let ensemble = a.ensemble();
    for k in 0..7 {
        let mean = a.probs.values().map(|p| p[k]).sum::<f32>() / 3.0;
        assert!((ensemble[k] - mean).abs() < 1e-6);
    }
    // Two voters with one name are refused.
    let twice = [dir.display().to_string(), dir.display().to_string()];
    assert!(Voter::load_all(&twice, &device).is_err());
}

#[test]
fn the_cli_trains_resumes_evaluates_and_predicts() {
    use std::process::Command;
    let dir = tempdir("fer-cli");
    let model = dir.join("model");
    let synfer = env!("CARGO_BIN_EXE_synfer");
    let train = |steps: &str| {
        let mut cmd = Command::new(synfer);
        cmd.args(["fer", "train", "--data"])
            .arg(fixture("fer/imagefolder"))
            .arg(fixture("fer/rafdb"))
            .args(["--split", "all", "--out"])
            .arg(&model)
            .args(["--arch", "resnet18", "--width", "4", "--input-size", "16"])
            .args([
                "--batch",
                "4",
                "--checkpoint-every",
                "2",
                "--device",
                "cpu",
                "--steps",
            ])
            .arg(steps);
        String::from_utf8_lossy(&succeed(&mut cmd).stderr).to_string()
    };
    train("2");
    let log = train("4");
    assert!(log.contains("from 2"), "resumes from the checkpoint: {log}");
    let text = std::fs::read_to_string(model.join("loss.jsonl")).unwrap();
    assert_eq!(
        text.lines().count(),
        4,
        "one loss line per step, none repeated"
    );
    // Other settings into the same folder are refused.
    let out = Command::new(synfer)
        .args(["fer", "train", "--data"])
        .arg(fixture("fer/imagefolder"))
        .args(["--split", "all", "--out"])
        .arg(&model)
        .args(["--arch", "mini-xception", "--device", "cpu", "--steps", "4"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("other settings"));

    let eval = dir.join("eval");
    let mut cmd = Command::new(synfer);
    cmd.args(["fer", "eval", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(fixture("fer/rafdb"))
        .args(["--split", "test", "--device", "cpu", "--out"])
        .arg(&eval);
    succeed(&mut cmd);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval.join("eval.json")).unwrap()).unwrap();
    assert_eq!(report["metrics"]["images"], 2, "RAF-DB's two test images");
    assert!(eval.join("confusion.png").is_file());

    // Real faces labelled by a classifier: only the sure labels count, and balanced accuracy
    // is over the classes with enough of them.
    let labelled = dir.join("labelled");
    std::fs::create_dir_all(labelled.join("images")).unwrap();
    let face = fixture("fer/imagefolder/train/happiness/x.png");
    let mut lines = String::new();
    for (i, (label, confidence)) in [("happy", 0.95), ("happy", 0.5), ("sad", 0.9), ("sad", 0.81)]
        .iter()
        .enumerate()
    {
        std::fs::copy(&face, labelled.join(format!("images/{i}.png"))).unwrap();
        lines.push_str(&format!(
            "{{\"file_name\": \"images/{i}.png\", \"label\": \"{label}\", \"confidence\": {confidence}}}\n"
        ));
    }
    std::fs::write(labelled.join("metadata.jsonl"), lines).unwrap();
    let mut cmd = Command::new(synfer);
    cmd.args(["fer", "eval", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(&labelled)
        .args([
            "--split",
            "all",
            "--device",
            "cpu",
            "--min-label-confidence",
            "0.8",
        ])
        .args(["--min-support", "2", "--out"])
        .arg(&eval);
    succeed(&mut cmd);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval.join("eval.json")).unwrap()).unwrap();
    let m = &report["metrics"];
    assert_eq!(m["images"], 3, "the 0.5 label is left out");
    assert_eq!(m["balanced"]["classes"], serde_json::json!(["sad"]));
    assert_eq!(m["balanced"]["chance"], 1.0);

    let img = fixture("fer/imagefolder/train/happiness/x.png");
    let out = Command::new(synfer)
        .args([
            "fer",
            "predict",
            "--json",
            "--assume-cropped",
            "--device",
            "cpu",
            "--model",
        ])
        .arg(&model)
        .arg(&img)
        .arg(dir.join("missing.png"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let probs = lines[0]["probs"].as_object().unwrap();
    let keys: Vec<&str> = probs.keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 7);
    let total: f64 = probs.values().map(|v| v.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-4);
    let best = probs
        .iter()
        .max_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap()))
        .unwrap()
        .0;
    assert_eq!(lines[0]["label"].as_str(), Some(best.as_str()));
    assert!(lines[1]["error"].as_str().unwrap().contains("missing.png"));
}
