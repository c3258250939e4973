//! Conversions between `cairn-raft` messages and their protobuf form, with
//! validation: a malformed message from the network is refused here, never
//! handed to the core (whose assertions would stop the node).

use std::collections::BTreeMap;

use cairn_raft::{
    AppendEntries, AppendEntriesResponse, ClusterConfig, Entry, EntryKind, Heartbeat,
    HeartbeatResponse, InstallSnapshot, InstallSnapshotResponse, Message, MessageBody, NodeId,
    Reject, RequestVote, RequestVoteResponse, SnapshotMeta,
};
use cairn_rpc::raft as proto;

use crate::membership::MAX_URL_BYTES;

/// Why a message from the network was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Raft message: {0}")]
pub struct CodecError(pub String);

fn bad(reason: impl Into<String>) -> CodecError {
    CodecError(reason.into())
}

/// Encodes a message for the wire.
pub fn encode(message: &Message) -> proto::Message {
    use proto::message::Body;
    let body = match &message.body {
        MessageBody::AppendEntries(request) => Body::AppendEntries(proto::AppendEntries {
            prev_index: request.prev_index,
            prev_term: request.prev_term,
            entries: request.entries.iter().map(encode_entry).collect(),
            commit: request.commit,
        }),
        MessageBody::AppendEntriesResponse(response) => {
            let reject = response.reject.unwrap_or(Reject {
                rejected_index: 0,
                conflict_term: None,
                conflict_index: 0,
            });
            Body::AppendEntriesResponse(proto::AppendEntriesResponse {
                match_index: response.match_index,
                rejected: response.reject.is_some(),
                rejected_index: reject.rejected_index,
                conflict_term: reject.conflict_term.unwrap_or(0),
                conflict_index: reject.conflict_index,
            })
        }
        MessageBody::Heartbeat(request) => Body::Heartbeat(proto::Heartbeat {
            commit: request.commit,
            read_round: request.read_round,
        }),
        MessageBody::HeartbeatResponse(response) => {
            Body::HeartbeatResponse(proto::HeartbeatResponse {
                read_round: response.read_round,
                lacking: response.lacking.is_some(),
                last_index: response.lacking.unwrap_or(0),
            })
        }
        MessageBody::RequestVote(request) => Body::RequestVote(proto::RequestVote {
            pre_vote: request.pre_vote,
            transfer: request.transfer,
            last_index: request.last_index,
            last_term: request.last_term,
        }),
        MessageBody::RequestVoteResponse(response) => {
            Body::RequestVoteResponse(proto::RequestVoteResponse {
                pre_vote: response.pre_vote,
                granted: response.granted,
            })
        }
        MessageBody::InstallSnapshot(request) => Body::InstallSnapshot(proto::InstallSnapshot {
            meta: Some(encode_meta(&request.meta)),
            total_bytes: request.total_bytes,
            offset: request.offset,
            data: request.data.clone(),
        }),
        MessageBody::InstallSnapshotResponse(response) => {
            Body::InstallSnapshotResponse(proto::InstallSnapshotResponse {
                snapshot_index: response.snapshot_index,
                next_offset: response.next_offset,
                done: response.done,
            })
        }
        MessageBody::TimeoutNow => Body::TimeoutNow(proto::TimeoutNow {}),
    };
    proto::Message {
        from: message.from,
        to: message.to,
        term: message.term,
        body: Some(body),
    }
}

fn encode_entry(entry: &Entry) -> proto::Entry {
    proto::Entry {
        term: entry.term,
        index: entry.index,
        kind: match entry.kind {
            EntryKind::Normal => 0,
            EntryKind::Noop => 1,
            EntryKind::Config => 2,
        },
        data: entry.data.clone(),
    }
}

/// Encodes snapshot metadata.
pub(crate) fn encode_meta(meta: &SnapshotMeta) -> proto::SnapshotMeta {
    proto::SnapshotMeta {
        index: meta.index,
        term: meta.term,
        voters: meta.config.voters.iter().copied().collect(),
        learners: meta.config.learners.iter().copied().collect(),
        removed: meta.config.removed.iter().copied().collect(),
        urls: meta
            .urls
            .iter()
            .map(|(&id, url)| proto::MemberUrl {
                id,
                url: url.clone(),
            })
            .collect(),
    }
}

/// Decodes snapshot metadata, checking the configuration (a message of an
/// older node has no learners nor removed ids: all its members vote).
pub(crate) fn decode_meta(meta: proto::SnapshotMeta) -> Result<SnapshotMeta, CodecError> {
    let config = ClusterConfig {
        voters: meta.voters.into_iter().collect(),
        learners: meta.learners.into_iter().collect(),
        removed: meta.removed.into_iter().collect(),
    };
    if config.voters.is_empty() || !config.is_valid() {
        return Err(bad(
            "a snapshot's configuration needs voters, disjoint voter, learner and removed sets, and no id 0",
        ));
    }
    if meta.index == 0 || meta.term == 0 {
        return Err(bad("a snapshot covers at least index 1 of term 1"));
    }
    let urls = decode_urls(meta.urls, &config)?;
    Ok(SnapshotMeta {
        index: meta.index,
        term: meta.term,
        config,
        urls,
    })
}

