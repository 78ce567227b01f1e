//! Every recipe against a real 3-member yizhi cluster, each with a participant that "crashes"
//! mid-way: its session's keep-alives stop without a revoke (`Session::abandon`) or its task is
//! aborted, so its keys go only when its lease expires, and the others must proceed.
//!
//! The tests share one cluster and run in parallel, each under its own key prefix.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Mutex as AsyncMutex;
use yizhi_client::recipes::barrier::Barrier;
use yizhi_client::recipes::double_barrier::DoubleBarrier;
use yizhi_client::recipes::election::{Election, Leadership};
use yizhi_client::recipes::mutex::Mutex;
use yizhi_client::recipes::priority_queue::PriorityQueue;
use yizhi_client::recipes::queue::Queue;
use yizhi_client::recipes::rwlock::RwLock;
use yizhi_client::recipes::semaphore::Semaphore;
use yizhi_client::{Client, Compare, CompareOp, Error, GetOptions, Op, PutOptions, Session, Txn};
use yizhi_testkit::{Cluster, block_on_multi_thread, eventually};

/// Live participants: long enough to ride out a loaded machine.
const LIVE_TTL_SECS: i64 = 6;
/// The crashing participant: the server's minimum, so the others wait little.
const VICTIM_TTL_SECS: i64 = 2;
/// Ample for a 2 s lease to expire and the leader's lessor (every 0.5 s) to revoke it.
const EXPIRY_WITHIN: Duration = Duration::from_secs(15);
const TEST_DEADLINE: Duration = Duration::from_secs(50);

async fn session(client: &Client, ttl_secs: i64) -> Session {
    Session::new(client, ttl_secs).await.expect("session")
}

/// Waits until the cluster no longer knows the lease (expired and revoked).
async fn wait_lease_gone(client: &Client, lease_id: i64) {
    eventually(EXPIRY_WITHIN, "the abandoned lease expires", || async {
        client.lease_time_to_live(lease_id, false).await.expect("ttl").ttl == -1
    })
    .await;
}

/// Asserts no key is left under `prefix` (`what` names them in the failure).
async fn assert_none_left(client: &Client, prefix: &str, what: &str) {
    let left = client.get(prefix, GetOptions::new().prefix()).await.expect("get");
    assert!(left.kvs.is_empty(), "{what} left: {:?}", left.kvs);
}

/// A queue item written as a decimal number.
fn number(value: Vec<u8>) -> usize {
    String::from_utf8(value).expect("utf8").parse().expect("number")
}

fn token_text(token: i64) -> String {
    format!("{token:020}")
}

async fn read_i64(client: &Client, key: &str) -> (i64, i64) {
    let response = client.get(key, GetOptions::new()).await.expect("get");
    let kv = response.kvs.first().expect("key exists");
    let value = String::from_utf8_lossy(&kv.value).parse().expect("number");
    (value, kv.mod_revision)
}

/// One 3-member cluster shared by every test of this file.
fn shared_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| block_on_multi_thread(Cluster::start(3, &[])))
}

/// Runs `test` with a client of the shared cluster, on a runtime whose workers run the tasks
/// it spawns while it waits.
fn with_client<F: std::future::Future<Output = ()>>(test: impl FnOnce(Client) -> F) {
    let cluster = shared_cluster();
    block_on_multi_thread(async {
        let client = Client::connect(&cluster.client_urls()).await.expect("client");
        test(client).await;
    });
}

/// `task`'s output, which must come within [`TEST_DEADLINE`]; `what` names it if not.
async fn finish<T>(task: tokio::task::JoinHandle<T>, what: &str) -> T {
    tokio::time::timeout(TEST_DEADLINE, task)
        .await
        .expect(what)
        .expect("task")
}

/// [`finish`] of every task, in order.
async fn finish_all<T>(tasks: Vec<tokio::task::JoinHandle<T>>, what: &str) -> Vec<T> {
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        outputs.push(finish(task, what).await);
    }
    outputs
}

