//! Training a classifier on decoded images with the shared loop ([`crate::train::run`]):
//! cross-entropy with label smoothing, augmentation, uniform or class-balanced sampling, a
//! fixed share of synthetic images per batch when real and synthetic sets are mixed,
//! checkpoints with exact resume, EMA weights, and `accuracy.jsonl` / `accuracy.png` (training
//! batches and the validation set at every checkpoint) next to the loop's `loss.png`.
//!
//! A model folder is the run folder: after training it holds `fer.json` and
//! `model.safetensors` (the EMA weights when EMA is on), which
//! [`FerClassifier::load_dir`] reads.

use std::cell::RefCell;
use std::collections::BTreeMap;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::augment::Augment;
use super::classifier::{FerClassifier, FerConfig};
use super::metrics::{Confusion, Metrics};
use crate::dataset::LabelledImages;
use crate::error::{Error, Result};
use crate::expression::argmax;
use crate::files::{read_jsonl, to_jsonl, write_atomic};
use crate::plot::Canvas;
use crate::rng::{mix, step_rng};
use crate::train::batches::Batches;
use crate::train::ema::Ema;
use crate::train::params;
use crate::train::run::{
    LoopConfig, LossEntry, RunDir, plot_frame, step_axis_labels, train_with_hook,
};
use crate::train::tensors::{self, Precision};

/// Settings of a classifier training run (saved as `train.json`; also flags of
/// `synfer fer train`, the model's own flags aside).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "native", derive(clap::Args))]
pub struct FerStage {
    /// The model.
    #[cfg_attr(feature = "native", arg(skip = FerConfig::default()))]
    pub model: FerConfig,
    /// Images per step.
    #[cfg_attr(feature = "native", arg(long, default_value_t = 64))]
    pub batch: usize,
    /// Seed of the initial weights, batches and augmentation.
    #[cfg_attr(feature = "native", arg(long, default_value_t = 0))]
    pub seed: u64,
    /// Augmentation.
    #[cfg_attr(feature = "native", command(flatten))]
    pub augment: Augment,
    /// Class-balanced sampling: a class uniformly, then an image of it (instead of images
    /// uniformly).
    #[cfg_attr(feature = "native", arg(long))]
    pub balanced: bool,
    /// Share of synthetic images (from `synfer synth` folders) in every batch when real sets
    /// are mixed in (default: as drawn from the union).
    #[cfg_attr(feature = "native", arg(long))]
    pub synthetic_share: Option<f64>,
    /// Label smoothing ε.
    #[cfg_attr(feature = "native", arg(long, default_value_t = 0.1))]
    pub label_smoothing: f64,
}

impl FerStage {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        self.model.validate("model")?;
        self.augment.validate()?;
        if self.batch == 0 {
            return Err(Error::request("batch", "must be at least 1"));
        }
        if let Some(s) = self.synthetic_share
            && !(0.0..=1.0).contains(&s)
        {
            return Err(Error::request(
                "synthetic_share",
                format!("{s} is not in [0, 1]"),
            ));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(Error::request(
                "label_smoothing",
                format!("{} is not in [0, 1)", self.label_smoothing),
            ));
        }
        Ok(())
    }
}

/// Draws the images of each step from `(seed, step)` alone.
#[derive(Debug, Clone)]
pub struct Sampler {
    /// Pools of image indices with the number each batch takes from them.
    pools: Vec<Pool>,
    seed: u64,
}

#[derive(Debug, Clone)]
struct Pool {
    items: Vec<usize>,
    per_batch: usize,
    /// Items by class (balanced sampling), classes without items left out.
    by_class: Vec<Vec<usize>>,
    order: Batches,
    stream: u64,
}

