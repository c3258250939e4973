//! Configuration: flags and `CAIRN_*` environment variables (both parsed by
//! clap) override an optional TOML file, which overrides the defaults.
//! Unknown keys and ill-typed values in the file are errors that name the
//! file and the key, so a typo never silently falls back to a default.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Where a value came from, shown by `cairn config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Default,
    File,
    FlagOrEnv,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::File => "config file",
            Source::FlagOrEnv => "flag or environment",
        }
    }
}

/// Values given on the command line or in the environment.
#[derive(Debug, Default, Clone)]
pub(crate) struct ConfigOverrides {
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) log_level: Option<String>,
}

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

/// The `[node]` table: one key/value node's identity and peers.
///
///     [node]
///     id = 1
///     peers = ["1=http://10.0.0.1:7701", "2=http://10.0.0.2:7701", "3=http://10.0.0.3:7701"]
///     listen = "0.0.0.0:7701"
///     max_raft_state = 8388608
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
                self.data_dir.1,
            ),
            ("log_level", self.log_level.0.clone(), self.log_level.1),
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
        anyhow::anyhow!(
            "{} is not a valid Cairn configuration: {}; `cairn config --help` lists the keys",
            path.display(),
            error.message()
        )
    })
}

fn pick<T>(flag_or_env: Option<T>, file: Option<T>, default: impl FnOnce() -> T) -> (T, Source) {
    match (flag_or_env, file) {
        (Some(value), _) => (value, Source::FlagOrEnv),
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
            data_dir: Some("here".into()),
            log_level: None,
        };
        let config = Config::resolve(Some(file.path()), overrides).unwrap();
        assert_eq!(config.data_dir, (PathBuf::from("here"), Source::FlagOrEnv));
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

        let missing = Path::new("/nonexistent/cairn.toml");
        let error = Config::resolve(Some(missing), ConfigOverrides::default()).unwrap_err();
        assert!(error.to_string().contains("--config"), "{error}");
    }

    #[test]
    fn toml_output_reads_back() {
        let overrides = ConfigOverrides {
            data_dir: Some("d".into()),
            log_level: Some("warn".into()),
        };
        let config = Config::resolve(None, overrides).unwrap();
        let file = write(&config.to_toml().unwrap());
        let again = Config::resolve(Some(file.path()), ConfigOverrides::default()).unwrap();
        assert_eq!(again.data_dir.0, config.data_dir.0);
        assert_eq!(again.log_level.0, config.log_level.0);
    }
}
