//! Our signer against an independent, straightforward re-implementation of
//! the vendor's PHP sample (ksort, skip empty, key.value, append secret,
//! md5) over random parameter sets.

use std::collections::BTreeMap;

use md5::{Digest, Md5};
use proptest::prelude::*;
use vipd::upstream::sign::md5_sign;

/// The PHP sample, line by line: `ksort($data)`, then for each pair with
/// `strlen($val) > 0` append key and value, append the secret, md5.
/// PHP arrays hold each key once (the last write wins); keys here are never
/// purely numeric, where PHP's ksort would compare numerically.
fn php_sample(data: &[(String, String)], secret: &str) -> String {
    let mut array: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (k, v) in data {
        array.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
    }
    array.remove(b"sign".as_slice());
    let mut md5_string: Vec<u8> = Vec::new();
    for (key, val) in &array {
        if !val.is_empty() {
            md5_string.extend_from_slice(key);
            md5_string.extend_from_slice(val);
        }
    }
    md5_string.extend_from_slice(secret.as_bytes());
    Md5::digest(&md5_string)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn key() -> impl Strategy<Value = String> {
    // Mixed case so byte order differs from case-insensitive order; a
    // leading letter keeps keys non-numeric (see php_sample).
    "[a-zA-Z][a-zA-Z0-9_]{0,11}"
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[ -~]{0,20}", // printable ASCII, incl. & = + % space
        "[&=+% ]{1,8}",
        "\\PC{0,12}",        // any unicode, no control chars
        "[a-z0-9]{200,600}", // long values
        Just("https://www.wapi.cn/notify_url?a=1&b=2".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn matches_the_vendor_php_sample(
        params in prop::collection::btree_map(key(), value(), 0..12),
        secret in "[0-9a-f]{32}",
    ) {
        let pairs: Vec<(String, String)> = params.into_iter().collect();
        let ours = md5_sign(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())), &secret);
        prop_assert_eq!(ours, php_sample(&pairs, &secret));
    }

    #[test]
    fn input_order_never_matters(
        params in prop::collection::btree_map(key(), value(), 1..10),
        secret in "[0-9a-f]{32}",
    ) {
        let forward: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let backward: Vec<(&str, &str)> = forward.iter().rev().copied().collect();
        prop_assert_eq!(md5_sign(forward, &secret), md5_sign(backward, &secret));
    }
}

#[test]
fn byte_order_is_not_case_insensitive_order() {
    // Case-insensitive order would put "apple" before "Banana"; PHP's ksort
    // and ours put "Banana" (0x42) first.
    let pairs = [("apple", "1"), ("Banana", "2")];
    assert_eq!(
        md5_sign(pairs, "s"),
        php_sample(
            &[("apple".into(), "1".into()), ("Banana".into(), "2".into())],
            "s"
        )
    );
    let manual: String = Md5::digest(b"Banana2apple1s")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(md5_sign(pairs, "s"), manual);
}
