//! Classifier-free guidance (Ho & Salimans 2022), as diffusers' pipelines apply it.

use burn::tensor::Tensor;

/// `uncond + scale · (cond − uncond)`.
pub fn combine<const D: usize>(uncond: Tensor<D>, cond: Tensor<D>, scale: f64) -> Tensor<D> {
    uncond.clone() + (cond - uncond) * scale
}

/// [`combine`] of a batch laid out `[uncond × n; cond × n]` along the first axis → `n` items.
pub fn combine_halves(out: Tensor<4>, scale: f64) -> Tensor<4> {
    let [b2, c, h, w] = out.dims();
    let uncond = out.clone().slice([0..b2 / 2, 0..c, 0..h, 0..w]);
    let cond = out.slice([b2 / 2..b2, 0..c, 0..h, 0..w]);
    combine(uncond, cond, scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn matches_the_formula() {
        let d = Device::flex();
        let u = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, -2.0, 0.5], [3]), &d);
        let c = Tensor::<1>::from_data(TensorData::new(vec![3.0f32, 0.0, 0.5], [3]), &d);
        let out: Vec<f32> = combine(u, c, 7.5).into_data().try_into_vec_as().unwrap();
        assert_eq!(out, vec![1.0 + 7.5 * 2.0, -2.0 + 7.5 * 2.0, 0.5]);
    }
}
