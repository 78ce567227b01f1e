use super::*;

fn urls(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Ids printed by etcd 3.5.1 itself (`etcd --initial-cluster …`, then `etcdctl member list` and
/// its "added member" log lines), so that Yizhi and etcd name the same members alike.
#[test]
fn ids_are_the_ones_etcd_3_5_derives() {
    let single = member_id(&urls(&["http://127.0.0.1:23800"]), "etcd-cluster", None);
    assert_eq!(single, 0x2e12_59d4_15f2_a040);
    assert_eq!(cluster_id([single]), 324_952_591_200_643_719);

    let initial = [
        ("a", "http://127.0.0.1:23801", 0x3f87_d1e9_930d_82d9),
        ("b", "http://127.0.0.1:23802", 0x2ce5_679b_4e0d_6116),
        ("c", "http://127.0.0.1:23803", 0xad16_c60c_0e4f_80f4),
    ];
    for (_, url, id) in initial {
        assert_eq!(member_id(&urls(&[url]), "tok-x", None), id, "{url}");
    }
    assert_eq!(cluster_id(initial.map(|(_, _, id)| id)), 0x834f_70e5_e236_bc3d);
}

#[test]
fn the_order_of_peer_urls_does_not_matter_and_the_time_of_an_add_does() {
    let a = member_id(&urls(&["http://a:2380", "http://b:2380"]), "t", None);
    let b = member_id(&urls(&["http://b:2380", "http://a:2380"]), "t", None);
    assert_eq!(a, b);
    assert_ne!(
        a,
        member_id(&urls(&["http://a:2380", "http://b:2380"]), "t", Some(1))
    );
    assert_ne!(
        a,
        member_id(&urls(&["http://a:2380", "http://b:2380"]), "u", None)
    );
}

fn three_members() -> MemberTable {
    let initial: Vec<(String, Vec<String>)> = (1..=3)
        .map(|i| {
            (
                format!("m{i}"),
                urls(&[&format!("http://127.0.0.1:{}", 2380 + i)]),
            )
        })
        .collect();
    MemberTable::bootstrap(&initial, "tok").unwrap()
}

#[test]
fn bootstrap_gives_node_ids_in_list_order() {
    let table = three_members();
    let nodes: Vec<(String, NodeId)> = table.members().map(|m| (m.name.clone(), m.node)).collect();
    let mut sorted = nodes.clone();
    sorted.sort_by_key(|(name, _)| name.clone());
    assert_eq!(sorted, vec![("m1".into(), 1), ("m2".into(), 2), ("m3".into(), 3)]);
}

#[test]
fn a_member_goes_through_add_promote_remove_with_the_engine_changes_it_needs() {
    let mut table = three_members();
    let learner = table
        .new_member(77, "m4".into(), urls(&["http://127.0.0.1:2390"]), true)
        .unwrap();
    assert_eq!(learner.node, 4);
    let add = MemberChange::Add(learner);
    assert_eq!(
        table.check(&add),
        Ok(Some(ConfChange::new(ConfChangeKind::AddLearner, 4)))
    );
    table.apply(&add);
    let promote = MemberChange::Promote { id: 77 };
    assert_eq!(
        table.check(&promote),
        Ok(Some(ConfChange::new(ConfChangeKind::PromoteLearner, 4)))
    );
    table.apply(&promote);
    assert!(!table.get(77).unwrap().is_learner);
    let remove = MemberChange::Remove { id: 77 };
    assert_eq!(
        table.check(&remove),
        Ok(Some(ConfChange::new(ConfChangeKind::Remove, 4)))
    );
    table.apply(&remove);
    assert!(table.is_removed(77));
    let next = table
        .new_member(78, "m5".into(), urls(&["http://127.0.0.1:2390"]), false)
        .unwrap();
    assert_eq!(next.node, 5, "node 4 is never given again");
}

#[test]
fn refusals_carry_etcds_texts_and_codes() {
    let mut table = three_members();
    let m1 = table.members().find(|m| m.name == "m1").unwrap().clone();
    let url = |s: &str| urls(&[s]);
    let cases: Vec<(Result<Member, MemberError>, MemberError)> = vec![
        (
            table.new_member(9, "x".into(), url("127.0.0.1:2390"), false),
            MemberError::BadUrls,
        ),
        (
            table.new_member(9, "x".into(), vec![], false),
            MemberError::BadUrls,
        ),
        (
            table.new_member(m1.id, "x".into(), url("http://h:1"), false),
            MemberError::IdExists,
        ),
        (
            table.new_member(9, "x".into(), m1.peer_urls.clone(), false),
            MemberError::PeerUrlExists,
        ),
    ];
    for (got, expected) in cases {
        assert_eq!(got, Err(expected));
    }
    let learner = table
        .new_member(10, "l".into(), url("http://h:10"), true)
        .unwrap();
    table.apply(&MemberChange::Add(learner));
    assert_eq!(
        table.new_member(11, "l2".into(), url("http://h:11"), true),
        Err(MemberError::TooManyLearners)
    );
    assert_eq!(
        table.check(&MemberChange::Promote { id: m1.id }),
        Err(MemberError::NotLearner)
    );
    assert_eq!(
        table.check(&MemberChange::Remove { id: 12345 }),
        Err(MemberError::NotFound)
    );
    let update = MemberChange::UpdatePeerUrls {
        id: m1.id,
        peer_urls: url("http://h:10"),
    };
    assert_eq!(table.check(&update), Err(MemberError::PeerUrlExists));
    assert_eq!(
        MemberError::TooManyLearners.to_string(),
        "etcdserver: too many learner members in cluster"
    );
    assert_eq!(MemberError::NotFound.status_code(), StatusCode::NotFound);
    assert_eq!(
        MemberError::NotLearner.status_code(),
        StatusCode::FailedPrecondition
    );
}

#[test]
fn a_member_may_keep_its_own_peer_urls_in_an_update() {
    let mut table = three_members();
    let m2 = table.members().find(|m| m.name == "m2").unwrap().clone();
    let mut peer_urls = m2.peer_urls.clone();
    peer_urls.push("http://10.0.0.2:2380".into());
    let update = MemberChange::UpdatePeerUrls {
        id: m2.id,
        peer_urls: peer_urls.clone(),
    };
    assert_eq!(table.check(&update), Ok(None), "moves no vote");
    table.apply(&update);
    assert_eq!(table.get(m2.id).unwrap().peer_urls, peer_urls);
}
