//! How many JSON values a body may hold. The byte cap alone does not bound
//! memory: `[[0,0,0,…],{},{}]` in 16 MiB is ~8M values, each tens of bytes
//! once parsed, and a worker decodes several deliveries at once. Counting
//! before parsing costs one pass over the text and no allocation.

/// Values (and object keys) a body may hold: a framework message holds
/// fewer than twenty, a callback's data travels as one JSON string.
pub const DEFAULT_MAX_VALUES: usize = 100_000;

/// An upper bound on the values and keys in JSON `text`: each one after the
/// first follows a `[`, `{`, `,` or `:` outside a string.
pub(crate) fn values_at_most(text: &str) -> usize {
    let (mut count, mut in_string, mut escaped) = (1, false, false);
    for byte in text.bytes() {
        match (in_string, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'[' | b'{' | b',' | b':') => count += 1,
            (false, _, _) => {}
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed_values(text: &str) -> usize {
        fn walk(v: &serde_json::Value) -> usize {
            match v {
                serde_json::Value::Array(items) => 1 + items.iter().map(walk).sum::<usize>(),
                serde_json::Value::Object(map) => 1 + map.values().map(|v| 1 + walk(v)).sum::<usize>(),
                _ => 1,
            }
        }
        walk(&serde_json::from_str(text).unwrap())
    }

    #[test]
    fn never_counts_fewer_than_the_parser_makes() {
        for text in [
            "0",
            "[]",
            r#"[[], {"trace_id": "a,b:[{"}, {"callbacks": null}]"#,
            r#"[["\"", "\\", "\\\"[,"], {"k": [1, 2, {"x": {}}]}, {}]"#,
            "[[0,0,0,0,0,0,0,0],{},{}]",
        ] {
            let (bound, made) = (values_at_most(text), parsed_values(text));
            assert!(bound >= made, "{text}: bound {bound} < {made}");
            assert!(bound <= 2 * made + 2, "{text}: bound {bound} is loose against {made}");
        }
    }

    #[test]
    fn characters_inside_strings_are_not_counted() {
        let text = format!(r#"["{}"]"#, ",[{:".repeat(10_000));
        assert_eq!(values_at_most(&text), 2);
    }
}
