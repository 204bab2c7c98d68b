//! The dataset files of a synthesis folder, rebuilt from its manifest: `manifest.jsonl` (every
//! item, index order), `metadata.jsonl` (kept images, HF `datasets` imagefolder; folder format
//! only), `labels.csv`, `report.json` and `report.png`. Images live in
//! `images/<split>/<label>/<id>.png` (torchvision `ImageFolder` per split), or in WebDataset
//! tars (`<split>-NNNNNN.tar`, [`super::webdataset`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::manifest::Record;
use super::plan::OutputFormat;
use crate::au::FINEFACE;
use crate::dataset::metadata;
use crate::error::{Error, Result};
use crate::expression::CLASSES;
use crate::files::{to_jsonl, write_atomic};
use crate::label::Outcome;
use crate::plot::Canvas;

/// `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Items in the folder.
    pub items: usize,
    /// Images kept.
    pub kept: usize,
    /// Dropped images by reason.
    pub dropped: BTreeMap<String, usize>,
    /// Dropped / items.
    pub drop_rate: f64,
    /// Relabelled images.
    pub relabelled: usize,
    /// Relabelled / images with a face.
    pub relabel_rate: f64,
    /// Requested class histogram (all items).
    pub requested: BTreeMap<String, usize>,
    /// Final class histogram (kept images).
    pub final_labels: BTreeMap<String, usize>,
    /// Per requested class: share of its items whose final label is the requested class.
    pub agreement: BTreeMap<String, f64>,
    /// Per FER classifier (and the ensemble): share of face images whose prediction equals
    /// the request.
    pub classifier_agreement: BTreeMap<String, f64>,
    /// Per AU: mean requested and mean measured intensity over images with a face.
    pub aus: BTreeMap<String, [f64; 2]>,
}

impl Report {
    /// The summary `synfer synth` prints for folder `out`: counts, rates, per-class agreement;
    /// `rate` (images per second of this run) when known.
    pub fn summary(&self, out: &Path, rate: Option<f64>) -> String {
        use std::fmt::Write as _;
        let mut s = format!(
            "{}: {} items, {} kept, relabelled {:.1} % (of images with a face), dropped {:.1} % \
             {:?}\n",
            out.display(),
            self.items,
            self.kept,
            self.relabel_rate * 100.0,
            self.drop_rate * 100.0,
            self.dropped
        );
        if let Some(rate) = rate {
            let _ = writeln!(s, "  {rate:.2} images/s in this run");
        }
        for (class, share) in &self.agreement {
            let _ = writeln!(
                s,
                "  {class:<10} requested → final agreement {:5.1} %",
                share * 100.0
            );
        }
        let tars = std::fs::read_dir(out)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "tar"))
                    .count()
            })
            .unwrap_or(0);
        let data = if tars > 0 {
            format!("{tars} WebDataset tars")
        } else {
            metadata::FILE.to_string()
        };
        let _ = writeln!(s, "  wrote {data}, labels.csv, report.json, report.png");
        s
    }
}

/// Builds the report of `records`.
pub fn report(records: &[Record]) -> Report {
    let classes = || CLASSES.iter().map(|c| (c.to_string(), 0usize));
    let mut requested: BTreeMap<String, usize> = classes().collect();
    let mut final_labels: BTreeMap<String, usize> = classes().collect();
    let mut hits: BTreeMap<String, usize> = classes().collect();
    let mut dropped = BTreeMap::new();
    let (mut kept, mut relabelled, mut faces) = (0, 0, 0);
    let mut classifier: BTreeMap<String, usize> = BTreeMap::new();
    let mut au_sums: BTreeMap<String, [f64; 2]> = FINEFACE
        .codes
        .iter()
        .map(|c| (c.to_string(), [0.0; 2]))
        .collect();
    for r in records {
        *requested.entry(r.requested.clone()).or_default() += 1;
        if r.outcome != Outcome::DroppedNoFace {
            faces += 1;
            for (name, agrees) in &r.agrees {
                *classifier.entry(name.clone()).or_default() += usize::from(*agrees);
            }
            for (code, sums) in au_sums.iter_mut() {
                sums[0] += f64::from(r.requested_aus.get(code).copied().unwrap_or(0.0));
                sums[1] += f64::from(r.measured_aus.get(code).copied().unwrap_or(0.0));
            }
        }
        match &r.label {
            Some(label) => {
                kept += 1;
                *final_labels.entry(label.clone()).or_default() += 1;
                if *label == r.requested {
                    *hits.entry(label.clone()).or_default() += 1;
                }
            }
            None => {
                let reason = serde_json::to_value(r.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                *dropped.entry(reason).or_default() += 1;
            }
        }
        relabelled += usize::from(r.outcome == Outcome::Relabelled);
    }
    let share = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let agreement = requested
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(c, n)| (c.clone(), share(hits[c], *n)))
        .collect();
    Report {
        items: records.len(),
        kept,
        drop_rate: share(records.len() - kept, records.len()),
        dropped,
        relabelled,
        relabel_rate: share(relabelled, faces),
        requested,
        final_labels,
        agreement,
        classifier_agreement: classifier
            .into_iter()
            .map(|(k, n)| (k, share(n, faces)))
            .collect(),
        aus: au_sums
            .into_iter()
            .map(|(k, [a, b])| {
                let n = faces.max(1) as f64;
                (k, [a / n, b / n])
            })
            .collect(),
    }
}

