//! Deterministic randomness: hashes of (seed, stream, index) that derive item attributes
//! without storing them, cheap Gaussian and exponential draws, weighted picks, vector maths.

use super::params::*;
use rand::Rng;

pub(crate) const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 finalizer: a cheap, well-mixed bijection on u64.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A hash of (seed, stream, index): the root of every derived attribute.
pub(crate) fn hash(seed: u64, stream: u64, a: u64) -> u64 {
    let s = mix64(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
    mix64(s.wrapping_add(a.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// Uniform in [0, 1) from the top 53 bits.
pub(crate) fn to_unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Approximately standard normal from one u64: Irwin–Hall sum of four 16-bit uniforms. Cheap
/// enough to recompute item vectors on every exposure; bounded tails do not matter here.
pub(crate) fn approx_gauss(h: u64) -> f32 {
    let s = (h & 0xFFFF) + ((h >> 16) & 0xFFFF) + ((h >> 32) & 0xFFFF) + (h >> 48);
    (s as f32 / 65_536.0 - 2.0) * 1.732_050_8
}

pub(crate) fn gauss<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    f64::from(approx_gauss(rng.random::<u64>()))
}

/// Exponential with mean 1.
pub(crate) fn exp1<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    -(1.0 - rng.random::<f64>()).ln()
}

/// A splitmix64 stream for per-entity attributes: portable and independent of `rand` versions.
pub(crate) struct Hrng(u64);

impl Hrng {
    pub(crate) fn new(seed: u64, stream: u64, a: u64) -> Self {
        Self(hash(seed, stream, a))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }

    pub(crate) fn unit(&mut self) -> f64 {
        to_unit(self.next_u64())
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((self.unit() * n as f64) as usize).min(n.saturating_sub(1))
    }

    pub(crate) fn gauss(&mut self) -> f64 {
        f64::from(approx_gauss(self.next_u64()))
    }
}

/// Inverse-CDF draw over a cumulative weight array; zero-weight entries are never chosen.
pub(crate) fn cum_draw(cum: &[f64], u: f64) -> usize {
    let total = cum.last().copied().unwrap_or(0.0);
    cum.partition_point(|&x| x <= u * total)
        .min(cum.len().saturating_sub(1))
}

pub(crate) fn cumulative(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .map(|w| {
            acc += w;
            acc
        })
        .collect()
}

pub(crate) fn weighted<'a, R: Rng + ?Sized>(rng: &mut R, table: &[(&'a str, f64)]) -> &'a str {
    let total: f64 = table.iter().map(|&(_, w)| w).sum();
    let mut x = rng.random::<f64>() * total;
    for &(name, w) in table {
        if x < w {
            return name;
        }
        x -= w;
    }
    table.last().map_or("", |&(name, _)| name)
}

pub(crate) fn normalize(v: &mut [f32; DIM]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        for x in v.iter_mut() {
            *x /= n;
        }
    }
}

pub(crate) fn dot(a: &[f32; DIM], b: &[f32; DIM]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub(crate) fn category_name(c: usize) -> String {
    let name = CATEGORY_NAMES[c % CATEGORY_NAMES.len()];
    let round = c / CATEGORY_NAMES.len();
    if round == 0 {
        name.to_string()
    } else {
        format!("{name} {}", round + 1)
    }
}

// ---------------------------------------------------------------------------------------------
// Items