/// The members' URLs of a snapshot: each of a member of `config`, once,
/// at most [`MAX_URL_BYTES`] long.
fn decode_urls(
    urls: Vec<proto::MemberUrl>,
    config: &ClusterConfig,
) -> Result<BTreeMap<NodeId, String>, CodecError> {
    let count = urls.len();
    let mut decoded = BTreeMap::new();
    for proto::MemberUrl { id, url } in urls {
        if !config.is_member(id) || url.len() > MAX_URL_BYTES {
            return Err(bad(format!(
                "a snapshot names a URL for node {id}, which is not a member, or one over {MAX_URL_BYTES} bytes"
            )));
        }
        decoded.insert(id, url);
    }
    if decoded.len() != count {
        return Err(bad("a snapshot names two URLs for one member"));
    }
    Ok(decoded)
}

/// Decodes and validates a message received from the network.
pub fn decode(message: proto::Message) -> Result<Message, CodecError> {
    use proto::message::Body;
    if message.from == 0 || message.to == 0 {
        return Err(bad("node id 0 is reserved"));
    }
    let term = message.term;
    let body = match message.body.ok_or_else(|| bad("no body"))? {
        Body::AppendEntries(request) => MessageBody::AppendEntries(decode_append(request, term)?),
        Body::AppendEntriesResponse(response) => {
            let reject = response.rejected.then_some(Reject {
                rejected_index: response.rejected_index,
                conflict_term: (response.conflict_term != 0).then_some(response.conflict_term),
                conflict_index: response.conflict_index,
            });
            MessageBody::AppendEntriesResponse(AppendEntriesResponse {
                match_index: response.match_index,
                reject,
            })
        }
        Body::Heartbeat(request) => MessageBody::Heartbeat(Heartbeat {
            commit: request.commit,
            read_round: request.read_round,
        }),
        Body::HeartbeatResponse(response) => MessageBody::HeartbeatResponse(HeartbeatResponse {
            read_round: response.read_round,
            lacking: response.lacking.then_some(response.last_index),
        }),
        Body::RequestVote(request) => MessageBody::RequestVote(RequestVote {
            pre_vote: request.pre_vote,
            transfer: request.transfer,
            last_index: request.last_index,
            last_term: request.last_term,
        }),
        Body::RequestVoteResponse(response) => {
            MessageBody::RequestVoteResponse(RequestVoteResponse {
                pre_vote: response.pre_vote,
                granted: response.granted,
            })
        }
        Body::InstallSnapshot(request) => {
            let meta = decode_meta(
                request
                    .meta
                    .ok_or_else(|| bad("a snapshot chunk without metadata"))?,
            )?;
            let end = request.offset.checked_add(request.data.len() as u64);
            if end.is_none_or(|end| end > request.total_bytes) {
                return Err(bad("a snapshot chunk past the snapshot's end"));
            }
            if request.total_bytes > cairn_storage::MAX_SNAPSHOT_BYTES {
                return Err(bad("a snapshot larger than the store accepts"));
            }
            MessageBody::InstallSnapshot(InstallSnapshot {
                meta,
                total_bytes: request.total_bytes,
                offset: request.offset,
                data: request.data,
            })
        }
        Body::InstallSnapshotResponse(response) => {
            MessageBody::InstallSnapshotResponse(InstallSnapshotResponse {
                snapshot_index: response.snapshot_index,
                next_offset: response.next_offset,
                done: response.done,
            })
        }
        Body::TimeoutNow(_) => MessageBody::TimeoutNow,
    };
    let message = Message {
        from: message.from,
        to: message.to,
        term,
        body,
    };
    check_bounds(&message)?;
    Ok(message)
}

/// The highest term or log index a message may carry. Real clusters stay
/// far below (a term a millisecond for a hundred million years); a larger
/// number is an attack or corruption, and would overflow the core's `+ 1`s.
pub const MAX_TERM_OR_INDEX: u64 = 1 << 62;

