//! The limits of the key/value messages (`cairn.kv`'s and `cairn.shardkv`'s
//! gets and writes), in one place for the two services that serve them and
//! their clerks.
//!
//! A server checks every request with [`check_key_value`] before it goes
//! into the log, and a clerk checks it before sending, so that a request
//! over a limit gets the same clear refusal from both instead of dying in
//! the transport. [`MAX_MESSAGE_BYTES`] is set on both ends of the gRPC
//! stubs and leaves room for a key, a value and an expected value at their
//! limits, so an oversized value still reaches the check.

/// The longest key accepted.
pub const MAX_KEY_BYTES: usize = 4 << 10;
/// The largest value accepted, and the longest an append may grow one to.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// The largest message the gRPC layer of a server or a clerk encodes or
/// decodes: a request or reply with a value and an expected value at the
/// limit fits with room to spare.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;

/// Why a key or a value is refused; nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Keys are at least one byte.
    #[error("the key is empty")]
    EmptyKey,
    /// The key is over [`MAX_KEY_BYTES`].
    #[error("the key is {bytes} bytes; keys are limited to {MAX_KEY_BYTES} bytes")]
    KeyTooLong {
        /// The key's length.
        bytes: usize,
    },
    /// The value is over [`MAX_VALUE_BYTES`].
    #[error("the value is {bytes} bytes; values are limited to {MAX_VALUE_BYTES} bytes (1 MiB)")]
    ValueTooLarge {
        /// The value's length.
        bytes: usize,
    },
}

impl From<LimitError> for tonic::Status {
    fn from(error: LimitError) -> Self {
        tonic::Status::invalid_argument(error.to_string())
    }
}

/// Checks a key (and a value, for a write) against the limits.
pub fn check_key_value(key: &[u8], value: Option<&[u8]>) -> Result<(), LimitError> {
    if key.is_empty() {
        return Err(LimitError::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(LimitError::KeyTooLong { bytes: key.len() });
    }
    match value {
        Some(value) if value.len() > MAX_VALUE_BYTES => {
            Err(LimitError::ValueTooLarge { bytes: value.len() })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_over_a_limit_and_takes_what_is_at_it() {
        let key = vec![b'k'; MAX_KEY_BYTES];
        let value = vec![b'v'; MAX_VALUE_BYTES];
        assert_eq!(check_key_value(&key, Some(&value)), Ok(()));
        assert_eq!(check_key_value(b"", None), Err(LimitError::EmptyKey));
        assert_eq!(
            check_key_value(&[b'k'; MAX_KEY_BYTES + 1], None),
            Err(LimitError::KeyTooLong {
                bytes: MAX_KEY_BYTES + 1
            })
        );
        assert_eq!(
            check_key_value(b"k", Some(&[b'v'; MAX_VALUE_BYTES + 1])),
            Err(LimitError::ValueTooLarge {
                bytes: MAX_VALUE_BYTES + 1
            })
        );
        let status = tonic::Status::from(LimitError::EmptyKey);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
