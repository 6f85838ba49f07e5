//! Counting the DynamoDB calls a function makes: a [`FaultyServer`] in [`Mode::Pass`](crate::faulty::Mode)
//! placed in front of moto (`MOTO_URL`) records every request; the DynamoDB ones are told apart
//! and named by their `X-Amz-Target` header (`DynamoDB_20120810.GetItem` -> `GetItem`).
//!
//! ```text
//! let counter = DynamoCalls::in_front_of(&moto_url).await;   // point the SDK at counter.uri()
//! let mark = counter.mark();
//! ... one event ...
//! let calls = counter.since(mark);                            // {"GetItem": 3, "PutItem": 2, ...}
//! ```

use std::collections::BTreeMap;

use serde_json::Value;

use crate::faulty::{FaultyServer, Recorded};

/// The `X-Amz-Target` prefix of DynamoDB's JSON protocol.
const DYNAMODB_TARGET: &str = "DynamoDB_20120810.";

/// One DynamoDB call as the proxy saw it: the operation and the keys it names (`pk` of each
/// item, for reading a count's detail).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub operation: String,
    pub keys: Vec<String>,
}

/// The DynamoDB calls of a stretch of work, by operation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    pub calls: Vec<Call>,
}

impl Calls {
    /// Calls per operation name.
    pub fn by_operation(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for c in &self.calls {
            *out.entry(c.operation.clone()).or_insert(0) += 1;
        }
        out
    }

    pub fn total(&self) -> usize {
        self.calls.len()
    }

    pub fn count(&self, operation: &str) -> usize {
        self.calls
            .iter()
            .filter(|c| c.operation == operation)
            .count()
    }

    /// `GetItem 2, PutItem 3, ...` then one line per call with the keys it named.
    pub fn describe(&self) -> String {
        let summary: Vec<String> = self
            .by_operation()
            .iter()
            .map(|(op, n)| format!("{op} {n}"))
            .collect();
        let mut out = format!("{} calls: {}", self.total(), summary.join(", "));
        for c in &self.calls {
            out.push_str(&format!("\n  {} {}", c.operation, c.keys.join(" ")));
        }
        out
    }
}

/// Where the proxy's log stood at a moment (see [`DynamoCalls::mark`]).
#[derive(Clone, Copy, Debug)]
pub struct Mark(usize);

pub struct DynamoCalls {
    proxy: FaultyServer,
}

impl DynamoCalls {
    /// A counting proxy forwarding everything to `upstream` (moto).
    pub async fn in_front_of(upstream: &str) -> Self {
        Self {
            proxy: FaultyServer::in_front_of(upstream).await,
        }
    }

    /// The endpoint to point the AWS SDK at.
    pub fn uri(&self) -> String {
        self.proxy.uri()
    }

    pub fn mark(&self) -> Mark {
        Mark(self.proxy.requests().len())
    }

    /// The DynamoDB calls made since `mark`, in order.
    pub fn since(&self, mark: Mark) -> Calls {
        Calls {
            calls: self
                .proxy
                .requests()
                .iter()
                .skip(mark.0)
                .filter_map(call_of)
                .collect(),
        }
    }
}

fn call_of(r: &Recorded) -> Option<Call> {
    let operation = r
        .header("x-amz-target")?
        .strip_prefix(DYNAMODB_TARGET)?
        .to_owned();
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let mut keys = Vec::new();
    collect_pks(&body, &mut keys);
    Some(Call { operation, keys })
}

/// Every `pk` string named in a request body (`Key`, `Item`, transaction items), in order.
fn collect_pks(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "pk"
                    && let Some(s) = v.get("S").and_then(Value::as_str)
                {
                    out.push(s.to_owned());
                } else {
                    collect_pks(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_pks(i, out)),
        _ => {}
    }
}
