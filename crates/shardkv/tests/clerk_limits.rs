//! The sharded clerk checks keys and values against the limits before
//! routing them: a value of 8 MiB and more was retried until the deadline
//! (it cannot even be sent), and any oversized one needs no server to be
//! refused.

#![cfg(not(madsim))]

use std::time::{Duration, Instant};

use cairn_rpc::ReplicaError;
use cairn_shardkv::{
    Client, ClientConfig, MAX_KEY_BYTES, MAX_MESSAGE_BYTES, MAX_VALUE_BYTES, ShardKvError,
};

#[tokio::test]
async fn oversized_requests_are_refused_before_they_are_routed() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let settings = ClientConfig {
        deadline: Duration::from_secs(30),
        ..ClientConfig::default()
    };
    let controllers = [format!("http://127.0.0.1:{port}")];
    let mut clerk = Client::new(&controllers, cairn_shardkv::shard_of, settings).unwrap();
    let started = Instant::now();
    for size in [MAX_VALUE_BYTES + 1, MAX_MESSAGE_BYTES + 1] {
        let error = clerk.put(b"k", &vec![b'v'; size]).await.unwrap_err();
        assert!(error.to_string().contains("values are limited"), "{error}");
        let error = clerk.append(b"k", &vec![b'v'; size]).await.unwrap_err();
        assert!(error.to_string().contains("values are limited"), "{error}");
    }
    let error = clerk.get(&vec![b'k'; MAX_KEY_BYTES + 1]).await.unwrap_err();
    assert!(error.to_string().contains("keys are limited"), "{error}");
    assert!(
        matches!(
            error,
            ShardKvError::Replica(ReplicaError::InvalidArgument(_))
        ),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}
