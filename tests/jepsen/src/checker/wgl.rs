//! Linearizability checking with the Wing & Gong algorithm, as improved by
//! Lowe (memoization of the already-explored configurations: the set of
//! linearized operations plus the model state).
//!
//! Operations with an unknown outcome (`ret == None`) may take effect at any
//! point after their call, or never: they get no return entry, so the search
//! may linearize them anywhere after their call, and it succeeds once every
//! operation that did return is linearized, whatever is left of the unknown
//! ones.

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash + Debug;
    type Input: Debug;
    fn init(&self) -> Self::State;
    /// The state after applying `input` to `state`, or None if `input` (with
    /// the output it records) is impossible in `state`.
    fn step(&self, state: &Self::State, input: &Self::Input) -> Option<Self::State>;
}

/// One operation: its call time, its return time (None: unknown outcome, it
/// may never have taken effect), and its input with the recorded output.
#[derive(Clone, Debug)]
pub struct Operation<I> {
    pub call: u64,
    pub ret: Option<u64>,
    pub input: I,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<S> {
    Linearizable,
    /// No linearization exists. `stuck` is the index of the operation that
    /// could not be placed after the longest linearizable prefix found
    /// (`prefix` operations long), and `state` the model state there.
    NotLinearizable {
        stuck: usize,
        prefix: usize,
        state: S,
    },
    /// The search gave up after `steps` steps.
    Unknown {
        steps: u64,
    },
}

#[derive(Clone, Copy, Debug)]
struct Node {
    /// Index of the operation.
    op: usize,
    is_call: bool,
    /// For a call: the node of its return, if it has one.
    matched: Option<usize>,
    prev: usize,
    next: Option<usize>,
}

struct List {
    nodes: Vec<Node>,
}

impl List {
    const HEAD: usize = 0;

    fn first(&self) -> Option<usize> {
        self.nodes[Self::HEAD].next
    }

    fn unlink(&mut self, n: usize) {
        let Node { prev, next, .. } = self.nodes[n];
        self.nodes[prev].next = next;
        if let Some(next) = next {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, n: usize) {
        let Node { prev, next, .. } = self.nodes[n];
        self.nodes[prev].next = Some(n);
        if let Some(next) = next {
            self.nodes[next].prev = n;
        }
    }

    /// Removes a call and its return.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Some(m) = self.nodes[call].matched {
            self.unlink(m);
        }
    }

    /// Undoes `lift` (must be done in reverse order of lifting).
    fn unlift(&mut self, call: usize) {
        if let Some(m) = self.nodes[call].matched {
            self.relink(m);
        }
        self.relink(call);
    }
}

