//! Classification metrics from a confusion matrix: accuracy, per-class accuracy (recall),
//! precision, F1, macro-F1 over the classes present, and the matrix as JSON and PNG.

use serde::Serialize;

use crate::plot::Canvas;

/// Rows: true class; columns: predicted class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Confusion {
    /// Class names.
    pub classes: Vec<String>,
    /// `matrix[true][predicted]` counts.
    pub matrix: Vec<Vec<usize>>,
}

/// One class's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassMetrics {
    /// Images of this class.
    pub support: usize,
    /// Recall (the per-class accuracy); `None` without support.
    pub accuracy: Option<f64>,
    /// Precision; `None` when never predicted.
    pub precision: Option<f64>,
    /// F1 (0 when precision or recall is 0 or undefined); `None` without support.
    pub f1: Option<f64>,
}

/// Everything `synfer fer eval` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// Images evaluated.
    pub images: usize,
    /// Share classified correctly.
    pub accuracy: f64,
    /// Mean of the per-class accuracies over classes with support.
    pub mean_class_accuracy: f64,
    /// Mean F1 over classes with support.
    pub macro_f1: f64,
    /// Per class, in class order.
    pub per_class: Vec<(String, ClassMetrics)>,
    /// The confusion matrix.
    pub confusion: Confusion,
    /// Balanced accuracy over the classes with enough images, when asked for
    /// ([`Metrics::with_balanced`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balanced: Option<Balanced>,
}

/// Balanced accuracy (mean recall) over the classes with at least `min_support` images.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Balanced {
    /// The support threshold.
    pub min_support: usize,
    /// The classes that reach it.
    pub classes: Vec<String>,
    /// Mean recall over them (0 when none does).
    pub accuracy: f64,
    /// Chance for that many classes (1 / classes).
    pub chance: f64,
}

impl Metrics {
    /// These metrics with [`Metrics::balanced`] over the classes of at least `min_support`
    /// images.
    pub fn with_balanced(mut self, min_support: usize) -> Self {
        let kept: Vec<(String, f64)> = self
            .per_class
            .iter()
            .filter(|(_, c)| c.support >= min_support.max(1))
            .filter_map(|(name, c)| c.accuracy.map(|a| (name.clone(), a)))
            .collect();
        let n = kept.len();
        self.balanced = Some(Balanced {
            min_support,
            accuracy: if n == 0 {
                0.0
            } else {
                kept.iter().map(|(_, a)| a).sum::<f64>() / n as f64
            },
            chance: if n == 0 { 0.0 } else { 1.0 / n as f64 },
            classes: kept.into_iter().map(|(name, _)| name).collect(),
        });
        self
    }

    /// The report `synfer fer` prints: the headline numbers under `title`, then a line per
    /// class (support, accuracy, precision, F1).
    pub fn report(&self, title: &str) -> String {
        let mut out = format!(
            "{title}: accuracy {:.2} %, mean class accuracy {:.2} %, macro-F1 {:.3} ({} images)\n",
            100.0 * self.accuracy,
            100.0 * self.mean_class_accuracy,
            self.macro_f1,
            self.images
        );
        if let Some(b) = &self.balanced {
            out.push_str(&format!(
                "  balanced accuracy over the {} classes with ≥ {} images ({}): {:.2} % (chance \
                 {:.2} %, ×{:.2})\n",
                b.classes.len(),
                b.min_support,
                b.classes.join(", "),
                100.0 * b.accuracy,
                100.0 * b.chance,
                if b.chance > 0.0 {
                    b.accuracy / b.chance
                } else {
                    0.0
                }
            ));
        }
        let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.1}", 100.0 * v));
        for (name, c) in &self.per_class {
            out.push_str(&format!(
                "  {name:<10} n={:<5} accuracy {:>5} %  precision {:>5} %  F1 {}\n",
                c.support,
                pct(c.accuracy),
                pct(c.precision),
                c.f1.map_or("-".into(), |v| format!("{v:.3}"))
            ));
        }
        out
    }
}

impl Confusion {
    /// An empty matrix over `classes`.
    pub fn new(classes: Vec<String>) -> Self {
        let k = classes.len();
        Confusion {
            classes,
            matrix: vec![vec![0; k]; k],
        }
    }

    /// Counts one prediction.
    pub fn add(&mut self, truth: usize, predicted: usize) {
        self.matrix[truth][predicted] += 1;
    }

    /// The matrix of `(truth, predicted)` pairs.
    pub fn from_pairs(
        classes: Vec<String>,
        pairs: impl IntoIterator<Item = (usize, usize)>,
    ) -> Self {
        let mut c = Self::new(classes);
        for (t, p) in pairs {
            c.add(t, p);
        }
        c
    }

    /// Images counted.
    pub fn total(&self) -> usize {
        self.matrix.iter().flatten().sum()
    }

