//! One page of an Enerflo list, read tolerantly: the rows as a bare array or under any of the
//! configured paths (`results`, `data`, ...), the total (a number or a numeric string) when the
//! answer gives one.

use serde_json::Value;

use crate::enerflo::lenient::{path, value_to_u64};

use super::settings::ListSpec;

#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub items: Vec<Value>,
    /// How many rows the whole list has, when the answer says.
    pub total: Option<u64>,
}

/// Reads a page; the error says where the rows were looked for and which variable moves it.
pub fn read_page(body: &Value, spec: &ListSpec, total_paths: &[String]) -> Result<Page, String> {
    let total = total_paths
        .iter()
        .find_map(|p| path(body, p).and_then(value_to_u64));
    if let Value::Array(items) = body {
        return Ok(Page {
            items: items.clone(),
            total,
        });
    }
    for p in &spec.items_paths {
        match present(body, p) {
            Some(Value::Array(items)) => {
                return Ok(Page {
                    items: items.clone(),
                    total,
                });
            }
            // `"data": null` on an empty page.
            Some(Value::Null) => {
                return Ok(Page {
                    items: Vec::new(),
                    total,
                });
            }
            _ => {}
        }
    }
    Err(format!(
        "{} answered without a list of rows (looked at {}; configure {}_ITEMS_PATHS)",
        spec.path,
        spec.items_paths.join(", "),
        spec.env
    ))
}

/// Like [`path`], but finds an explicit `null` too.
fn present<'a>(root: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(root, |cur, key| match cur {
        Value::Object(map) => map.get(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Whether `page` (numbered from `first`) is the list's last, given what it held.
pub fn is_last(page: &Page, number: u64, first: u64, page_size: u64) -> bool {
    let read = (number + 1 - first) * page_size;
    (page.items.len() as u64) < page_size || page.total.is_some_and(|t| read >= t)
}

/// A row's identity for the "is the page parameter ignored?" check: its `id`, else the row.
pub fn row_id(row: &Value) -> String {
    row.get("id")
        .map(|v| v.to_string())
        .unwrap_or_else(|| row.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::settings::ReconcileSettings;
    use serde_json::json;

    #[test]
    fn rows_are_found_in_every_known_shape() {
        let s = ReconcileSettings::default();
        let totals = &s.total_paths;
        let p = read_page(
            &json!({"total": "250", "results": [{"id": 1}]}),
            &s.installs,
            totals,
        )
        .expect("results");
        assert_eq!((p.items.len(), p.total), (1, Some(250)));
        let p = read_page(
            &json!({"dataCount": 3, "data": [{}, {}]}),
            &s.customers,
            totals,
        )
        .expect("data");
        assert_eq!((p.items.len(), p.total), (2, Some(3)));
        let p = read_page(&json!([{"id": 1}, {"id": 2}]), &s.installs, totals).expect("bare");
        assert_eq!((p.items.len(), p.total), (2, None));
        let p = read_page(&json!({"data": null}), &s.customers, totals).expect("null page");
        assert!(p.items.is_empty());
    }

    #[test]
    fn an_answer_without_rows_names_the_paths_and_the_variable() {
        let s = ReconcileSettings::default();
        let err =
            read_page(&json!({"message": "ok"}), &s.installs, &s.total_paths).expect_err("no rows");
        assert!(
            err.contains("results, data, installs, items")
                && err.contains("RECONCILE_INSTALLS_ITEMS_PATHS"),
            "{err}"
        );
    }

    #[test]
    fn the_last_page_is_short_or_reaches_the_total() {
        let page = |n: usize, total: Option<u64>| Page {
            items: vec![json!({}); n],
            total,
        };
        assert!(!is_last(&page(10, None), 1, 1, 10));
        assert!(is_last(&page(9, None), 1, 1, 10));
        assert!(is_last(&page(10, Some(20)), 2, 1, 10));
        assert!(!is_last(&page(10, Some(21)), 2, 1, 10));
        assert!(is_last(&page(10, Some(10)), 0, 0, 10));
    }
}
