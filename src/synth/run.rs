//! `synfer synth`: generate a plan's items in batches, label them, write them atomically, and
//! resume or shard without losing or duplicating anything.
//!
//! Items are grouped into fixed blocks of `plan.batch` consecutive indices; a block is one UNet
//! batch and the unit of sharding (shard `I/N` takes blocks `b` with `b mod N = I`). Every block
//! is always generated with the same members, so an image's bytes do not depend on sharding or
//! on where a run was interrupted. An item is finished when its record is in `manifest.jsonl`;
//! the record is appended only after the image was renamed into place, so a kill loses at most
//! the block in flight, and a resumed block rewrites the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fingerprint::Fingerprint;
use super::lock::FolderLock;
use super::manifest::{Record, append_manifest, read_manifest, record};
use super::plan::{Item, MAX_ITEMS, OutputFormat, Plan};
use super::webdataset::{STAGING, Tars, merge_tars};
use crate::error::{Error, Result};
use crate::face::analyzer::FaceAnalyzer;
use crate::files::write_atomic;
use crate::guidance::semantic::SemanticGuider;
use crate::label::{Analysis, Voter, check_judges, decide};
use crate::layout::LayoutFaces;
use crate::pipeline::{GenerateOptions, Pipeline};

/// Which part of the plan a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based index.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Shard {
    /// The whole plan.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `I/N` (0 ≤ I < N).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || Error::request("shard", format!("{text:?}: expected I/N with 0 ≤ I < N"));
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count || count > MAX_ITEMS {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether block `b` belongs to this shard.
    pub fn owns(self, block: usize) -> bool {
        block % self.count == self.index
    }
}

/// `shard.json`: what an output folder holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// The plan.
    pub plan: Plan,
    /// The shard.
    pub shard: Shard,
    /// Items of this shard.
    pub items: usize,
    /// What else decides the images (absent in folders of synfer versions before it).
    #[serde(default)]
    pub fingerprint: Option<Fingerprint>,
}

/// Progress of a run.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Items finished (including those of earlier runs).
    pub done: usize,
    /// Items of this shard.
    pub total: usize,
    /// Items finished by this process.
    pub this_run: usize,
}

/// Opens (or, with `resume`, reopens) `out` for `info`; the caller holds the folder's lock.
fn open_output(out: &Path, info: &ShardInfo, resume: bool) -> Result<()> {
    let info_path = out.join("shard.json");
    if info_path.exists() {
        if !resume {
            return Err(Error::request(
                "out",
                format!(
                    "{} already holds a synthesis run; pass --resume to continue it",
                    out.display()
                ),
            ));
        }
        let old = read_info(out)?;
        if (&old.plan, old.shard, old.items) != (&info.plan, info.shard, info.items) {
            return Err(Error::request(
                "resume",
                format!(
                    "{} was started with another plan or shard; resume with the same ones",
                    out.display()
                ),
            ));
        }
        let Some(now) = &info.fingerprint else {
            return Ok(());
        };
        let Some(before) = &old.fingerprint else {
            return Err(Error::request(
                "resume",
                format!(
                    "{} was started by a synfer without fingerprints, so what made its images is \
                     unknown; start a new folder",
                    out.display()
                ),
            ));
        };
        let changes = now.changes(before);
        if !changes.is_empty() {
            return Err(Error::request(
                "resume",
                format!(
                    "{} was made by another model or synfer: {}; resume with what started it, \
                     or start a new folder",
                    out.display(),
                    changes.join("; ")
                ),
            ));
        }
        return Ok(());
    }
    let json = serde_json::to_vec_pretty(info).map_err(|e| Error::json("shard.json", e))?;
    write_atomic(&info_path, &json)
}

/// Reads `dir/shard.json`.
fn read_info(dir: &Path) -> Result<ShardInfo> {
    let path = dir.join("shard.json");
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::json(path.display().to_string(), e))
}