    /// The metrics of this matrix.
    pub fn metrics(&self) -> Metrics {
        let k = self.classes.len();
        let total = self.total();
        let correct: usize = (0..k).map(|i| self.matrix[i][i]).sum();
        let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
        let per_class: Vec<(String, ClassMetrics)> = (0..k)
            .map(|i| {
                let support: usize = self.matrix[i].iter().sum();
                let predicted: usize = (0..k).map(|t| self.matrix[t][i]).sum();
                let tp = self.matrix[i][i];
                let recall = ratio(tp, support);
                let precision = ratio(tp, predicted);
                let f1 = recall.map(|r| match precision {
                    Some(p) if p + r > 0.0 => 2.0 * p * r / (p + r),
                    _ => 0.0,
                });
                (
                    self.classes[i].clone(),
                    ClassMetrics {
                        support,
                        accuracy: recall,
                        precision,
                        f1,
                    },
                )
            })
            .collect();
        let mean = |f: fn(&ClassMetrics) -> Option<f64>| {
            let v: Vec<f64> = per_class.iter().filter_map(|(_, m)| f(m)).collect();
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        Metrics {
            images: total,
            accuracy: ratio(correct, total).unwrap_or(0.0),
            mean_class_accuracy: mean(|m| m.accuracy),
            macro_f1: mean(|m| m.f1),
            per_class,
            confusion: self.clone(),
            balanced: None,
        }
    }

    /// Draws the matrix, row-normalised (shade) with counts, true classes down, predicted across.
    pub fn plot(&self, title: &str) -> Canvas {
        let k = self.classes.len();
        let cell = 56usize;
        let (left, top) = (120usize, 60usize);
        let mut c = Canvas::new(left + k * cell + 20, top + k * cell + 50);
        c.text(8, 8, title, 1, [0, 0, 0]);
        c.text(left, top - 30, "PREDICTED", 1, [0, 0, 0]);
        c.text(8, top - 14, "TRUE", 1, [0, 0, 0]);
        for (i, name) in self.classes.iter().enumerate() {
            let short: String = name.chars().take(8).collect();
            c.text(8, top + i * cell + cell / 2 - 3, &short, 1, [0, 0, 0]);
            let short: String = name.chars().take(4).collect();
            c.text(left + i * cell + 4, top - 14, &short, 1, [0, 0, 0]);
        }
        for (t, row) in self.matrix.iter().enumerate() {
            let support: usize = row.iter().sum();
            for (p, &n) in row.iter().enumerate() {
                let share = if support > 0 {
                    n as f64 / support as f64
                } else {
                    0.0
                };
                let v = (255.0 * (1.0 - share)) as u8;
                let colour = if t == p { [v, 255, v] } else { [255, v, v] };
                let (x, y) = (left + p * cell, top + t * cell);
                c.rect(x, y, cell - 2, cell - 2, colour);
                c.text(x + 6, y + cell / 2 - 4, &n.to_string(), 1, [0, 0, 0]);
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_a_hand_computed_matrix() {
        // truth \ predicted: a b c
        //   a: 5 1 0   (support 6)
        //   b: 2 3 1   (support 6)
        //   c: 0 0 0   (no support)
        let names = vec!["a".to_string(), "b".into(), "c".into()];
        let mut c = Confusion::new(names);
        c.matrix = vec![vec![5, 1, 0], vec![2, 3, 1], vec![0, 0, 0]];
        let m = c.metrics();
        assert_eq!(m.images, 12);
        assert!((m.accuracy - 8.0 / 12.0).abs() < 1e-12);
        let a = &m.per_class[0].1;
        // a: recall 5/6, precision 5/7, F1 = 2·(5/7)(5/6)/((5/7)+(5/6)) = 10/13.
        assert!((a.accuracy.unwrap() - 5.0 / 6.0).abs() < 1e-12);
        assert!((a.precision.unwrap() - 5.0 / 7.0).abs() < 1e-12);
        assert!((a.f1.unwrap() - 10.0 / 13.0).abs() < 1e-12);
        // b: recall 3/6, precision 3/4, F1 = 2·(3/4)(1/2)/(5/4) = 3/5.
        let b = &m.per_class[1].1;
        assert!((b.f1.unwrap() - 0.6).abs() < 1e-12);
        // c: never true (no F1), predicted once (precision 0).
        let cc = &m.per_class[2].1;
        assert_eq!((cc.support, cc.accuracy, cc.f1), (0, None, None));
        assert_eq!(cc.precision, Some(0.0));
        assert!((m.macro_f1 - (10.0 / 13.0 + 0.6) / 2.0).abs() < 1e-12);
        assert!((m.mean_class_accuracy - (5.0 / 6.0 + 0.5) / 2.0).abs() < 1e-12);
        let png = c.plot("TEST");
        assert!(png.width > 0);
        // Balanced over classes with ≥ 6 images: a and b, (5/6 + 3/6) / 2, chance 1/2; with
        // ≥ 7 none qualifies.
        let b6 = m.clone().with_balanced(6).balanced.unwrap();
        assert_eq!(b6.classes, ["a", "b"]);
        assert!((b6.accuracy - (5.0 / 6.0 + 0.5) / 2.0).abs() < 1e-12);
        assert_eq!(b6.chance, 0.5);
        let b7 = m.with_balanced(7).balanced.unwrap();
        assert!(b7.classes.is_empty() && b7.accuracy == 0.0);
    }
}
