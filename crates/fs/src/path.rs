//! [`FsPath`]: a checked path in the store's namespace.
//!
//! Every path that reaches the master passes through [`FsPath::parse`], so
//! the namespace never holds a name it could not print or compare: absolute
//! (`/` first), UTF-8, components separated by one `/`, none of them empty,
//! `.` or `..`, none longer than [`MAX_NAME_BYTES`], the whole at most
//! [`MAX_PATH_BYTES`], and no NUL or control characters (they make listings
//! ambiguous). A trailing `/` is accepted and dropped (`/a/` is `/a`). The
//! root is `/`.

use std::fmt;

use thiserror::Error;

/// The longest path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// The longest component (file or directory name), in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// A path in the store: absolute, normalized and checked.
///
/// Paths order component by component (`/a` < `/a/b` < `/a-z`), so that a
/// directory's whole subtree is one contiguous range of an ordered map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FsPath(String);

impl Ord for FsPath {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.split('/').cmp(other.0.split('/'))
    }
}

impl PartialOrd for FsPath {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Why a path was refused; each message says what a valid path looks like.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    #[error("the path is empty; paths start with / (e.g. /logs/day1)")]
    Empty,
    #[error("{0:?} is relative; paths in the store start with / (e.g. /{0})")]
    Relative(String),
    #[error("the path is not UTF-8; use names of UTF-8 characters")]
    NotUtf8,
    #[error("the path is {0} bytes long; the limit is {MAX_PATH_BYTES}: use a shorter path")]
    TooLong(usize),
    #[error("{name:?} is {len} bytes long; a name may have at most {MAX_NAME_BYTES}: use a shorter name", len = .name.len())]
    NameTooLong { name: String },
    #[error("{0:?} has an empty component (//); separate names with one /")]
    EmptyComponent(String),
    #[error("{0:?} contains . or ..; give the path without them")]
    DotComponent(String),
    #[error("{0:?} contains a control character; names may not: remove it")]
    ControlCharacter(String),
}

impl FsPath {
    /// The root directory, `/`.
    pub fn root() -> Self {
        Self("/".to_string())
    }

    /// Checks and normalizes `text` (see the module documentation).
    pub fn parse(text: &str) -> Result<Self, PathError> {
        if text.is_empty() {
            return Err(PathError::Empty);
        }
        if !text.starts_with('/') {
            return Err(PathError::Relative(text.to_string()));
        }
        if text.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong(text.len()));
        }
        if text.chars().any(char::is_control) {
            return Err(PathError::ControlCharacter(text.to_string()));
        }
        if text == "/" {
            return Ok(Self::root());
        }
        let trimmed = text.strip_suffix('/').unwrap_or(text);
        for name in trimmed[1..].split('/') {
            match name {
                "" => return Err(PathError::EmptyComponent(text.to_string())),
                "." | ".." => return Err(PathError::DotComponent(text.to_string())),
                name if name.len() > MAX_NAME_BYTES => {
                    return Err(PathError::NameTooLong {
                        name: name.to_string(),
                    });
                }
                _ => {}
            }
        }
        Ok(Self(trimmed.to_string()))
    }

    /// Checks a path given as bytes (from a command line or the wire).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PathError> {
        Self::parse(std::str::from_utf8(bytes).map_err(|_| PathError::NotUtf8)?)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The directory holding this path (`None` for the root).
    pub fn parent(&self) -> Option<FsPath> {
        if self.is_root() {
            return None;
        }
        let cut = self.0.rfind('/').expect("a checked path starts with /");
        Some(if cut == 0 {
            Self::root()
        } else {
            Self(self.0[..cut].to_string())
        })
    }

    /// The last component (`""` for the root).
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }

    /// The path of `name` inside this directory. `name` must be a valid
    /// component (this is for names already in the namespace).
    pub fn join(&self, name: &str) -> FsPath {
        debug_assert!(!name.is_empty() && !name.contains('/'), "bad name {name:?}");
        if self.is_root() {
            Self(format!("/{name}"))
        } else {
            Self(format!("{}/{name}", self.0))
        }
    }

    /// Whether `self` is `other` or lies below it.
    pub fn is_within(&self, other: &FsPath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes()[other.0.len()] == b'/')
    }

    /// Every directory above this path, from the root down (not the path).
    pub fn ancestors(&self) -> Vec<FsPath> {
        let mut out = Vec::new();
        let mut current = self.parent();
        while let Some(path) = current {
            current = path.parent();
            out.push(path);
        }
        out.reverse();
        out
    }
}

