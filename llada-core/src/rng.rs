//! Random numbers for the sampler, from any `rand_core` generator.

use rand_core::Rng;

/// The generator the sampler seeds from [`GenerateParams::seed`](crate::GenerateParams::seed):
/// PCG-64 (MCG variant), small, fast and reproducible on every platform.
pub type SamplerRng = rand_pcg::Pcg64Mcg;

const TWO_POW_MINUS_53: f64 = 1.0 / (1u64 << 53) as f64;

/// Uniform in the open interval `(0, 1)`: never 0, so `ln(u)` is finite.
pub(crate) fn open01<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) * TWO_POW_MINUS_53
}

/// Uniform in `[0, 1)`.
pub(crate) fn unit<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    (rng.next_u64() >> 11) as f64 * TWO_POW_MINUS_53
}

/// Uniform integer in `0..n` without modulo bias (Lemire's widening multiply with rejection).
/// `n` must be positive.
pub(crate) fn below<R: Rng + ?Sized>(rng: &mut R, n: u64) -> u64 {
    debug_assert!(n > 0);
    let threshold = n.wrapping_neg() % n;
    loop {
        let product = u128::from(rng.next_u64()) * u128::from(n);
        if (product as u64) >= threshold {
            return (product >> 64) as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use rand_core::SeedableRng;

    use super::*;

    #[test]
    fn open01_stays_inside_and_below_is_uniform() {
        let mut rng = SamplerRng::seed_from_u64(7);
        let mut counts = [0u32; 5];
        for _ in 0..50_000 {
            let u = open01(&mut rng);
            assert!(u > 0.0 && u < 1.0);
            counts[below(&mut rng, 5) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}
