//! A linearizability checker for histories of operations (Wing & Gong's
//! search with Lowe's memoisation, as in the Porcupine checker that 6.824
//! uses), specialised to key/value histories by [`check_kv`].
//!
//! ## How it works
//!
//! A history is linearizable if every operation can be given one instant
//! between its call and its return such that, in the order of those
//! instants, the operations make sense one after the other to a sequential
//! model (here: a map from keys to strings).
//!
//! The search walks a list of call and return events in time order. At a
//! call it tries to linearize that operation now (apply it to the model); at
//! a return whose operation is not linearized yet it backtracks. A set of
//! (linearized operations, model state) pairs already seen prunes the
//! search. An operation with an unknown outcome returns "at infinity": it
//! may be linearized at any point after its call, including after every
//! other operation, which is the same as never having happened.
//!
//! Key/value histories are checked per key (P-compositionality: a history is
//! linearizable iff each key's sub-history is), which keeps the search small.
//!
//! The search is exponential in the worst case, so it has a budget of steps
//! ([`CheckOptions::max_steps`]); running out gives [`CheckResult::Unknown`],
//! which a test must treat as a failure to investigate, not a pass.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::history::{KvInput, Operation};

/// The verdict on a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CheckResult {
    /// The history is linearizable.
    Ok,
    /// It is not: some key's operations cannot be put in any legal order.
    Illegal,
    /// The search ran out of budget before deciding.
    Unknown,
}

/// Limits on the search.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Search steps over all keys before giving up with
    /// [`CheckResult::Unknown`]. Deterministic, so it behaves the same in
    /// simulation, where the clock stands still during a computation.
    pub max_steps: u64,
    /// Wall-clock limit, checked every 4096 steps. In a simulation build the
    /// clock is virtual and does not advance during the search, so there
    /// only `max_steps` applies.
    pub timeout: Option<Duration>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            max_steps: 50_000_000,
            timeout: Some(Duration::from_secs(60)),
        }
    }
}

/// A sequential specification: the state and how operations change it.
pub trait Model {
    /// The model's state. Hashed for memoisation.
    type State: Clone + Eq + Hash;
    /// An operation with its observed output.
    type Op;
    /// The state before any operation.
    fn init(&self) -> Self::State;
    /// The state after `op`, or `None` if `op` (with the output it
    /// observed) cannot happen in `state`.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;
}

/// The outcome of [`check_kv`].
#[derive(Debug, Clone, Serialize)]
pub struct KvCheck {
    /// The verdict.
    pub result: CheckResult,
    /// The first key found not linearizable.
    pub illegal_key: Option<String>,
    /// That key's operations, for inspection.
    pub illegal_operations: Vec<Operation>,
    /// How many operations were checked.
    pub operations: usize,
    /// How many keys.
    pub keys: usize,
    /// Search steps taken.
    pub steps: u64,
}

impl KvCheck {
    /// Writes the verdict and the offending key's operations, as JSON, to
    /// `path` (directories created as needed).
    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json)
    }

    /// Panics unless the history is linearizable. On `Illegal`, the
    /// offending operations are first written to
    /// `$CAIRN_LINCHECK_DIR/<name>.json` (default: the system temp dir), and
    /// the message says where.
    pub fn assert_ok(&self, name: &str) {
        match self.result {
            CheckResult::Ok => {}
            CheckResult::Unknown => panic!(
                "linearizability check of {name} ran out of budget after {} steps \
                 ({} operations on {} keys): the history is too hard to check; investigate",
                self.steps, self.operations, self.keys
            ),
            CheckResult::Illegal => {
                let dir = std::env::var_os("CAIRN_LINCHECK_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| std::env::temp_dir().join("cairn-lincheck"));
                let path = dir.join(format!("{name}.json"));
                let written = match self.write_to(&path) {
                    Ok(()) => format!("history written to {}", path.display()),
                    Err(e) => format!("could not write the history: {e}"),
                };
                panic!(
                    "history of {name} is not linearizable on key {:?}; {written}",
                    self.illegal_key.as_deref().unwrap_or_default()
                );
            }
        }
    }
}

