use std::time::Duration;

use cairn_rpc::fs::{HeartbeatRequest, LeaseClaim, ReplicaState};
use tokio::time::Instant;

use super::*;

fn settings() -> FsSettings {
    FsSettings {
        lease: Duration::from_secs(2),
        heartbeat_interval: Duration::from_millis(100),
        // These tests are about leases: no safemode (`safemode.rs` has its own).
        safemode_timeout: Duration::ZERO,
        ..FsSettings::default()
    }
}

fn report(url: &str, replicas: &[(u64, u64)], claims: &[(u64, u64)]) -> HeartbeatRequest {
    HeartbeatRequest {
        url: url.into(),
        replicas: replicas
            .iter()
            .map(|&(handle, version)| ReplicaState {
                handle,
                version,
                length: 0,
            })
            .collect(),
        free_bytes: 1 << 30,
        claims: claims
            .iter()
            .map(|&(handle, version)| LeaseClaim {
                handle,
                version,
                secondaries: vec![],
            })
            .collect(),
        ..HeartbeatRequest::default()
    }
}

#[tokio::test]
async fn a_new_leader_waits_a_lease_period_unless_the_primary_claims_its_lease() {
    let now = Instant::now();
    let mut table = ChunkTable::new(settings());
    table.record_heartbeat(&report("a", &[(1, 3), (2, 3)], &[(1, 3)]), now);
    table.record_heartbeat(&report("b", &[(1, 3), (2, 3)], &[]), now);
    table.observe_term(5, now);
    // Chunk 1: its primary claims it: taken over at once.
    match table.decide(1, 3, &[], now) {
        Decision::Lease(lease) => assert_eq!(lease.primary, "a"),
        other => panic!("{other:?}"),
    }
    // Chunk 2: nobody claims it: wait one lease period and the margin.
    assert!(matches!(table.decide(2, 3, &[], now), Decision::Wait(_)));
    let later = now + Duration::from_millis(2300);
    table.record_heartbeat(&report("a", &[(1, 3), (2, 3)], &[]), later);
    table.record_heartbeat(&report("b", &[(1, 3), (2, 3)], &[]), later);
    assert!(matches!(table.decide(2, 3, &[], later), Decision::Grant(_)));
}

#[tokio::test]
async fn stale_replicas_and_dead_servers_are_never_candidates() {
    let now = Instant::now();
    let mut table = ChunkTable::new(settings());
    table.record_heartbeat(&report("a", &[(1, 2)], &[]), now);
    table.record_heartbeat(&report("b", &[(1, 3)], &[]), now);
    table.record_heartbeat(&report("c", &[(1, 3)], &[]), now - Duration::from_secs(1));
    assert_eq!(table.replicas_at(1, 3, now), vec!["b".to_string()]);
    table.observe_term(1, now - Duration::from_secs(10));
    match table.decide(1, 3, &[], now) {
        Decision::Grant(candidates) => assert_eq!(candidates, vec!["b".to_string()]),
        other => panic!("{other:?}"),
    }
    // Only a stale replica live: wait, never serve it.
    let mut table = ChunkTable::new(settings());
    table.record_heartbeat(&report("a", &[(1, 2)], &[]), now);
    table.observe_term(1, now - Duration::from_secs(10));
    assert!(matches!(table.decide(1, 3, &[], now), Decision::Wait(_)));
}

#[tokio::test]
async fn no_second_primary_before_the_lease_and_margin_end() {
    let now = Instant::now();
    let mut table = ChunkTable::new(settings());
    table.observe_term(1, now - Duration::from_secs(10));
    table.record_heartbeat(&report("a", &[(1, 1)], &[]), now);
    table.record_heartbeat(&report("b", &[(1, 1)], &[]), now);
    let claims = [LeaseClaim {
        handle: 1,
        version: 1,
        secondaries: vec!["b".into()],
    }];
    let versions = [(1, 1)].into_iter().collect();
    assert_eq!(table.extend("a", &claims, &versions, now), vec![1]);
    // b may not take it over while a's lease (plus margin) runs.
    assert!(table.extend("b", &claims, &versions, now).is_empty());
    let dead = now + Duration::from_millis(2100);
    table.record_heartbeat(&report("b", &[(1, 1)], &[]), dead);
    assert!(matches!(table.decide(1, 1, &[], dead), Decision::Wait(_)));
    let after = now + Duration::from_millis(2250);
    table.record_heartbeat(&report("b", &[(1, 1)], &[]), after);
    assert!(matches!(table.decide(1, 1, &[], after), Decision::Grant(_)));
}

