//! How swarms are named: [`SwarmId`] inside this instance, keys in the swarm index, in Redis
//! and on the relay hop (a native swarm id as the viewer sent it; a WebTorrent info hash under a
//! prefix no native id can take).

/// A swarm of this instance, unique for the life of the process: a swarm that empties and is
/// created again gets a new id, so a signal in flight for the old one can't reach members of
/// the new one by mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SwarmId(pub u64);

/// Marks WebTorrent swarm keys. Native swarm ids may not hold control characters, so no
/// native id can name a WebTorrent swarm, and the two protocols' viewers of the same video id
/// never mix.
pub const WEBTORRENT_KEY_PREFIX: &str = "wt\u{1f}";

/// Length of a WebTorrent swarm key: the prefix and 40 hex digits.
pub const WEBTORRENT_KEY_LEN: usize = WEBTORRENT_KEY_PREFIX.len() + 40;

/// The swarm key of a WebTorrent info hash, written into `buf`: the prefix and the hash in hex.
/// It names the swarm in the local index, in Redis and on the relay hop.
pub fn webtorrent_key<'b>(info_hash: &[u8; 20], buf: &'b mut [u8; WEBTORRENT_KEY_LEN]) -> &'b str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let prefix = WEBTORRENT_KEY_PREFIX.as_bytes();
    buf[..prefix.len()].copy_from_slice(prefix);
    for (i, b) in info_hash.iter().enumerate() {
        buf[prefix.len() + 2 * i] = HEX[usize::from(b >> 4)];
        buf[prefix.len() + 2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    // ASCII only, by construction.
    std::str::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webtorrent_keys_are_hex_and_reserved() {
        let mut buf = [0; WEBTORRENT_KEY_LEN];
        let key = webtorrent_key(&[0xab; 20], &mut buf);
        assert_eq!(key.len(), 43);
        assert!(key.starts_with("wt\u{1f}abab"));
        assert!(key.chars().any(char::is_control));
    }
}