/// Runs (or resumes) `shard` of `plan` into `out`; then writes the dataset files
/// ([`super::output::finalize`]).
pub fn run(
    pipe: &Pipeline,
    analyzer: &FaceAnalyzer,
    plan: &Plan,
    out: &Path,
    shard: Shard,
    resume: bool,
    mut progress: impl FnMut(Progress),
) -> Result<Vec<Record>> {
    let items = plan.items();
    let blocks: Vec<&[Item]> = items
        .chunks(plan.batch)
        .enumerate()
        .filter(|(b, _)| shard.owns(*b))
        .map(|(_, c)| c)
        .collect();
    let total: usize = blocks.iter().map(|b| b.len()).sum();
    let block_count = items.len().div_ceil(plan.batch);
    if shard.count > block_count {
        return Err(Error::request(
            "shard",
            format!(
                "{}/{}: the plan has {block_count} blocks of {}, so at most {block_count} shards",
                shard.index, shard.count, plan.batch
            ),
        ));
    }
    // Everything the plan names is loaded and checked before the folder is touched.
    let with_aus = pipe.au_adapter.is_some();
    let request = |it: &Item| {
        let mut r = plan.request(it);
        if !with_aus {
            r.aus = None;
        }
        r
    };
    if let Some(first) = items.chunks(plan.batch).next() {
        pipe.check_batch(&first.iter().map(request).collect::<Vec<_>>())?;
    }
    let voters = Voter::load_all(&plan.label.voters, analyzer.device())?;
    check_judges(&plan.label.judges, &voters)?;
    // A plan with semantic guidance steers with the embedded classifiers.
    let guider = match &plan.semantic_guidance {
        Some(sg) if sg.scale > 0.0 => Some(SemanticGuider::embedded(pipe.device())?),
        _ => None,
    };
    let layout = match &plan.layout {
        Some(l) => Some(LayoutFaces::open(l.source.parse()?, pipe.device())?),
        None => None,
    };
    let _lock = FolderLock::acquire(out)?;
    let info = ShardInfo {
        plan: plan.clone(),
        shard,
        items: total,
        fingerprint: Some(Fingerprint::of(pipe, &voters)),
    };
    open_output(out, &info, resume)?;
    let mut finished: BTreeMap<usize, Record> = read_manifest(out)?
        .into_iter()
        .map(|r| (r.index, r))
        .collect();
    // WebDataset: which tar each item goes to; tars a killed run completed are tidied.
    let owned: BTreeSet<usize> = blocks
        .iter()
        .flat_map(|b| b.iter().map(|it| it.index))
        .collect();
    let tars = (plan.format == OutputFormat::WebDataset)
        .then(|| Tars::new(&items, plan.shard_size, &owned));
    if let Some(tars) = &tars {
        tars.pack_all(out, &finished)?;
    }
    let mut state = Progress {
        done: finished.len(),
        total,
        this_run: 0,
    };
    progress(state);
    for block in blocks {
        if block.iter().all(|it| finished.contains_key(&it.index)) {
            continue;
        }
        let reqs: Vec<_> = block.iter().map(request).collect();
        // The face of item k: the generator's for its seed, or the folder's image k mod n.
        let mut faces = Vec::new();
        let mut described = Vec::new();
        for item in block.iter().filter(|_| layout.is_some()) {
            let source = layout.as_ref().expect("filtered");
            let index = item.index % source.len().max(1);
            let (img, what) = source.face(index, item.seed)?;
            faces.push(img);
            described.push(what);
        }
        let options = GenerateOptions {
            guider: guider.as_ref(),
            images: layout.as_ref().map(|_| faces.as_slice()),
            ..GenerateOptions::default()
        };
        let outs = pipe.generate_batch(&reqs, &options, |_| {})?;
        for (k, (item, generated)) in block.iter().zip(outs).enumerate() {
            if finished.contains_key(&item.index) {
                continue;
            }
            let side = generated.width;
            let rgb = &generated.images[0];
            let analysis = Analysis::of(analyzer, &voters, side, rgb)?;
            let decision = decide(item.expression, &analysis, &plan.label);
            let mut rec = record(item, generated.prompt.clone(), &analysis, &decision);
            rec.layout = described.get(k).cloned();
            if let Some(rel) = &rec.file_name {
                // The PNG carries the request (A1111 `parameters` and the JSON record), with
                // nothing that depends on the machine or the run, so resumed and merged
                // output stays byte-identical. WebDataset images wait in the staging folder
                // for their tar.
                let path = match &tars {
                    Some(_) => out.join(STAGING).join(format!("{}.png", item.id)),
                    None => out.join(rel),
                };
                let image = generated.records(&reqs[k], &pipe.info().source, None, None);
                crate::image::write_encoded(
                    &path,
                    &image[0].png(rgb, &path.display().to_string())?,
                )?;
            }
            if let (Some(tars), Some(_)) = (&tars, &rec.file_name) {
                rec.file_name = Some(tars.file_name(item));
            }
            append_manifest(out, &rec)?;
            finished.insert(item.index, rec);
            if let Some(tars) = &tars {
                tars.pack_item(out, item.index, &finished)?;
            }
            state.done += 1;
            state.this_run += 1;
            progress(state);
        }
    }
    let records = read_manifest(out)?;
    if tars.is_some() {
        // Every staged image is in its tar by now.
        let _ = std::fs::remove_dir(out.join(STAGING));
    }
    super::output::finalize(out, &records, plan.format)?;
    Ok(records)
}