#[tokio::test]
async fn after_a_grant_no_replica_stored_its_granted_replicas_take_the_next() {
    let now = Instant::now();
    let mut table = ChunkTable::new(settings());
    table.observe_term(1, now - Duration::from_secs(10));
    // Version 4 was granted to a and b; neither stored it. c, at 3, was
    // not among them: it may have missed mutations of version 3's lease.
    table.record_heartbeat(&report("a", &[(1, 3)], &[]), now);
    table.record_heartbeat(&report("b", &[(1, 3)], &[]), now);
    table.record_heartbeat(&report("c", &[(1, 3)], &[]), now);
    let granted = ["a".to_string(), "b".to_string()];
    match table.decide(1, 4, &granted, now) {
        Decision::Grant(candidates) => assert_eq!(candidates, vec!["a".to_string(), "b".into()]),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        table.read_decision(1, 4, &granted, now).unwrap(),
        (vec!["a".to_string(), "b".into()], 3)
    );
    // Without the log's record, nobody qualifies.
    assert!(table.read_decision(1, 4, &[], now).is_err());
}

#[tokio::test]
async fn a_grant_a_dead_master_left_half_stored_is_made_again_on_every_replica() {
    // Version 1 of chunk 1 was granted to a (primary) and b; a stored it,
    // then the master died before b did. b, at 0, holds every acknowledged
    // mutation (none was possible at 1 without it).
    let now = Instant::now();
    let mut table = ChunkTable::new(settings());
    let mut a = report("a", &[(1, 1)], &[]);
    a.claims = vec![LeaseClaim {
        handle: 1,
        version: 1,
        secondaries: vec!["b".into()],
    }];
    table.record_heartbeat(&a, now);
    table.record_heartbeat(&report("b", &[(1, 0)], &[]), now);
    table.observe_term(2, now);
    let granted = ["a".to_string(), "b".to_string()];
    let versions = [(1, 1)].into_iter().collect();
    // a's claim names a secondary without the version: neither extended
    // nor taken over (every mutation under it would fail at b).
    assert!(table.extend("a", &a.claims, &versions, now).is_empty());
    assert!(matches!(
        table.decide(1, 1, &granted, now),
        Decision::Wait(_)
    ));
    // Once the predecessor's leases surely ended: both take the next grant.
    let later = now + Duration::from_millis(2300);
    table.record_heartbeat(&a, later);
    table.record_heartbeat(&report("b", &[(1, 0)], &[]), later);
    match table.decide(1, 1, &granted, later) {
        Decision::Grant(candidates) => assert_eq!(candidates, ["a", "b"]),
        other => panic!("{other:?}"),
    }
    table.grant_done(1, None);
    // b failed to store that version: the next grants leave it out for a
    // lease period, then try it again.
    table.versions_refused(1, vec!["b".into()], later);
    match table.decide(1, 1, &granted, later) {
        Decision::Grant(candidates) => assert_eq!(candidates, ["a"]),
        other => panic!("{other:?}"),
    }
    table.grant_done(1, None);
    let retry = later + Duration::from_millis(2100);
    table.record_heartbeat(&report("a", &[(1, 1)], &[]), retry);
    table.record_heartbeat(&report("b", &[(1, 0)], &[]), retry);
    assert!(matches!(table.decide(1, 1, &granted, retry), Decision::Grant(c) if c == ["a", "b"]));
    // A replica behind that the version was not granted to stays out.
    table.grant_done(1, None);
    assert!(
        matches!(table.decide(1, 1, &["a".to_string()], retry), Decision::Grant(c) if c == ["a"])
    );
    // The same on the leader whose own grant failed at b (no leader change):
    // a's claim is not extended either.
    let mut table = ChunkTable::new(settings());
    table.observe_term(1, now - Duration::from_secs(10));
    table.record_heartbeat(&a, now);
    table.record_heartbeat(&report("b", &[(1, 0)], &[]), now);
    assert!(table.extend("a", &a.claims, &versions, now).is_empty());
    assert!(matches!(table.decide(1, 1, &granted, now), Decision::Grant(c) if c == ["a", "b"]));
}

