//! Linking the rendered steps into a DAG: each need, and each mode's `requires` (a mode's first
//! steps wait for the last steps of the modes it requires), becomes an edge of a petgraph graph.
//! Sealing the graph gives the plan's one stable order, or the cycle that prevents one, located
//! at the need that closes it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use petgraph::graph::{DiGraph, NodeIndex};

use super::modes::LoadedMode;
use super::render::{Origin, RenderedSteps};
use super::Compiler;
use crate::error::{did_you_mean, CompileErrorKind};

/// The steps while edges are added. Nodes are step indexes, then barriers (see
/// `add_mode_edges`), numbered from the number of steps on; edges point from a need to the step
/// that needs it, and an edge from `needs` carries (step index, index in its `needs`).
struct StepGraph {
    graph: DiGraph<usize, Option<(usize, usize)>>,
    nodes: Vec<NodeIndex>,
}

/// The sealed graph: step indexes in plan order, and each step's needs (step indexes).
pub(super) struct Sealed {
    pub order: Vec<usize>,
    pub needs_of: Vec<Vec<usize>>,
}

/// Steps that need each other, as step indexes closed (first == last), and which need of the
/// first step (its index in `needs`) closes the cycle, when a need rather than a mode does.
struct Cycle {
    steps: Vec<usize>,
    closing_need: Option<usize>,
}

impl StepGraph {
    fn new(steps: usize) -> StepGraph {
        let mut graph = DiGraph::new();
        let nodes = (0..steps).map(|i| graph.add_node(i)).collect();
        StepGraph { graph, nodes }
    }

    /// The step index of a node, or (past the steps) the number of a barrier.
    fn step_of(&self, node: NodeIndex) -> usize {
        self.graph[node]
    }

    fn is_step(&self, node: NodeIndex) -> bool {
        self.graph[node] < self.nodes.len()
    }

    /// A node that stands for "every one of `before` has finished": the steps that wait for all
    /// of them wait for it instead, so m steps waiting for n take m + n edges, not m·n.
    fn add_barrier(&mut self, before: &[usize], after: &[usize]) {
        let barrier = self.graph.add_node(self.graph.node_count());
        for &step in before {
            self.graph.add_edge(self.nodes[step], barrier, None);
        }
        for &step in after {
            self.graph.add_edge(barrier, self.nodes[step], None);
        }
    }

    /// The steps `node` waits for directly, a barrier standing for the steps before it.
    fn needs_of(&self, node: NodeIndex) -> impl Iterator<Item = usize> + '_ {
        (self.graph.neighbors_directed(node, petgraph::Incoming)).flat_map(move |n| {
            let through: Box<dyn Iterator<Item = NodeIndex>> = match self.is_step(n) {
                true => Box::new(std::iter::once(n)),
                false => Box::new(self.graph.neighbors_directed(n, petgraph::Incoming)),
            };
            through.map(|n| self.step_of(n))
        })
    }

    /// Orders the steps, or names a cycle. petgraph's `toposort` is not used: its order follows
    /// a depth-first search, while the plan must list ready steps in declaration order, and on a
    /// cycle it names one node where the error names the whole cycle.
    fn seal(self) -> Result<Sealed, Cycle> {
        let order = self.stable_topological_order()?;
        let needs_of = (self.nodes.iter())
            .map(|&node| self.needs_of(node).collect())
            .collect();
        Ok(Sealed { order, needs_of })
    }

    /// Kahn's algorithm taking the lowest declaration index among ready steps, so ties always
    /// break the same way. A barrier is passed the moment it is ready, so the steps after it are
    /// ready exactly when the last step before it is done, as with an edge from each.
    fn stable_topological_order(&self) -> Result<Vec<usize>, Cycle> {
        let graph = &self.graph;
        let mut in_degree: Vec<usize> = (graph.node_indices())
            .map(|n| graph.neighbors_directed(n, petgraph::Incoming).count())
            .collect();
        let mut ready: BinaryHeap<Reverse<usize>> = (0..self.nodes.len())
            .filter(|&i| in_degree[i] == 0)
            .map(Reverse)
            .collect();
        let mut order = Vec::with_capacity(self.nodes.len());
        let mut passed = Vec::new();
        while let Some(Reverse(index)) = ready.pop() {
            order.push(index);
            passed.push(NodeIndex::new(index));
            while let Some(node) = passed.pop() {
                for next in graph.neighbors(node) {
                    let next_index = graph[next];
                    in_degree[next_index] -= 1;
                    match (in_degree[next_index] == 0, self.is_step(next)) {
                        (true, true) => ready.push(Reverse(next_index)),
                        (true, false) => passed.push(next),
                        (false, _) => {}
                    }
                }
            }
        }
        if order.len() == self.nodes.len() {
            return Ok(order);
        }
        let remaining: HashSet<usize> =
            (0..in_degree.len()).filter(|i| in_degree[*i] > 0).collect();
        Err(self.cycle_among(&remaining))
    }

    /// Every node of `remaining` has an incoming edge from another one: walking backwards until
    /// a node repeats closes a cycle; the barriers on it are left out of the steps it names.
    fn cycle_among(&self, remaining: &HashSet<usize>) -> Cycle {
        let graph = &self.graph;
        let start = *remaining.iter().min().expect("a cycle leaves nodes");
        let mut walk = vec![start];
        let mut current = start;
        loop {
            let previous = graph
                .neighbors_directed(NodeIndex::new(current), petgraph::Incoming)
                .map(|n| graph[n])
                .filter(|n| remaining.contains(n))
                .min()
                .expect("a remaining node has a remaining predecessor");
            if let Some(at) = walk.iter().position(|&n| n == previous) {
                // The walk went from each step to one it needs, which is how the file reads.
                let mut steps: Vec<usize> = (walk[at..].iter())
                    .copied()
                    .filter(|&n| n < self.nodes.len())
                    .collect();
                steps.push(steps[0]);
                let closing_need = graph
                    .edges_connecting(self.nodes[steps[1]], self.nodes[steps[0]])
                    .find_map(|e| *e.weight())
                    .map(|(_, need_index)| need_index);
                return Cycle {
                    steps,
                    closing_need,
                };
            }
            walk.push(previous);
            current = previous;
        }
    }
}

