//! Dynamic thresholding (Imagen), as diffusers' `_threshold_sample`.

use burn::tensor::Tensor;

use super::params::Thresholding;

/// Clamps each batch item to `[-s, s]` and divides by `s`, where `s` is the
/// `ratio`-quantile of the item's absolute values, clamped to `[1, max_value]`.
///
/// The quantile follows `torch.quantile` (linear interpolation, rank computed in float32, torch's
/// `lerp` formula); the rank and weight depend only on the shape, so the only data-dependent
/// work is a sort along each item.
pub(crate) fn threshold_sample(sample: Tensor<4>, th: Thresholding) -> Tensor<4> {
    let [b, c, h, w] = sample.dims();
    let n = c * h * w;
    if b == 0 || n == 0 {
        return sample;
    }
    let flat: Tensor<2> = sample.reshape([b, n]);
    let sorted = flat.clone().abs().sort(1);

    let rank = th.ratio as f32 * (n - 1) as f32;
    let below = (rank.floor() as usize).min(n - 1);
    let above = (rank.ceil() as usize).min(n - 1);
    let weight = rank - below as f32;
    let lo = sorted.clone().narrow(1, below, 1);
    let hi = sorted.narrow(1, above, 1);
    let s = if weight < 0.5 {
        lo.clone() + (hi - lo).mul_scalar(f64::from(weight))
    } else {
        hi.clone() - (hi - lo).mul_scalar(f64::from(1.0 - weight))
    };
    let s: Tensor<2> = s.clamp_min(1.0).clamp_max(th.max_value).expand([b, n]);

    flat.max_pair(s.clone().neg())
        .min_pair(s.clone())
        .div(s)
        .reshape([b, c, h, w])
}

/// `x̂0` as DDIM and LCM configure it: dynamically thresholded, else clipped to `±range`
/// (`clip_sample`), else unchanged.
pub(crate) fn clip_or_threshold(
    x0: Tensor<4>,
    thresholding: Option<Thresholding>,
    clip_range: Option<f64>,
) -> Tensor<4> {
    match (thresholding, clip_range) {
        (Some(th), _) => threshold_sample(x0, th),
        (None, Some(range)) => x0.clamp(-range, range),
        (None, None) => x0,
    }
}
