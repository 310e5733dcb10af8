//! Filtering, ordering, paging and projection shared by the `get_all` endpoints.

use std::cmp::Ordering;

use serde_json::Value;

use crate::error::ApiError;
use crate::req::{Req, get_path, project};
use crate::store::Doc;

/// Does a document value match a list filter (the real server's list-field query)? Plain
/// values are alternatives; `-x` and `__$not x` exclude; after `__$all` (or `__$and`) every
/// following value is required, after `__$any` (or `__$or`) any one.
pub fn matches_list(value: Option<&Value>, wanted: &[String]) -> bool {
    let have: Vec<String> = match value {
        Some(Value::Array(a)) => a.iter().filter_map(scalar_text).collect(),
        Some(v) => scalar_text(v).into_iter().collect(),
        None => Vec::new(),
    };
    let has = |w: &str| have.iter().any(|h| h == w);
    let (mut any, mut all, mut none) = (Vec::new(), Vec::new(), Vec::new());
    let (mut require_all, mut negate) = (false, false);
    for w in wanted {
        match w.as_str() {
            "__$all" | "__$and" => require_all = true,
            "__$any" | "__$or" => require_all = false,
            "__$not" => negate = true,
            w => {
                if negate || (w.len() > 1 && w.starts_with('-')) {
                    none.push(if negate { w } else { &w[1..] });
                } else if require_all {
                    all.push(w);
                } else {
                    any.push(w);
                }
                negate = false;
            }
        }
    }
    !none.iter().any(|n| has(n))
        && all.iter().all(|a| has(a))
        && (any.is_empty() || any.iter().any(|a| has(a)))
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Python-like ordering of JSON values for `order_by`: missing and null first.
pub fn compare_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
        (None | Some(Value::Null), _) => Ordering::Less,
        (_, None | Some(Value::Null)) => Ordering::Greater,
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

/// `order_by` (a `-` prefix sorts descending), then `page`/`page_size` (500 when absent, the
/// real server's cap), then the `only_fields` projection.
pub fn order_page_project(mut docs: Vec<Doc>, req: &Req) -> Result<Vec<Value>, ApiError> {
    let order = req.str_list("order_by")?.unwrap_or_default();
    if !order.is_empty() {
        docs.sort_by(|a, b| {
            for key in &order {
                let (desc, key) = match key.strip_prefix('-') {
                    Some(k) => (true, k),
                    None => (false, key.as_str()),
                };
                let ord = compare_values(get_path(a, key), get_path(b, key));
                let ord = if desc { ord.reverse() } else { ord };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            Ordering::Equal
        });
    }
    let page_size = req.i64_opt("page_size")?.unwrap_or(500).clamp(1, 10_000) as usize;
    let page = req.i64_opt("page")?.unwrap_or(0).max(0) as usize;
    let only = req.str_list("only_fields")?;
    Ok(docs
        .into_iter()
        .skip(page.saturating_mul(page_size))
        .take(page_size)
        .map(|d| Value::Object(project(&d, only.as_deref())))
        .collect())
}