#[test]
fn session_lost_signal_and_close() {
    with_client(|client| async move {
        let revoked = session(&client, LIVE_TTL_SECS).await;
        assert!(revoked.is_alive());
        // Someone else revokes the lease: the next keep-alive hears TTL 0.
        client.lease_revoke(revoked.lease_id()).await.expect("revoke");
        tokio::time::timeout(Duration::from_secs(10), revoked.lost())
            .await
            .expect("the session notices its revoked lease");
        assert!(!revoked.is_alive());
        assert!(matches!(revoked.check_alive(), Err(Error::SessionLost { .. })));

        let closed = session(&client, LIVE_TTL_SECS).await;
        client
            .put("t/session/key", "v", PutOptions::new().lease(closed.lease_id()))
            .await
            .expect("put");
        closed.close().await.expect("close revokes");
        let left = client.get("t/session/key", GetOptions::new()).await.expect("get");
        assert!(left.kvs.is_empty(), "closing the session deletes its keys");
    });
}

/// N workers increment a counter under the mutex with a plain read-modify-write (a broken mutex
/// loses updates), writing through a fence that only accepts growing tokens. A first holder
/// crashes while holding the lock; the others proceed after its lease expires, and its stale
/// write, attempted afterwards, is refused by the fence.
#[test]
fn mutex_counter_fencing_and_crashed_holder() {
    const WORKERS: usize = 4;
    const ROUNDS: usize = 4;
    with_client(|client| async move {
        client
            .put("t/mutex/counter", "0", PutOptions::new())
            .await
            .expect("init");
        client
            .put("t/mutex/fence", token_text(0), PutOptions::new())
            .await
            .expect("init");
        let mutex = Mutex::new("t/mutex/lock");

        let victim = session(&client, VICTIM_TTL_SECS).await;
        let victim_guard = mutex.lock(&victim).await.expect("victim locks first");
        let victim_token = victim_guard.fencing_token();
        let victim_lease = victim.abandon();

        let tokens = Arc::new(AsyncMutex::new(Vec::new()));
        let mut workers = Vec::new();
        for _ in 0..WORKERS {
            let (client, mutex, tokens) = (client.clone(), mutex.clone(), tokens.clone());
            workers.push(tokio::spawn(async move {
                let session = session(&client, LIVE_TTL_SECS).await;
                for _ in 0..ROUNDS {
                    let guard = mutex.lock(&session).await.expect("lock");
                    let token = guard.fencing_token();
                    let (count, _) = read_i64(&client, "t/mutex/counter").await;
                    tokens.lock().await.push(token);
                    let write = Txn::new()
                        .when([Compare::value(
                            "t/mutex/fence",
                            CompareOp::Less,
                            token_text(token),
                        )])
                        .and_then([
                            Op::put("t/mutex/counter", (count + 1).to_string(), PutOptions::new()),
                            Op::put("t/mutex/fence", token_text(token), PutOptions::new()),
                        ]);
                    let response = client.txn(write).await.expect("txn");
                    assert!(response.succeeded, "a live holder (token {token}) was fenced off");
                    guard.unlock(&session).await.expect("unlock");
                }
                session.close().await.expect("close");
            }));
        }
        finish_all(workers, "workers finish").await;
        wait_lease_gone(&client, victim_lease).await;

        let (count, _) = read_i64(&client, "t/mutex/counter").await;
        assert_eq!(count, (WORKERS * ROUNDS) as i64, "lost updates");
        let tokens = tokens.lock().await.clone();
        assert!(
            tokens.windows(2).all(|w| w[0] < w[1]),
            "tokens not increasing: {tokens:?}"
        );
        assert!(
            tokens[0] > victim_token,
            "{tokens:?} after the victim's {victim_token}"
        );
        // The crashed holder wakes up and writes with its stale token: refused.
        let stale = Txn::new()
            .when([Compare::value(
                "t/mutex/fence",
                CompareOp::Less,
                token_text(victim_token),
            )])
            .and_then([Op::put("t/mutex/counter", "-1", PutOptions::new())]);
        assert!(
            !client.txn(stale).await.expect("txn").succeeded,
            "a stale holder's write passed the fence"
        );
        assert_none_left(&client, "t/mutex/lock/", "lock keys").await;
    });
}