/// The key/value model for one key: its value, a missing key being "".
#[derive(Debug, Clone, Copy, Default)]
pub struct KvModel;

impl Model for KvModel {
    type State = String;
    type Op = Operation;

    fn init(&self) -> String {
        String::new()
    }

    fn step(&self, state: &String, op: &Operation) -> Option<String> {
        match &op.input {
            KvInput::Get { .. } => match &op.output {
                Some(read) if read == state => Some(state.clone()),
                Some(_) => None,
                // A Get with no recorded output constrains nothing.
                None => Some(state.clone()),
            },
            KvInput::Put { value, .. } => Some(value.clone()),
            KvInput::Append { value, .. } => Some(format!("{state}{value}")),
        }
    }
}

/// Checks a key/value history, key by key.
pub fn check_kv(operations: &[Operation], options: &CheckOptions) -> KvCheck {
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for operation in operations {
        by_key
            .entry(operation.input.key())
            .or_default()
            .push(operation.clone());
    }
    let mut budget = Budget::new(options);
    let mut verdict = KvCheck {
        result: CheckResult::Ok,
        illegal_key: None,
        illegal_operations: Vec::new(),
        operations: operations.len(),
        keys: by_key.len(),
        steps: 0,
    };
    for (key, ops) in by_key {
        let times: Vec<(u64, Option<u64>)> = ops.iter().map(|op| (op.call, op.ret)).collect();
        match check_operations(&KvModel, &ops, &times, &mut budget) {
            CheckResult::Ok => {}
            CheckResult::Unknown => verdict.result = CheckResult::Unknown,
            CheckResult::Illegal => {
                verdict.result = CheckResult::Illegal;
                verdict.illegal_key = Some(key.to_string());
                verdict.illegal_operations = ops;
                break;
            }
        }
    }
    verdict.steps = budget.steps;
    verdict
}

/// Search budget shared by the partitions of one check.
#[derive(Debug)]
struct Budget {
    steps: u64,
    max_steps: u64,
    deadline: Option<Instant>,
}

impl Budget {
    fn new(options: &CheckOptions) -> Self {
        Self {
            steps: 0,
            max_steps: options.max_steps,
            deadline: options.timeout.map(|t| Instant::now() + t),
        }
    }

    /// Counts a step; false when the budget is spent.
    fn step(&mut self) -> bool {
        self.steps += 1;
        if self.steps > self.max_steps {
            return false;
        }
        if self.steps.is_multiple_of(4096)
            && let Some(deadline) = self.deadline
        {
            return Instant::now() < deadline;
        }
        true
    }
}

/// A growable bit set of operation indices.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Self(vec![0; len.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// The event list as a doubly linked list over arrays ("dancing links"):
/// index 0 is the head sentinel, `tail` the end sentinel, and each
/// operation `i` has a call event and a return event.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For each event: the operation and whether it is the call.
    kind: Vec<(usize, bool)>,
    /// For each operation: its return event.
    return_of: Vec<usize>,
    tail: usize,
}

impl Events {
    fn new(times: &[(u64, Option<u64>)]) -> Self {
        // (time, is_return, op): calls sort before returns at equal times,
        // so touching operations count as concurrent.
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(times.len() * 2);
        for (op, &(call, ret)) in times.iter().enumerate() {
            order.push((call, false, op));
            order.push((ret.unwrap_or(u64::MAX), true, op));
        }
        order.sort_unstable();
        let tail = order.len() + 1;
        let mut kind = vec![(usize::MAX, false); tail + 1];
        let mut return_of = vec![0; times.len()];
        for (position, &(_, is_return, op)) in order.iter().enumerate() {
            kind[position + 1] = (op, !is_return);
            if is_return {
                return_of[op] = position + 1;
            }
        }
        Self {
            next: (1..=tail + 1).collect(),
            prev: (0..=tail).map(|i| i.saturating_sub(1)).collect(),
            kind,
            return_of,
            tail,
        }
    }