fn with_free(mut report: HeartbeatRequest, free_bytes: u64) -> HeartbeatRequest {
    report.free_bytes = free_bytes;
    report.capacity_bytes = 1 << 30;
    report.disk = format!("/data/{}", report.url);
    report
}

#[tokio::test]
async fn new_chunks_avoid_a_chunkserver_below_the_free_space_floor() {
    let now = Instant::now();
    let mut table = ChunkTable::new(settings());
    let floor = settings().min_free_bytes;
    // The full one has the fewest replicas, so it would come first by that.
    table.record_heartbeat(&with_free(report("full", &[], &[]), floor - 1), now);
    table.record_heartbeat(&with_free(report("b", &[(1, 1)], &[]), floor), now);
    table.record_heartbeat(&with_free(report("c", &[(2, 1)], &[]), 2 * floor), now);
    table.record_heartbeat(&with_free(report("d", &[(3, 1)], &[]), 3 * floor), now);
    assert_eq!(table.placement(now), ["d", "c", "b"]);
    assert_eq!(table.live_and_full(now), (4, 1));
    let usage = table.usage(now);
    let full = usage.iter().find(|u| u.url == "full").unwrap();
    assert!(
        full.full && full.live && full.disk == "/data/full",
        "{full:?}"
    );
    assert!(usage.iter().filter(|u| u.url != "full").all(|u| !u.full));
    // Every server full: nothing to place on.
    let mut table = ChunkTable::new(settings());
    table.record_heartbeat(&with_free(report("a", &[], &[]), 0), now);
    assert!(table.placement(now).is_empty());
    assert_eq!(table.live_and_full(now), (1, 1));
}

#[tokio::test]
async fn a_new_lease_leaves_out_a_full_replica_while_another_has_room() {
    let now = Instant::now();
    let mut table = ChunkTable::new(settings());
    table.observe_term(1, now - Duration::from_secs(10));
    table.record_heartbeat(&with_free(report("a", &[(1, 2)], &[]), 0), now);
    table.record_heartbeat(&with_free(report("b", &[(1, 2)], &[]), 1 << 30), now);
    match table.decide(1, 2, &[], now) {
        Decision::Grant(candidates) => assert_eq!(candidates, ["b"]),
        other => panic!("{other:?}"),
    }
    // Every replica full: they keep the chunk (a write may still fit).
    let mut table = ChunkTable::new(settings());
    table.observe_term(1, now - Duration::from_secs(10));
    table.record_heartbeat(&with_free(report("a", &[(1, 2)], &[]), 0), now);
    assert!(matches!(table.decide(1, 2, &[], now), Decision::Grant(c) if c == ["a"]));
}

#[tokio::test]
async fn a_chunk_length_is_its_longest_replica_at_its_version() {
    let now = Instant::now();
    let mut table = ChunkTable::new(settings());
    let mut old = report("a", &[(1, 1)], &[]);
    old.replicas[0].length = 900;
    let mut new = report("b", &[(1, 2)], &[]);
    new.replicas[0].length = 500;
    table.record_heartbeat(&old, now);
    table.record_heartbeat(&new, now);
    assert_eq!(table.chunk_length(1, 2), 500);
    // No replica at the version asked: the longest of any.
    assert_eq!(table.chunk_length(1, 3), 900);
    assert_eq!(table.chunk_length(7, 1), 0);
}

