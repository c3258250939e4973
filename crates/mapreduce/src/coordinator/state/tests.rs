//! Tests of the job's task state machine.

use super::*;
use crate::app::counter;

#[allow(clippy::too_many_arguments)]
fn complete(
    state: &mut JobState,
    worker: u64,
    kind: TaskKind,
    task: u32,
    attempt: u32,
    error: Option<String>,
    counters: Counters,
    now: Instant,
) -> (bool, Vec<Record>) {
    state.complete(
        Completion {
            worker,
            kind,
            task,
            attempt,
            error,
            counters,
        },
        now,
    )
}

fn job(maps: usize, reduces: u32) -> JobState {
    let record = JobRecord {
        job_id: "t".into(),
        app: "wc".into(),
        pattern: String::new(),
        mapper: String::new(),
        reducer: String::new(),
        inputs: vec![],
        splits: (0..maps).map(|i| (format!("f{i}"), 0, 10)).collect(),
        reduces,
        output_dir: "out".into(),
        hadoop_names: false,
        started_unix_ms: None,
    };
    JobState::new(record, SchedulerConfig::default(), Instant::now())
}

/// A heartbeat's report of an attempt whose progress count is `count`.
fn progress(kind: TaskKind, task: u32, attempt: u32, count: u64) -> TaskProgress {
    TaskProgress {
        kind: kind as i32,
        task,
        attempt,
        bytes_done: 0,
        progress: count,
    }
}

fn map_of(assignment: Assignment) -> (u32, u32) {
    match assignment {
        Assignment::Map { task, attempt, .. } => (task, attempt),
        other => panic!("expected a map, got {other:?}"),
    }
}

#[test]
fn maps_then_reduces_then_exit() {
    let now = Instant::now();
    let mut state = job(2, 1);
    let (w, _) = state.register("http://w".into(), String::new(), now);
    let (v, _) = state.register("http://v".into(), String::new(), now);
    let (m0, a0) = map_of(state.assign(w, now));
    let (m1, a1) = map_of(state.assign(v, now));
    assert_eq!((m0, m1), (0, 1));
    let (x, _) = state.register("http://x".into(), String::new(), now);
    assert_eq!(
        state.assign(x, now),
        Assignment::Wait(WAIT_RETRY),
        "reduces wait for all maps"
    );
    assert!(
        complete(
            &mut state,
            w,
            TaskKind::Map,
            m0,
            a0,
            None,
            Counters::default(),
            now
        )
        .0
    );
    assert!(
        complete(
            &mut state,
            v,
            TaskKind::Map,
            m1,
            a1,
            None,
            Counters::default(),
            now
        )
        .0
    );
    let Assignment::Reduce {
        task,
        attempt,
        locations,
    } = state.assign(w, now)
    else {
        panic!()
    };
    assert_eq!(locations.len(), 2);
    let (committed, records) = complete(
        &mut state,
        w,
        TaskKind::Reduce,
        task,
        attempt,
        None,
        Counters::default(),
        now,
    );
    assert!(committed);
    assert!(records.contains(&Record::JobDone));
    assert_eq!(state.assign(v, now), Assignment::Exit);
    assert_eq!(state.assign(w, now), Assignment::Exit);
    assert!(!state.all_workers_released(), "x has not been told");
    assert_eq!(state.assign(x, now), Assignment::Exit);
    assert!(state.all_workers_released());
}

#[test]
fn silent_attempts_expire_but_heartbeats_keep_them() {
    let start = Instant::now();
    let mut state = job(2, 1);
    let (w, _) = state.register("http://w".into(), String::new(), start);
    let (v, _) = state.register("http://v".into(), String::new(), start);
    let (m0, a0) = map_of(state.assign(w, start));
    let (m1, _) = map_of(state.assign(v, start));
    // w heartbeats with progress for 30 s; v falls silent.
    for second in 1..=30 {
        let now = start + Duration::from_secs(second);
        assert_eq!(
            state.heartbeat(w, &[progress(TaskKind::Map, m0, a0, second)], now),
            Some(vec![])
        );
        state.tick(now);
    }
    let now = start + Duration::from_secs(30);
    let (x, _) = state.register("http://x".into(), String::new(), now);
    let (task, attempt) = map_of(state.assign(x, now));
    assert_eq!(task, m1, "the silent worker's map runs again");
    assert_eq!(attempt, 1);
    assert_eq!(
        state.heartbeat(v, &[progress(TaskKind::Map, m1, 0, 0)], now),
        Some(vec![(TaskKind::Map, m1, 0)])
    );
}