impl Sampler {
    /// A sampler over `data` for `stage`.
    pub fn new(data: &LabelledImages, stage: &FerStage) -> Result<Self> {
        if data.is_empty() {
            return Err(Error::request("data", "no training images"));
        }
        let (syn, real): (Vec<usize>, Vec<usize>) =
            (0..data.len()).partition(|&i| data.synthetic[i]);
        let groups: Vec<(Vec<usize>, usize)> = match stage.synthetic_share {
            Some(share) if !syn.is_empty() && !real.is_empty() => {
                let n_syn = ((stage.batch as f64 * share).round() as usize).min(stage.batch);
                vec![(syn, n_syn), (real, stage.batch - n_syn)]
            }
            _ => vec![((0..data.len()).collect(), stage.batch)],
        };
        let pools = groups
            .into_iter()
            .enumerate()
            .filter(|(_, (_, per))| *per > 0)
            .map(|(k, (items, per_batch))| {
                let mut by_class = vec![Vec::new(); data.classes.len()];
                for &i in &items {
                    by_class[data.labels[i]].push(i);
                }
                by_class.retain(|c| !c.is_empty());
                let stream = 0xF3 + k as u64;
                Pool {
                    order: Batches::new(items.len(), mix(stage.seed ^ stream)),
                    items,
                    per_batch,
                    by_class,
                    stream,
                }
            })
            .collect();
        Ok(Sampler {
            pools,
            seed: stage.seed,
        })
    }

    /// The image indices of step `step`.
    pub fn batch(&mut self, step: u64, balanced: bool) -> Vec<usize> {
        let mut out = Vec::new();
        for pool in &mut self.pools {
            if balanced {
                let mut rng = step_rng(self.seed, step, pool.stream);
                for _ in 0..pool.per_batch {
                    let class = &pool.by_class[rng.random_range(0..pool.by_class.len())];
                    out.push(class[rng.random_range(0..class.len())]);
                }
            } else {
                let idx = pool.order.batch(step, pool.per_batch);
                out.extend(idx.into_iter().map(|j| pool.items[j]));
            }
        }
        out
    }
}

/// Images `idx` of `data` as model input `[b, c, s, s]` on `device`, augmented with `rng`.
pub(crate) fn batch_input(
    model: &FerClassifier,
    data: &LabelledImages,
    idx: &[usize],
    augment: &Augment,
    rng: &mut StdRng,
    device: &Device,
) -> Tensor<4> {
    let s = data.side;
    let mut values = Vec::with_capacity(idx.len() * s * s * 3);
    for &i in idx {
        values.extend(augment.apply(data.image(i), s, rng));
    }
    let x = Tensor::<4>::from_data(TensorData::new(values, [idx.len(), s, s, 3]), device);
    model.normalise(x)
}

/// Mean cross-entropy of `logits` against `labels` with label smoothing `eps`, and the number
/// of correct argmax predictions.
pub(crate) fn cross_entropy(
    logits: Tensor<2>,
    labels: &[usize],
    eps: f64,
) -> Result<(Tensor<1>, usize)> {
    let [n, k] = logits.dims();
    let device = logits.device();
    let host: Vec<f32> = logits
        .clone()
        .into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| Error::Device(format!("reading logits back: {e:?}")))?;
    let correct = host
        .chunks_exact(k)
        .zip(labels)
        .filter(|(row, l)| argmax(row) == **l)
        .count();
    let off = (eps / k as f64) as f32;
    let on = (1.0 - eps) as f32 + off;
    let mut target = vec![off; n * k];
    for (i, &l) in labels.iter().enumerate() {
        target[i * k + l] = on;
    }
    let target = Tensor::<2>::from_data(TensorData::new(target, [n, k]), &device);
    let loss = (log_softmax(logits, 1) * target).sum().neg() / n as f64;
    Ok((loss, correct))
}

