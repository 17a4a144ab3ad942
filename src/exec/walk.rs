//! The ready set of a plan's steps (Kahn's algorithm with counters): a step is ready once its
//! last need settles, or at once when a need did not succeed. Each settle touches only the
//! settled step's dependents, so a run costs steps + needs, not steps × finishes. What a ready
//! step becomes (run, skipped, blocked) is the schedule's business, not the walker's.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Where a ready step waits until the schedule takes it (the value is its queue's position). Each lane hands out its lowest step
/// index first, which is the plan's order: a declaration-order tie-break among ready steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// Settled without running: a skipped step, or one whose need did not succeed.
    Settle,
    /// Runs in one of the `-j` slots.
    Shared,
    /// Runs with nothing else beside it (an interactive step owns the terminal).
    Alone,
}

const LANES: [Lane; 3] = [Lane::Settle, Lane::Shared, Lane::Alone];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not part of this walk and not settled: its dependents wait for it forever.
    Outside,
    Waiting,
    Queued,
    Taken,
    Settled {
        succeeded: bool,
    },
}

pub(super) struct Walker<'a> {
    needs: Vec<&'a [usize]>,
    dependents: Vec<Vec<usize>>,
    /// How many needs of each step have not settled yet.
    unsettled: Vec<usize>,
    state: Vec<State>,
    lanes: Vec<Lane>,
    queues: [BinaryHeap<Reverse<usize>>; 3],
}

impl<'a> Walker<'a> {
    /// A walk over the `selected` steps. `settled` says which steps have an end already (and
    /// whether it counts as success); `lanes` where each step waits once its needs succeeded.
    pub(super) fn new(
        needs: Vec<&'a [usize]>,
        lanes: Vec<Lane>,
        selected: &[bool],
        settled: &[Option<bool>],
    ) -> Walker<'a> {
        let count = needs.len();
        let state: Vec<State> = (0..count)
            .map(|index| match settled[index] {
                Some(succeeded) => State::Settled { succeeded },
                None if selected[index] => State::Waiting,
                None => State::Outside,
            })
            .collect();
        let mut walker = Walker {
            dependents: vec![Vec::new(); count],
            unsettled: vec![0; count],
            needs,
            state,
            lanes,
            queues: Default::default(),
        };
        for index in 0..count {
            if walker.state[index] != State::Waiting {
                continue;
            }
            for &need in walker.needs[index] {
                walker.dependents[need].push(index);
                if !matches!(walker.state[need], State::Settled { .. }) {
                    walker.unsettled[index] += 1;
                }
            }
        }
        for index in 0..count {
            if walker.state[index] != State::Waiting {
                continue;
            }
            if walker.blocker(index).is_some() {
                walker.enqueue(index, Lane::Settle);
            } else if walker.unsettled[index] == 0 {
                walker.enqueue(index, walker.lanes[index]);
            }
        }
        walker
    }

    /// Takes the lowest ready step of the lanes `open` allows, if any.
    pub(super) fn next(&mut self, open: impl Fn(Lane) -> bool) -> Option<(usize, Lane)> {
        let lane = LANES
            .into_iter()
            .filter(|lane| open(*lane))
            .filter_map(|lane| Some((self.queues[lane as usize].peek()?.0, lane)))
            .min_by_key(|(index, _)| *index)?
            .1;
        let Reverse(index) = self.queues[lane as usize].pop()?;
        self.state[index] = State::Taken;
        Some((index, lane))
    }

    /// Records a step's end: its dependents count one need fewer, and a failure makes them
    /// ready at once (to be blocked).
    pub(super) fn settle(&mut self, index: usize, succeeded: bool) {
        self.state[index] = State::Settled { succeeded };
        // A step settles once, so its list of dependents is not needed again.
        for dependent in std::mem::take(&mut self.dependents[index]) {
            if self.state[dependent] != State::Waiting {
                continue;
            }
            self.unsettled[dependent] -= 1;
            if !succeeded {
                self.enqueue(dependent, Lane::Settle);
            } else if self.unsettled[dependent] == 0 {
                self.enqueue(dependent, self.lanes[dependent]);
            }
        }
    }

    /// The last need (in need order) of a step that did not succeed, if any.
    pub(super) fn blocker(&self, index: usize) -> Option<usize> {
        self.needs[index]
            .iter()
            .rev()
            .copied()
            .find(|&need| self.state[need] == State::Settled { succeeded: false })
    }

    fn enqueue(&mut self, index: usize, lane: Lane) {
        self.state[index] = State::Queued;
        self.queues[lane as usize].push(Reverse(index));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(walker: &mut Walker) -> Vec<usize> {
        std::iter::from_fn(|| walker.next(|_| true).map(|(index, _)| index)).collect()
    }

    #[test]
    fn a_step_is_ready_when_its_last_need_settles() {
        // 0 → {1, 2} → 3: a diamond.
        let needs: [&[usize]; 4] = [&[], &[0], &[0], &[1, 2]];
        let mut walker = Walker::new(
            needs.to_vec(),
            vec![Lane::Shared; 4],
            &[true; 4],
            &[None; 4],
        );
        assert_eq!(drain(&mut walker), [0]);
        walker.settle(0, true);
        assert_eq!(drain(&mut walker), [1, 2]);
        walker.settle(2, true);
        assert_eq!(drain(&mut walker), Vec::<usize>::new());
        walker.settle(1, true);
        assert_eq!(drain(&mut walker), [3]);
    }

    #[test]
    fn a_failed_need_makes_its_dependents_ready_to_settle_at_once() {
        // 1 needs 0 and 2; 2 is still running when 0 fails.
        let needs: [&[usize]; 3] = [&[], &[0, 2], &[]];
        let mut walker = Walker::new(
            needs.to_vec(),
            vec![Lane::Shared; 3],
            &[true; 3],
            &[None; 3],
        );
        assert_eq!(drain(&mut walker), [0, 2]);
        walker.settle(0, false);
        assert_eq!(walker.next(|_| true), Some((1, Lane::Settle)));
        assert_eq!(walker.blocker(1), Some(0));
    }

    #[test]
    fn lanes_hand_out_in_plan_order_and_only_when_open() {
        let needs: [&[usize]; 3] = [&[], &[], &[]];
        let lanes = vec![Lane::Alone, Lane::Shared, Lane::Settle];
        let mut walker = Walker::new(needs.to_vec(), lanes, &[true; 3], &[None; 3]);
        assert_eq!(walker.next(|l| l != Lane::Alone), Some((1, Lane::Shared)));
        assert_eq!(walker.next(|l| l == Lane::Settle), Some((2, Lane::Settle)));
        assert_eq!(walker.next(|l| l == Lane::Shared), None);
        assert_eq!(walker.next(|_| true), Some((0, Lane::Alone)));
    }

    #[test]
    fn steps_outside_the_walk_hold_their_dependents_back() {
        // 0 is settled, 1 is not selected, 2 needs both.
        let needs: [&[usize]; 3] = [&[], &[], &[0, 1]];
        let mut walker = Walker::new(
            needs.to_vec(),
            vec![Lane::Shared; 3],
            &[true, false, true],
            &[Some(true), None, None],
        );
        assert_eq!(drain(&mut walker), Vec::<usize>::new());
    }
}