#[test]
fn duplicate_completions_count_once_and_failures_fail_the_job() {
    let now = Instant::now();
    let mut state = job(1, 1);
    let (w, _) = state.register("http://w".into(), String::new(), now);
    let (_, a0) = map_of(state.assign(w, now));
    let mut counters = Counters::default();
    counters.add("x", 5);
    assert!(
        complete(
            &mut state,
            w,
            TaskKind::Map,
            0,
            a0,
            None,
            counters.clone(),
            now
        )
        .0
    );
    assert!(!complete(&mut state, w, TaskKind::Map, 0, a0, None, counters, now).0);
    assert_eq!(state.counters().get("x"), 5);

    let mut failing = job(1, 1);
    let (w, _) = failing.register("http://w".into(), String::new(), now);
    for _ in 0..4 {
        let (task, attempt) = map_of(failing.assign(w, now));
        complete(
            &mut failing,
            w,
            TaskKind::Map,
            task,
            attempt,
            Some("boom".into()),
            Counters::default(),
            now,
        );
    }
    assert!(
        failing
            .failed
            .as_deref()
            .unwrap()
            .contains("failed 4 times")
    );
    assert_eq!(failing.assign(w, now), Assignment::Exit);
}

#[test]
fn backups_start_only_for_stragglers_and_only_when_enabled() {
    let start = Instant::now();
    for enabled in [false, true] {
        let mut state = job(3, 1);
        state.config.backup_tasks = enabled;
        let workers: Vec<u64> = (0..3)
            .map(|i| {
                state
                    .register(format!("http://{i}"), String::new(), start)
                    .0
            })
            .collect();
        let assigned: Vec<(u32, u32)> = workers
            .iter()
            .map(|w| map_of(state.assign(*w, start)))
            .collect();
        // Two maps finish in 1 s; the third runs on and heartbeats.
        let done_at = start + Duration::from_secs(1);
        for i in 0..2 {
            let (task, attempt) = assigned[i];
            complete(
                &mut state,
                workers[i],
                TaskKind::Map,
                task,
                attempt,
                None,
                Counters::default(),
                done_at,
            );
        }
        let later = start + Duration::from_secs(6);
        state.heartbeat(
            workers[2],
            &[progress(TaskKind::Map, assigned[2].0, assigned[2].1, 1)],
            later,
        );
        let next = state.assign(workers[0], later);
        if enabled {
            assert_eq!(
                map_of(next),
                (assigned[2].0, 1),
                "a backup of the straggler"
            );
        } else {
            assert_eq!(next, Assignment::Wait(WAIT_RETRY));
        }
    }
}

#[test]
fn a_lost_worker_takes_its_map_output_with_it() {
    let start = Instant::now();
    let mut state = job(1, 1);
    let (w, _) = state.register("http://w".into(), String::new(), start);
    let (v, _) = state.register("http://v".into(), String::new(), start);
    let (task, attempt) = map_of(state.assign(w, start));
    complete(
        &mut state,
        w,
        TaskKind::Map,
        task,
        attempt,
        None,
        Counters::default(),
        start,
    );
    let later = start + Duration::from_secs(11);
    state.heartbeat(v, &[], later);
    let records = state.tick(later);
    assert_eq!(records, vec![Record::MapLost { task: 0 }]);
    assert_eq!(map_of(state.assign(v, later)), (0, 1));
}