/// Confusion matrix of `model` on `data`, over the classes `classes` (indices into
/// `data.classes`): images of other classes are skipped, and the prediction is the most
/// probable of `classes` (a model without one of them never predicts it).
pub fn evaluate(
    model: &FerClassifier,
    data: &LabelledImages,
    classes: &[usize],
    device: &Device,
) -> Result<Confusion> {
    let names: Vec<String> = classes.iter().map(|&c| data.classes[c].clone()).collect();
    let mut confusion = Confusion::new(names);
    let chosen: Vec<usize> = (0..data.len())
        .filter(|&i| classes.contains(&data.labels[i]))
        .collect();
    // The model output of each evaluated class (data class names are canonical), if it has one.
    let outputs: Vec<Option<usize>> = classes
        .iter()
        .map(|&c| {
            let canonical = crate::expression::canonical_index(&data.classes[c]);
            model.canonical.iter().position(|&m| Some(m) == canonical)
        })
        .collect();
    let k = model.num_classes();
    let mut rng = step_rng(0, 0, 0);
    for chunk in chosen.chunks(64) {
        let x = batch_input(model, data, chunk, &Augment::NONE, &mut rng, device);
        let logits: Vec<f32> = model
            .net
            .forward(x)
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| Error::Device(format!("reading logits back: {e:?}")))?;
        for (row, &i) in logits.chunks_exact(k).zip(chunk) {
            let scores: Vec<f32> = outputs
                .iter()
                .map(|o| o.map_or(f32::NEG_INFINITY, |j| row[j]))
                .collect();
            let truth = classes
                .iter()
                .position(|&c| c == data.labels[i])
                .expect("filtered above");
            confusion.add(truth, argmax(&scores));
        }
    }
    Ok(confusion)
}

/// One line of `accuracy.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccuracyEntry {
    /// Step of the checkpoint.
    pub step: u64,
    /// Accuracy on the (augmented) training batches since the previous checkpoint.
    pub train_accuracy: f64,
    /// Validation accuracy of the evaluated weights (EMA when on).
    pub val_accuracy: Option<f64>,
    /// Validation macro-F1.
    pub val_macro_f1: Option<f64>,
}

fn write_accuracy(run: &RunDir, entries: &[AccuracyEntry]) -> Result<()> {
    let text = to_jsonl(entries, "accuracy.jsonl")?;
    write_atomic(&run.root.join("accuracy.jsonl"), text.as_bytes())?;
    plot_accuracy(entries).save(&run.root.join("accuracy.png"))
}

/// Accuracy curves: training batches (light) and validation (dark), 0–100 %.
pub(crate) fn plot_accuracy(entries: &[AccuracyEntry]) -> Canvas {
    let (mut c, [left, top, pw, ph]) = plot_frame();
    c.text(
        8,
        8,
        "ACCURACY: TRAIN BATCHES (LIGHT), VALIDATION (DARK)",
        1,
        [0, 0, 0],
    );
    c.text(20, top as usize, "100%", 1, [0, 0, 0]);
    c.text(36, (top + ph) as usize - 8, "0%", 1, [0, 0, 0]);
    let last = entries.last().map_or(1, |e| e.step).max(1) as f32;
    step_axis_labels(&mut c, [left, top, pw, ph], last);
    let at = |step: u64, v: f64| (left + pw * step as f32 / last, top + ph * (1.0 - v as f32));
    type Series = (fn(&AccuracyEntry) -> Option<f64>, [u8; 3]);
    let series: [Series; 2] = [
        (|e| Some(e.train_accuracy), [150, 190, 240]),
        (|e| e.val_accuracy, [20, 60, 160]),
    ];
    for (value, colour) in series {
        let mut prev = None;
        for e in entries {
            if let Some(v) = value(e) {
                let p = at(e.step, v);
                c.rect(p.0 as usize - 1, p.1 as usize - 1, 3, 3, colour);
                if let Some(q) = prev {
                    c.line(q, p, colour);
                }
                prev = Some(p);
            }
        }
    }
    c
}

/// What [`train_classifier`] returns.
#[derive(Debug)]
pub struct Trained {
    /// The final weights (EMA when on), on the plain (non-autodiff) device.
    pub model: FerClassifier,
    /// Validation metrics of the final weights, if a validation set was given.
    pub val: Option<Metrics>,
}

