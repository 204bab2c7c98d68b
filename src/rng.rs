//! Seeded randomness: the seed mixer every reproducible stream in synfer derives from, the
//! per-step generators of exactly resumable loops, and the Gaussian noise of generation
//! (made on the CPU, so every device starts from identical latents).

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use crate::tensor::HostTensor;

/// splitmix64.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The random generator of step `step` (stream `stream` for independent uses).
pub fn step_rng(seed: u64, step: u64, stream: u64) -> StdRng {
    StdRng::seed_from_u64(mix(mix(seed ^ mix(step)) ^ stream))
}

/// `n` standard-normal values from `rng`.
pub fn standard_normal(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v: f64 = StandardNormal.sample(rng);
            v as f32
        })
        .collect()
}

/// Standard-normal noise of `shape` from `seed` (ChaCha12, portable across platforms).
pub fn seeded_noise(seed: u64, shape: &[usize]) -> HostTensor {
    let mut rng = StdRng::seed_from_u64(seed);
    HostTensor {
        shape: shape.to_vec(),
        data: standard_normal(&mut rng, shape.iter().product()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_standard_normal_and_reproducible() {
        let a = seeded_noise(7, &[4, 64, 64]);
        assert_eq!(a, seeded_noise(7, &[4, 64, 64]));
        assert_ne!(a.data, seeded_noise(8, &[4, 64, 64]).data);
        let n = a.data.len() as f64;
        let mean = a.data.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = a
            .data
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "mean {mean} var {var}"
        );
    }
}
