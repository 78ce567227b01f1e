//! A member that missed more than a snapshot's worth of writes catches up through a snapshot
//! streamed from the leader (the leader's WAL dropped the entries it would need): with
//! `--snapshot-count 50`, a follower killed while 400 writes go by restarts, receives the
//! snapshot (read back from the leader's snapshot file) and ends with every key, its revision and
//! its KV hash equal to the leader's.

use std::time::{Duration, Instant};

use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use yizhi_testkit::Cluster;

const WRITES: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_behind_the_compacted_log_catches_up_from_a_snapshot() {
    for engine in ["raft", "paxos"] {
        let cluster = Cluster::start(3, &["--snapshot-count", "50", "--engine", engine]).await;
        let _logs = cluster.logs_on_panic();
        let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
        let lagging = (leader + 1) % 3;
        cluster.kill(lagging);
        let mut kv = cluster.kv_client(leader);
        for i in 0..WRITES {
            kv.put(pb::PutRequest {
                key: format!("snap/{i:04}").into_bytes(),
                value: format!("v{i}").into_bytes(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{engine}: put {i}: {e}"));
        }
        let leader_status = MaintenanceClient::new(yizhi_testkit::channel(&cluster.client_url(leader)))
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        cluster.restart(lagging).await;

        // Serializable reads on the restarted member: what it applied itself.
        let mut caught_up = cluster.kv_client(lagging);
        let deadline = Instant::now() + Duration::from_secs(20);
        let revision = leader_status.header.expect("header").revision;
        loop {
            let response = caught_up
                .range(pb::RangeRequest {
                    key: b"snap/".to_vec(),
                    range_end: b"snap0".to_vec(),
                    serializable: true,
                    count_only: true,
                    ..Default::default()
                })
                .await
                .expect("serializable count");
            let header = response.get_ref().header.expect("header");
            if response.get_ref().count == WRITES as i64 && header.revision >= revision {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{engine}: member {lagging} has {} of {WRITES} keys at revision {}",
                response.get_ref().count,
                header.revision
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let hash = |index: usize| {
            let url = cluster.client_url(index);
            async move {
                MaintenanceClient::new(yizhi_testkit::channel(&url))
                    .hash_kv(pb::HashKvRequest { revision })
                    .await
                    .expect("hash kv")
                    .into_inner()
                    .hash
            }
        };
        assert_eq!(
            hash(lagging).await,
            hash(leader).await,
            "{engine}: the KV hashes differ"
        );
        let log = cluster.log_text(lagging);
        assert!(
            log.contains("installed a snapshot from the leader"),
            "{engine}: member {lagging} caught up without a snapshot; the test did not test it"
        );
    }
}
