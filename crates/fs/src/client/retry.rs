//! How the client retries: a chunkserver's refusal that no retry can
//! change ends the operation ([`Failure::Final`]); anything else drops the
//! cached location and tries again after a pause that grows, with jitter,
//! until the client's deadline ([`Backoff`]).

use std::time::Duration;

use cairn_rpc::RpcError;
use rand::Rng;
use rand::rngs::StdRng;
use tokio::time::Instant;
use tonic::Code;

use super::ClientError;

const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// Retry or give up.
#[derive(Debug)]
pub(crate) enum Failure {
    Retry(String),
    Final(ClientError),
}

/// Whether a chunkserver's refusal may go away on a retry.
pub(super) fn classify(error: RpcError) -> Failure {
    match &error {
        RpcError::Rejected { status, .. }
            if matches!(status.code(), Code::InvalidArgument | Code::OutOfRange) =>
        {
            Failure::Final(ClientError::Refused(status.message().to_string()))
        }
        _ => Failure::Retry(error.to_string()),
    }
}

/// Pauses between attempts, growing, with jitter, until a deadline.
pub(crate) struct Backoff {
    what: String,
    started: Instant,
    deadline: Duration,
    pause: Duration,
}

impl Backoff {
    pub(crate) fn new(what: String, deadline: Duration) -> Self {
        Self {
            what,
            started: Instant::now(),
            deadline,
            pause: FIRST_PAUSE,
        }
    }

    pub(crate) async fn wait(&mut self, rng: &mut StdRng, last: String) -> Result<(), ClientError> {
        if self.started.elapsed() >= self.deadline {
            return Err(ClientError::Timeout {
                what: std::mem::take(&mut self.what),
                after: self.deadline,
                last,
            });
        }
        let pause = self.pause / 2 + self.pause.mul_f64(rng.r#gen::<f64>() / 2.0);
        tokio::time::sleep(pause).await;
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        Ok(())
    }
}
