//! `synfer fer`: train expression classifiers on synthetic and real sets, evaluate them,
//! predict with them.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use synfer::device::{self, DeviceChoice};
use synfer::face::analyzer::{FaceAnalyzer, FaceCrop, RgbView};
use synfer::fer::augment::Augment;
use synfer::fer::classes::{canonical_index, class_names};
use synfer::fer::dataset::{LabelledImages, Listing, list};
use synfer::fer::metrics::Metrics;
use synfer::fer::train::{FerStage, evaluate, train_classifier};
use synfer::fer::{Arch, FerClassifier, FerConfig};
use synfer::files::write_atomic;
use synfer::train::adamw::AdamWConfig;
use synfer::train::run::{LoopConfig, RunDir};
use synfer::{Error, Result};

#[derive(clap::Subcommand)]
pub enum FerCommand {
    /// Train an expression classifier (ResNet-18 or mini-Xception) on synthetic and/or real
    /// sets; run again with the same arguments to resume.
    Train(Box<TrainArgs>),
    /// Accuracy, per-class accuracy, macro-F1 and confusion matrix of a model on a labelled set
    /// (eval.json + confusion.png).
    Eval(EvalArgs),
    /// Classify the faces in images (JSON Lines with --json).
    Predict(PredictArgs),
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Training sets: synfer output (metadata.jsonl), FER2013 CSV, RAF-DB basic, AffectNet CSV
    /// or ImageFolder (see `synfer::fer::dataset`).
    #[arg(long, required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Model folder (also the run folder: checkpoints, logs, curves); an existing run resumes.
    #[arg(long)]
    out: PathBuf,
    /// Split of the training sets to use where a layout has splits (`all`: every image).
    #[arg(long, default_value = "train")]
    split: String,
    /// Validation sets (evaluated at every checkpoint); default: the items of `--data` that are
    /// in the `--val-split` split, when there are any.
    #[arg(long, num_args = 1..)]
    val: Vec<PathBuf>,
    /// Split of the validation sets.
    #[arg(long, default_value = "val")]
    val_split: String,
    /// Architecture: mini-xception or resnet18.
    #[arg(long, default_value = "mini-xception")]
    arch: Arch,
    /// Base width (default: the original, 8 for mini-Xception and 64 for ResNet-18).
    #[arg(long)]
    width: Option<usize>,
    /// Input side in pixels.
    #[arg(long, default_value_t = 64)]
    input_size: usize,
    /// Grey input (1 channel) instead of RGB.
    #[arg(long)]
    grey: bool,
    /// Standardise each input image (zero mean, unit deviation) instead of scaling to [−1, 1].
    #[arg(long)]
    standardize: bool,
    /// Eight classes (with contempt) instead of seven.
    #[arg(long)]
    contempt: bool,
    /// Optimizer steps.
    #[arg(long, default_value_t = 2000)]
    steps: u64,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Peak learning rate (AdamW; cosine decay after the warm-up).
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 5e-2)]
    weight_decay: f64,
    /// EMA decay of the weights (0: off; the model keeps the EMA weights).
    #[arg(long, default_value_t = 0.995)]
    ema: f64,
    /// Steps between checkpoints (and validation).
    #[arg(long, default_value_t = 200)]
    checkpoint_every: u64,
    /// Seed of the weights, batches and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Class-balanced sampling (a class uniformly, then an image of it).
    #[arg(long)]
    balanced: bool,
    /// Share of synthetic images (from `synfer synth` folders) in every batch when real sets
    /// are mixed in (default: as drawn from the union).
    #[arg(long)]
    synthetic_share: Option<f64>,
    /// Label smoothing.
    #[arg(long, default_value_t = 0.1)]
    label_smoothing: f64,
    /// Leave out synthetic images whose pseudo-label has a lower ensemble probability
    /// (`confidence` in synfer's metadata.jsonl; real sets are not filtered).
    #[arg(long, default_value_t = 0.0)]
    min_confidence: f32,
    /// Leave out synthetic images on which the pseudo-labelling classifiers disagree.
    #[arg(long)]
    consensus: bool,
    /// Augmentation off.
    #[arg(long)]
    no_augment: bool,
    /// Smallest random crop, as a fraction of the side.
    #[arg(long, default_value_t = Augment::default().crop_min)]
    crop_min: f64,
    /// Colour jitter strength (brightness, contrast, saturation).
    #[arg(long, default_value_t = Augment::default().colour)]
    colour: f64,
    /// Probability of a grey image.
    #[arg(long, default_value_t = Augment::default().grey)]
    grey_prob: f64,
    /// Probability of a random lower resolution.
    #[arg(long, default_value_t = Augment::default().low_res)]
    low_res_prob: f64,
    /// Compute device.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Model folder (`fer.json` + `model.safetensors`).
    #[arg(long)]
    model: PathBuf,
    /// Labelled sets (any layout `fer train` reads).
    #[arg(long, required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Split to evaluate where a layout has splits (`all`: every image).
    #[arg(long, default_value = "test")]
    split: String,
    /// Evaluate only these classes (comma-separated; images of others are skipped and the
    /// prediction is the most probable of these).
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    /// Output folder for eval.json and confusion.png (default: MODEL/eval).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
}