/// A crashed writer blocks everyone until its lease expires; then the readers that queued hold
/// the lock together, and a later writer holds it alone.
#[test]
fn rwlock_readers_share_writers_exclude_after_crashed_writer() {
    with_client(|client| async move {
        let lock = RwLock::new("t/rwlock");
        let victim = session(&client, VICTIM_TTL_SECS).await;
        let _held = lock.write(&victim).await.expect("victim writes");
        let victim_lease = victim.abandon();

        let readers_in = Arc::new(AtomicUsize::new(0));
        let writers_in = Arc::new(AtomicUsize::new(0));
        let max_readers = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..4 {
            let is_writer = i == 3;
            let (client, lock) = (client.clone(), lock.clone());
            let (readers_in, writers_in, max_readers) =
                (readers_in.clone(), writers_in.clone(), max_readers.clone());
            tasks.push(tokio::spawn(async move {
                // The writer arrives after the readers are in line.
                if is_writer {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let session = session(&client, LIVE_TTL_SECS).await;
                let guard = if is_writer {
                    let guard = lock.write(&session).await.expect("write lock");
                    assert_eq!(writers_in.fetch_add(1, Ordering::SeqCst), 0, "two writers");
                    assert_eq!(readers_in.load(Ordering::SeqCst), 0, "a writer with readers");
                    guard
                } else {
                    let guard = lock.read(&session).await.expect("read lock");
                    assert_eq!(writers_in.load(Ordering::SeqCst), 0, "a reader with a writer");
                    let now = readers_in.fetch_add(1, Ordering::SeqCst) + 1;
                    max_readers.fetch_max(now, Ordering::SeqCst);
                    guard
                };
                tokio::time::sleep(Duration::from_millis(300)).await;
                if is_writer {
                    writers_in.fetch_sub(1, Ordering::SeqCst);
                } else {
                    readers_in.fetch_sub(1, Ordering::SeqCst);
                }
                guard.unlock(&session).await.expect("unlock");
                session.close().await.expect("close");
            }));
        }
        finish_all(tasks, "finish").await;
        wait_lease_gone(&client, victim_lease).await;
        assert!(
            max_readers.load(Ordering::SeqCst) >= 2,
            "readers never shared the lock"
        );
    });
}

/// N = 2 permits, one held by a crashed client: never more than N live holders, N reached once
/// the crashed permit returns.
#[test]
fn semaphore_never_exceeds_n_with_a_crashed_holder() {
    const PERMITS: i64 = 2;
    with_client(|client| async move {
        let semaphore = Semaphore::new("t/semaphore", PERMITS).expect("semaphore");
        let victim = session(&client, VICTIM_TTL_SECS).await;
        let _permit = semaphore.acquire(&victim).await.expect("victim acquires");
        let victim_lease = victim.abandon();

        let inside = Arc::new(AtomicUsize::new(0));
        let max_inside = Arc::new(AtomicUsize::new(0));
        let victim_gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (client, semaphore) = (client.clone(), semaphore.clone());
            let (inside, max_inside, victim_gone) = (inside.clone(), max_inside.clone(), victim_gone.clone());
            tasks.push(tokio::spawn(async move {
                let session = session(&client, LIVE_TTL_SECS).await;
                // Contend while the crashed holder still counts, then two rounds with both permits.
                let mut rounds_after_expiry = 0;
                while rounds_after_expiry < 2 {
                    if victim_gone.load(Ordering::SeqCst) {
                        rounds_after_expiry += 1;
                    }
                    let permit = semaphore.acquire(&session).await.expect("acquire");
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    assert!(now as i64 <= PERMITS, "{now} live holders of {PERMITS} permits");
                    // While the crashed holder's lease (hence its key, the oldest) exists, it
                    // holds a permit: the live holders counted before this read had one fewer.
                    let ttl = client
                        .lease_time_to_live(victim_lease, false)
                        .await
                        .expect("ttl")
                        .ttl;
                    if ttl != -1 {
                        assert!(
                            (now as i64) < PERMITS,
                            "{now} live holders beside the crashed one"
                        );
                    }
                    max_inside.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    permit.release(&session).await.expect("release");
                }
                session.close().await.expect("close");
            }));
        }
        wait_lease_gone(&client, victim_lease).await;
        victim_gone.store(true, Ordering::SeqCst);
        finish_all(tasks, "finish").await;
        assert_eq!(
            max_inside.load(Ordering::SeqCst) as i64,
            PERMITS,
            "the semaphore never filled"
        );
    });
}

