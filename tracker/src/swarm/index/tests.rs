use super::*;
use crate::swarm_key::SwarmId;
use proptest::prelude::*;
use std::collections::HashSet;
use swarmtrack_protocol::InstanceId;

fn ids(n: u32) -> Vec<PeerId> {
    (0..n)
        .map(|i| PeerId::new(InstanceId(1), i, u64::from(i)))
        .collect()
}

fn join(index: &SwarmIndex, key: &str, peer: PeerId, want: usize) -> Joined {
    index
        .join(key, peer, want, None, &mut rand::rng(), |_| {})
        .expect("native joins can't conflict")
        .0
}

fn announce(
    index: &SwarmIndex,
    peer: PeerId,
    pid: u8,
    seeder: bool,
    completed: bool,
) -> Result<Counts, Taken> {
    let a = WtAnnounce {
        peer_id: [pid; 20],
        seeder,
        completed,
    };
    index
        .join("wt\u{1f}00", peer, 0, Some(a), &mut rand::rng(), |_| {})
        .map(|(_, c)| c)
}

#[test]
fn join_samples_others_never_self() {
    let index = SwarmIndex::new(4);
    let p = ids(5);
    assert!(join(&index, "v", p[0], 3).peers.is_empty());
    let j = join(&index, "v", p[1], 3);
    assert_eq!(j.peers, vec![p[0]]);
    for &q in &p[2..] {
        join(&index, "v", q, 3);
    }
    for _ in 0..50 {
        let again = join(&index, "v", p[2], 3);
        assert!(!again.new_member);
        assert_eq!(again.peers.len(), 3);
        assert!(!again.peers.contains(&p[2]));
        let distinct: HashSet<_> = again.peers.iter().collect();
        assert_eq!(distinct.len(), 3);
    }
}

#[test]
fn a_new_member_is_recorded_under_the_lock_and_ids_are_never_reused() {
    let index = SwarmIndex::new(1);
    let p = ids(2);
    let mut seen = Vec::new();
    index
        .join("v", p[0], 1, None, &mut rand::rng(), |id| seen.push(id))
        .expect("joined");
    index
        .join("v", p[0], 1, None, &mut rand::rng(), |id| seen.push(id))
        .expect("joined");
    assert_eq!(seen.len(), 1, "only a new member is recorded");
    let first = seen[0];
    assert_eq!(index.id_of("v"), Some(first));
    assert!(index.leave("v", p[0], None).gone);
    assert_eq!(index.id_of("v"), None);
    let again = join(&index, "v", p[1], 1);
    assert_ne!(again.id, first, "a swarm made again gets a new id");
    assert!(again.id > SwarmId(0));
}

#[test]
fn leave_removes_from_pairing_and_drops_empty_swarms() {
    let index = SwarmIndex::new(1);
    let p = ids(2);
    assert!(join(&index, "v", p[0], 5).new_swarm);
    join(&index, "v", p[1], 5);
    let left = index.leave("v", p[0], None);
    assert!(left.removed && !left.gone);
    assert_eq!(index.leave("v", p[0], None), Left::default());
    assert!(join(&index, "w", p[0], 5).peers.is_empty());
    let left = index.leave("v", p[1], None);
    assert!(left.removed && left.gone);
    assert!(index.members("v").is_empty());
    assert_eq!(index.memberships().len(), 1);
}

#[test]
fn sampling_is_roughly_uniform() {
    let index = SwarmIndex::new(1);
    let p = ids(10);
    for &q in &p {
        join(&index, "v", q, 1);
    }
    let mut counts = HashMap::new();
    for _ in 0..9_000 {
        for q in join(&index, "v", p[0], 1).peers {
            *counts.entry(q).or_insert(0u32) += 1;
        }
    }
    assert!(!counts.contains_key(&p[0]));
    assert_eq!(counts.len(), 9);
    // Each of 9 peers expects 1,000 picks; 700 is more than 9 standard deviations away.
    assert!(counts.values().all(|&c| c > 700), "{counts:?}");
}

#[test]
fn webtorrent_counts_follow_seeders_and_completions() {
    let index = SwarmIndex::new(4);
    let c = ids(2);
    let n = announce(&index, c[0], 1, false, false).expect("free");
    assert_eq!((n.complete, n.incomplete, n.downloaded), (0, 1, 0));
    let n = announce(&index, c[1], 2, true, false).expect("free");
    assert_eq!((n.complete, n.incomplete), (1, 1));
    let n = announce(&index, c[0], 1, false, true).expect("own");
    assert_eq!((n.complete, n.incomplete, n.downloaded), (2, 0, 1));
    // A second `completed` from a seeder is not a second download.
    let n = announce(&index, c[0], 1, false, true).expect("own");
    assert_eq!(n.downloaded, 1);
    assert_eq!(
        index.owner_of("wt\u{1f}00", &[2; 20]).map(|o| o.1),
        Some(c[1])
    );
    let left = index.leave("wt\u{1f}00", c[1], Some([2; 20]));
    assert_eq!((left.counts.complete, left.counts.incomplete), (1, 0));
    assert_eq!(index.owner_of("wt\u{1f}00", &[2; 20]), None);
    index.leave("wt\u{1f}00", c[0], Some([1; 20]));
    assert_eq!(index.counts("wt\u{1f}00"), Counts::default());
}

#[test]
fn a_peer_id_is_not_taken_over() {
    let index = SwarmIndex::new(1);
    let c = ids(2);
    announce(&index, c[0], 1, false, false).expect("free");
    assert_eq!(announce(&index, c[1], 1, true, false), Err(Taken));
    assert!(
        !index.members("wt\u{1f}00").contains(&c[1]),
        "a refused announce joins nothing"
    );
    // Nor removed by someone else.
    index.leave("wt\u{1f}00", c[1], Some([1; 20]));
    assert_eq!(index.counts("wt\u{1f}00").incomplete, 1);
    // Free again once its holder leaves.
    index.leave("wt\u{1f}00", c[0], Some([1; 20]));
    assert!(announce(&index, c[1], 1, false, false).is_ok());
}

proptest! {
    #[test]
    fn sample_is_distinct_bounded_and_excludes_self(n in 0u32..40, me in 0u32..45, want in 0usize..50) {
        let mut members = Members::default();
        for id in ids(n) { members.insert(id); }
        let me = PeerId::new(InstanceId(1), me, u64::from(me));
        let got = sample_except(&members, me, want, &mut rand::rng());
        let others = members.iter().filter(|&&m| m != me).count();
        prop_assert_eq!(got.len(), want.min(others));
        prop_assert!(!got.contains(&me));
        let distinct: HashSet<_> = got.iter().collect();
        prop_assert_eq!(distinct.len(), got.len());
        prop_assert!(got.iter().all(|g| members.contains(g)));
    }
}
