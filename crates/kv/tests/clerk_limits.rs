//! The clerk checks a request against the limits before sending it: an
//! oversized key or value is refused at once with the limit, whatever its
//! size (a message over the transport's limit cannot even be sent, and was
//! retried until the deadline), and with no server needed to say so.

#![cfg(not(madsim))]

use std::time::{Duration, Instant};

use cairn_kv::{Client, ClientConfig, KvError, MAX_KEY_BYTES, MAX_MESSAGE_BYTES, MAX_VALUE_BYTES};

/// A clerk whose only server does not exist: anything that reaches the
/// network fails, slowly.
fn clerk_of_nobody() -> Client {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = ClientConfig {
        call_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(30),
    };
    Client::new(&[format!("http://127.0.0.1:{port}")], config)
        .unwrap()
        .wait_while_refused()
}

fn assert_invalid(result: Result<impl std::fmt::Debug, KvError>, words: &str) {
    match result {
        Err(KvError::Replica(cairn_rpc::ReplicaError::InvalidArgument(message))) => {
            assert!(message.contains(words), "{message}")
        }
        other => panic!("expected an invalid-argument error, got {other:?}"),
    }
}

#[tokio::test]
async fn oversized_requests_are_refused_before_they_are_sent() {
    let mut clerk = clerk_of_nobody();
    let started = Instant::now();
    for size in [
        MAX_VALUE_BYTES + 1,
        MAX_MESSAGE_BYTES,
        MAX_MESSAGE_BYTES + 1,
    ] {
        let value = vec![b'v'; size];
        assert_invalid(clerk.put(b"k", &value).await, "values are limited");
        assert_invalid(clerk.append(b"k", &value).await, "values are limited");
        assert_invalid(clerk.cas(b"k", None, &value).await, "values are limited");
        assert_invalid(
            clerk.cas(b"k", Some(&value), b"v").await,
            "the expected value",
        );
    }
    let key = vec![b'k'; MAX_KEY_BYTES + 1];
    assert_invalid(clerk.get(&key).await, "keys are limited");
    assert_invalid(clerk.delete(&key).await, "keys are limited");
    assert_invalid(clerk.put(b"", b"v").await, "the key is empty");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the refusals took {:?}",
        started.elapsed()
    );
}
