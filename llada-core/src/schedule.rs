//! The semi-autoregressive schedule: blocks, steps per block, tokens committed per step.

use crate::params::GenerateParams;

/// Blocks and steps of a (validated) parameter set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockSchedule {
    pub(crate) num_blocks: usize,
    pub(crate) steps_per_block: usize,
}

impl BlockSchedule {
    pub(crate) fn new(params: &GenerateParams) -> Self {
        Self {
            num_blocks: params.num_blocks(),
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
}