impl fmt::Display for FsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_paths_are_normalized() {
        assert_eq!(FsPath::parse("/").unwrap(), FsPath::root());
        assert_eq!(FsPath::parse("/a/b/").unwrap().as_str(), "/a/b");
        assert_eq!(FsPath::parse("/a b/ünï").unwrap().name(), "ünï");
    }

    #[test]
    fn bad_paths_are_refused_with_the_reason() {
        assert_eq!(FsPath::parse(""), Err(PathError::Empty));
        assert!(matches!(FsPath::parse("a/b"), Err(PathError::Relative(_))));
        assert!(matches!(
            FsPath::parse("/a//b"),
            Err(PathError::EmptyComponent(_))
        ));
        assert!(matches!(
            FsPath::parse("//"),
            Err(PathError::EmptyComponent(_))
        ));
        assert!(matches!(
            FsPath::parse("/a/../b"),
            Err(PathError::DotComponent(_))
        ));
        assert!(matches!(
            FsPath::parse("/a/."),
            Err(PathError::DotComponent(_))
        ));
        assert!(matches!(
            FsPath::parse("/a\nb"),
            Err(PathError::ControlCharacter(_))
        ));
        assert!(matches!(
            FsPath::parse(&format!("/{}", "n".repeat(256))),
            Err(PathError::NameTooLong { .. })
        ));
        assert!(matches!(
            FsPath::parse(&"/abc".repeat(1025)),
            Err(PathError::TooLong(4100))
        ));
        assert_eq!(FsPath::from_bytes(b"/\xff"), Err(PathError::NotUtf8));
        // Each message says what to do.
        assert!(PathError::Relative("x".into()).to_string().contains("/x"));
    }

    #[test]
    fn subtrees_sort_together() {
        let mut paths: Vec<FsPath> = ["/a-z", "/a/b", "/ab", "/a", "/a/b/c", "/"]
            .iter()
            .map(|t| FsPath::parse(t).unwrap())
            .collect();
        paths.sort();
        let sorted: Vec<&str> = paths.iter().map(FsPath::as_str).collect();
        assert_eq!(sorted, ["/", "/a", "/a/b", "/a/b/c", "/a-z", "/ab"]);
    }

    #[test]
    fn parents_names_and_containment() {
        let path = FsPath::parse("/a/b/c").unwrap();
        assert_eq!(path.parent().unwrap().as_str(), "/a/b");
        assert_eq!(path.name(), "c");
        assert_eq!(
            path.ancestors()
                .iter()
                .map(FsPath::as_str)
                .collect::<Vec<_>>(),
            ["/", "/a", "/a/b"]
        );
        assert_eq!(FsPath::root().parent(), None);
        assert_eq!(FsPath::parse("/a").unwrap().parent(), Some(FsPath::root()));
        assert!(path.is_within(&FsPath::parse("/a").unwrap()));
        assert!(path.is_within(&path));
        assert!(
            !FsPath::parse("/ab")
                .unwrap()
                .is_within(&FsPath::parse("/a").unwrap())
        );
        assert_eq!(FsPath::root().join("x").as_str(), "/x");
        assert_eq!(path.join("d").as_str(), "/a/b/c/d");
    }

    proptest::proptest! {
        /// Whatever the input, parsing never panics, and what it accepts
        /// parses again to itself.
        #[test]
        fn parsing_is_total_and_idempotent(text in "[/a-c.\\x00\\n]{0,12}") {
            if let Ok(path) = FsPath::parse(&text) {
                proptest::prop_assert_eq!(FsPath::parse(path.as_str()).unwrap(), path.clone());
                if let Some(parent) = path.parent() {
                    proptest::prop_assert!(path.is_within(&parent));
                }
            }
        }
    }
}