fn check_bounds(message: &Message) -> Result<(), CodecError> {
    let mut numbers = vec![message.term];
    match &message.body {
        MessageBody::AppendEntries(request) => {
            numbers.extend([request.prev_index, request.prev_term, request.commit]);
            if let Some(last) = request.entries.last() {
                numbers.extend([last.index, last.term]);
            }
        }
        MessageBody::AppendEntriesResponse(response) => {
            numbers.push(response.match_index);
            if let Some(reject) = &response.reject {
                numbers.extend([reject.rejected_index, reject.conflict_index]);
                numbers.extend(reject.conflict_term);
            }
        }
        MessageBody::Heartbeat(request) => numbers.push(request.commit),
        MessageBody::HeartbeatResponse(response) => numbers.extend(response.lacking),
        MessageBody::RequestVote(request) => {
            numbers.extend([request.last_index, request.last_term]);
        }
        MessageBody::InstallSnapshot(request) => {
            numbers.extend([request.meta.index, request.meta.term]);
        }
        MessageBody::InstallSnapshotResponse(response) => numbers.push(response.snapshot_index),
        MessageBody::RequestVoteResponse(_) | MessageBody::TimeoutNow => {}
    }
    if numbers.iter().any(|&n| n > MAX_TERM_OR_INDEX) {
        return Err(bad(format!(
            "a term or index above {MAX_TERM_OR_INDEX}: {numbers:?}"
        )));
    }
    Ok(())
}

fn decode_append(request: proto::AppendEntries, term: u64) -> Result<AppendEntries, CodecError> {
    if request.prev_term > term {
        return Err(bad("an append whose previous entry is newer than its term"));
    }
    let mut entries = Vec::with_capacity(request.entries.len());
    let mut expected = request
        .prev_index
        .checked_add(1)
        .ok_or_else(|| bad("index overflow"))?;
    let mut last_term = request.prev_term;
    for entry in request.entries {
        if entry.index != expected {
            return Err(bad(format!(
                "entries not consecutive: {} where {expected} was due",
                entry.index
            )));
        }
        if entry.term < last_term || entry.term > term {
            return Err(bad(format!(
                "entry {} has term {} out of order",
                entry.index, entry.term
            )));
        }
        let kind = match entry.kind {
            0 => EntryKind::Normal,
            1 => EntryKind::Noop,
            2 => EntryKind::Config,
            other => return Err(bad(format!("unknown entry kind {other}"))),
        };
        entries.push(Entry {
            term: entry.term,
            index: entry.index,
            kind,
            data: entry.data,
        });
        last_term = entry.term;
        expected = expected
            .checked_add(1)
            .ok_or_else(|| bad("index overflow"))?;
    }
    Ok(AppendEntries {
        prev_index: request.prev_index,
        prev_term: request.prev_term,
        entries,
        commit: request.commit,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let message = Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::AppendEntries(AppendEntries {
                prev_index: 4,
                prev_term: 2,
                entries: vec![Entry {
                    term: 3,
                    index: 5,
                    kind: EntryKind::Normal,
                    data: Bytes::from_static(b"x"),
                }],
                commit: 4,
            }),
        };
        assert_eq!(decode(encode(&message)).unwrap(), message);

        let mut gap = encode(&message);
        if let Some(proto::message::Body::AppendEntries(request)) = &mut gap.body {
            request.entries[0].index = 7;
        }
        assert!(decode(gap).unwrap_err().0.contains("not consecutive"));

        let mut future_term = encode(&message);
        if let Some(proto::message::Body::AppendEntries(request)) = &mut future_term.body {
            request.entries[0].term = 9;
        }
        assert!(decode(future_term).is_err());

        let no_body = proto::Message {
            from: 1,
            to: 2,
            term: 1,
            body: None,
        };
        assert!(decode(no_body).is_err());
    }

    /// An InstallSnapshot carries the whole configuration; one from an
    /// older node (voters only) decodes with every member a voter, and
    /// an impossible configuration is refused.
    #[test]
    fn snapshot_metadata_carries_the_whole_configuration() {
        let meta = SnapshotMeta {
            index: 7,
            term: 2,
            config: ClusterConfig {
                voters: [1, 2].into(),
                learners: [4].into(),
                removed: [3].into(),
            },
            urls: [(1, "http://a:1".into()), (4, "http://d:4".into())].into(),
        };
        assert_eq!(decode_meta(encode_meta(&meta)).unwrap(), meta);
        // A URL for a removed node, or two for one member, is refused.
        for urls in [
            vec![(3, "http://c:3")],
            vec![(1, "http://a:1"), (1, "http://b:2")],
        ] {
            let odd = proto::SnapshotMeta {
                urls: urls
                    .into_iter()
                    .map(|(id, url)| proto::MemberUrl {
                        id,
                        url: url.into(),
                    })
                    .collect(),
                ..encode_meta(&meta)
            };
            assert!(decode_meta(odd).is_err());
        }
        let older = proto::SnapshotMeta {
            index: 7,
            term: 2,
            voters: vec![1, 2, 3],
            ..Default::default()
        };
        assert_eq!(
            decode_meta(older).unwrap().config,
            ClusterConfig::new([1, 2, 3])
        );
        let overlapping = proto::SnapshotMeta {
            learners: vec![2],
            ..encode_meta(&meta)
        };
        assert!(decode_meta(overlapping).is_err());
    }
}
