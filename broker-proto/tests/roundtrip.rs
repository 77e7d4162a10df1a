//! Properties: `decode(encode(m)) == m` for every v2 message, and no input
//! makes `decode` panic.

use broker_proto::{
    AMQPValue, DecodeOptions, Embed, FieldArray, FieldTable, Properties, Protocol, TaskMessage, TimeLimit, Value,
    decode, encode, header,
};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use indexmap::IndexMap;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

fn naive_datetime() -> impl Strategy<Value = NaiveDateTime> {
    // Python's datetime covers years 1..=9999 with microsecond precision.
    (1i32..=3_652_058, 0u32..86_400, 0u32..1_000_000).prop_map(|(days, secs, micros)| {
        NaiveDate::from_num_days_from_ce_opt(days)
            .unwrap()
            .and_time(NaiveTime::from_num_seconds_from_midnight_opt(secs, micros * 1000).unwrap())
    })
}

fn offset() -> impl Strategy<Value = FixedOffset> {
    (-(23 * 60 + 59)..=(23 * 60 + 59)).prop_map(|m: i32| FixedOffset::east_opt(m * 60).unwrap())
}

fn aware() -> impl Strategy<Value = DateTime<FixedOffset>> {
    (naive_datetime(), offset()).prop_filter_map("representable", |(n, o)| o.from_local_datetime(&n).single())
}

fn number() -> impl Strategy<Value = serde_json::Number> {
    prop_oneof![
        any::<i64>().prop_map(serde_json::Number::from),
        any::<u64>().prop_map(serde_json::Number::from),
        any::<f64>().prop_filter_map("finite", serde_json::Number::from_f64),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number().prop_map(Value::Number),
        any::<String>().prop_map(Value::String),
        aware().prop_map(Value::DateTime),
        naive_datetime().prop_map(Value::NaiveDateTime),
        naive_datetime().prop_map(|d| Value::Date(d.date())),
        (naive_datetime(), proptest::option::of(offset())).prop_map(|(d, o)| Value::Time(d.time(), o)),
        "[+-]?[0-9]{1,20}(\\.[0-9]{0,10})?([eE][+-]?[0-9]{1,3})?".prop_map(Value::Decimal),
        any::<u128>().prop_map(|u| Value::Uuid(uuid::Uuid::from_u128(u))),
        vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((any::<String>(), inner), 0..6)
                .prop_map(|kv| kv.into_iter().collect::<IndexMap<_, _>>())
                // kombu (and so Celery) would read such an object as a marker too.
                .prop_filter("not marker-shaped", |m| !(m.len() == 2
                    && m.contains_key("__type__")
                    && m.contains_key("__value__")))
                .prop_map(Value::Object),
        ]
    })
}

/// Header values in the types an encoder sends unchanged.
fn safe_header() -> impl Strategy<Value = AMQPValue> {
    let leaf = prop_oneof![
        any::<String>().prop_map(|s| header::text(&s)),
        any::<i32>().prop_map(AMQPValue::LongInt),
        (i64::from(i32::MAX) + 1..i64::MAX).prop_map(AMQPValue::LongLongInt),
        any::<bool>().prop_map(AMQPValue::Boolean),
        any::<f64>().prop_filter("comparable", |f| !f.is_nan()).prop_map(AMQPValue::Double),
        Just(AMQPValue::Void),
    ];
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|v| AMQPValue::FieldArray(FieldArray::from(v))),
            btree_map("[a-z_-]{1,12}", inner, 0..4).prop_map(|m| AMQPValue::FieldTable(table(m))),
        ]
    })
}

fn table(m: std::collections::BTreeMap<String, AMQPValue>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in m {
        t.insert(k.into(), v);
    }
    t
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{1,40}"
}

/// A workflow link: absent is `None`, and JSON null means absent too.
fn link() -> impl Strategy<Value = Option<Value>> {
    proptest::option::of(value()).prop_map(|v| v.filter(|v| *v != Value::Null))
}