    fn unlink(&mut self, event: usize) {
        let (p, n) = (self.prev[event], self.next[event]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, event: usize) {
        let (p, n) = (self.prev[event], self.next[event]);
        self.next[p] = event;
        self.prev[n] = event;
    }

    /// Removes an operation's call and return events.
    fn lift(&mut self, call: usize) {
        let ret = self.return_of[self.kind[call].0];
        self.unlink(call);
        self.unlink(ret);
    }

    /// Undoes [`lift`](Self::lift), in reverse order.
    fn unlift(&mut self, call: usize) {
        let ret = self.return_of[self.kind[call].0];
        self.relink(ret);
        self.relink(call);
    }
}

/// Checks one partition: `ops[i]` was called at `times[i].0` and returned at
/// `times[i].1` (`None`: unknown outcome).
fn check_operations<M: Model>(
    model: &M,
    ops: &[M::Op],
    times: &[(u64, Option<u64>)],
    budget: &mut Budget,
) -> CheckResult {
    let mut events = Events::new(times);
    let mut state = model.init();
    let mut linearized = Bits::new(ops.len());
    let mut seen: HashSet<(Bits, M::State)> = HashSet::new();
    // The calls linearized so far, with the state before each.
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut event = events.next[0];
    while events.next[0] != events.tail {
        if !budget.step() {
            return CheckResult::Unknown;
        }
        let (op, is_call) = events.kind[event];
        if is_call && event != events.tail {
            if let Some(after) = model.step(&state, &ops[op]) {
                let mut with_op = linearized.clone();
                with_op.set(op);
                if seen.insert((with_op.clone(), after.clone())) {
                    stack.push((event, std::mem::replace(&mut state, after)));
                    linearized = with_op;
                    events.lift(event);
                    event = events.next[0];
                    continue;
                }
            }
            event = events.next[event];
        } else {
            // A return (or the end) before its operation could be placed:
            // undo the most recent choice and try the next call after it.
            let Some((call, before)) = stack.pop() else {
                return CheckResult::Illegal;
            };
            state = before;
            linearized.clear(events.kind[call].0);
            events.unlift(call);
            event = events.next[call];
        }
    }
    CheckResult::Ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        client: u64,
        input: KvInput,
        output: Option<&str>,
        call: u64,
        ret: Option<u64>,
    ) -> Operation {
        Operation {
            client,
            input,
            output: output.map(str::to_string),
            call,
            ret,
        }
    }
    fn get(key: &str) -> KvInput {
        KvInput::Get { key: key.into() }
    }
    fn put(key: &str, value: &str) -> KvInput {
        KvInput::Put {
            key: key.into(),
            value: value.into(),
        }
    }
    fn append(key: &str, value: &str) -> KvInput {
        KvInput::Append {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn a_valid_concurrent_history_is_accepted() {
        // Two overlapping appends; reads see them in one order, consistently.
        let history = vec![
            op(0, append("k", "a"), None, 0, Some(50)),
            op(1, append("k", "b"), None, 10, Some(40)),
            op(2, get("k"), Some("ba"), 20, Some(60)),
            op(2, get("k"), Some("ba"), 70, Some(80)),
            op(3, put("other", "x"), None, 0, Some(5)),
            op(3, get("other"), Some("x"), 6, Some(7)),
        ];
        let check = check_kv(&history, &CheckOptions::default());
        assert_eq!(check.result, CheckResult::Ok);
        assert_eq!(check.keys, 2);
    }

    #[test]
    fn a_stale_read_is_rejected() {
        let history = vec![
            op(0, put("k", "1"), None, 0, Some(10)),
            op(0, append("k", "2"), None, 20, Some(30)),
            // Starts after the append returned, yet misses it.
            op(1, get("k"), Some("1"), 40, Some(50)),
        ];
        let check = check_kv(&history, &CheckOptions::default());
        assert_eq!(check.result, CheckResult::Illegal);
        assert_eq!(check.illegal_key.as_deref(), Some("k"));
        assert_eq!(check.illegal_operations.len(), 3);
    }

    #[test]
    fn reads_cannot_go_back_in_time() {
        // Concurrent with the put, but the second read saw the old value
        // after the first read saw the new one.
        let history = vec![
            op(0, put("k", "new"), None, 0, Some(100)),
            op(1, get("k"), Some("new"), 10, Some(20)),
            op(1, get("k"), Some(""), 30, Some(40)),
        ];
        assert_eq!(
            check_kv(&history, &CheckOptions::default()).result,
            CheckResult::Illegal
        );
    }

    #[test]
    fn an_operation_with_unknown_outcome_may_or_may_not_take_effect() {
        let took_effect = vec![
            op(0, append("k", "x"), None, 0, None),
            op(1, get("k"), Some("x"), 100, Some(110)),
        ];
        assert_eq!(
            check_kv(&took_effect, &CheckOptions::default()).result,
            CheckResult::Ok
        );
        let did_not = vec![
            op(0, append("k", "x"), None, 0, None),
            op(1, get("k"), Some(""), 100, Some(110)),
        ];
        assert_eq!(
            check_kv(&did_not, &CheckOptions::default()).result,
            CheckResult::Ok
        );
        // But it cannot take effect before it was called.
        let too_early = vec![
            op(1, get("k"), Some("x"), 0, Some(10)),
            op(0, append("k", "x"), None, 20, None),
        ];
        assert_eq!(
            check_kv(&too_early, &CheckOptions::default()).result,
            CheckResult::Illegal
        );
        // Nor take effect, be seen, then be undone.
        let flicker = vec![
            op(0, append("k", "x"), None, 0, None),
            op(1, get("k"), Some("x"), 100, Some(110)),
            op(1, get("k"), Some(""), 120, Some(130)),
        ];
        assert_eq!(
            check_kv(&flicker, &CheckOptions::default()).result,
            CheckResult::Illegal
        );
    }

    #[test]
    fn an_exhausted_budget_is_unknown_not_ok() {
        // Many concurrent appends and a read that matches no order make the
        // search explore many interleavings before failing.
        let mut history: Vec<Operation> = (0..7)
            .map(|i| op(i, append("k", &i.to_string()), None, 0, Some(1000)))
            .collect();
        history.push(op(99, get("k"), Some("impossible"), 0, Some(1000)));
        let options = CheckOptions {
            max_steps: 1000,
            timeout: None,
        };
        assert_eq!(check_kv(&history, &options).result, CheckResult::Unknown);
        assert_eq!(
            check_kv(&history, &CheckOptions::default()).result,
            CheckResult::Illegal
        );
    }

    #[test]
    fn illegal_histories_are_written_out() {
        let history = vec![
            op(0, put("k", "1"), None, 0, Some(10)),
            op(1, get("k"), Some("2"), 20, Some(30)),
        ];
        let check = check_kv(&history, &CheckOptions::default());
        let dir = std::env::temp_dir().join(format!("cairn-lincheck-test-{}", std::process::id()));
        let path = dir.join("illegal.json");
        check.write_to(&path).unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(written["result"], "Illegal");
        assert_eq!(written["illegal_operations"].as_array().unwrap().len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_large_sequential_history_checks_fast() {
        let mut history = Vec::new();
        let mut value = String::new();
        for i in 0..3000u64 {
            let piece = format!("x{i}.");
            history.push(op(0, append("k", &piece), None, i * 10, Some(i * 10 + 3)));
            value.push_str(&piece);
            history.push(op(1, get("k"), Some(&value), i * 10 + 5, Some(i * 10 + 8)));
        }
        let check = check_kv(&history, &CheckOptions::default());
        assert_eq!(check.result, CheckResult::Ok);
        assert!(check.steps < 100_000, "steps {}", check.steps);
    }
}
