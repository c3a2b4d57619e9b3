//! The semi-autoregressive schedule: blocks, steps per block, tokens committed per step (the
//! reference's even split, and Dream's time schedule).

use crate::params::GenerateParams;

/// Blocks and steps of a (validated) parameter set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockSchedule {
    pub(crate) num_blocks: usize,
    pub(crate) steps_per_block: usize,
}

impl BlockSchedule {
    pub(crate) fn new(params: &GenerateParams, prompt_len: usize) -> Self {
        Self {
            num_blocks: params.blocks_for(prompt_len),
            steps_per_block: params.steps_per_block(),
        }
    }
}

/// How many of the `masked` positions a block held at its start are committed at `step` of
/// `steps`: `masked / steps`, plus one in the first `masked % steps` steps (the reference's
/// `get_num_transfer_tokens`). Over all steps this adds up to `masked`.
pub fn tokens_to_commit(masked: usize, steps: usize, step: usize) -> usize {
    if steps == 0 {
        return 0;
    }
    masked / steps + usize::from(step < masked % steps)
}

/// The most steps a block may take under [`CommitRule::Timesteps`](crate::CommitRule::Timesteps) (steps that commit nothing
/// are skipped one by one; this bounds that walk).
pub const MAX_TIMESTEPS: usize = 1 << 20;

/// Dream's time `t_i` of step `i` of `steps` (`0 ≤ i ≤ steps`), from 1 down to `eps`, in f32
/// as PyTorch's `linspace(1, eps, steps + 1)` computes it element by element: with
/// `δ = (eps − 1) / steps`, `1 + δ·i` in the first half and `eps − δ·(steps − i)` in the
/// second. (PyTorch's vectorised kernel rounds some entries differently depending on the
/// CPU's vector width; this is its scalar formula, the same on every machine.)
pub fn timestep(steps: usize, i: usize, eps: f32) -> f32 {
    let delta = (eps - 1.0) / steps as f32;
    // PyTorch's `halfway` over the `steps + 1` points.
    if i < steps.div_ceil(2) {
        1.0 + delta * i as f32
    } else {
        eps - delta * (steps - i) as f32
    }
}

/// The fraction of the masked positions Dream's schedule commits at step `i` of `steps`:
/// `1 − t_{i+1} / t_i` in f32, and 1 on the last step.
pub fn transfer_fraction(steps: usize, i: usize, eps: f32) -> f32 {
    if i + 1 >= steps {
        return 1.0;
    }
    1.0 - timestep(steps, i + 1, eps) / timestep(steps, i, eps)
}

/// How many of `masked` positions Dream's schedule commits at step `i` of `steps`:
/// `int(masked · (1 − t_{i+1}/t_i))` (f32, truncated), all of them on the last step.
pub fn timesteps_to_commit(masked: usize, steps: usize, i: usize, eps: f32) -> usize {
    if i + 1 >= steps {
        return masked;
    }
    (masked as f32 * transfer_fraction(steps, i, eps)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_add_up_and_front_load_the_remainder() {
        assert_eq!(
            [0, 1, 2, 3].map(|i| tokens_to_commit(10, 4, i)),
            [3, 3, 2, 2]
        );
        assert_eq!((0..8).map(|i| tokens_to_commit(3, 8, i)).sum::<usize>(), 3);
        assert_eq!(tokens_to_commit(3, 8, 3), 0);
        for masked in 0..40 {
            for steps in 1..20 {
                assert_eq!(
                    (0..steps)
                        .map(|i| tokens_to_commit(masked, steps, i))
                        .sum::<usize>(),
                    masked
                );
            }
        }
    }

    #[test]
    fn dream_times_run_from_one_to_eps_and_the_last_step_takes_everything() {
        for steps in [1, 2, 5, 16, 512] {
            assert_eq!(timestep(steps, 0, 1e-3), 1.0);
            assert_eq!(timestep(steps, steps, 1e-3), 1e-3);
            for i in 0..steps {
                assert!(timestep(steps, i + 1, 1e-3) < timestep(steps, i, 1e-3));
            }
            assert_eq!(timesteps_to_commit(9, steps, steps - 1, 1e-3), 9);
        }
        // 16 masks over 16 steps: (1 - s/t) = (1 - eps)/16 at the first step, so 16 of them
        // make 0.999: nothing is committed until enough time has passed.
        assert_eq!(timesteps_to_commit(16, 16, 0, 1e-3), 0);
        assert_eq!(timesteps_to_commit(16, 16, 8, 1e-3), 1);
        // With eps = 0 the schedule is the even one on a block's own masks at every step.
        let fraction = transfer_fraction(4, 1, 0.0);
        assert!((fraction - 1.0 / 3.0).abs() < 1e-6, "{fraction}");
        // The formula as PyTorch's scalar linspace: the second half counts back from eps.
        let delta = (1e-3f32 - 1.0) / 5.0;
        assert_eq!(timestep(5, 2, 1e-3), 1.0 + delta * 2.0);
        assert_eq!(timestep(5, 3, 1e-3), 1e-3 - delta * 2.0);
    }
}
