//! [`PushBuffer`]: data pushed by clients (GFS §3.2, data flow), kept by a
//! chunkserver until a mutation uses it.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// The most bytes a chunkserver keeps for mutations not yet made; a push
/// beyond it is refused (`RESOURCE_EXHAUSTED`: retry after a pause).
pub const MAX_BUFFERED_BYTES: u64 = 256 << 20;
/// How long pushed data waits for its mutation before it is dropped.
pub const PUSH_EXPIRY: Duration = Duration::from_secs(60);

/// Pushed data, keyed by (client id, data id).
#[derive(Debug, Default)]
pub(crate) struct PushBuffer {
    entries: BTreeMap<(u64, u64), (Bytes, Instant)>,
    bytes: u64,
}

/// The buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this chunkserver holds {held} bytes of pushed data and cannot take {wanted} more (limit {MAX_BUFFERED_BYTES}); retry after a pause"
)]
pub(crate) struct BufferFull {
    pub held: u64,
    pub wanted: u64,
}

impl PushBuffer {
    /// Keeps `data` under `key` (replacing what was there).
    pub(crate) fn insert(
        &mut self,
        key: (u64, u64),
        data: Bytes,
        now: Instant,
    ) -> Result<(), BufferFull> {
        self.expire(now);
        self.take(key);
        let wanted = data.len() as u64;
        if self.bytes + wanted > MAX_BUFFERED_BYTES {
            return Err(BufferFull {
                held: self.bytes,
                wanted,
            });
        }
        self.bytes += wanted;
        self.entries.insert(key, (data, now + PUSH_EXPIRY));
        Ok(())
    }

    /// Whether data waits under `key`.
    pub(crate) fn contains(&self, key: (u64, u64)) -> bool {
        self.entries.contains_key(&key)
    }

    /// Removes and returns the data under `key`.
    pub(crate) fn take(&mut self, key: (u64, u64)) -> Option<Bytes> {
        let (data, _) = self.entries.remove(&key)?;
        self.bytes -= data.len() as u64;
        Some(data)
    }

    /// Drops what has waited past [`PUSH_EXPIRY`].
    pub(crate) fn expire(&mut self, now: Instant) {
        let bytes = &mut self.bytes;
        self.entries.retain(|_, (data, expires)| {
            let keep = *expires > now;
            if !keep {
                *bytes -= data.len() as u64;
            }
            keep
        });
    }

    /// The bytes held.
    #[cfg(all(test, not(madsim)))]
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn data_is_taken_once_counted_and_expires() {
        let now = Instant::now();
        let mut buffer = PushBuffer::default();
        buffer
            .insert((1, 1), Bytes::from_static(b"abc"), now)
            .unwrap();
        buffer
            .insert((1, 2), Bytes::from_static(b"de"), now)
            .unwrap();
        assert_eq!(buffer.bytes(), 5);
        assert_eq!(buffer.take((1, 1)).unwrap(), "abc");
        assert!(buffer.take((1, 1)).is_none());
        buffer.expire(now + PUSH_EXPIRY);
        assert_eq!(buffer.bytes(), 0);
        assert!(buffer.take((1, 2)).is_none());
    }

    #[tokio::test]
    async fn a_full_buffer_refuses_with_the_sizes() {
        let now = Instant::now();
        let mut buffer = PushBuffer::default();
        let big = Bytes::from(vec![0; MAX_BUFFERED_BYTES as usize]);
        buffer.insert((1, 1), big, now).unwrap();
        let refused = buffer
            .insert((2, 1), Bytes::from_static(b"x"), now)
            .unwrap_err();
        assert_eq!(refused.wanted, 1);
        assert!(refused.to_string().contains("retry after a pause"));
    }
}