/// Three candidates; the first leader crashes. One leader at a time; the next in line takes over
/// when the crashed leader's lease expires; the deposed leader cannot proclaim; an observer sees
/// every leader and value in order.
#[test]
fn election_single_leader_and_takeover_after_crash() {
    with_client(|client| async move {
        let election = Election::new("t/election");
        let mut observer = election.observe(&client).await.expect("observe");

        let a = session(&client, VICTIM_TTL_SECS).await;
        let a_lead = election.campaign(&a, "a").await.expect("a leads");
        let leaders = Arc::new(AtomicI64::new(1));

        let b = Arc::new(session(&client, LIVE_TTL_SECS).await);
        let b_campaign = spawn_campaign(&election, &b, "b", &leaders);
        // c lines up after b.
        eventually(Duration::from_secs(10), "b is in line", || async {
            let keys = client
                .get("t/election/", GetOptions::new().prefix().count_only())
                .await
                .expect("get");
            keys.count == 2
        })
        .await;
        let c = Arc::new(session(&client, LIVE_TTL_SECS).await);
        let c_campaign = spawn_campaign(&election, &c, "c", &leaders);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !b_campaign.is_finished() && !c_campaign.is_finished(),
            "a leader besides a"
        );

        let crashed_at = Instant::now();
        let a_lease = a.abandon();
        leaders.fetch_sub(1, Ordering::SeqCst);
        let b_lead = finish(b_campaign, "b takes over").await;
        eprintln!("takeover after the leader's crash: {:?}", crashed_at.elapsed());
        assert!(!c_campaign.is_finished(), "c leads beside b");
        wait_lease_gone(&client, a_lease).await;
        assert_eq!(
            election.proclaim(&client, &a_lead, "a2").await,
            Err(Error::NotLeader)
        );
        assert!(b_lead.create_revision() > a_lead.create_revision());

        election
            .proclaim(&client, &b_lead, "b2")
            .await
            .expect("b proclaims");
        leaders.fetch_sub(1, Ordering::SeqCst);
        election.resign(&client, b_lead).await.expect("b resigns");
        let c_lead = finish(c_campaign, "c takes over").await;
        let leader = election
            .leader(&client)
            .await
            .expect("leader")
            .expect("someone leads");
        assert_eq!(leader.value, b"c");

        let mut seen = Vec::new();
        while seen.len() < 4 {
            let kv = tokio::time::timeout(Duration::from_secs(10), observer.next())
                .await
                .expect("observation")
                .expect("observer open")
                .expect("observation ok");
            seen.push(String::from_utf8_lossy(&kv.value).into_owned());
        }
        assert_eq!(seen, ["a", "b", "b2", "c"]);
        election.resign(&client, c_lead).await.expect("c resigns");
        drop(observer);
        for s in [b, c] {
            Arc::into_inner(s)
                .expect("sole owner")
                .close()
                .await
                .expect("close");
        }
    });
}

