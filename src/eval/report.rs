//! What `synfer eval` writes and prints: `eval.json`, the contact sheet `grid.png`, the
//! summary table.

use super::{EXPRESSIONS, EvalImages, EvalReport};
use crate::error::{Error, Result};
use crate::label::FACE_THRESHOLD;
use crate::plot::Canvas;

impl EvalReport {
    /// Writes `eval.json` and the grid of `images` (`grid.png`, 8 columns) into `out`.
    #[cfg(not(target_family = "wasm"))]
    pub fn write(&self, images: &EvalImages, out: &std::path::Path) -> Result<()> {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::json("eval.json", e))?;
        crate::files::write_atomic(&out.join("eval.json"), &json)?;
        grid(self, images, 8).save(&out.join("grid.png"))
    }

    /// The report `synfer eval` prints: agreement and face rate per expression, Spearman's ρ
    /// and measured means per AU, semantic guidance with and without.
    pub fn summary(&self, device: &str) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let start = self.start.as_ref().map_or("from noise".to_string(), |s| {
            format!(
                "{:?} from {} at strength {}",
                s.mode,
                s.source.as_deref().unwrap_or("images"),
                s.strength
            )
        });
        let _ = writeln!(
            out,
            "{} on {device}, {start}: FER B agreement {:.1} %, FER A {:.1} % (averages over 7 \
             expressions)",
            self.model,
            self.average_agreement * 100.0,
            self.average_face_api_agreement * 100.0
        );
        let _ = writeln!(
            out,
            "  faces found (BlazeFace score ≥ {FACE_THRESHOLD}): {:.1} %; diversity (mean pairwise \
             RMS difference of same-expression images) {:.3}",
            self.face_rate * 100.0,
            self.average_diversity
        );
        for (name, r) in &self.expressions {
            let _ = writeln!(
                out,
                "  {name:<10} FER B {:5.1} %, FER A {:5.1} %  (faces {:5.1} %, diversity {:.3})",
                r.agreement * 100.0,
                r.face_api_agreement * 100.0,
                r.face_rate * 100.0,
                r.diversity
            );
        }
        for (code, r) in &self.aus {
            let rho = r.spearman.map_or("undefined".into(), |s| format!("{s:.3}"));
            let means: Vec<String> = r.measured_mean.iter().map(|m| format!("{m:.2}")).collect();
            let _ = writeln!(
                out,
                "  {code:<5} Spearman {rho:>9}  measured by level: {}",
                means.join(" ")
            );
        }
        if let Some(r) = &self.reconstruction {
            let _ = writeln!(
                out,
                "  VAE round trip on {} ({} images): PSNR {:.2} dB, sharpness ratio {:.3}",
                r.folder, r.images, r.psnr_db, r.sharpness_ratio
            );
        }
        if let Some(s) = &self.semantic {
            let _ = writeln!(
                out,
                "  semantic guidance λ = {} ({} guides, {} judges): {:.1} % → {:.1} %; a guided \
                 step costs {:.2}× an unguided one",
                s.settings.scale,
                s.settings.classifier.name(),
                s.judge,
                s.average[0] * 100.0,
                s.average[1] * 100.0,
                s.step_cost_ratio
            );
            for (name, [a, b]) in &s.agreement {
                let _ = writeln!(
                    out,
                    "    {name:<10} {:5.1} % → {:5.1} %",
                    a * 100.0,
                    b * 100.0
                );
            }
        }
        if let Some(noise) = &self.from_noise {
            out.push_str("the same from noise:\n");
            out.push_str(&noise.summary(device));
        }
        out
    }
}