#[derive(clap::Args)]
pub struct PredictArgs {
    /// Model folder.
    #[arg(long)]
    model: PathBuf,
    /// Print JSON Lines `{"file", "label", "probs", "bbox"}` (errors as `{"file", "error"}`).
    #[arg(long)]
    json: bool,
    /// Treat each image as one face crop (no detection).
    #[arg(long)]
    assume_cropped: bool,
    /// Compute device.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Image files or directories.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

pub fn run(cmd: FerCommand) -> Result<()> {
    match cmd {
        FerCommand::Train(args) => train(*args),
        FerCommand::Eval(args) => eval(args),
        FerCommand::Predict(args) => predict(args),
    }
}

fn split_choice(s: &str) -> Option<&str> {
    (s != "all").then_some(s)
}

fn listings(paths: &[PathBuf]) -> Result<Vec<Listing>> {
    paths.iter().map(|p| list(p)).collect()
}

fn decode(
    what: &str,
    listings: &[Listing],
    split: &str,
    side: usize,
    contempt: bool,
) -> Result<LabelledImages> {
    let bar = ProgressBar::new_spinner();
    let n: usize = listings.iter().map(|l| l.items.len()).sum();
    bar.set_message(format!("decoding {n} {what} images"));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let data = LabelledImages::decode(listings, split_choice(split), side, contempt)?;
    bar.finish_and_clear();
    let counts: Vec<String> = data
        .classes
        .iter()
        .zip(data.class_counts())
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    let kinds: Vec<String> = listings
        .iter()
        .map(|l| {
            format!(
                "{} ({:?}{})",
                l.root.display(),
                l.layout,
                if l.synthetic { ", synthetic" } else { "" }
            )
        })
        .collect();
    eprintln!(
        "{what}: {} images [{}] from {}; skipped {:?}",
        data.len(),
        counts.join(", "),
        kinds.join(", "),
        data.skipped
    );
    Ok(data)
}

fn print_metrics(title: &str, m: &Metrics) {
    eprintln!(
        "{title}: accuracy {:.2} %, mean class accuracy {:.2} %, macro-F1 {:.3} ({} images)",
        100.0 * m.accuracy,
        100.0 * m.mean_class_accuracy,
        m.macro_f1,
        m.images
    );
    for (name, c) in &m.per_class {
        let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.1}", 100.0 * v));
        eprintln!(
            "  {name:<10} n={:<5} accuracy {:>5} %  precision {:>5} %  F1 {}",
            c.support,
            pct(c.accuracy),
            pct(c.precision),
            c.f1.map_or("-".into(), |v| format!("{v:.3}"))
        );
    }
}

