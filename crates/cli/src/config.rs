//! Configuration: flags and `CAIRN_*` environment variables (both parsed by
//! clap) override an optional TOML file, which overrides the defaults.
//! Unknown keys and ill-typed values in the file are errors that name the
//! file and the key, so a typo never silently falls back to a default.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Where a value came from, shown by `cairn config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Default,
    File,
    Flag,
    /// The environment variable that gave it.
    Env(String),
}

impl Source {
    fn label(&self) -> String {
        match self {
            Source::Default => "default".to_string(),
            Source::File => "config file".to_string(),
            Source::Flag => "command-line flag".to_string(),
            Source::Env(name) => format!("environment variable {name}"),
        }
    }
}

/// Values given on the command line or in the environment, each with the
/// flag or variable it came from.
#[derive(Debug, Default, Clone)]
pub(crate) struct ConfigOverrides {
    pub(crate) data_dir: Option<(PathBuf, Source)>,
    pub(crate) log_level: Option<(String, Source)>,
}

/// What `cairn config` says a variable sets when Cairn sets it for its own
/// child processes (never listed as "not set").
pub(crate) const INTERNAL_VARIABLE: &str =
    "nothing you set: `cairn cluster` gives it to the nodes it starts";

/// What `cairn config --help` says about the file: every key of every
/// table, with its type, and an example that parses (a test checks both).
pub(crate) const FILE_HELP: &str = r#"The configuration file (TOML, given with --config FILE or CAIRN_CONFIG) may hold
these keys; every key is optional, flags and CAIRN_* variables override it, and
an unknown key or a value of the wrong type is an error that names its line.

Top level:
  data_dir = "PATH"          string: where Cairn keeps its data (default cairn-data)
  log_level = "LEVEL"        string: error, warn, info, debug or trace (default info)

[node] table, read by `cairn kv serve`, `cairn shardctl serve` and
`cairn shardkv serve` (their flags of the same name override it):
  id = N                     integer: this node's id, one of the ids in peers
  peers = ["ID=URL", ...]    array of strings: every node of the group, this one included
  listen = "HOST:PORT"       string: the address to listen on (default: this node's URL in peers)
  max_raft_state = BYTES     integer: snapshot when the Raft log passes this many bytes
                             (default 8388608 = 8 MiB; -1 never snapshots)

Example (cairn.toml):

  data_dir = "/var/lib/cairn"
  log_level = "info"

  [node]
  id = 1
  peers = ["1=http://10.0.0.1:7701", "2=http://10.0.0.2:7701", "3=http://10.0.0.3:7701"]
  listen = "0.0.0.0:7701"
  max_raft_state = 8388608

`cairn config` prints the effective values and where each came from;
`cairn config --toml` prints them as a file to start from."#;

/// The TOML file's shape: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    data_dir: Option<PathBuf>,
    log_level: Option<String>,
    /// `cairn kv serve` settings; flags override them.
    #[serde(default, skip_serializing_if = "NodeSection::is_empty")]
    node: NodeSection,
}

/// The `[node]` table: one node's identity and peers (see [`FILE_HELP`]).
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) peers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_raft_state: Option<i64>,
}

impl NodeSection {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// The effective configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Where Cairn keeps its data (default `./cairn-data`).
    pub(crate) data_dir: (PathBuf, Source),
    /// Log level for Cairn's own messages (default `info`).
    pub(crate) log_level: (String, Source),
    /// The file's `[node]` table (for `cairn kv serve`).
    pub(crate) node: NodeSection,
    /// The file the configuration was read from, if any.
    pub(crate) file: Option<PathBuf>,
}

impl Config {
    /// Merges the overrides, the file at `path` (if given) and the defaults.
    pub(crate) fn resolve(path: Option<&Path>, overrides: ConfigOverrides) -> anyhow::Result<Self> {
        let file = match path {
            Some(path) => read_file(path)?,
            None => ConfigFile::default(),
        };
        if let Some(level) = &file.log_level
            && !LOG_LEVELS.contains(&level.as_str())
        {
            anyhow::bail!(
                "{}: log_level = {level:?} is not a level; use one of {}",
                path.map(Path::display).expect("a level came from a file"),
                LOG_LEVELS.join(", ")
            );
        }
        Ok(Self {
            data_dir: pick(overrides.data_dir, file.data_dir, || {
                PathBuf::from("cairn-data")
            }),
            log_level: pick(overrides.log_level, file.log_level, || "info".to_string()),
            node: file.node,
            file: path.map(Path::to_path_buf),
        })
    }