#[test]
fn an_attempt_without_progress_times_out_though_its_worker_heartbeats() {
    let start = Instant::now();
    let mut state = job(2, 1);
    let (w, _) = state.register("http://w".into(), String::new(), start);
    let (v, _) = state.register("http://v".into(), String::new(), start);
    let (m0, a0) = map_of(state.assign(w, start));
    let (m1, a1) = map_of(state.assign(v, start));
    // Both workers heartbeat every second for 30 s; w's progress moves,
    // v's is stuck at 7 from 1 s: the tick at 11 s gives it up, and from
    // the next heartbeat on v is told to abandon it.
    for second in 1..=30 {
        let now = start + Duration::from_secs(second);
        let moving = progress(TaskKind::Map, m0, a0, second * 100);
        assert_eq!(state.heartbeat(w, &[moving], now), Some(vec![]));
        let stuck = progress(TaskKind::Map, m1, a1, 7);
        let abort = state.heartbeat(v, &[stuck], now);
        let expired = second >= 12;
        assert_eq!(
            abort,
            Some(if expired {
                vec![(TaskKind::Map, m1, a1)]
            } else {
                vec![]
            }),
            "at {second} s"
        );
        state.tick(now);
    }
    let now = start + Duration::from_secs(30);
    let status = state.status(now);
    assert_eq!(status.maps_running, 1, "w's moving attempt is kept");
    assert_eq!(status.attempts_timed_out, 1);
    assert_eq!(
        status.task_failures, 1,
        "a timed-out attempt is a failed one"
    );
    assert_eq!(status.attempts_lost, 0, "its worker was not lost");
    let (x, _) = state.register("http://x".into(), String::new(), now);
    assert_eq!(
        map_of(state.assign(x, now)),
        (m1, a1 + 1),
        "the stuck map runs again"
    );
}

#[test]
fn a_task_that_never_progresses_fails_the_job_after_max_attempts() {
    let start = Instant::now();
    let mut state = job(1, 1);
    let (w, _) = state.register("http://w".into(), String::new(), start);
    let mut now = start;
    for _ in 0..4 {
        let (task, attempt) = map_of(state.assign(w, now));
        for _ in 0..11 {
            now += Duration::from_secs(1);
            state.heartbeat(w, &[progress(TaskKind::Map, task, attempt, 0)], now);
            state.tick(now);
        }
    }
    let error = state.failed.clone().expect("the job failed");
    assert!(error.contains("failed 4 times"), "{error}");
    assert!(error.contains("no progress"), "{error}");
}

#[test]
fn map_tasks_go_to_workers_beside_their_replicas_after_a_bounded_wait() {
    use super::locality::LOCALITY_WAIT;
    let now = Instant::now();
    let mut state = job(4, 1);
    let hosts = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    state.set_split_hosts(vec![
        hosts(&["a"]),
        hosts(&["a"]),
        hosts(&["b"]),
        hosts(&["a"]),
    ]);
    let (on_a, _) = state.register("http://w".into(), "a".into(), now);
    let (on_b, _) = state.register("http://v".into(), "b".into(), now);
    let done = |state: &mut JobState, worker, task, at| {
        let (accepted, _) = complete(
            state,
            worker,
            TaskKind::Map,
            task,
            0,
            None,
            Counters::default(),
            at,
        );
        assert!(accepted, "map {task}");
    };
    assert_eq!(map_of(state.assign(on_b, now)).0, 2, "b's own split first");
    done(&mut state, on_b, 2, now);
    assert_eq!(
        state.assign(on_b, now),
        Assignment::Wait(WAIT_RETRY),
        "no split left on b: it waits for one"
    );
    let later = now + LOCALITY_WAIT / 2;
    assert_eq!(state.assign(on_b, later), Assignment::Wait(WAIT_RETRY));
    let later = now + LOCALITY_WAIT;
    assert_eq!(
        map_of(state.assign(on_b, later)).0,
        0,
        "after the wait, a remote split"
    );
    assert_eq!(map_of(state.assign(on_a, later)).0, 1);
    // A worker beside no replica at all does not wait.
    let (elsewhere, _) = state.register("http://x".into(), "c".into(), later);
    assert_eq!(map_of(state.assign(elsewhere, later)).0, 3);
    for (worker, task) in [(on_b, 0), (on_a, 1), (elsewhere, 3)] {
        done(&mut state, worker, task, later);
    }
    let counters = state.counters();
    assert_eq!(counters.get(counter::DATA_LOCAL_MAPS), 2);
    assert_eq!(counters.get(counter::REMOTE_MAPS), 2);
}
