//! Class histogram and AU distributions of a dataset: JSON and a PNG plot.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::au::FINEFACE;
use crate::dataset::metadata::Record;
use crate::expression::CLASSES;
use crate::plot::Canvas;

/// Summary of a dataset.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Records.
    pub images: usize,
    /// Images per expression class (canonical order).
    pub classes: BTreeMap<String, usize>,
    /// Images per source.
    pub sources: BTreeMap<String, usize>,
    /// Warped images.
    pub warped: usize,
    /// Per AU: mean, share ≥ 1, and counts in bins `[0,1)`, `[1,2)`, …, `[4,5]`.
    pub aus: BTreeMap<String, AuStats>,
}

/// Distribution of one AU.
#[derive(Debug, Clone, Serialize)]
pub struct AuStats {
    /// Mean intensity.
    pub mean: f32,
    /// Share of images with intensity ≥ 1.
    pub active: f32,
    /// Counts per unit bin.
    pub bins: [usize; 5],
}

/// Computes the summary.
pub fn compute(records: &[Record]) -> Stats {
    let mut classes: BTreeMap<String, usize> = CLASSES.iter().map(|c| (c.to_string(), 0)).collect();
    let mut sources = BTreeMap::new();
    let mut warped = 0;
    let mut sums = vec![0.0f64; FINEFACE.codes.len()];
    let mut bins = vec![[0usize; 5]; FINEFACE.codes.len()];
    for r in records {
        *classes.entry(r.label.clone()).or_default() += 1;
        *sources.entry(r.source.clone()).or_default() += 1;
        if r.provenance.get("warp").is_some_and(|w| w != "none") {
            warped += 1;
        }
        for (k, code) in FINEFACE.codes.iter().enumerate() {
            let v = r.aus.get(*code).copied().unwrap_or(0.0);
            sums[k] += f64::from(v);
            bins[k][(v.floor().max(0.0) as usize).min(4)] += 1;
        }
    }
    let n = records.len().max(1) as f64;
    let aus = FINEFACE
        .codes
        .iter()
        .enumerate()
        .map(|(k, code)| {
            let active = bins[k][1..].iter().sum::<usize>() as f64 / n;
            (
                code.to_string(),
                AuStats {
                    mean: (sums[k] / n) as f32,
                    active: active as f32,
                    bins: bins[k],
                },
            )
        })
        .collect();
    Stats {
        images: records.len(),
        classes,
        sources,
        warped,
        aus,
    }
}

/// A PNG plot: class histogram on top, one small AU histogram per unit below.
pub fn plot(stats: &Stats) -> Canvas {
    let mut c = Canvas::new(720, 560);
    c.text(
        12,
        10,
        &format!("{} IMAGES, {} WARPED", stats.images, stats.warped),
        2,
        [0, 0, 0],
    );
    // Class bars.
    let max = stats.classes.values().copied().max().unwrap_or(1).max(1);
    let (x0, y0, h) = (20usize, 50usize, 170usize);
    for (k, class) in CLASSES.iter().enumerate() {
        let v = stats.classes.get(*class).copied().unwrap_or(0);
        let bh = v * h / max;
        let x = x0 + k * 98;
        c.rect(x, y0 + h - bh, 70, bh, [70, 110, 190]);
        c.text(x, y0 + h + 6, &class.to_uppercase(), 1, [0, 0, 0]);
        c.text(x, y0 + h - bh - 12, &v.to_string(), 1, [0, 0, 0]);
    }
    // AU histograms: 6 × 2 grid.
    for (k, code) in FINEFACE.codes.iter().enumerate() {
        let s = &stats.aus[*code];
        let gx = 20 + (k % 6) * 116;
        let gy = 270 + (k / 6) * 140;
        let bmax = s.bins.iter().copied().max().unwrap_or(1).max(1);
        c.text(gx, gy, &format!("{code} {:.2}", s.mean), 1, [0, 0, 0]);
        for (b, &count) in s.bins.iter().enumerate() {
            let bh = count * 90 / bmax;
            c.rect(gx + b * 19, gy + 14 + 90 - bh, 16, bh, [200, 120, 60]);
        }
        c.text(gx, gy + 110, "0  1  2  3  4", 1, [90, 90, 90]);
    }
    c
}

/// Writes `stats.json` and `stats.png` into dataset folder `dir`.
#[cfg(not(target_family = "wasm"))]
pub fn write(stats: &Stats, dir: &std::path::Path) -> crate::Result<()> {
    let json = serde_json::to_vec_pretty(stats).map_err(|e| crate::Error::json("stats.json", e))?;
    crate::files::write_atomic(&dir.join("stats.json"), &json)?;
    plot(stats).save(&dir.join("stats.png"))
}
