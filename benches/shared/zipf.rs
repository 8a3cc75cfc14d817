//! The zipf trace shared by `benches/local_tier.rs` and `benches/trace.rs`,
//! so that both replay the very same requests for the same parameters.

/// splitmix64: small, fixed-seed, good enough for a synthetic trace.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `requests` ranks drawn from zipf(`exponent`) over `keys` keys by
/// inverting the cumulative distribution.
pub(crate) fn zipf_trace(keys: usize, exponent: f64, requests: usize, seed: u64) -> Vec<u64> {
    let mut cdf = Vec::with_capacity(keys);
    let mut sum = 0.0;
    for rank in 1..=keys {
        sum += 1.0 / (rank as f64).powf(exponent);
        cdf.push(sum);
    }
    let mut rng = SplitMix64(seed);
    (0..requests)
        .map(|_| {
            let u = rng.next_f64() * sum;
            cdf.partition_point(|&c| c <= u).min(keys - 1) as u64
        })
        .collect()
}
