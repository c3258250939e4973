//! Built-in apps, chosen by name: `wc`, `indexer`, `grep`, and the 6.824
//! lab's test apps (`mtiming`, `rtiming`, `jobcount`, `early_exit`, `crash`,
//! `nocrash`).

mod grep;
mod lab;
mod text;
mod wc;

use std::sync::Arc;

use crate::App;
use crate::streaming::Streaming;

pub use text::for_each_word;

/// The names of the built-in apps, for help texts.
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "wc",
        "word count: `WORD COUNT` per word (words are runs of letters)",
    ),
    ("indexer", "inverted index: `WORD N FILE,FILE,...` per word"),
    (
        "grep",
        "lines matching --pattern (a regex): `FILE:OFFSET LINE`",
    ),
    ("mtiming", "6.824 test app: map parallelism"),
    ("rtiming", "6.824 test app: reduce parallelism"),
    ("jobcount", "6.824 test app: counts map executions"),
    ("early_exit", "6.824 test app: slow reduces for two keys"),
    ("crash", "6.824 test app: exits or stalls at random"),
    (
        "nocrash",
        "6.824 test app: crash's output without the crashes",
    ),
];

/// What a job runs: a built-in app or streaming commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSpec {
    /// A built-in app by name; `pattern` is grep's.
    BuiltIn { name: String, pattern: String },
    /// Hadoop Streaming: shell commands for map and reduce.
    Streaming { mapper: String, reducer: String },
    /// An [`App`] implemented by the program that embeds this crate. The
    /// coordinator only carries the name; every worker is given the app in
    /// [`WorkerConfig::app`](crate::WorkerConfig::app).
    Library { name: String },
}

/// How a library app's name travels in the job spec.
pub(crate) const LIBRARY_PREFIX: &str = "library:";

/// Why an app cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum AppSpecError {
    #[error("unknown app {0:?}; built-in apps are: {list}", list = BUILT_IN.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", "))]
    Unknown(String),
    #[error("the grep app needs --pattern REGEX")]
    MissingPattern,
    #[error("invalid grep pattern: {0}")]
    BadPattern(String),
    #[error("a streaming job needs both --mapper and --reducer")]
    IncompleteStreaming,
    #[error(
        "app {0:?} is a library app: the program that runs the worker must provide it (WorkerConfig::app)"
    )]
    LibraryApp(String),
}

impl AppSpec {
    /// Makes the app.
    pub fn build(&self) -> Result<Arc<dyn App>, AppSpecError> {
        let (name, pattern) = match self {
            AppSpec::Streaming { mapper, reducer } => {
                if mapper.is_empty() || reducer.is_empty() {
                    return Err(AppSpecError::IncompleteStreaming);
                }
                return Ok(Arc::new(Streaming::new(mapper.clone(), reducer.clone())));
            }
            AppSpec::BuiltIn { name, pattern } => (name.as_str(), pattern),
            AppSpec::Library { name } => return Err(AppSpecError::LibraryApp(name.clone())),
        };
        Ok(match name {
            "wc" => Arc::new(wc::WordCount),
            "indexer" => Arc::new(wc::Indexer),
            "grep" => {
                if pattern.is_empty() {
                    return Err(AppSpecError::MissingPattern);
                }
                let regex = regex::bytes::Regex::new(pattern)
                    .map_err(|error| AppSpecError::BadPattern(error.to_string()))?;
                Arc::new(grep::Grep { regex })
            }
            "mtiming" => Arc::new(lab::MapTiming),
            "rtiming" => Arc::new(lab::ReduceTiming),
            "jobcount" => Arc::new(lab::JobCount::default()),
            "early_exit" => Arc::new(lab::EarlyExit),
            "crash" => Arc::new(lab::Crash { crash: true }),
            "nocrash" => Arc::new(lab::Crash { crash: false }),
            other => return Err(AppSpecError::Unknown(other.to_string())),
        })
    }
}