/// Fixed-size bit set of linearized operations.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64).max(1)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// Checks `ops` against `model`, giving up after `max_steps` steps.
pub fn check<M: Model>(
    model: &M,
    ops: &[Operation<M::Input>],
    max_steps: u64,
) -> Outcome<M::State> {
    // Entries in time order; at equal times calls come first (more overlap:
    // the permissive reading of a tie).
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, 0, i));
        if let Some(r) = op.ret {
            events.push((r.max(op.call), 1, i));
        }
    }
    events.sort();
    let mut nodes = vec![Node {
        op: usize::MAX,
        is_call: false,
        matched: None,
        prev: 0,
        next: None,
    }];
    let mut call_node = vec![0usize; ops.len()];
    for (k, &(_, kind, i)) in events.iter().enumerate() {
        let idx = k + 1;
        nodes.push(Node {
            op: i,
            is_call: kind == 0,
            matched: None,
            prev: idx - 1,
            next: None,
        });
        nodes[idx - 1].next = Some(idx);
        if kind == 0 {
            call_node[i] = idx;
        } else {
            nodes[call_node[i]].matched = Some(idx);
        }
    }
    let mut list = List { nodes };
    let mut remaining_returns = ops.iter().filter(|o| o.ret.is_some()).count();

    let mut state = model.init();
    let mut linearized = Bits::new(ops.len());
    let mut cache: HashSet<(Bits, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut steps: u64 = 0;
    let mut best: Option<(usize, usize, M::State)> = None;
    let mut entry = list.first();

    loop {
        if remaining_returns == 0 {
            return Outcome::Linearizable;
        }
        steps += 1;
        if steps > max_steps {
            return Outcome::Unknown { steps };
        }
        // A return node remains, so walking the calls reaches one.
        let Some(e) = entry else {
            unreachable!("walked off the list with returns left")
        };
        let node = list.nodes[e];
        if node.is_call {
            if let Some(next_state) = model.step(&state, &ops[node.op].input) {
                linearized.set(node.op);
                if cache.insert((linearized.clone(), next_state.clone())) {
                    stack.push((e, std::mem::replace(&mut state, next_state)));
                    list.lift(e);
                    if node.matched.is_some() {
                        remaining_returns -= 1;
                    }
                    entry = list.first();
                    continue;
                }
                linearized.clear(node.op);
            }
            entry = node.next;
        } else {
            // The operation returning here is not linearized yet: backtrack.
            if best.as_ref().is_none_or(|b| stack.len() >= b.1) {
                best = Some((node.op, stack.len(), state.clone()));
            }
            let Some((call, prev_state)) = stack.pop() else {
                let (stuck, prefix, state) = best.expect("set above");
                return Outcome::NotLinearizable {
                    stuck,
                    prefix,
                    state,
                };
            };
            let op = list.nodes[call].op;
            linearized.clear(op);
            state = prev_state;
            list.unlift(call);
            if list.nodes[call].matched.is_some() {
                remaining_returns += 1;
            }
            entry = list.nodes[call].next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register holding one integer, starting at 0.
    struct Reg;
    #[derive(Debug)]
    enum I {
        R(i64),
        W(i64),
    }
    impl Model for Reg {
        type State = i64;
        type Input = I;
        fn init(&self) -> i64 {
            0
        }
        fn step(&self, s: &i64, i: &I) -> Option<i64> {
            match *i {
                I::R(v) => (v == *s).then_some(*s),
                I::W(v) => Some(v),
            }
        }
    }

    fn op(call: u64, ret: Option<u64>, input: I) -> Operation<I> {
        Operation { call, ret, input }
    }

    #[test]
    fn empty_and_sequential_histories_are_linearizable() {
        assert_eq!(check(&Reg, &[], 1000), Outcome::Linearizable);
        let h = [
            op(0, Some(1), I::W(1)),
            op(2, Some(3), I::R(1)),
            op(4, Some(5), I::W(2)),
            op(6, Some(7), I::R(2)),
        ];
        assert_eq!(check(&Reg, &h, 1000), Outcome::Linearizable);
    }

    #[test]
    fn concurrent_read_may_see_either_value() {
        for seen in [0, 1] {
            let h = [op(0, Some(10), I::W(1)), op(1, Some(9), I::R(seen))];
            assert_eq!(check(&Reg, &h, 1000), Outcome::Linearizable, "{seen}");
        }
    }

    #[test]
    fn stale_read_is_caught() {
        // write 1 completes, then a read returns the old 0.
        let h = [op(0, Some(1), I::W(1)), op(2, Some(3), I::R(0))];
        match check(&Reg, &h, 1000) {
            Outcome::NotLinearizable { stuck, .. } => assert_eq!(stuck, 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_write_may_apply_late_or_never() {
        // The write of 1 never answered: reads may see 1 at any later time,
        // even long after, and may also never see it.
        let h = [
            op(0, None, I::W(1)),
            op(5, Some(6), I::R(0)),
            op(100, Some(101), I::R(1)),
        ];
        assert_eq!(check(&Reg, &h, 1000), Outcome::Linearizable);
        let h = [op(0, None, I::W(1)), op(5, Some(6), I::R(0))];
        assert_eq!(check(&Reg, &h, 1000), Outcome::Linearizable);
        // ...but not before it was invoked.
        let h = [op(5, Some(6), I::R(1)), op(10, None, I::W(1))];
        assert!(matches!(
            check(&Reg, &h, 1000),
            Outcome::NotLinearizable { .. }
        ));
        // ...and it cannot un-apply: once seen, a later read can't see 0.
        let h = [
            op(0, None, I::W(1)),
            op(5, Some(6), I::R(1)),
            op(7, Some(8), I::R(0)),
        ];
        assert!(matches!(
            check(&Reg, &h, 1000),
            Outcome::NotLinearizable { .. }
        ));
    }

    #[test]
    fn budget_exhaustion_is_unknown() {
        let mut h = Vec::new();
        for i in 0..20 {
            h.push(op(0, Some(100), I::W(i)));
        }
        h.push(op(200, Some(201), I::R(99)));
        assert!(matches!(check(&Reg, &h, 50), Outcome::Unknown { .. }));
    }

    #[test]
    fn many_concurrent_writes_finish_thanks_to_memoization() {
        // 14 overlapping writes of the same value, then a read of another
        // value: without memoization this explores 14! orders.
        let mut h = Vec::new();
        for _ in 0..14 {
            h.push(op(0, Some(100), I::W(1)));
        }
        h.push(op(200, Some(201), I::R(2)));
        assert!(matches!(
            check(&Reg, &h, 1_000_000),
            Outcome::NotLinearizable { .. }
        ));
    }
}