/// A classifier with the weights `values` on `device`.
fn with_weights(
    config: &FerConfig,
    values: &BTreeMap<String, crate::tensor::HostTensor>,
    device: &Device,
) -> Result<FerClassifier> {
    params::write(FerClassifier::init(config, 0, device)?, values, "weights")
}

/// Trains (or resumes) a classifier in `run` and writes `fer.json` + `model.safetensors`.
/// `device` must be an autodiff device; `on_step` sees each loss entry.
pub fn train_classifier(
    run: &RunDir,
    train: &LabelledImages,
    val: Option<&LabelledImages>,
    stage: &FerStage,
    cfg: &LoopConfig,
    device: &Device,
    mut on_step: impl FnMut(&LossEntry),
) -> Result<Trained> {
    stage.validate()?;
    if train.side != stage.model.input_size {
        return Err(Error::request(
            "data",
            format!(
                "images are decoded at {} px but the model takes {}",
                train.side, stage.model.input_size
            ),
        ));
    }
    let plain = device.clone().inner();
    let model = FerClassifier::init(&stage.model, stage.seed, device)?;
    let mut sampler = Sampler::new(train, stage)?;
    let saved = run.saved_step()?.unwrap_or(0);
    let mut log: Vec<AccuracyEntry> =
        read_jsonl::<AccuracyEntry>(&run.root.join("accuracy.jsonl"))?
            .into_iter()
            .filter(|e| e.step <= saved)
            .collect();
    let tally = RefCell::new((0usize, 0usize));
    let all_classes: Vec<usize> = (0..train.classes.len()).collect();
    let evaluate_on = |values: &BTreeMap<_, _>| -> Result<Option<Metrics>> {
        match val {
            Some(v) if !v.is_empty() => {
                let m = with_weights(&stage.model, values, &plain)?;
                Ok(Some(evaluate(&m, v, &all_classes, &plain)?.metrics()))
            }
            _ => Ok(None),
        }
    };
    let final_values = |model: &FerClassifier, ema: &Ema| {
        if cfg.ema_decay > 0.0 {
            ema.to_host()
        } else {
            params::read(model)
        }
    };
    let (model, ema) = train_with_hook(
        run,
        model,
        device,
        cfg,
        |model, step| {
            let idx = sampler.batch(step, stage.balanced);
            let mut rng = step_rng(stage.seed, step, 7);
            let x = batch_input(model, train, &idx, &stage.augment, &mut rng, device);
            let labels: Vec<usize> = idx.iter().map(|&i| train.labels[i]).collect();
            let (loss, correct) =
                cross_entropy(model.net.forward(x), &labels, stage.label_smoothing)?;
            let mut t = tally.borrow_mut();
            t.0 += correct;
            t.1 += labels.len();
            Ok(loss)
        },
        &mut on_step,
        |model, ema, step| {
            let (correct, seen) = std::mem::take(&mut *tally.borrow_mut());
            let metrics = evaluate_on(&final_values(model, ema))?;
            log.push(AccuracyEntry {
                step,
                train_accuracy: correct as f64 / seen.max(1) as f64,
                val_accuracy: metrics.as_ref().map(|m| m.accuracy),
                val_macro_f1: metrics.as_ref().map(|m| m.macro_f1),
            });
            write_accuracy(run, &log)
        },
    )?;
    let values = final_values(&model, &ema);
    let config = serde_json::to_vec_pretty(&stage.model).map_err(|e| Error::json("fer.json", e))?;
    tensors::save(&run.root.join("model.safetensors"), &values, Precision::F32)?;
    write_atomic(&run.root.join("fer.json"), &config)?;
    let val = evaluate_on(&values)?;
    Ok(Trained {
        model: with_weights(&stage.model, &values, &plain)?,
        val,
    })
}