fn int_header() -> impl Strategy<Value = i64> {
    prop_oneof![any::<i32>().prop_map(i64::from), 0..i64::MAX]
}

prop_compose! {
    fn task_message()(
        task in text(), id in text(),
        args in vec(value(), 0..4),
        kwargs in vec((any::<String>(), value()), 0..4),
        links in (link(), link(), link(), link()),
        retries in any::<u32>(),
        eta in proptest::option::of(aware()), expires in proptest::option::of(aware()),
        ids in (proptest::option::of(text()), proptest::option::of(text()), proptest::option::of(text()), proptest::option::of(text())),
        group_index in proptest::option::of(int_header()),
        lang in proptest::option::of(text()),
        limits in (proptest::option::of(-1e9f64..1e9), proptest::option::of(-1e9f64..1e9)),
        reprs in (proptest::option::of(text()), proptest::option::of(text()), proptest::option::of(text())),
        ignore_result in any::<bool>(),
        replaced_task_nesting in int_header(),
        stamped_headers in proptest::option::of(vec(text(), 0..3)),
        stamps in btree_map("[a-z]{1,8}", safe_header(), 0..3),
        props in (proptest::option::of(any::<u8>()), proptest::option::of(text()), text()),
        extra in btree_map("x-[a-z_-]{1,20}", safe_header(), 0..4),
    ) -> TaskMessage {
        TaskMessage {
            protocol: Protocol::V2,
            task, id,
            args,
            kwargs: kwargs.into_iter().collect(),
            embed: Embed { callbacks: links.0, errbacks: links.1, chain: links.2, chord: links.3 },
            retries, eta, expires,
            root_id: ids.0, parent_id: ids.1, group: ids.2, shadow: ids.3,
            group_index, lang,
            timelimit: TimeLimit { hard: limits.0, soft: limits.1 },
            argsrepr: reprs.0, kwargsrepr: reprs.1, origin: reprs.2,
            ignore_result, replaced_task_nesting, stamped_headers,
            stamps: table(stamps),
            priority: props.0, reply_to: props.1, correlation_id: Some(props.2),
            extra_headers: table(extra),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_inverts_encode(m in task_message()) {
        let out = encode(&m, Utc::now()).expect("safe message encodes");
        let back = decode(&out.properties, &out.body, &DecodeOptions::default()).expect("own output decodes");
        prop_assert_eq!(back, m);
    }

    #[test]
    fn values_survive_kombu_json(v in value()) {
        let text = serde_json::to_string(&v.to_json()).unwrap();
        let back = Value::from_json(serde_json::from_str(&text).unwrap()).unwrap();
        prop_assert_eq!(back, v);
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in vec(any::<u8>(), 0..512), v1 in any::<bool>(), compressed in any::<bool>()) {
        let mut headers = FieldTable::default();
        if !v1 {
            headers.insert("task".into(), header::text("t"));
            headers.insert("id".into(), header::text("i"));
        }
        if compressed {
            headers.insert("compression".into(), header::text("zlib"));
        }
        let props = Properties { content_type: Some("application/json".into()), headers, ..Properties::default() };
        let _ = decode(&props, &body, &DecodeOptions::default());
    }

    #[test]
    fn arbitrary_json_and_headers_never_panic(
        body in value(),
        headers in btree_map(prop_oneof![Just("task".to_owned()), Just("id".to_owned()), Just("eta".to_owned()),
            Just("timelimit".to_owned()), Just("retries".to_owned()), Just("stamps".to_owned()), "[a-z_]{1,10}"], safe_header(), 0..8),
    ) {
        let props = Properties { content_type: Some("application/json".into()), headers: table(headers), ..Properties::default() };
        let bytes = serde_json::to_vec(&body.to_json()).unwrap();
        let _ = decode(&props, &bytes, &DecodeOptions::default());
    }
}