    /// A human-readable listing with the source of each value.
    pub(crate) fn describe(&self) -> String {
        let mut out = String::new();
        match &self.file {
            Some(file) => writeln!(out, "# configuration file: {}", file.display()),
            None => writeln!(
                out,
                "# no configuration file (use --config FILE or CAIRN_CONFIG)"
            ),
        }
        .expect("writing to a String");
        let rows = [
            (
                "data_dir",
                self.data_dir.0.display().to_string(),
                &self.data_dir.1,
            ),
            ("log_level", self.log_level.0.clone(), &self.log_level.1),
        ];
        for (key, value, source) in rows {
            writeln!(out, "{key:<10} = {value:<30} # {}", source.label())
                .expect("writing to a String");
        }
        if !self.node.is_empty() {
            let table = toml::to_string(&self.node).unwrap_or_default();
            writeln!(out, "[node] # config file\n{table}").expect("writing to a String");
        }
        out
    }

    /// Every `CAIRN_*` variable in `environment`: what each known one sets
    /// (`known`: variable, what it sets), and a warning for the others,
    /// which nothing reads (a typo, or a variable of another version).
    pub(crate) fn describe_environment(
        environment: impl IntoIterator<Item = (String, String)>,
        known: &[(String, String)],
    ) -> String {
        let mut out = String::from("# CAIRN_* environment variables\n");
        let mut set: Vec<(String, String)> = environment
            .into_iter()
            .filter(|(name, _)| name.starts_with("CAIRN_"))
            .collect();
        set.sort();
        for (name, value) in &set {
            let line = match known.iter().find(|(known, _)| known == name) {
                Some((_, sets)) => format!("{:<40} # sets {sets}", format!("{name}={value}")),
                None => format!(
                    "{:<40} # not a Cairn variable: nothing reads it (check the spelling)",
                    format!("{name}={value}")
                ),
            };
            writeln!(out, "{line}").expect("writing to a String");
        }
        let unset: Vec<&str> = known
            .iter()
            .filter(|(_, sets)| sets != INTERNAL_VARIABLE)
            .filter(|(name, _)| !set.iter().any(|(set, _)| set == name))
            .map(|(name, _)| name.as_str())
            .collect();
        if !unset.is_empty() {
            writeln!(out, "# not set: {}", unset.join(", ")).expect("writing to a String");
        }
        out
    }

    /// The configuration as a TOML file.
    pub(crate) fn to_toml(&self) -> anyhow::Result<String> {
        let file = ConfigFile {
            data_dir: Some(self.data_dir.0.clone()),
            log_level: Some(self.log_level.0.clone()),
            node: self.node.clone(),
        };
        Ok(toml::to_string(&file)?)
    }
}

fn read_file(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!("cannot read the configuration file {}; check the path given to --config or CAIRN_CONFIG", path.display())
    })?;
    toml::from_str(&text).map_err(|error| {
        let (place, quoted) = match error.span() {
            Some(span) => {
                let (line, column) = line_and_column(&text, span.start);
                let source = text.lines().nth(line - 1).unwrap_or_default().trim();
                (format!(":{line}:{column}"), format!(" (`{source}`)"))
            }
            None => (String::new(), String::new()),
        };
        anyhow::anyhow!(
            "{}{place} is not a valid Cairn configuration: {}{quoted}; `cairn config --help` lists every key with its type and an example",
            path.display(),
            error.message().trim_end()
        )
    })
}

/// The 1-based line and column of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    (line, offset.min(text.len()) - line_start + 1)
}

