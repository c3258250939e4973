//! Shards offered to a group that never takes them (joined at an address
//! where nothing runs, or down the whole time) come back when it leaves:
//! writes to them resume, nothing is lost or applied twice, and a group
//! that left while down drops what it never got and can be joined again.
#![cfg(madsim)]

mod lab;

use std::time::Duration;

use cairn_shardctrler::Gid;
use lab::{Clerk, GIDS, Tester, random_string};
use tokio::time::{Instant, sleep};

/// A group id nobody runs, and where its servers would be.
const PHANTOM: Gid = 999;
/// How long (virtual) a stage may take.
const STAGE_DEADLINE: Duration = Duration::from_secs(60);
/// The step of virtual time between looks at the groups' state.
const STEP: Duration = Duration::from_millis(10);
const N: usize = 3;

fn keys() -> Vec<String> {
    (0..10).map(|i| i.to_string()).collect()
}

/// Waits until every running server of `group` has a shard offered to
/// `gid` that it cannot hand over: the wedge the test undoes.
async fn wait_offering_to(t: &Tester, group: usize, gid: Gid) {
    let started = Instant::now();
    loop {
        let plans = t.plans(group).await;
        if !plans.is_empty() && plans.iter().all(|p| p.offer.contains_key(&gid)) {
            return;
        }
        if started.elapsed() > STAGE_DEADLINE {
            t.fail(format!(
                "group {} never offered shards to group {gid}",
                GIDS[group]
            ));
        }
        sleep(STEP).await;
    }
}

/// Waits until every running server of each group in `groups` has reached
/// the controller's latest configuration with nothing in hand-over.
async fn wait_settled(t: &Tester, groups: &[usize]) {
    let latest = t.query().await.num;
    let started = Instant::now();
    for &group in groups {
        loop {
            let plans = t.plans(group).await;
            if plans.len() == t.n && plans.iter().all(|p| p.config_num == latest && p.stable) {
                break;
            }
            if started.elapsed() > STAGE_DEADLINE {
                t.fail(format!(
                    "group {} did not settle at configuration {latest}: {plans:?}",
                    GIDS[group]
                ));
            }
            sleep(STEP).await;
        }
    }
}

/// One appender per key, each making `appends` logged appends; returns
/// what each key must hold.
async fn append_everywhere(
    t: &Tester,
    keys: &[String],
    values: &[String],
    appends: usize,
) -> Vec<madsim::task::JoinHandle<String>> {
    keys.iter()
        .zip(values)
        .map(|(key, value)| {
            let (ck, key, mut value) = (t.make_client(), key.clone(), value.clone());
            madsim::task::spawn(async move {
                for _ in 0..appends {
                    let extra = random_string(5);
                    ck.append_logged(&key, &extra).await;
                    value.push_str(&extra);
                    sleep(Duration::from_millis(50)).await;
                }
                value
            })
        })
        .collect()
}

async fn finish(
    t: &Tester,
    ck: &Clerk,
    keys: &[String],
    appenders: Vec<madsim::task::JoinHandle<String>>,
) {
    for (key, appender) in keys.iter().zip(appenders) {
        let value = match tokio::time::timeout(STAGE_DEADLINE, appender).await {
            Ok(value) => value.unwrap(),
            Err(_) => t.fail(format!(
                "appends to {key} did not finish within {STAGE_DEADLINE:?}"
            )),
        };
        let got = ck.get_logged(key).await;
        if got != value {
            t.fail(format!("Get({key}): expected\n{value}\nreceived\n{got}"));
        }
    }
}

/// The typo: `join` of a group nobody runs takes shards from the
/// live groups, which wait for it; another group joins meanwhile; then the
/// phantom leaves, and every shard is served again with its data.
#[madsim::test]
async fn a_phantom_group_joined_then_left_gives_its_shards_back_intact() {
    let t = Tester::new(N, true, -1);
    let ck = t.make_client();
    t.joinm(&[0, 1]).await;
    let keys = keys();
    let mut values = Vec::new();
    for key in &keys {
        let value = random_string(10);
        ck.put_logged(key, &value).await;
        values.push(value);
    }
    let appenders = append_everywhere(&t, &keys, &values, 20).await;
    let phantom = (0..N).map(|i| format!("http://nowhere-{i}:7500")).collect();
    t.join_servers(PHANTOM, phantom).await;
    wait_offering_to(&t, 0, PHANTOM).await;
    wait_offering_to(&t, 1, PHANTOM).await;
    // A configuration in which the phantom still owns shards, then the
    // one without it: the groups pass both.
    t.join(2).await;
    t.leave_gid(PHANTOM).await;
    finish(&t, &ck, &keys, appenders).await;
    wait_settled(&t, &[0, 1, 2]).await;
    t.check_linearizable("a_phantom_group_joined_then_left_gives_its_shards_back_intact");
    t.end("a_phantom_group_joined_then_left_gives_its_shards_back_intact");
}

/// A real group joined while down and left before it came back: the
/// others take their shards back; when it starts, it drops the shards it
/// was offered (they were taken back) and follows the configurations, and
/// it can be joined again and serve.
#[madsim::test]
async fn a_group_that_left_while_down_drops_what_it_never_got_and_can_rejoin() {
    let t = Tester::new(N, false, -1);
    let ck = t.make_client();
    t.joinm(&[0, 1]).await;
    let keys = keys();
    let mut values = Vec::new();
    for key in &keys {
        let value = random_string(10);
        ck.put(key, &value).await;
        values.push(value);
    }
    t.shutdown_group(2);
    t.join(2).await;
    wait_offering_to(&t, 0, GIDS[2]).await;
    t.leave(2).await;
    for (key, value) in keys.iter().zip(&values) {
        ck.check(&t, key, value).await;
    }
    t.start_group(2);
    wait_settled(&t, &[0, 1, 2]).await;
    t.join(2).await;
    for (key, value) in keys.iter().zip(values.iter_mut()) {
        ck.check(&t, key, value).await;
        let extra = random_string(5);
        ck.append(key, &extra).await;
        value.push_str(&extra);
    }
    wait_settled(&t, &[0, 1, 2]).await;
    let config = t.query().await;
    assert!(!config.shards_of(GIDS[2]).is_empty());
    for shard in config.shards_of(GIDS[2]) {
        let states = t.shard_on(2, shard as u32).await;
        assert!(
            states
                .iter()
                .all(|(s, _)| *s == Some(cairn_shardkv::ShardState::Serving)),
            "group {} does not serve shard {shard}: {states:?}",
            GIDS[2]
        );
    }
    for (key, value) in keys.iter().zip(&values) {
        ck.check(&t, key, value).await;
    }
    t.end("a_group_that_left_while_down_drops_what_it_never_got_and_can_rejoin");
}