fn train(a: TrainArgs) -> Result<()> {
    if a.checkpoint_every == 0 || a.steps == 0 {
        return Err(Error::request(
            "train",
            "--steps and --checkpoint-every must be at least 1",
        ));
    }
    let model = FerConfig {
        arch: a.arch,
        input_size: a.input_size,
        channels: if a.grey { 1 } else { 3 },
        width: a.width.unwrap_or(a.arch.default_width()),
        classes: class_names(a.contempt),
        standardize: a.standardize,
    };
    let augment = if a.no_augment {
        Augment::NONE
    } else {
        Augment {
            flip: true,
            crop_min: a.crop_min,
            colour: a.colour,
            grey: a.grey_prob,
            low_res: a.low_res_prob,
        }
    };
    let stage = FerStage {
        model,
        batch: a.batch,
        seed: a.seed,
        augment,
        balanced: a.balanced,
        synthetic_share: a.synthetic_share,
        label_smoothing: a.label_smoothing,
    };
    stage.validate()?;
    let cfg = LoopConfig {
        steps: a.steps,
        lr: a.lr,
        warmup: a.warmup.max(1),
        ema_decay: a.ema,
        checkpoint_every: a.checkpoint_every,
        adamw: AdamWConfig {
            weight_decay: a.weight_decay,
            ..AdamWConfig::default()
        },
        cosine: true,
    };
    let run = RunDir::open(&a.out)?;
    check_resume(&run, &stage)?;
    let side = stage.model.input_size;
    let mut train_sets = listings(&a.data)?;
    for l in &mut train_sets {
        l.filter_pseudo_labels(a.min_confidence, a.consensus);
    }
    let train_data = decode("training", &train_sets, &a.split, side, a.contempt)?;
    if train_data.is_empty() {
        return Err(Error::request(
            "data",
            format!("no images in split {:?} of the training sets", a.split),
        ));
    }
    let val_data = if a.val.is_empty() {
        let has_val = train_sets.iter().any(|l| {
            l.items
                .iter()
                .any(|i| i.split.as_deref() == Some(&a.val_split))
        });
        if has_val && split_choice(&a.split).is_some() {
            // Only items that name the split: split-less items (used for training) must not
            // be validated on.
            let val_sets: Vec<Listing> = train_sets
                .iter()
                .map(|l| {
                    let mut l = l.clone();
                    l.items.retain(|i| i.split.as_deref() == Some(&a.val_split));
                    l
                })
                .collect();
            Some(decode(
                "validation",
                &val_sets,
                &a.val_split,
                side,
                a.contempt,
            )?)
        } else {
            None
        }
    } else {
        Some(decode(
            "validation",
            &listings(&a.val)?,
            &a.val_split,
            side,
            a.contempt,
        )?)
    };
    let selected = device::select(a.device)?;
    let record = json!({
        "stage": stage, "loop": cfg, "data": a.data, "split": a.split, "val": a.val,
        "val_split": a.val_split, "min_confidence": a.min_confidence, "consensus": a.consensus,
        "train_images": train_data.len(),
        "train_classes": train_data.classes.iter().zip(train_data.class_counts()).collect::<BTreeMap<_, _>>(),
        "val_images": val_data.as_ref().map(|v| v.len()), "device": selected.description,
    });
    write_atomic(
        &a.out.join("train.json"),
        &serde_json::to_vec_pretty(&record).unwrap_or_default(),
    )?;
    let start = run.saved_step()?.unwrap_or(0);
    eprintln!(
        "fer train: {} {} steps (from {start}) × {} on {}",
        stage.model.arch.name(),
        a.steps,
        a.batch,
        selected.description
    );
    let bar = ProgressBar::new(a.steps);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} step {pos}/{len} [{bar:30}] {elapsed_precise} eta {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_position(start);
    let device = selected.device.clone().autodiff();
    let trained = train_classifier(
        &run,
        &train_data,
        val_data.as_ref(),
        &stage,
        &cfg,
        &device,
        |e| {
            bar.set_position(e.step);
            bar.set_message(format!("loss {:.4} {:.2}s/step", e.loss, e.seconds));
        },
    )?;
    bar.finish();
    if let Some(m) = &trained.val {
        print_metrics("validation", m);
    }
    eprintln!(
        "model: {} (fer.json, model.safetensors); curves: loss.png, accuracy.png",
        a.out.display()
    );
    Ok(())
}

/// An existing run must have been started with the same stage settings (steps may grow).
fn check_resume(run: &RunDir, stage: &FerStage) -> Result<()> {
    let path = run.root.join("train.json");
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(());
    };
    if run.saved_step()?.is_none() {
        return Ok(());
    }
    let old: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::json(path.display().to_string(), e))?;
    let new = serde_json::to_value(stage).map_err(|e| Error::json("stage", e))?;
    if old.get("stage") != Some(&new) {
        return Err(Error::request(
            "out",
            format!(
                "{} holds a run with other settings (train.json `stage`); use a new --out",
                run.root.display()
            ),
        ));
    }
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let selected = device::select(a.device)?;
    let model = FerClassifier::load_dir(&a.model, &selected.device)?;
    let contempt = model.canonical.contains(&7);
    let data = decode(
        "evaluation",
        &listings(&a.data)?,
        &a.split,
        model.input_size,
        contempt,
    )?;
    let classes: Vec<usize> = if a.classes.is_empty() {
        (0..data.classes.len()).collect()
    } else {
        a.classes
            .iter()
            .map(|c| {
                canonical_index(c)
                    .filter(|&i| i < data.classes.len())
                    .ok_or_else(|| Error::request("classes", format!("unknown class {c:?}")))
            })
            .collect::<Result<_>>()?
    };
    let confusion = evaluate(&model, &data, &classes, &selected.device)?;
    if confusion.total() == 0 {
        return Err(Error::request(
            "data",
            format!("no images of the evaluated classes in split {:?}", a.split),
        ));
    }
    let metrics = confusion.metrics();
    print_metrics("evaluation", &metrics);
    let out = a.out.unwrap_or_else(|| a.model.join("eval"));
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let record = json!({
        "model": a.model, "data": a.data, "split": a.split, "metrics": metrics,
    });
    write_atomic(
        &out.join("eval.json"),
        &serde_json::to_vec_pretty(&record).unwrap_or_default(),
    )?;
    confusion
        .plot(&format!(
            "ACCURACY {:.1}%  MACRO-F1 {:.3}  N={}",
            100.0 * metrics.accuracy,
            metrics.macro_f1,
            metrics.images
        ))
        .save(&out.join("confusion.png"))?;
    eprintln!("wrote {}/eval.json and confusion.png", out.display());
    Ok(())
}

