//! Lookups shared by the tests that compare pydeep's JSON with the truth a
//! fixture program wrote about itself.

use std::collections::HashMap;

use serde_json::Value;

/// The item of the JSON array `items` whose "address" equals `address`
/// (an `id()` from the fixture's truth).
pub fn by_address<'a>(items: &'a Value, address: &Value) -> Option<&'a Value> {
    items
        .as_array()?
        .iter()
        .find(|item| &item["address"] == address)
}

/// The integers of the JSON array `value`, sorted (addresses compared as
/// sets); empty if it is not an array.
pub fn sorted_addresses(value: &Value) -> Vec<u64> {
    let mut out: Vec<u64> = value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    out.sort_unstable();
    out
}

/// A call-counting fixture's own count of calls per function name (the
/// object "truth" of its truth: name → count).
pub fn call_counts(truth: &Value) -> HashMap<String, u64> {
    truth["truth"]
        .as_object()
        .expect("truth")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("count")))
        .collect()
}
