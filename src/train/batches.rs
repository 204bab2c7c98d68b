//! Deterministic batches for exactly resumable training: the batch of step `t` depends only
//! on `(seed, t)`, never on how many steps ran in this process.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::rng::mix;

/// Batches of shuffled indices: epoch `e` is a permutation seeded by `(seed, e)`.
#[derive(Debug, Clone)]
pub struct Batches {
    n: usize,
    seed: u64,
    epoch: Option<(u64, Vec<usize>)>,
}

impl Batches {
    /// Over `n` items.
    pub fn new(n: usize, seed: u64) -> Self {
        Batches {
            n,
            seed,
            epoch: None,
        }
    }

    /// The indices of batch `step` of size `size` (flat position `step·size + j`).
    pub fn batch(&mut self, step: u64, size: usize) -> Vec<usize> {
        (0..size)
            .map(|j| {
                let flat = step * size as u64 + j as u64;
                let (e, pos) = (flat / self.n as u64, (flat % self.n as u64) as usize);
                self.permutation(e)[pos]
            })
            .collect()
    }

    fn permutation(&mut self, e: u64) -> &[usize] {
        if self.epoch.as_ref().is_none_or(|(k, _)| *k != e) {
            let mut p: Vec<usize> = (0..self.n).collect();
            p.shuffle(&mut StdRng::seed_from_u64(mix(self.seed ^ mix(e ^ 0xE90C))));
            self.epoch = Some((e, p));
        }
        &self.epoch.as_ref().expect("set above").1
    }
}
