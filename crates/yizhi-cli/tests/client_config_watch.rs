//! The config watcher and endpoint failover across a member restart, on a cluster of its own
//! (it kills a member, which the recipe tests sharing a cluster should not have to ride out).

use std::time::{Duration, Instant};

use yizhi_client::recipes::config::{ConfigChange, ConfigWatcher};
use yizhi_client::{Client, DeleteOptions, Error, GetOptions, PutOptions};
use yizhi_testkit::{Cluster, block_on_multi_thread};

const WRITES: usize = 150;
const KILL_AT: usize = 50;
const RESTART_AT: usize = 100;

/// A write whose outcome may be unknown (the member it went through died): the writer is the only
/// one writing unique values, so it settles the question by reading the key back.
async fn put_settled(client: &Client, key: &str, value: &str) -> ConfigChange {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.put(key, value, PutOptions::new()).await {
            Ok(response) => {
                return ConfigChange {
                    key: key.as_bytes().to_vec(),
                    value: Some(value.as_bytes().to_vec()),
                    revision: response.header.expect("header").revision,
                };
            }
            Err(error @ (Error::Ambiguous(_) | Error::Unreachable { .. })) => {
                assert!(Instant::now() < deadline, "no write within 30 s: {error}");
                if let Ok(read) = client.get(key, GetOptions::new()).await
                    && let Some(kv) = read.kvs.first()
                    && kv.value == value.as_bytes()
                {
                    return ConfigChange {
                        key: key.as_bytes().to_vec(),
                        value: Some(value.as_bytes().to_vec()),
                        revision: kv.mod_revision,
                    };
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("put {key}: {error}"),
        }
    }
}

#[test]
fn config_watcher_delivers_every_change_in_order_across_a_member_restart() {
    block_on_multi_thread(async {
        let cluster = Cluster::start(3, &[]).await;
        let writer = Client::connect(&cluster.urls_from(1)).await.expect("writer");
        writer
            .put("cfg/a", "initial", PutOptions::new())
            .await
            .expect("put");
        writer.put("cfg/gone", "x", PutOptions::new()).await.expect("put");

        // The watcher prefers member 0, which dies mid-way.
        let reader = Client::connect(&cluster.urls_from(0)).await.expect("reader");
        let (snapshot, mut watcher) = ConfigWatcher::snapshot(&reader, "cfg/").await.expect("snapshot");
        assert_eq!(snapshot.values.get(&b"cfg/a"[..]), Some(&b"initial".to_vec()));
        assert_eq!(snapshot.values.len(), 2);
        let collector = tokio::spawn(async move {
            let mut seen = Vec::new();
            while seen.len() < WRITES + 1 {
                seen.push(watcher.next().await.expect("change"));
            }
            (seen, watcher.resumes())
        });

        let mut expected = Vec::new();
        let deleted = writer
            .delete("cfg/gone", DeleteOptions::new())
            .await
            .expect("delete");
        expected.push(ConfigChange {
            key: b"cfg/gone".to_vec(),
            value: None,
            revision: deleted.header.expect("header").revision,
        });
        let started = Instant::now();
        for i in 0..WRITES {
            if i == KILL_AT {
                cluster.kill(0);
            }
            if i == RESTART_AT {
                cluster.restart(0).await;
            }
            expected.push(put_settled(&writer, &format!("cfg/k{}", i % 7), &format!("v{i}")).await);
        }
        eprintln!(
            "{WRITES} writes across a kill and restart in {:?}",
            started.elapsed()
        );
        let seen = tokio::time::timeout(Duration::from_secs(45), collector)
            .await
            .expect("watcher caught up")
            .expect("collector");
        let (seen, resumes) = seen;
        assert_eq!(seen, expected, "every change once, in order");
        assert!(resumes >= 1, "the watch never moved off the killed member");

        // Reads fail over too: the client preferring the restarted member still answers.
        cluster.kill(1);
        let value = reader
            .get("cfg/k0", GetOptions::new())
            .await
            .expect("read after failover");
        assert_eq!(value.kvs.len(), 1);

        // History below a compaction is gone: reported, not skipped.
        let current = writer
            .get("cfg/", GetOptions::new().prefix().limit(1))
            .await
            .expect("get");
        let revision = current.header.expect("header").revision;
        writer.compact(revision, false).await.expect("compact");
        match ConfigWatcher::from_revision(&reader, "cfg/", 2).await {
            Err(Error::Compacted { compact_revision }) => assert_eq!(compact_revision, revision),
            Ok(mut watcher) => match watcher.next().await {
                Err(Error::Compacted { compact_revision }) => assert_eq!(compact_revision, revision),
                other => panic!("expected a compaction error, got {other:?}"),
            },
            Err(other) => panic!("expected a compaction error, got {other}"),
        }
    });
}
