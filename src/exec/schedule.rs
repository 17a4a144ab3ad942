//! What happens to each ready step, and when: a skipped step settles at once, one whose need
//! did not succeed is blocked, others start while `-j` allows, an interactive one only alone,
//! and after a failure nothing new starts unless `--keep-going`. Pure decisions, no threads:
//! the dispatcher carries them out, and tests drive them step by step.

use super::walk::{Lane, Walker};
use crate::plan::{Status, Step, StepState};

/// One decision, in plan order among those possible at the moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Start(usize),
    /// Settled as skipped (done already).
    Skip(usize),
    /// Settled as blocked because the need `by` did not succeed.
    Block {
        step: usize,
        by: usize,
    },
}

pub(super) struct Schedule<'a> {
    walker: Walker<'a>,
    running: Vec<(usize, Lane)>,
    jobs: usize,
    keep_going: bool,
    failed: bool,
}

/// Where a step waits once its needs succeeded.
pub(super) fn lane_of(step: &Step, state: &StepState) -> Lane {
    if state.status == Status::Skip {
        Lane::Settle
    } else if step.interactive {
        Lane::Alone
    } else {
        Lane::Shared
    }
}

impl<'a> Schedule<'a> {
    /// A schedule of the `selected` steps; `settled` as for [`Walker::new`].
    pub(super) fn new(
        needs: Vec<&'a [usize]>,
        lanes: Vec<Lane>,
        (selected, settled): (&[bool], &[Option<bool>]),
        jobs: usize,
        keep_going: bool,
    ) -> Schedule<'a> {
        Schedule {
            walker: Walker::new(needs, lanes, selected, settled),
            running: Vec::new(),
            jobs,
            keep_going,
            failed: false,
        }
    }

    /// The next decision that can be taken now, or `None` until a running step finishes.
    pub(super) fn next(&mut self) -> Option<Action> {
        let stopping = self.failed && !self.keep_going;
        let busy = self.running.len();
        let alone = self.running.iter().any(|(_, lane)| *lane == Lane::Alone);
        let (index, lane) = self.walker.next(|lane| match lane {
            Lane::Settle => true,
            Lane::Shared => !stopping && busy < self.jobs && !alone,
            Lane::Alone => !stopping && busy < self.jobs && busy == 0,
        })?;
        if lane != Lane::Settle {
            self.running.push((index, lane));
            return Some(Action::Start(index));
        }
        match self.walker.blocker(index) {
            Some(by) => {
                self.walker.settle(index, false);
                Some(Action::Block { step: index, by })
            }
            None => {
                self.walker.settle(index, true);
                Some(Action::Skip(index))
            }
        }
    }

    /// Records that a started step ended.
    pub(super) fn finished(&mut self, index: usize, succeeded: bool) {
        self.running.retain(|(i, _)| *i != index);
        self.failed |= !succeeded;
        self.walker.settle(index, succeeded);
    }

    /// Whether a step that runs alone (an interactive one) is running.
    pub(super) fn alone_running(&self) -> bool {
        self.running.iter().any(|(_, lane)| *lane == Lane::Alone)
    }

    pub(super) fn failed(&self) -> bool {
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan's shape for a test: each step's needs and lane.
    struct Shape(Vec<(Vec<usize>, Lane)>);

    fn shape(steps: &[(&[usize], Lane)]) -> Shape {
        Shape(steps.iter().map(|(n, l)| (n.to_vec(), *l)).collect())
    }

    impl Shape {
        fn schedule(&self, jobs: usize, keep_going: bool) -> Schedule<'_> {
            let count = self.0.len();
            Schedule::new(
                self.0.iter().map(|(needs, _)| needs.as_slice()).collect(),
                self.0.iter().map(|(_, lane)| *lane).collect(),
                (&vec![true; count], &vec![None; count]),
                jobs,
                keep_going,
            )
        }
    }

    fn decide(schedule: &mut Schedule) -> Vec<Action> {
        std::iter::from_fn(|| schedule.next()).collect()
    }

    use Action::{Block, Skip, Start};
    use Lane::{Alone, Settle, Shared};

    /// 0 → {1, 2} → 3, then 4 after 3.
    fn diamond_and_chain() -> Shape {
        shape(&[
            (&[], Shared),
            (&[0], Shared),
            (&[0], Shared),
            (&[1, 2], Shared),
            (&[3], Shared),
        ])
    }

    #[test]
    fn starts_in_plan_order_as_needs_finish() {
        let shape = diamond_and_chain();
        let mut schedule = shape.schedule(4, false);
        assert_eq!(decide(&mut schedule), [Start(0)]);
        schedule.finished(0, true);
        assert_eq!(decide(&mut schedule), [Start(1), Start(2)]);
        schedule.finished(2, true);
        assert_eq!(decide(&mut schedule), []);
        schedule.finished(1, true);
        assert_eq!(decide(&mut schedule), [Start(3)]);
        schedule.finished(3, true);
        assert_eq!(decide(&mut schedule), [Start(4)]);
        schedule.finished(4, true);
        assert_eq!(decide(&mut schedule), []);
        assert!(!schedule.failed());
    }

    #[test]
    fn jobs_limit_how_many_run_at_once() {
        let none: &[usize] = &[];
        let shape = shape(&[(none, Shared); 5]);
        let mut schedule = shape.schedule(2, false);
        assert_eq!(decide(&mut schedule), [Start(0), Start(1)]);
        schedule.finished(1, true);
        assert_eq!(decide(&mut schedule), [Start(2)]);
        schedule.finished(0, true);
        schedule.finished(2, true);
        assert_eq!(decide(&mut schedule), [Start(3), Start(4)]);
    }

    #[test]
    fn a_failure_blocks_dependents_and_with_keep_going_not_the_rest() {
        // The diamond, and 5 independent of it.
        let mut shape = diamond_and_chain();
        shape.0.push((vec![], Shared));
        let mut schedule = shape.schedule(2, true);
        assert_eq!(decide(&mut schedule), [Start(0), Start(5)]);
        schedule.finished(0, true);
        // Two slots: 2 waits for one.
        assert_eq!(decide(&mut schedule), [Start(1)]);
        schedule.finished(1, false);
        // In plan order: 2 takes the freed slot, 3 is blocked at once although 2 has not
        // finished, and 4 follows 3.
        assert_eq!(
            decide(&mut schedule),
            [Start(2), Block { step: 3, by: 1 }, Block { step: 4, by: 3 }]
        );
        schedule.finished(5, true);
        schedule.finished(2, true);
        assert_eq!(decide(&mut schedule), []);
        assert!(schedule.failed());
    }

    #[test]
    fn without_keep_going_a_failure_starts_nothing_new_but_still_settles() {
        let shape = shape(&[
            (&[], Shared),
            (&[], Shared),
            (&[0], Shared),
            (&[1], Settle),
            (&[], Shared),
        ]);
        let mut schedule = shape.schedule(2, false);
        assert_eq!(decide(&mut schedule), [Start(0), Start(1)]);
        schedule.finished(0, false);
        schedule.finished(1, true);
        // 4 never starts; the skipped step 3 still settles.
        assert_eq!(decide(&mut schedule), [Block { step: 2, by: 0 }, Skip(3)]);
    }

    #[test]
    fn an_interactive_step_runs_alone() {
        let shape = shape(&[(&[], Shared), (&[], Alone), (&[], Shared)]);
        let mut schedule = shape.schedule(4, false);
        // The interactive step waits for 0; 2 may start beside 0 meanwhile.
        assert_eq!(decide(&mut schedule), [Start(0), Start(2)]);
        schedule.finished(0, true);
        assert_eq!(decide(&mut schedule), []);
        schedule.finished(2, true);
        assert_eq!(decide(&mut schedule), [Start(1)]);
        assert!(schedule.alone_running());
    }

    #[test]
    fn nothing_starts_beside_a_running_interactive_step() {
        let shape = shape(&[(&[], Alone), (&[], Shared), (&[], Settle)]);
        let mut schedule = shape.schedule(4, false);
        assert_eq!(decide(&mut schedule), [Start(0), Skip(2)]);
        schedule.finished(0, true);
        assert_eq!(decide(&mut schedule), [Start(1)]);
    }

    /// A small deterministic generator (xorshift), so the cases below are the same each run.
    struct Dice(u64);

    impl Dice {
        fn roll(&mut self, sides: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % sides as u64) as usize
        }
    }

    #[derive(Debug, PartialEq)]
    enum Event {
        Did(Action),
        Finished(usize, bool),
    }

    /// Which running step finishes next, and whether it succeeds: the same dice for both sides.
    fn finish_one(running: &mut Vec<usize>, dice: &mut Dice) -> (usize, bool) {
        running.sort_unstable();
        let index = running.remove(dice.roll(running.len()));
        (index, dice.roll(4) != 0)
    }

    /// The executor before the walker: after every finish, one pass over all steps in plan
    /// order, deciding each one whose needs settled (or one of which did not succeed).
    fn rescanning(shape: &Shape, jobs: usize, keep_going: bool, mut dice: Dice) -> Vec<Event> {
        let count = shape.0.len();
        let mut outcome: Vec<Option<bool>> = vec![None; count];
        let (mut running, mut events, mut failed) = (Vec::<usize>::new(), Vec::new(), false);
        loop {
            for index in 0..count {
                if outcome[index].is_some() || running.contains(&index) {
                    continue;
                }
                let (needs, lane) = (&shape.0[index].0, shape.0[index].1);
                let (mut waiting, mut blocked_by) = (false, None);
                for &need in needs {
                    match outcome[need] {
                        None => waiting = true,
                        Some(false) => blocked_by = Some(need),
                        Some(true) => {}
                    }
                }
                if let Some(by) = blocked_by {
                    outcome[index] = Some(false);
                    events.push(Event::Did(Block { step: index, by }));
                    continue;
                }
                if waiting {
                    continue;
                }
                if lane == Settle {
                    outcome[index] = Some(true);
                    events.push(Event::Did(Skip(index)));
                    continue;
                }
                let exclusive = lane == Alone || running.iter().any(|&i| shape.0[i].1 == Alone);
                if (failed && !keep_going)
                    || running.len() >= jobs
                    || (exclusive && !running.is_empty())
                {
                    continue;
                }
                running.push(index);
                events.push(Event::Did(Start(index)));
            }
            if running.is_empty() {
                return events;
            }
            let (index, succeeded) = finish_one(&mut running, &mut dice);
            outcome[index] = Some(succeeded);
            failed |= !succeeded;
            events.push(Event::Finished(index, succeeded));
        }
    }

    fn walking(shape: &Shape, jobs: usize, keep_going: bool, mut dice: Dice) -> Vec<Event> {
        let mut schedule = shape.schedule(jobs, keep_going);
        let (mut running, mut events) = (Vec::new(), Vec::new());
        loop {
            while let Some(action) = schedule.next() {
                if let Start(index) = action {
                    running.push(index);
                }
                events.push(Event::Did(action));
            }
            if running.is_empty() {
                return events;
            }
            let (index, succeeded) = finish_one(&mut running, &mut dice);
            schedule.finished(index, succeeded);
            events.push(Event::Finished(index, succeeded));
        }
    }

    #[test]
    fn decides_exactly_as_the_rescanning_executor_did() {
        let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
        for case in 0..3_000 {
            let count = 1 + dice.roll(12);
            // Needs point backwards, sorted, as in a plan.
            let shape = Shape(
                (0..count)
                    .map(|index| {
                        let needs = (0..index).filter(|_| dice.roll(3) == 0).collect();
                        (needs, [Shared, Shared, Shared, Settle, Alone][dice.roll(5)])
                    })
                    .collect(),
            );
            let (jobs, keep_going) = (1 + dice.roll(3), dice.roll(2) == 0);
            let seed = 1 + dice.roll(1 << 30) as u64;
            assert_eq!(
                walking(&shape, jobs, keep_going, Dice(seed)),
                rescanning(&shape, jobs, keep_going, Dice(seed)),
                "case {case}: {:?}, -j {jobs}, keep going {keep_going}",
                shape.0
            );
        }
    }
}