/// Two bar charts: class histogram requested (grey) vs final (blue), AU means requested (grey)
/// vs measured (orange).
pub fn plot(report: &Report) -> Canvas {
    let mut c = Canvas::new(720, 420);
    c.text(
        8,
        6,
        &format!(
            "{} ITEMS  KEPT {}  RELABELLED {:.0}%  DROPPED {:.0}%",
            report.items,
            report.kept,
            report.relabel_rate * 100.0,
            report.drop_rate * 100.0
        ),
        1,
        [0, 0, 0],
    );
    let bars = |c: &mut Canvas,
                top: usize,
                title: &str,
                rows: Vec<(String, f64, f64)>,
                max: f64,
                colour: [u8; 3]| {
        c.text(8, top, title, 1, [0, 0, 0]);
        let (left, height, width) = (8usize, 120usize, 700usize);
        let base = top + 16 + height;
        let slot = width / rows.len().max(1);
        for (i, (name, a, b)) in rows.iter().enumerate() {
            let x = left + i * slot;
            let h = |v: f64| ((v / max.max(1e-9)) * height as f64).round() as usize;
            let (ha, hb) = (h(*a).min(height), h(*b).min(height));
            c.rect(x + 2, base - ha, slot / 2 - 3, ha, [170, 170, 170]);
            c.rect(x + slot / 2, base - hb, slot / 2 - 3, hb, colour);
            c.text(
                x + 2,
                base + 4,
                &name.to_uppercase()[..name.len().min(6)],
                1,
                [0, 0, 0],
            );
        }
    };
    let classes: Vec<(String, f64, f64)> = CLASSES
        .iter()
        .map(|k| {
            (
                k.to_string(),
                report.requested.get(*k).copied().unwrap_or(0) as f64,
                report.final_labels.get(*k).copied().unwrap_or(0) as f64,
            )
        })
        .collect();
    let max = classes.iter().map(|r| r.1.max(r.2)).fold(0.0, f64::max);
    bars(
        &mut c,
        24,
        "CLASSES: REQUESTED (GREY) / FINAL (BLUE)",
        classes,
        max,
        [40, 90, 200],
    );
    let aus: Vec<(String, f64, f64)> = FINEFACE
        .codes
        .iter()
        .map(|k| {
            let [a, b] = report.aus.get(*k).copied().unwrap_or([0.0; 2]);
            (k.to_string(), a, b)
        })
        .collect();
    bars(
        &mut c,
        220,
        "AU MEANS (0-5): REQUESTED (GREY) / MEASURED (ORANGE)",
        aus,
        5.0,
        [230, 130, 30],
    );
    c
}

/// Writes every dataset file of `out` from `records` (any order); `metadata.jsonl` only for
/// the folder format (a WebDataset's records are inside its tars).
pub fn finalize(out: &Path, records: &[Record], format: OutputFormat) -> Result<()> {
    let mut records = records.to_vec();
    records.sort_by_key(|r| r.index);
    write_atomic(
        &out.join("manifest.jsonl"),
        to_jsonl(&records, "manifest.jsonl")?.as_bytes(),
    )?;
    let kept: Vec<&Record> = records.iter().filter(|r| r.file_name.is_some()).collect();
    if format == OutputFormat::Folder {
        let lines: Vec<metadata::Record> = kept.iter().filter_map(|r| r.metadata()).collect();
        write_atomic(
            &out.join(metadata::FILE),
            metadata::to_text(&lines)?.as_bytes(),
        )?;
    }
    let mut csv = String::from("file_name,label,requested,split,outcome,confidence\n");
    for r in &kept {
        let outcome = serde_json::to_value(r.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        csv.push_str(&format!(
            "{},{},{},{},{},{:.4}\n",
            r.file_name.as_deref().unwrap_or(""),
            r.label.as_deref().unwrap_or(""),
            r.requested,
            r.split,
            outcome,
            r.confidence
        ));
    }
    write_atomic(&out.join("labels.csv"), csv.as_bytes())?;
    let rep = report(&records);
    let json = serde_json::to_vec_pretty(&rep).map_err(|e| Error::json("report.json", e))?;
    write_atomic(&out.join("report.json"), &json)?;
    plot(&rep).save(&out.join("report.png"))
}