fn read_rgb(path: &Path) -> Result<image::RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(image::load_from_memory(&bytes)
        .map_err(|e| Error::Image {
            file: path.display().to_string(),
            message: e.to_string(),
        })?
        .to_rgb8())
}

/// The first face of `path` and the model's probabilities for it (`None`: no face).
fn predict_file(
    model: &FerClassifier,
    analyzer: Option<&FaceAnalyzer>,
    path: &Path,
    device: &burn::tensor::Device,
) -> Result<Option<(FaceCrop, Vec<f32>)>> {
    let img = read_rgb(path)?;
    let view = RgbView::new(img.width() as usize, img.height() as usize, img.as_raw())?;
    let face = match analyzer {
        Some(a) => match a.detect(view)?.into_iter().next() {
            Some(f) => f,
            None => return Ok(None),
        },
        None => FaceCrop::whole(view),
    };
    let probs = model.classify_crops(&[(view, face.crop)], device)?;
    Ok(probs.into_iter().next().map(|p| (face, p)))
}

/// One `fer predict --json` line, fields in this order.
#[derive(serde::Serialize)]
struct Prediction<'a> {
    file: &'a str,
    label: &'a str,
    probs: OrderedProbs<'a>,
    bbox: [f32; 4],
}

/// Class → probability, in the model's class order.
struct OrderedProbs<'a>(&'a [&'a str], &'a [f32]);

impl serde::Serialize for OrderedProbs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, p) in self.0.iter().zip(self.1) {
            map.serialize_entry(name, p)?;
        }
        map.end()
    }
}

fn predict(a: PredictArgs) -> Result<()> {
    let selected = device::select(a.device)?;
    let model = FerClassifier::load_dir(&a.model, &selected.device)?;
    let analyzer = if a.assume_cropped {
        None
    } else {
        Some(FaceAnalyzer::embedded(&selected.device)?)
    };
    let names: Vec<&str> = model
        .canonical
        .iter()
        .map(|&c| synfer::fer::classes::CANONICAL[c])
        .collect();
    let files = super::collect_files(&a.paths);
    if files.is_empty() {
        return Err(Error::request("paths", "no image files found"));
    }
    let mut stdout = std::io::stdout().lock();
    if !a.json {
        let _ = writeln!(stdout, "file\tlabel\tconfidence\tbbox(x,y,w,h)");
    }
    let mut ok = 0usize;
    for path in &files {
        let file = path.display().to_string();
        match predict_file(&model, analyzer.as_ref(), path, &selected.device) {
            Ok(Some((face, probs))) => {
                ok += 1;
                let best = synfer::face::argmax(&probs);
                if a.json {
                    let line = Prediction {
                        file: &file,
                        label: names[best],
                        probs: OrderedProbs(&names, &probs),
                        bbox: face.bbox,
                    };
                    let _ = writeln!(
                        stdout,
                        "{}",
                        serde_json::to_string(&line).expect("serialisable")
                    );
                } else {
                    let [x, y, w, h] = face.bbox;
                    let _ = writeln!(
                        stdout,
                        "{file}\t{}\t{:.3}\t{x:.0},{y:.0},{w:.0},{h:.0}",
                        names[best], probs[best]
                    );
                }
            }
            Ok(None) => {
                ok += 1;
                if a.json {
                    let _ = writeln!(
                        stdout,
                        "{}",
                        json!({"file": file, "error": "no face found"})
                    );
                } else {
                    let _ = writeln!(stdout, "{file}\t-\t-\tno face");
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                if a.json {
                    let _ = writeln!(stdout, "{}", json!({"file": file, "error": e.to_string()}));
                }
            }
        }
    }
    if ok == 0 {
        return Err(Error::request("paths", "no file could be read"));
    }
    Ok(())
}
