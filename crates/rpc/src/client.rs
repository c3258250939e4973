//! [`RpcClient`]: one server's address, a cached channel and the call path.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::RpcError;

/// Timeouts of an [`RpcClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long establishing a connection may take.
    pub connect_timeout: Duration,
    /// The deadline of a call when the caller gives none.
    pub call_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            call_timeout: Duration::from_secs(5),
        }
    }
}

/// A client for one server, shared by every service stub that talks to it.
///
/// The connection is made on first use, with
/// [`ClientOptions::connect_timeout`], and cached. A call that fails with
/// [`RpcError::Unavailable`] or [`RpcError::ConnectionRefused`] drops the
/// cached connection, so the next call connects again. Every call has a deadline. The generated tonic stubs are
/// built per call around the cached channel, which is cheap:
///
/// ```no_run
/// # async fn demo() -> Result<(), cairn_rpc::RpcError> {
/// use cairn_rpc::echo::{EchoRequest, echo_client::EchoClient};
/// let client = cairn_rpc::RpcClient::new("http://127.0.0.1:7000", Default::default())?;
/// let reply = client
///     .call(EchoRequest { text: "hi".into(), number: 1 }, |channel, request| async move {
///         EchoClient::new(channel).echo(request).await
///     })
///     .await?;
/// assert_eq!(reply.text, "hi");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RpcClient {
    addr: String,
    endpoint: Endpoint,
    options: ClientOptions,
    /// The cached channel. Only cloned out under the lock; never held across
    /// an `.await`.
    channel: Mutex<Option<Channel>>,
}

