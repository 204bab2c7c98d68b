//! The statistics `synfer eval` reports: Spearman's rank correlation (AU control) and the
//! diversity of same-expression images.

/// Mean RMS difference over all pairs of equally sized RGB images (values scaled to `[0, 1]`);
/// 0 for fewer than two images.
pub fn diversity(images: &[&[u8]]) -> f64 {
    let (mut sum, mut pairs) = (0.0, 0usize);
    for (i, a) in images.iter().enumerate() {
        for b in &images[i + 1..] {
            let mse = a
                .iter()
                .zip(b.iter())
                .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
                .sum::<f64>()
                / a.len().max(1) as f64;
            sum += mse.sqrt() / 255.0;
            pairs += 1;
        }
    }
    if pairs == 0 { 0.0 } else { sum / pairs as f64 }
}

/// Spearman's rank correlation (average ranks for ties); `None` when either side is constant
/// or the lengths differ or are below 2.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    (vx > 0.0 && vy > 0.0).then(|| cov / (vx * vy).sqrt())
}

/// 1-based ranks, ties sharing their average rank.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut out = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_matches_hand_computed_values() {
        // Perfect monotone (not linear) relation: ρ = 1; reversed: −1.
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!((spearman(&x, &[1.0, 4.0, 9.0, 100.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((spearman(&x, &[5.0, 3.0, 2.0, 0.0]).unwrap() + 1.0).abs() < 1e-12);
        // Ties: x ranks 1.5 1.5 3 4, y ranks 1 2 3 4 → ρ = 4.5 / √(4.5·5) = 0.9486833.
        let r = spearman(&[0.0, 0.0, 1.0, 2.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((r - 4.5 / (4.5f64 * 5.0).sqrt()).abs() < 1e-12, "{r}");
        // Undefined for a constant side.
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), None);
    }
}