fn pick<T>(
    flag_or_env: Option<(T, Source)>,
    file: Option<T>,
    default: impl FnOnce() -> T,
) -> (T, Source) {
    match (flag_or_env, file) {
        (Some(given), _) => given,
        (None, Some(value)) => (value, Source::File),
        (None, None) => (default(), Source::Default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn defaults_file_and_overrides_layer_in_order() {
        let config = Config::resolve(None, ConfigOverrides::default()).unwrap();
        assert_eq!(
            config.data_dir,
            (PathBuf::from("cairn-data"), Source::Default)
        );

        let file = write("data_dir = \"/srv/cairn\"\nlog_level = \"debug\"\n");
        let config = Config::resolve(Some(file.path()), ConfigOverrides::default()).unwrap();
        assert_eq!(config.data_dir, (PathBuf::from("/srv/cairn"), Source::File));
        assert_eq!(config.log_level, ("debug".to_string(), Source::File));

        let overrides = ConfigOverrides {
            data_dir: Some(("here".into(), Source::Env("CAIRN_DATA_DIR".into()))),
            log_level: None,
        };
        let config = Config::resolve(Some(file.path()), overrides).unwrap();
        assert_eq!(
            config.data_dir,
            (PathBuf::from("here"), Source::Env("CAIRN_DATA_DIR".into()))
        );
        assert!(
            config
                .describe()
                .contains("# environment variable CAIRN_DATA_DIR")
        );
        assert_eq!(config.log_level.1, Source::File);
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let typo = write("data_dri = \"x\"\n");
        let error = Config::resolve(Some(typo.path()), ConfigOverrides::default()).unwrap_err();
        assert!(error.to_string().contains("data_dri"), "{error}");

        let level = write("log_level = \"loud\"\n");
        let error = Config::resolve(Some(level.path()), ConfigOverrides::default()).unwrap_err();
        assert!(error.to_string().contains("loud"), "{error}");

        // A list given as a string: the error names the line and the key.
        let peers = write("log_level = \"info\"\n[node]\nid = 1\npeers = \"1=http://a:1\"\n");
        let error = Config::resolve(Some(peers.path()), ConfigOverrides::default()).unwrap_err();
        let text = error.to_string();
        assert!(text.contains(":4:"), "{text}");
        assert!(text.contains("`peers = \"1=http://a:1\"`"), "{text}");
        assert!(text.contains("config --help"), "{text}");

        let missing = Path::new("/nonexistent/cairn.toml");
        let error = Config::resolve(Some(missing), ConfigOverrides::default()).unwrap_err();
        assert!(error.to_string().contains("--config"), "{error}");
    }

    /// The example in `cairn config --help` parses, and every key the file
    /// may hold is listed there.
    #[test]
    fn the_help_lists_every_key_and_its_example_parses() {
        let example: String = FILE_HELP
            .split_once("Example (cairn.toml):")
            .unwrap()
            .1
            .lines()
            .take_while(|line| line.is_empty() || line.starts_with("  "))
            .map(|line| format!("{}\n", line.trim_start()))
            .collect();
        let parsed: ConfigFile = toml::from_str(&example).unwrap();
        assert!(parsed.node.peers.as_ref().is_some_and(|p| p.len() == 3));

        // Every key of a fully filled file appears in the help.
        let full = ConfigFile {
            data_dir: Some("d".into()),
            log_level: Some("info".into()),
            node: NodeSection {
                id: Some(1),
                peers: Some(vec!["1=http://a:1".into()]),
                listen: Some("a:1".into()),
                max_raft_state: Some(1),
            },
        };
        let text = toml::to_string(&full).unwrap();
        for line in text.lines().filter(|l| l.contains(" = ")) {
            let key = line.split(" = ").next().unwrap();
            assert!(
                FILE_HELP.contains(&format!("  {key} = ")),
                "{key} missing from the help"
            );
        }
        assert_eq!(
            parsed.node,
            NodeSection {
                id: Some(1),
                peers: parsed.node.peers.clone(),
                listen: Some("0.0.0.0:7701".into()),
                max_raft_state: Some(8 << 20),
            }
        );
    }

    #[test]
    fn the_environment_listing_names_unknown_variables() {
        let known = [("CAIRN_DATA_DIR".to_string(), "--data-dir".to_string())];
        let env = [
            ("CAIRN_DATADIR".to_string(), "x".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let text = Config::describe_environment(env, &known);
        assert!(text.contains("CAIRN_DATADIR=x"), "{text}");
        assert!(text.contains("not a Cairn variable"), "{text}");
        assert!(!text.contains("PATH"), "{text}");
        assert!(text.contains("# not set: CAIRN_DATA_DIR"), "{text}");
    }

    #[test]
    fn toml_output_reads_back() {
        let overrides = ConfigOverrides {
            data_dir: Some(("d".into(), Source::Flag)),
            log_level: Some(("warn".into(), Source::Flag)),
        };
        let config = Config::resolve(None, overrides).unwrap();
        let file = write(&config.to_toml().unwrap());
        let again = Config::resolve(Some(file.path()), ConfigOverrides::default()).unwrap();
        assert_eq!(again.data_dir.0, config.data_dir.0);
        assert_eq!(again.log_level.0, config.log_level.0);
    }
}