impl Compiler<'_> {
    /// Joins the rendered steps by their needs and their modes, and seals the order. The needs
    /// as written are taken out of the origins: the graph holds them from here on.
    pub(super) fn link(&self, rendered: &mut RenderedSteps) -> anyhow::Result<Sealed> {
        let mut graph = StepGraph::new(rendered.steps.len());
        self.add_need_edges(&mut graph, rendered)?;
        self.add_mode_edges(&mut graph, &rendered.origins);
        graph
            .seal()
            .map_err(|cycle| self.cycle_error(rendered, &cycle))
    }

    fn add_need_edges(
        &self,
        graph: &mut StepGraph,
        rendered: &mut RenderedSteps,
    ) -> anyhow::Result<()> {
        let RenderedSteps {
            steps,
            origins,
            excluded,
        } = rendered;
        let ids: HashMap<&str, usize> = (steps.iter().enumerate())
            .map(|(index, step)| (step.id.as_str(), index))
            .collect();
        let excluded: HashSet<&str> = (excluded.iter()).map(|step| step.id.as_str()).collect();
        for (index, origin) in origins.iter_mut().enumerate() {
            let needs = std::mem::take(&mut origin.needs);
            let mode = &self.loaded[origin.mode];
            for (need_index, need) in needs.iter().enumerate() {
                let qualified = if need.contains('.') {
                    need.clone()
                } else {
                    format!("{}.{need}", mode.name)
                };
                if let Some(&target) = ids.get(qualified.as_str()) {
                    let edge = Some((index, need_index));
                    graph
                        .graph
                        .add_edge(graph.nodes[target], graph.nodes[index], edge);
                    continue;
                }
                // Needs on what `when` left out are satisfied by its absence.
                if !self.left_out(&qualified, &excluded) {
                    let need = UnknownNeed {
                        mode,
                        origin,
                        need_index,
                        need,
                        qualified: &qualified,
                    };
                    return Err(self.unknown_need_error(&need, &ids));
                }
            }
        }
        Ok(())
    }

    /// Whether `when` left out the step `qualified` (`mode.step`) or its whole mode.
    fn left_out(&self, qualified: &str, excluded: &HashSet<&str>) -> bool {
        let (need_mode, _) = qualified.split_once('.').unwrap_or(("", ""));
        excluded.contains(qualified)
            || (!self.loaded.contains_key(need_mode)
                && (self.decisions.iter()).any(|d| d.name == need_mode && !d.included))
    }

    fn unknown_need_error(&self, need: &UnknownNeed, ids: &HashMap<&str, usize>) -> anyhow::Error {
        let UnknownNeed {
            mode,
            origin,
            need_index,
            need,
            qualified,
        } = need;
        let (need_mode, _) = qualified.split_once('.').unwrap_or(("", ""));
        let need_index = need_index.to_string();
        let problem = CompileErrorKind::NeedsMissingStep {
            step: origin.name.clone(),
            need: need.to_string(),
        };
        let mut error = mode.problem_at(
            problem,
            mode.document
                .positions()
                .value(&["steps", &origin.name, "needs", &need_index]),
        );
        if let Some(s) = did_you_mean(qualified, ids.keys().copied()) {
            error = error.note(format!("did you mean `{s}`?"));
        }
        if !self.loaded.contains_key(need_mode) {
            error = error.note(format!(
                "a step of another mode can be needed only when this mode requires it: \
                 add `{need_mode}` to `requires`"
            ));
        }
        error.into()
    }

    /// A mode's first steps (those without a need in their own mode) wait for every last step
    /// (one no step of its own mode needs) of the nearest modes it requires that have steps: the
    /// modes it names, or, for one that `when` left without steps, the modes that one names. A
    /// required mode's own first steps wait for what it requires in turn, so the order is the
    /// same as waiting for every mode required directly or not, with edges in proportion to the
    /// modes named rather than to the whole closure: a chain of 2,000 modes made 2 million edges.
    /// Through a barrier node, 1,500 first steps waiting for 1,500 last steps take 3,000 edges.
    fn add_mode_edges(&self, graph: &mut StepGraph, origins: &[Origin]) {
        let mut sinks_by_mode: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut firsts_by_mode: HashMap<usize, Vec<usize>> = HashMap::new();
        for (index, origin) in origins.iter().enumerate() {
            let node = graph.nodes[index];
            let is_sink = (graph.graph.neighbors(node))
                .all(|n| origins[graph.step_of(n)].mode != origin.mode);
            if is_sink {
                sinks_by_mode.entry(origin.mode).or_default().push(index);
            }
            let has_local_need = (graph.graph)
                .neighbors_directed(node, petgraph::Incoming)
                .any(|n| origins[graph.step_of(n)].mode == origin.mode);
            if !has_local_need {
                firsts_by_mode.entry(origin.mode).or_default().push(index);
            }
        }
        // One barrier per required mode, after its last steps, that the first steps of every
        // mode requiring it wait for.
        let mut waiting: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (&mode, firsts) in &firsts_by_mode {
            for required in self.nearest_with_steps(mode, &sinks_by_mode) {
                waiting.entry(required).or_default().extend(firsts);
            }
        }
        for (required, mut firsts) in waiting {
            firsts.sort_unstable();
            graph.add_barrier(&sinks_by_mode[&required], &firsts);
        }
    }

    /// The modes `mode` requires that have steps in the plan, looking through those that have
    /// none to the modes they require (each mode once).
    fn nearest_with_steps(&self, mode: usize, sinks: &HashMap<usize, Vec<usize>>) -> Vec<usize> {
        let mut found = Vec::new();
        let mut seen = HashSet::from([mode]);
        let mut pending = vec![mode];
        while let Some(current) = pending.pop() {
            for required in &self.loaded[current].document.value.requires {
                let Some(index) = self.loaded.get_index_of(required) else {
                    continue;
                };
                if !seen.insert(index) {
                    continue;
                }
                match sinks.contains_key(&index) {
                    true => found.push(index),
                    false => pending.push(index),
                }
            }
        }
        found
    }

    /// Steps that need each other, located at the first step's need that closes the cycle (or
    /// at the step, when its mode's `requires` does).
    fn cycle_error(&self, rendered: &RenderedSteps, cycle: &Cycle) -> anyhow::Error {
        let steps: Vec<String> = (cycle.steps.iter())
            .map(|&i| rendered.steps[i].id.clone())
            .collect();
        let origin = &rendered.origins[cycle.steps[0]];
        let mode = &self.loaded[origin.mode];
        let positions = mode.document.positions();
        let at = match cycle.closing_need {
            Some(need_index) => {
                let need_index = need_index.to_string();
                positions.value(&["steps", &origin.name, "needs", &need_index])
            }
            None => positions.key(&["steps", &origin.name]),
        };
        mode.problem_at(CompileErrorKind::StepCycle { steps }, at)
            .into()
    }
}

/// A need that names no step of the plan, for its error.
struct UnknownNeed<'a> {
    mode: &'a LoadedMode,
    origin: &'a Origin,
    need_index: usize,
    need: &'a str,
    qualified: &'a str,
}