impl RpcClient {
    /// A client for `addr` (`http://host:port`; a bare `host:port` means
    /// `http://host:port`). Does not connect yet.
    pub fn new(addr: impl Into<String>, options: ClientOptions) -> Result<Self, RpcError> {
        let mut addr = addr.into();
        if !addr.contains("://") {
            addr = format!("http://{addr}");
        }
        let endpoint = Endpoint::from_shared(addr.clone())
            .map_err(|e| RpcError::InvalidAddress {
                addr: addr.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(options.connect_timeout);
        #[cfg(not(madsim))]
        let endpoint = endpoint
            .initial_stream_window_size(crate::serve::HTTP2_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(crate::serve::HTTP2_CONNECTION_WINDOW_BYTES)
            .max_frame_size(crate::serve::HTTP2_MAX_FRAME_BYTES);
        Ok(Self {
            addr,
            endpoint,
            options,
            channel: Mutex::new(None),
        })
    }

    /// The server's address, as given.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Calls the server with the default deadline.
    ///
    /// `stub` receives the channel and the request (its gRPC timeout set to
    /// the deadline) and makes the call with a generated client.
    pub async fn call<Req, Resp, F, Fut>(&self, request: Req, stub: F) -> Result<Resp, RpcError>
    where
        Req: prost::Message,
        Resp: prost::Message,
        F: FnOnce(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        self.call_with_deadline(request, self.options.call_timeout, stub)
            .await
    }

    /// Calls the server; fails with [`RpcError::Timeout`] if no reply comes
    /// within `deadline`.
    pub async fn call_with_deadline<Req, Resp, F, Fut>(
        &self,
        request: Req,
        deadline: Duration,
        stub: F,
    ) -> Result<Resp, RpcError>
    where
        Req: prost::Message,
        Resp: prost::Message,
        F: FnOnce(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        // Boxed: the generated tonic futures are large (16 KiB in the
        // simulator), and every caller would otherwise carry one inline.
        let attempt = Box::pin(self.attempt(request, deadline, stub));
        self.within(deadline, attempt).await
    }

    /// Runs `attempt` within `deadline`; a failure to reach the server
    /// drops the cached connection, so that the next call connects again.
    async fn within<T>(
        &self,
        deadline: Duration,
        attempt: impl Future<Output = Result<T, RpcError>>,
    ) -> Result<T, RpcError> {
        let result = match tokio::time::timeout(deadline, attempt).await {
            Ok(result) => result,
            Err(_) => Err(RpcError::Timeout {
                addr: self.addr.clone(),
                after: deadline,
            }),
        };
        if let Err(RpcError::Unavailable { .. } | RpcError::ConnectionRefused { .. }) = &result {
            self.forget_connection();
        }
        result
    }

    async fn attempt<Req, Resp, F, Fut>(
        &self,
        request: Req,
        deadline: Duration,
        stub: F,
    ) -> Result<Resp, RpcError>
    where
        Req: prost::Message,
        Resp: prost::Message,
        F: FnOnce(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        #[cfg(madsim)]
        let link = match crate::sim_net::send_request(&self.endpoint, request.encoded_len()).await {
            Ok(link) => link,
            Err(reason) => return Err(self.unavailable(reason)),
        };
        let channel = self.channel().await?;
        let mut request = tonic::Request::new(request);
        request.set_timeout(deadline);
        let call = stub(channel, request);
        #[cfg(madsim)]
        let reply = crate::sim_net::await_reply(link, call).await;
        #[cfg(not(madsim))]
        let reply = call.await;
        match reply {
            Ok(response) => {
                let response = response.into_inner();
                #[cfg(madsim)]
                crate::sim_net::deliver_reply(link, response.encoded_len())
                    .await
                    .map_err(|reason| self.unavailable(reason))?;
                Ok(response)
            }
            Err(status) => Err(RpcError::from_status(&self.addr, status, deadline)),
        }
    }

    /// Opens a long-lived streaming call with `stub` (a generated client's
    /// streaming method on the channel it receives), connecting first if
    /// needed. Opening must finish within the call timeout; the stream
    /// itself has no deadline: it lasts until either side ends it or the
    /// connection breaks, after which [`forget_connection`](Self::forget_connection)
    /// makes the next call connect again.
    pub async fn open_stream<T, F, Fut>(&self, stub: F) -> Result<T, RpcError>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = self.options.call_timeout;
        let open = Box::pin(async {
            let channel = self.channel().await?;
            stub(channel)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| RpcError::from_status(&self.addr, status, deadline))
        });
        self.within(deadline, open).await
    }

    /// The simulated network's fate of one message of `bytes` bytes on a
    /// stream to this server (see `sim_net`): waits out its delay, and
    /// says why it is lost if it is. `call`: the message carries a request
    /// (else it counts as a reply).
    #[cfg(madsim)]
    pub async fn simulate_stream_message(&self, bytes: usize, call: bool) -> Result<(), String> {
        crate::sim_net::stream_message(&self.endpoint, bytes, call).await
    }

    /// Drops the cached connection: the next call connects again (after a
    /// stream on it broke).
    pub fn forget_connection(&self) {
        *self.lock_channel() = None;
    }

    /// The cached channel, or a new connection.
    #[cfg(madsim)]
    async fn channel(&self) -> Result<Channel, RpcError> {
        // The simulated transport has no connection to keep: every call is
        // its own message, and a dead server shows up as the call failing.
        Ok(self.endpoint.connect_lazy())
    }

    /// The cached channel, or a new connection.
    #[cfg(not(madsim))]
    async fn channel(&self) -> Result<Channel, RpcError> {
        if let Some(channel) = self.lock_channel().clone() {
            return Ok(channel);
        }
        let connect = self.endpoint.connect();
        let channel = match tokio::time::timeout(self.options.connect_timeout, connect).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(error)) => {
                return Err(match crate::error::refusal(&error) {
                    Some(reason) => RpcError::ConnectionRefused {
                        addr: self.addr.clone(),
                        reason,
                    },
                    None => self.unavailable(format!("connect failed: {error}")),
                });
            }
            Err(_) => {
                return Err(self.unavailable(format!(
                    "no connection within {:?}",
                    self.options.connect_timeout
                )));
            }
        };
        *self.lock_channel() = Some(channel.clone());
        Ok(channel)
    }

    fn lock_channel(&self) -> std::sync::MutexGuard<'_, Option<Channel>> {
        // A panic while holding this lock cannot leave the Option invalid.
        self.channel.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unavailable(&self, reason: impl Into<String>) -> RpcError {
        RpcError::Unavailable {
            addr: self.addr.clone(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_host_and_port_means_http() {
        let client = RpcClient::new("127.0.0.1:7701", ClientOptions::default()).unwrap();
        assert_eq!(client.addr(), "http://127.0.0.1:7701");
        let client = RpcClient::new("http://10.0.0.1:1", ClientOptions::default()).unwrap();
        assert_eq!(client.addr(), "http://10.0.0.1:1");
    }

    /// Nothing listening is told apart from a server that does not answer:
    /// the operating system refuses the connection at once.
    #[cfg(not(madsim))]
    #[tokio::test]
    async fn a_refused_connection_is_reported_as_such_at_once() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let options = ClientOptions {
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(5),
        };
        let client = RpcClient::new(format!("127.0.0.1:{port}"), options).unwrap();
        let started = std::time::Instant::now();
        for _ in 0..2 {
            let result = client
                .call(
                    crate::echo::EchoRequest::default(),
                    |channel, request| async move {
                        crate::echo::echo_client::EchoClient::new(channel)
                            .echo(request)
                            .await
                    },
                )
                .await;
            assert!(
                matches!(result, Err(RpcError::ConnectionRefused { .. })),
                "{result:?}"
            );
            let error = result.unwrap_err();
            assert!(error.is_retryable() && !error.outcome_unknown(), "{error}");
        }
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_malformed_address_is_rejected_with_the_reason() {
        let Err(error) = RpcClient::new("http://bad host:1", ClientOptions::default()) else {
            panic!("a space in the host was accepted");
        };
        assert!(matches!(error, RpcError::InvalidAddress { .. }), "{error}");
    }
}
