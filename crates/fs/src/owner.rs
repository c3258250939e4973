//! [`Owner`]: state owned by one task and changed by messages.
//!
//! Each message is a closure the task runs on the state, one at a time, so
//! that no lock guards the state and none is held across an `.await`. The
//! queue is bounded by [`MAX_QUEUED_CHANGES`]: when it is full, senders
//! wait for room (back-pressure on the RPC handlers that send).

use tokio::sync::{mpsc, oneshot};

/// The most messages waiting for the owning task.
pub const MAX_QUEUED_CHANGES: usize = 1024;

type Change<T> = Box<dyn FnOnce(&mut T) + Send>;

/// A handle on state that one task owns. Cheap to clone.
pub(crate) struct Owner<T> {
    sender: mpsc::Sender<Change<T>>,
}

impl<T> Clone for Owner<T> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Owner<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner").finish_non_exhaustive()
    }
}

/// The owning task has stopped (its node is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the task owning this state has stopped; the server is shutting down")]
pub(crate) struct Stopped;

impl<T: Send + 'static> Owner<T> {
    /// Moves `state` into a new task.
    pub(crate) fn spawn(state: T) -> Self {
        let (sender, mut inbox) = mpsc::channel::<Change<T>>(MAX_QUEUED_CHANGES);
        tokio::spawn(async move {
            let mut state = state;
            while let Some(change) = inbox.recv().await {
                change(&mut state);
            }
        });
        Self { sender }
    }

    /// Runs `f` on the state in its task and returns what it returns.
    pub(crate) async fn with<R, F>(&self, f: F) -> Result<R, Stopped>
    where
        R: Send + 'static,
        F: FnOnce(&mut T) -> R + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Box::new(move |state| {
                let _ = reply.send(f(state));
            }))
            .await
            .map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }
}
