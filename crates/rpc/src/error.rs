//! The one error type of an RPC call, with its retry semantics.

use std::time::Duration;

use tonic::{Code, Status};

/// Why an RPC did not produce a reply.
///
/// The variants are chosen by what the caller should do next:
///
/// | variant | did the server run it? | retry? |
/// |---|---|---|
/// | [`Unavailable`](Self::Unavailable) | maybe (a reply may be lost) | yes, after a backoff or at another server |
/// | [`ConnectionRefused`](Self::ConnectionRefused) | no | yes, at another server; if every server refuses, nothing is listening |
/// | [`Timeout`](Self::Timeout) | maybe | yes, if the request carries an idempotency token |
/// | [`Rejected`](Self::Rejected) | it answered with an error | only for the codes in [`is_retryable`](Self::is_retryable) |
/// | [`InvalidAddress`](Self::InvalidAddress) | no | no: fix the address |
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// The server could not be reached, or the connection broke before a
    /// reply arrived.
    #[error("{addr} is unavailable: {reason}; check that the server is running and reachable")]
    Unavailable {
        /// The server's address.
        addr: String,
        /// What went wrong, for the operator.
        reason: String,
    },
    /// Nothing listens at the address: the connection was refused, or the
    /// host or its network has no route. The request certainly did not
    /// run. Only real sockets report this; the simulated network reports a
    /// partition or a dead node as [`Unavailable`](Self::Unavailable).
    #[error("{addr} refused the connection ({reason}); check that the server is running there")]
    ConnectionRefused {
        /// The server's address.
        addr: String,
        /// The operating system's reason.
        reason: String,
    },
    /// No reply within the call's deadline.
    #[error(
        "call to {addr} timed out after {after:?}; the server may be overloaded or partitioned"
    )]
    Timeout {
        /// The server's address.
        addr: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// The server answered with a gRPC error status.
    #[error("{addr} rejected the request: {}: {}", .status.code(), .status.message())]
    Rejected {
        /// The server's address.
        addr: String,
        /// The status it returned.
        status: Status,
    },
    /// The address is not a valid `http://host:port` URI.
    #[error("invalid server address {addr:?}: {reason}; use the form http://host:port")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// Why it does not parse.
        reason: String,
    },
}

impl RpcError {
    /// Whether sending the same request again may succeed.
    ///
    /// True for [`Unavailable`](Self::Unavailable),
    /// [`ConnectionRefused`](Self::ConnectionRefused) (the server may be
    /// starting) and [`Timeout`](Self::Timeout), and for a [`Rejected`](Self::Rejected)
    /// status whose code is `Unavailable`, `ResourceExhausted` or `Aborted`.
    /// Because the first attempt may have run, a retry is only safe for
    /// requests that are idempotent or deduplicated by the server.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::ConnectionRefused { .. } | Self::Timeout { .. } => {
                true
            }
            Self::Rejected { status, .. } => matches!(
                status.code(),
                Code::Unavailable | Code::ResourceExhausted | Code::Aborted
            ),
            Self::InvalidAddress { .. } => false,
        }
    }

    /// Whether the server may have executed the request although no reply
    /// arrived. A history recorder marks such operations "outcome unknown".
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Timeout { .. })
    }

    /// The status the server returned, if it answered.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Self::Rejected { status, .. } => Some(status),
            _ => None,
        }
    }

    /// Classifies a status that tonic returned for a call to `addr`.
    pub(crate) fn from_status(addr: &str, status: Status, deadline: Duration) -> Self {
        let addr = addr.to_string();
        match status.code() {
            Code::Unavailable => match refusal(&status) {
                Some(reason) => Self::ConnectionRefused { addr, reason },
                None => Self::Unavailable {
                    addr,
                    reason: status.message().to_string(),
                },
            },
            Code::DeadlineExceeded | Code::Cancelled => Self::Timeout {
                addr,
                after: deadline,
            },
            _ => Self::Rejected { addr, status },
        }
    }
}

/// The reason, if `error` or one of its sources is a refused connection or
/// a missing route (the operating system's answer that nothing listens
/// there). Always `None` in the simulation build, whose network has no
/// sockets: there a dead node or a partition is not a refusal.
pub(crate) fn refusal(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    if cfg!(madsim) {
        return None;
    }
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            )
        {
            return Some(io.to_string());
        }
        source = error.source();
    }
    None
}
