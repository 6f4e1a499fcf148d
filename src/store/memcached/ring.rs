//! Which server holds a key: the same answer on every replica given the same servers.

use sha2::{Digest, Sha256};

/// Virtual points per server on the ring: enough that each server's share of the keys stays
/// within a few percent of the mean.
const POINTS_PER_SERVER: usize = 160;

/// Consistent hashing of keys onto servers, ketama style.
///
/// Each server owns [`POINTS_PER_SERVER`] points on a `u64` circle, taken from SHA-256 of
/// `"host:port-i"`; a key belongs to the first point at or after the hash of the key. Every
/// replica given the same server names therefore routes a key to the same server, and adding a
/// server only moves the keys that the new server takes over.
#[derive(Clone, Debug)]
pub struct Ring {
    /// Sorted by point; the server index breaks (improbable) ties deterministically.
    points: Vec<(u64, usize)>,
}

impl Ring {
    pub fn new(servers: &[String]) -> Self {
        let mut points: Vec<(u64, usize)> = servers
            .iter()
            .enumerate()
            .flat_map(|(index, server)| {
                (0..POINTS_PER_SERVER).map(move |i| (hash64(format!("{server}-{i}").as_bytes()), index))
            })
            .collect();
        points.sort_unstable();
        Ring { points }
    }

    /// Index into the `servers` given to [`Ring::new`]; 0 for a ring without servers.
    pub fn server_for(&self, key: &str) -> usize {
        let hash = hash64(key.as_bytes());
        let next = self.points.partition_point(|&(point, _)| point < hash);
        self.points.get(next).or(self.points.first()).map_or(0, |&(_, server)| server)
    }
}

fn hash64(bytes: &[u8]) -> u64 {
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    let [b0, b1, b2, b3, b4, b5, b6, b7, ..] = digest;
    u64::from_be_bytes([b0, b1, b2, b3, b4, b5, b6, b7])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn keys(count: usize) -> impl Iterator<Item = String> {
        (0..count).map(|i| format!("demand/org-{}/runner-{i}", i % 7))
    }

    #[test]
    fn ring_routes_every_key_the_same_way_every_time() {
        let names = servers(&["a:11211", "b:11211", "c:11211"]);
        let (first, second) = (Ring::new(&names), Ring::new(&names));
        for key in keys(1000) {
            assert_eq!(first.server_for(&key), second.server_for(&key), "{key}");
        }
    }

    #[test]
    fn ring_does_not_depend_on_server_order() {
        let forward = servers(&["a:11211", "b:11211", "c:11211"]);
        let backward: Vec<String> = forward.iter().rev().cloned().collect();
        let (forward_ring, backward_ring) = (Ring::new(&forward), Ring::new(&backward));
        for key in keys(1000) {
            assert_eq!(forward[forward_ring.server_for(&key)], backward[backward_ring.server_for(&key)]);
        }
    }

    #[test]
    fn ring_gives_every_server_a_fair_share_of_100k_keys() {
        for names in
            [servers(&["a:11211", "b:11211", "c:11211"]), servers(&["10.0.0.1:1", "10.0.0.2:1", "x:2", "y:3", "z:4"])]
        {
            let ring = Ring::new(&names);
            let mut counts = vec![0usize; names.len()];
            for key in keys(100_000) {
                counts[ring.server_for(&key)] += 1;
            }
            let mean = 100_000 / names.len();
            for (server, count) in names.iter().zip(&counts) {
                assert!(count.abs_diff(mean) * 4 <= mean, "{server} got {count} keys, mean {mean}: {counts:?}");
            }
        }
    }

    #[test]
    fn adding_a_fourth_server_moves_about_a_quarter_of_the_keys_all_to_the_new_server() {
        let three = servers(&["a:11211", "b:11211", "c:11211"]);
        let mut four = three.clone();
        four.push("d:11211".to_string());
        let (before, after) = (Ring::new(&three), Ring::new(&four));
        let mut moved = 0;
        for key in keys(100_000) {
            let (old, new) = (before.server_for(&key), after.server_for(&key));
            if old != new {
                moved += 1;
                assert_eq!(new, 3, "{key} moved from {} to {}, not to the new server", three[old], four[new]);
            }
        }
        assert!(moved > 15_000 && moved < 35_000, "{moved} of 100000 keys moved");
    }

    #[test]
    fn a_ring_without_servers_does_not_panic() {
        assert_eq!(Ring::new(&[]).server_for("key"), 0);
    }
}