/// A contact sheet: one row per expression (first `columns` images, FER B's verdict under each,
/// green when it agrees; with layout initialisation each image follows the face it started
/// from) and one row per probed AU (levels left to right), each labelled.
pub fn grid(report: &EvalReport, images: &EvalImages, columns: usize) -> Canvas {
    let side = images.side.max(1);
    let (label_w, cell_h) = (130, side + 12);
    let level_count = report.config.levels.len();
    let cols = columns.max(level_count).max(1);
    let rows = EXPRESSIONS.len() + report.aus.len();
    let paired = images.layouts.len() == images.expressions.len() && !images.layouts.is_empty();
    // A cell: the output, or the layout face and the output side by side.
    let cell_w = if paired { 2 * side + 2 } else { side };
    let mut c = Canvas::new(label_w + cols * (cell_w + 4), 24 + rows * cell_h);
    c.text(
        4,
        6,
        &format!(
            "FER B AGREEMENT {:.0}%   FACES {:.0}%   AU ROWS: LEVELS {}",
            report.average_agreement * 100.0,
            report.face_rate * 100.0,
            report
                .config
                .levels
                .iter()
                .map(|l| format!("{l}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        1,
        [0, 0, 0],
    );
    for (r, e) in EXPRESSIONS.iter().enumerate() {
        let y = 24 + r * cell_h;
        let agreement = report
            .expressions
            .get(e.name())
            .map_or(0.0, |x| x.agreement);
        c.text(4, y + side / 2 - 8, &e.name().to_uppercase(), 1, [0, 0, 0]);
        c.text(
            4,
            y + side / 2 + 2,
            &format!("{:.0}%", agreement * 100.0),
            1,
            [0, 0, 0],
        );
        let row = images
            .expressions
            .iter()
            .enumerate()
            .filter(|(_, (x, _, _))| x == e)
            .take(cols);
        for (k, (i, (_, verdict, rgb))) in row.enumerate() {
            let mut x = label_w + k * (cell_w + 4);
            if paired {
                c.blit(x, y, side, side, &images.layouts[i]);
                x += side + 2;
            }
            c.blit(x, y, side, side, rgb);
            let colour = if verdict == e.name() {
                [0, 130, 0]
            } else {
                [180, 0, 0]
            };
            c.text(
                x,
                y + side + 2,
                &verdict[..verdict.len().min(5)].to_uppercase(),
                1,
                colour,
            );
        }
    }
    for (r, (code, result)) in report.aus.iter().enumerate() {
        let y = 24 + (EXPRESSIONS.len() + r) * cell_h;
        c.text(4, y + side / 2 - 8, code, 1, [0, 0, 0]);
        let rho = result
            .spearman
            .map_or("RHO -".to_string(), |s| format!("RHO {s:.2}"));
        c.text(4, y + side / 2 + 2, &rho, 1, [0, 0, 0]);
        let row = images.aus.iter().filter(|(a, _, _)| a == code).take(cols);
        for (k, (_, _, rgb)) in row.enumerate() {
            c.blit(label_w + k * (cell_w + 4), y, side, side, rgb);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::eval::EvalConfig;
    use crate::expression::Expression;

    fn report() -> EvalReport {
        EvalReport {
            model: "m".into(),
            config: EvalConfig::default(),
            expressions: BTreeMap::new(),
            average_agreement: 0.0,
            average_face_api_agreement: 0.0,
            face_rate: 0.0,
            aus: BTreeMap::new(),
            average_diversity: 0.0,
            semantic: None,
            start: None,
            from_noise: None,
            reconstruction: None,
            seconds: 0.0,
        }
    }

    #[test]
    fn layout_faces_sit_left_of_their_outputs() {
        let side = 4;
        let happy = |v: u8| {
            (
                Expression::Happy,
                "happy".to_string(),
                vec![v; side * side * 3],
            )
        };
        let mut images = EvalImages {
            expressions: vec![happy(200), happy(210)],
            layouts: Vec::new(),
            aus: Vec::new(),
            side,
        };
        let alone = grid(&report(), &images, 8);
        assert_eq!(alone.width, 130 + 8 * (side + 4));
        images.layouts = vec![vec![50; side * side * 3], vec![60; side * side * 3]];
        let paired = grid(&report(), &images, 8);
        let cell = 2 * side + 2 + 4;
        assert_eq!(paired.width, 130 + 8 * cell);
        // Happy is the second expression row; pixel (x, y) of the row's first line.
        let y = 24 + (side + 12);
        let at = |x: usize| paired.pixels[(y * paired.width + x) * 3];
        assert_eq!(
            [
                at(130),
                at(130 + side + 2),
                at(130 + cell),
                at(130 + cell + side + 2)
            ],
            [50, 200, 60, 210]
        );
    }
}
