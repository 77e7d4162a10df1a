//! The broker-side delay topology: countdowns wait in RabbitMQ, not in worker
//! memory.
//!
//! A delay of `d` whole seconds is written as [`LEVELS`] bits in the routing
//! key, most significant first, followed by the destination routing key:
//! `b27.b26. … .b0.<routing key>`. Level `n` is a topic exchange; a message
//! whose bit `n` is 1 goes to the level's queue, whose TTL is `2^n` seconds
//! and whose dead-letter exchange is level `n - 1`; a message whose bit is 0
//! goes straight on to level `n - 1`. After level 0 the message reaches the
//! delivery exchange, which routes `#.<routing key>` to the destination queue.
//! Dead-lettering keeps the body, properties and headers, so the message
//! arrives as it was published: same task id, same Celery headers.

/// Bits of delay: 2^28 s is about 8.5 years, far beyond any countdown.
pub const LEVELS: u32 = 28;

/// The longest delay the topology can hold, in seconds.
pub const MAX_DELAY_SECS: u64 = (1 << LEVELS) - 1;

/// Name of level `n`'s exchange and queue.
pub fn level_name(n: u32) -> String {
    format!("celerity.delay.{n:02}")
}

/// The topic exchange that hands due messages to their destination queues.
pub const DELIVERY_EXCHANGE: &str = "celerity.delay.delivery";

/// The top level's exchange, where any delay key may enter.
pub fn entry_exchange() -> String {
    level_name(LEVELS - 1)
}

/// The exchange a delay of `delay_secs` enters at: the level of its highest
/// set bit. The levels above would only pass it on (their bits are 0), and
/// each of those topic-exchange hops costs the broker a routing of a
/// 28-word key for nothing.
pub fn entry_exchange_for(delay_secs: u64) -> String {
    let d = delay_secs.clamp(1, MAX_DELAY_SECS);
    level_name(63 - d.leading_zeros())
}

/// The routing key carrying `delay_secs` (capped at [`MAX_DELAY_SECS`]) to `routing_key`.
pub fn routing_key(delay_secs: u64, routing_key: &str) -> String {
    let d = delay_secs.min(MAX_DELAY_SECS);
    let mut key = String::with_capacity(LEVELS as usize * 2 + routing_key.len());
    for n in (0..LEVELS).rev() {
        key.push(if d >> n & 1 == 1 { '1' } else { '0' });
        key.push('.');
    }
    key.push_str(routing_key);
    key
}

/// The destination routing key inside a delay routing key, if it is one.
pub fn destination(routing_key: &str) -> Option<&str> {
    let mut rest = routing_key;
    for _ in 0..LEVELS {
        let (bit, tail) = rest.split_once('.')?;
        if bit != "0" && bit != "1" {
            return None;
        }
        rest = tail;
    }
    Some(rest)
}

/// Binding key on level `n` for messages whose bit `n` is `bit`.
pub fn level_binding(n: u32, bit: bool) -> String {
    format!("{}{}.#", "*.".repeat((LEVELS - 1 - n) as usize), if bit { '1' } else { '0' })
}

/// Binding key on the delivery exchange for a destination queue's routing key.
pub fn delivery_binding(routing_key: &str) -> String {
    format!("#.{routing_key}")
}

/// TTL of level `n`'s queue, in milliseconds.
pub fn level_ttl_ms(n: u32) -> u64 {
    1000 << n
}

/// Where level `n`'s queue dead-letters to, and where its 0-bit messages go on.
pub fn next_exchange(n: u32) -> String {
    if n == 0 { DELIVERY_EXCHANGE.to_owned() } else { level_name(n - 1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Follows a key through the levels as RabbitMQ would: the total TTL waited.
    fn waited(key: &str) -> u64 {
        let bits: Vec<&str> = key.split('.').take(LEVELS as usize).collect();
        (0..LEVELS)
            .filter(|n| {
                let pattern = level_binding(*n, true);
                let want = pattern.split('.').nth((LEVELS - 1 - n) as usize).unwrap();
                bits[(LEVELS - 1 - n) as usize] == want
            })
            .map(|n| level_ttl_ms(n) / 1000)
            .sum()
    }

    #[test]
    fn keys_encode_the_delay_in_binary() {
        assert_eq!(destination(&routing_key(0, "plugin_schedule")), Some("plugin_schedule"));
        for d in [0, 1, 2, 5, 60, 3600, 86_400, MAX_DELAY_SECS] {
            let key = routing_key(d, "q.with.dots");
            assert_eq!(waited(&key), d, "{key}");
            assert_eq!(destination(&key), Some("q.with.dots"));
        }
        assert_eq!(waited(&routing_key(u64::MAX, "q")), MAX_DELAY_SECS, "longer delays are capped");
        assert_eq!(destination("plugin_schedule"), None);
        assert_eq!(destination("1.2.3"), None);
    }

    #[test]
    fn a_delay_enters_at_its_highest_set_bit() {
        assert_eq!(entry_exchange_for(1), level_name(0));
        assert_eq!(entry_exchange_for(10), level_name(3));
        assert_eq!(entry_exchange_for(3600), level_name(11));
        assert_eq!(entry_exchange_for(MAX_DELAY_SECS), entry_exchange());
        assert_eq!(entry_exchange_for(u64::MAX), entry_exchange(), "capped as the key is");
        // Every level above the entry would have routed the key on: its bit is 0.
        for d in [1u64, 2, 10, 60, 3600, 86_400] {
            let top = 63 - d.leading_zeros();
            let key = routing_key(d, "q");
            assert!(key.split('.').take((LEVELS - 1 - top) as usize).all(|bit| bit == "0"), "{key}");
        }
    }

    #[test]
    fn bindings_pick_one_bit() {
        assert_eq!(level_binding(LEVELS - 1, true), "1.#");
        assert_eq!(level_binding(0, false), format!("{}0.#", "*.".repeat(27)));
        assert_eq!(next_exchange(0), DELIVERY_EXCHANGE);
        assert_eq!(next_exchange(5), "celerity.delay.04");
        assert_eq!(level_ttl_ms(3), 8000);
    }
}
