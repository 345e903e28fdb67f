//! The stable-Rust driver of the fuzz targets in `fuzz/`.
//!
//! cargo-fuzz needs nightly Rust and an instrumented build of everything a
//! target links (DataFusion and Delta included), which takes hours on a
//! small machine. Each target therefore also has a *stable driver*: an
//! ignored test next to the code it attacks, fed by a `proptest` strategy
//! that writes the inputs a fuzzer would reach only slowly (the language's
//! own words in any order, nesting past the limits, absurd numbers, broken
//! quoting), run for a set time instead of a set number of cases.
//!
//! [`run_for`] is that loop, shared by every driver: rounds of cases, each
//! round from its own fixed seed (so a run can be repeated exactly, and
//! `TAGLAKE_FUZZ_SEED` explores elsewhere), until `TAGLAKE_FUZZ_SECONDS`
//! (default 20) have passed. A failing case is shrunk by proptest and the
//! driver panics with it; it then becomes a plain test next to the code it
//! broke.

use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseResult, TestRng, TestRunner};

/// How long a driver runs: `TAGLAKE_FUZZ_SECONDS`, default 20 s.
pub fn budget() -> Duration {
    let secs = std::env::var("TAGLAKE_FUZZ_SECONDS").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(20);
    Duration::from_secs(secs)
}

/// Runs `test` on values of `strategy`, `per_round` cases per round, until
/// [`budget`] has passed (at least one round). Panics with the shrunk
/// failing case and the number of cases that passed before it; returns the
/// number of cases run and prints it with the time taken under `name`.
pub fn run_for<S: Strategy>(
    name: &str,
    strategy: &S,
    per_round: u32,
    test: impl Fn(S::Value) -> TestCaseResult,
) -> u64 {
    let budget = budget();
    let offset: u64 = std::env::var("TAGLAKE_FUZZ_SEED").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    let started = Instant::now();
    let (mut round, mut cases) = (0u64, 0u64);
    loop {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&round.to_le_bytes());
        seed[8..16].copy_from_slice(&offset.to_le_bytes());
        let config = Config { cases: per_round, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
        if let Err(e) = runner.run(strategy, &test) {
            panic!("{name}: round {round} (TAGLAKE_FUZZ_SEED={offset}), after {cases} passing cases: {e}");
        }
        round += 1;
        cases += u64::from(per_round);
        if started.elapsed() >= budget {
            break;
        }
    }
    eprintln!("{name}: {cases} cases in {:.0} s, no failure", started.elapsed().as_secs_f64());
    cases
}

/// `text` with `noise` put in at a character boundary chosen by `at`
/// (anywhere from before the first character to after the last): how the
/// language drivers break a well-formed text.
pub fn put_in(text: &str, noise: &str, at: proptest::sample::Index) -> String {
    let at = text.char_indices().map(|(i, _)| i).nth(at.index(text.chars().count() + 1));
    let (a, b) = text.split_at(at.unwrap_or(text.len()));
    format!("{a}{noise}{b}")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn noise_goes_in_at_a_character_boundary(text in "[aé😀 ]{0,8}", at in any::<proptest::sample::Index>()) {
            let out = super::put_in(&text, "<>", at);
            let k = out.find("<>").unwrap();
            prop_assert_eq!(format!("{}{}", &out[..k], &out[k + 2..]), text);
        }
    }

    #[test]
    fn a_failing_case_panics_with_the_driver_name() {
        let result = std::panic::catch_unwind(|| {
            super::run_for("probe", &(0u32..1000), 64, |v| {
                prop_assert!(v < 500);
                Ok(())
            })
        });
        let message = result.expect_err("a failing property must fail the driver");
        let text = message.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(text.starts_with("probe: round 0"), "{text}");
        assert!(text.contains("500"), "the shrunk case is named: {text}");
    }
}