#[tokio::test]
async fn a_new_leader_in_safemode_neither_places_nor_grants_nor_heals() {
    let mut table = ChunkTable::new(FsSettings {
        safemode_timeout: Duration::from_secs(30),
        ..settings()
    });
    let now = Instant::now();
    table.observe_term(1, now);
    table.record_heartbeat(&report("a", &[(1, 1)], &[]), now);
    assert!(table.in_safemode(now));
    assert!(matches!(table.decide(1, 1, &[], now), Decision::Wait(m) if m.contains("safemode")));
    assert!(matches!(table.decide(2, 0, &[], now), Decision::Wait(m) if m.contains("safemode")));
    // Long past the wait before healing, safemode alone holds it off.
    let healing_time = now + settings().heal_after() * 2;
    assert!(table.in_safemode(healing_time));
    assert!(!table.settled(healing_time));
    table.count_reports(&[(1, 1)], now);
    let later = now + Duration::from_millis(200);
    assert!(!table.in_safemode(later));
    assert!(matches!(table.decide(2, 0, &[], later), Decision::Place));
}

/// `report` as taken by run `incarnation` after `changes` replica changes.
fn taken(mut report: HeartbeatRequest, incarnation: u64, changes: u64) -> HeartbeatRequest {
    report.incarnation = incarnation;
    report.changes = changes;
    report
}

fn reply(incarnation: u64, changes: u64) -> SetVersionReply {
    SetVersionReply {
        length: 0,
        incarnation,
        changes,
    }
}

/// A report sent before a chunkserver created a replica arrives after the
/// creation's reply: it must not erase the replica (it used to, and the
/// next grant left the replica out: an acknowledged write on two of three).
#[tokio::test]
async fn a_report_taken_before_a_reply_does_not_undo_it() {
    let now = Instant::now();
    let mut table = ChunkTable::new(settings());
    table.record_heartbeat(&taken(report("a", &[(1, 1)], &[]), 9, 4), now);
    // Chunk 2 created (change 5), then version 1 stored (change 6).
    table.record_replica("a", 2, 0, &reply(9, 5), now);
    table.record_replica("a", 2, 1, &reply(9, 6), now);
    // The report sent before either arrives now.
    table.record_heartbeat(&taken(report("a", &[(1, 1)], &[]), 9, 4), now);
    assert_eq!(table.replicas_at(2, 1, now), vec!["a".to_string()]);
    // One taken between them still lacks version 1: the reply stands.
    table.record_heartbeat(&taken(report("a", &[(1, 1), (2, 0)], &[]), 9, 5), now);
    assert_eq!(table.replicas_at(2, 1, now), vec!["a".to_string()]);
    // One taken after both rules: here the replica has gone since.
    table.record_heartbeat(&taken(report("a", &[(1, 1)], &[]), 9, 6), now);
    assert!(table.replicas_at(2, 1, now).is_empty());
    assert!(table.replicas_at(2, 0, now).is_empty());
}

/// A report delayed past a newer one changes no replica; a reply older
/// than the recorded report is ignored; a restarted server's report
/// (another run) drops what replies of the old run told.
#[tokio::test]
async fn delayed_reports_and_replies_and_restarts() {
    let now = Instant::now();
    let mut table = ChunkTable::new(settings());
    table.record_heartbeat(&taken(report("a", &[(1, 2)], &[]), 9, 8), now);
    table.record_heartbeat(&taken(report("a", &[(1, 1)], &[]), 9, 7), now);
    assert_eq!(table.replicas_at(1, 2, now), vec!["a".to_string()]);
    // The reply for version 2 (change 8) comes after the report showing
    // it, and after that the replica was set aside (report at 8, without it).
    table.record_heartbeat(&taken(report("a", &[], &[]), 9, 8), now);
    table.record_replica("a", 1, 2, &reply(9, 8), now);
    assert!(table.replicas_at(1, 2, now).is_empty());
    // A reply from run 9, then the server restarts as run 10 with nothing.
    table.record_replica("a", 3, 1, &reply(9, 9), now);
    assert_eq!(table.replicas_at(3, 1, now), vec!["a".to_string()]);
    table.record_heartbeat(&taken(report("a", &[], &[]), 10, 0), now);
    assert!(table.replicas_at(3, 1, now).is_empty());
}