/// A task campaigning for `session` with `value`; once it leads, `leaders` must have been 0.
fn spawn_campaign(
    election: &Election,
    session: &Arc<Session>,
    value: &'static str,
    leaders: &Arc<AtomicI64>,
) -> tokio::task::JoinHandle<Leadership> {
    let (election, session, leaders) = (election.clone(), session.clone(), leaders.clone());
    tokio::spawn(async move {
        let lead = election
            .campaign(&session, value)
            .await
            .unwrap_or_else(|e| panic!("{value} campaigns: {e:?}"));
        assert_eq!(leaders.fetch_add(1, Ordering::SeqCst), 0, "two leaders");
        lead
    })
}

/// A barrier released by its holder, then one whose holder crashes: every waiter passes, together,
/// only after the release or the expiry.
#[test]
fn barrier_releases_all_waiters_on_release_and_on_holder_crash() {
    with_client(|client| async move {
        for (round, crash) in [(1, false), (2, true)] {
            let barrier = Barrier::new(format!("t/barrier/{round}"));
            let holder = session(&client, VICTIM_TTL_SECS).await;
            barrier.hold(&holder).await.expect("hold");
            let mut waiters = Vec::new();
            for _ in 0..3 {
                let (client, barrier) = (client.clone(), barrier.clone());
                waiters.push(tokio::spawn(async move {
                    barrier.wait(&client).await.expect("wait");
                    Instant::now()
                }));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(
                waiters.iter().all(|w| !w.is_finished()),
                "a waiter passed a held barrier"
            );
            let opened_at = Instant::now();
            if crash {
                holder.abandon();
            } else {
                barrier.release(&client).await.expect("release");
                holder.close().await.expect("close");
            }
            let passed = finish_all(waiters, "passes").await;
            let first = *passed.iter().min().expect("waiters");
            let last = *passed.iter().max().expect("waiters");
            assert!(first >= opened_at);
            assert!(
                last - first < Duration::from_secs(2),
                "waiters passed {:?} apart",
                last - first
            );
            eprintln!(
                "barrier round {round}: passed {:?} after opening",
                last - opened_at
            );
        }
    });
}

/// Three parties enter together; one crashes inside; the other two leave together once its key
/// expired.
#[test]
fn double_barrier_enters_together_and_leaves_past_a_crashed_party() {
    with_client(|client| async move {
        let barrier = DoubleBarrier::new("t/double", 3).expect("barrier");
        let mut parties = Vec::new();
        for _ in 0..2 {
            let (client, barrier) = (client.clone(), barrier.clone());
            parties.push(tokio::spawn(async move {
                let session = session(&client, LIVE_TTL_SECS).await;
                barrier.enter(&session).await.expect("enter");
                let entered = Instant::now();
                barrier.leave(&session).await.expect("leave");
                let left = Instant::now();
                session.close().await.expect("close");
                (entered, left)
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(parties.iter().all(|p| !p.is_finished()), "entered with 2 of 3");
        let third = session(&client, VICTIM_TTL_SECS).await;
        let third_enters = Instant::now();
        barrier.enter(&third).await.expect("third enters");
        // The third party crashes inside the barrier.
        let crashed_at = Instant::now();
        let third_lease = third.abandon();
        let times = finish_all(parties, "done").await;
        for (entered, left) in &times {
            assert!(*entered >= third_enters, "entered before the third party arrived");
            assert!(*left >= crashed_at);
        }
        let spread = times[0].1.max(times[1].1) - times[0].1.min(times[1].1);
        assert!(spread < Duration::from_secs(2), "left {spread:?} apart");
        wait_lease_gone(&client, third_lease).await;
        assert_none_left(&client, "t/double/", "keys").await;
    });
}

/// FIFO for one consumer; with three consumers (and one killed while waiting) every item is
/// consumed exactly once and each consumer sees its items in queue order.
#[test]
fn queue_fifo_and_each_item_once_with_a_killed_consumer() {
    const ITEMS: usize = 30;
    const CONSUMERS: usize = 3;
    with_client(|client| async move {
        let queue = Arc::new(Queue::new("t/queue"));
        for i in 0..5 {
            queue
                .enqueue(&client, format!("solo-{i}"))
                .await
                .expect("enqueue");
        }
        for i in 0..5 {
            assert_eq!(
                queue.dequeue(&client).await.expect("dequeue"),
                format!("solo-{i}").into_bytes()
            );
        }

        // A consumer killed while it waits on the empty queue takes nothing with it.
        let killed = {
            let (client, queue) = (client.clone(), queue.clone());
            tokio::spawn(async move { queue.dequeue(&client).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        killed.abort();

        let mut consumers = Vec::new();
        for _ in 0..CONSUMERS {
            let (client, queue) = (client.clone(), queue.clone());
            consumers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let item = queue.dequeue(&client).await.expect("dequeue");
                    if item == b"stop" {
                        return got;
                    }
                    got.push(
                        String::from_utf8(item)
                            .expect("utf8")
                            .parse::<usize>()
                            .expect("number"),
                    );
                }
            }));
        }
        let producer = Queue::new("t/queue");
        for i in 0..ITEMS {
            producer.enqueue(&client, i.to_string()).await.expect("enqueue");
        }
        for _ in 0..CONSUMERS {
            producer.enqueue(&client, "stop").await.expect("enqueue");
        }
        let mut all = Vec::new();
        for consumer in consumers {
            let got = finish(consumer, "done").await;
            assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
            all.extend(got);
        }
        all.sort_unstable();
        assert_eq!(all, (0..ITEMS).collect::<Vec<_>>(), "each item exactly once");
        assert_none_left(&client, "t/queue/", "queue keys").await;
    });
}

/// Priority order (FIFO within a priority) for one consumer; with three consumers (one killed
/// while waiting) each item goes to one consumer and each sees nondecreasing priorities.
#[test]
fn priority_queue_order_and_each_item_once() {
    const ITEMS: usize = 24;
    with_client(|client| async move {
        let queue = Arc::new(PriorityQueue::new("t/pq"));
        let priority_of = |i: usize| ((i * 7) % 4) as u16;
        for i in 0..ITEMS {
            queue
                .enqueue(&client, i.to_string(), priority_of(i))
                .await
                .expect("enqueue");
        }
        let mut expected: Vec<(u16, usize)> = (0..ITEMS).map(|i| (priority_of(i), i)).collect();
        expected.sort();
        let mut got = Vec::new();
        for _ in 0..ITEMS {
            let (priority, value) = queue.dequeue(&client).await.expect("dequeue");
            got.push((priority, number(value)));
        }
        assert_eq!(got, expected, "priority order, FIFO within a priority");

        let killed = {
            let (client, queue) = (client.clone(), queue.clone());
            tokio::spawn(async move { queue.dequeue(&client).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        killed.abort();
        for i in 0..ITEMS {
            queue
                .enqueue(&client, i.to_string(), priority_of(i))
                .await
                .expect("enqueue");
        }
        let taken = Arc::new(AtomicUsize::new(0));
        let mut consumers = Vec::new();
        for _ in 0..3 {
            let (client, queue, taken) = (client.clone(), queue.clone(), taken.clone());
            consumers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while taken.fetch_add(1, Ordering::SeqCst) < ITEMS {
                    let (priority, value) = queue.dequeue(&client).await.expect("dequeue");
                    got.push((priority, number(value)));
                }
                got
            }));
        }
        let mut all = Vec::new();
        for consumer in consumers {
            let got = finish(consumer, "done").await;
            assert!(
                got.windows(2).all(|w| w[0].0 <= w[1].0),
                "priority went back: {got:?}"
            );
            all.extend(got.into_iter().map(|(_, i)| i));
        }
        all.sort_unstable();
        assert_eq!(all, (0..ITEMS).collect::<Vec<_>>(), "each item exactly once");
    });
}
