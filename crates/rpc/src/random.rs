//! Randomness that stays reproducible under simulation.

use rand::SeedableRng;
use rand::rngs::StdRng;

/// A fresh pseudo-random generator.
///
/// In a simulation build it is seeded from the simulator's global RNG, so a
/// run is reproduced by its seed; in a normal build it is seeded from the
/// operating system. Never call `rand::thread_rng()` in code that runs in
/// simulation: it reads the OS RNG directly and breaks determinism.
pub fn seeded_rng() -> StdRng {
    #[cfg(madsim)]
    let seed: u64 = madsim::rand::random();
    #[cfg(not(madsim))]
    let seed: u64 = {
        use std::hash::{BuildHasher, Hasher};
        // `RandomState` is seeded from the OS once per process and perturbed
        // per instance, which is all the entropy this needs.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        hasher.finish()
    };
    StdRng::seed_from_u64(seed)
}