/// Joins complete shard folders into `out`: every shard of one plan present once and
/// finished, images copied, manifests joined in index order, dataset files written.
pub fn merge(inputs: &[PathBuf], out: &Path) -> Result<Vec<Record>> {
    let mut infos = Vec::new();
    for dir in inputs {
        infos.push((dir, read_info(dir)?));
    }
    let Some((_, first)) = infos.first() else {
        return Err(Error::request("merge", "no shard folders given"));
    };
    let (plan, count, fingerprint) = (
        first.plan.clone(),
        first.shard.count,
        first.fingerprint.clone(),
    );
    if count > MAX_ITEMS {
        return Err(Error::request(
            "merge",
            format!(
                "{}: shard count {count} is out of range",
                inputs[0].display()
            ),
        ));
    }
    let mut seen = vec![false; count];
    let mut records = Vec::new();
    let _lock = FolderLock::acquire(out)?;
    for (dir, info) in &infos {
        if info.plan != plan || info.shard.count != count {
            return Err(Error::request(
                "merge",
                format!("{} belongs to another plan or shard count", dir.display()),
            ));
        }
        let changes = match (&info.fingerprint, &fingerprint) {
            (Some(a), Some(b)) => a.changes(b),
            (None, None) => Vec::new(),
            _ => vec!["one of them has no fingerprint".into()],
        };
        if !changes.is_empty() {
            return Err(Error::request(
                "merge",
                format!(
                    "{} was made by another model or synfer than {}: {}",
                    dir.display(),
                    inputs[0].display(),
                    changes.join("; ")
                ),
            ));
        }
        if std::mem::replace(&mut seen[info.shard.index], true) {
            return Err(Error::request(
                "merge",
                format!("shard {}/{count} given twice", info.shard.index),
            ));
        }
        let recs = read_manifest(dir)?;
        if recs.len() != info.items {
            return Err(Error::request(
                "merge",
                format!(
                    "{} has {} of its {} items; finish it with --resume",
                    dir.display(),
                    recs.len(),
                    info.items
                ),
            ));
        }
        for r in recs {
            if let (Some(rel), OutputFormat::Folder) = (&r.file_name, plan.format) {
                let (src, dst) = (dir.join(rel), out.join(rel));
                if let Some(parent) = dst.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                }
                let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
                write_atomic(&dst, &bytes)?;
            }
            records.push(r);
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(Error::request(
            "merge",
            format!("shard {missing}/{count} is missing"),
        ));
    }
    if plan.format == OutputFormat::WebDataset {
        let dirs: Vec<&Path> = infos.iter().map(|(d, _)| d.as_path()).collect();
        merge_tars(&dirs, out)?;
    }
    records.sort_by_key(|r| r.index);
    let info = ShardInfo {
        plan: plan.clone(),
        shard: Shard::ALL,
        items: records.len(),
        fingerprint,
    };
    let json = serde_json::to_vec_pretty(&info).map_err(|e| Error::json("shard.json", e))?;
    write_atomic(&out.join("shard.json"), &json)?;
    super::output::finalize(out, &records, plan.format)?;
    Ok(records)
}
