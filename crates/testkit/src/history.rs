//! Recording what clients did and saw, in virtual time.
//!
//! A test wraps each client operation in [`History::begin`] and
//! [`Pending::finish`] (or [`Pending::unknown`] when no reply came, so the
//! operation may or may not have taken effect). Times come from
//! `tokio::time::Instant`, which is the simulator's clock in simulation
//! builds, so a history is as reproducible as the run that made it.

use std::sync::{Arc, Mutex};

use serde::Serialize;

/// A key/value operation as the client issued it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum KvInput {
    /// Read a key.
    Get {
        /// The key.
        key: String,
    },
    /// Replace a key's value.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Append to a key's value (a missing key counts as empty).
    Append {
        /// The key.
        key: String,
        /// What to append.
        value: String,
    },
}

impl KvInput {
    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            Self::Get { key } | Self::Put { key, .. } | Self::Append { key, .. } => key,
        }
    }
}

/// One completed (or abandoned) operation.
#[derive(Debug, Clone, Serialize)]
pub struct Operation {
    /// Which client issued it.
    pub client: u64,
    /// What was asked.
    pub input: KvInput,
    /// What a Get returned (`None` for writes, and for unknown outcomes).
    pub output: Option<String>,
    /// Virtual time of the call, in nanoseconds since the history began.
    pub call: u64,
    /// Virtual time of the return; `None` if the outcome is unknown (no
    /// reply came, so it may take effect at any time after the call).
    pub ret: Option<u64>,
}

/// A shared, append-only log of operations. Cloning shares it.
#[derive(Debug, Clone)]
pub struct History {
    start: tokio::time::Instant,
    operations: Arc<Mutex<Vec<Operation>>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

/// An operation between its call and its return.
#[derive(Debug)]
#[must_use = "finish or abandon the operation, or it is not recorded"]
pub struct Pending {
    history: History,
    client: u64,
    input: KvInput,
    call: u64,
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        Self {
            start: tokio::time::Instant::now(),
            operations: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records the call of `input` by `client`.
    pub fn begin(&self, client: u64, input: KvInput) -> Pending {
        Pending {
            history: self.clone(),
            client,
            input,
            call: self.now(),
        }
    }

    /// Adds a finished operation directly (for tests that build histories
    /// by hand).
    pub fn push(&self, operation: Operation) {
        self.lock().push(operation);
    }

    /// A copy of every operation recorded so far.
    pub fn operations(&self) -> Vec<Operation> {
        self.lock().clone()
    }

    /// How many operations were recorded.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Operation>> {
        self.operations.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Pending {
    /// The operation returned; `output` is what a Get read (ignored for
    /// writes).
    pub fn finish(self, output: Option<String>) {
        let ret = self.history.now();
        let output = match self.input {
            KvInput::Get { .. } => Some(output.unwrap_or_default()),
            _ => None,
        };
        self.history.push(Operation {
            client: self.client,
            input: self.input,
            output,
            call: self.call,
            ret: Some(ret),
        });
    }

    /// No reply came: the operation may or may not have taken effect. A Get
    /// with no reply changes nothing and is left out of the history.
    pub fn unknown(self) {
        if matches!(self.input, KvInput::Get { .. }) {
            return;
        }
        self.history.push(Operation {
            client: self.client,
            input: self.input,
            output: None,
            call: self.call,
            ret: None,
        });
    }
}
