//! Filtering, ordering, paging and projection shared by the `get_all` endpoints.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::req::{Req, get_path};
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

/// An order field's value that the real server counts as not set.
fn is_unset(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    }
}

/// `order_by` (a `-` prefix sorts descending), then `page`/`page_size` (500 when absent, the
/// real server's cap), then the `only_fields` projection.
///
/// As the real server orders (`GetMixin._get_many_override_none_ordering`): documents whose first
/// ascending order field is empty (missing, null, `""` or `[]`) come after all the others, so
/// `get_top_experiments` of a minimised objective never answers with a trial that reported
/// nothing; `id` breaks the remaining ties unless `order_by` names it.
pub fn order_page_project(mut docs: Vec<Doc>, req: &Req) -> Result<Vec<Value>, ApiError> {
    let mut order = req.str_list("order_by")?.unwrap_or_default();
    order.retain(|k| !k.is_empty() && k != "-");
    if !order.is_empty() {
        if !order.iter().any(|k| k == "id" || k == "-id") {
            order.push("id".into());
        }
        let empty_last = order
            .iter()
            .find(|k| !k.starts_with('$'))
            .filter(|k| !k.starts_with('-') && !k.contains('['))
            .cloned();
        docs.sort_by(|a, b| {
            if let Some(first) = &empty_last {
                let (a_empty, b_empty) =
                    (is_unset(get_path(a, first)), is_unset(get_path(b, first)));
                if a_empty != b_empty {
                    return a_empty.cmp(&b_empty);
                }
            }
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

/// The `only_fields` projection, as the real server's MongoDB projection answers it:
/// - `id` always comes back;
/// - a dotted path returns its parents: `runtime.version` on `runtime: {}` gives `runtime: {}`
///   (the SDK reads `task.runtime.get("version")` and must find the object), and nothing when
///   `runtime` itself is missing;
/// - a path through a list projects every object in it (`execution.artifacts.key`), dropping
///   items that are not objects; a path through a scalar or null returns nothing for it;
/// - a field and one of its sub-paths together return the whole field;
/// - `-field` excludes a path (from the whole document when nothing is included).
pub fn project(doc: &Map<String, Value>, only_fields: Option<&[String]>) -> Map<String, Value> {
    let Some(fields) = only_fields.filter(|f| !f.is_empty()) else {
        return doc.clone();
    };
    let (mut include, mut exclude) = (Vec::new(), Vec::new());
    for f in fields {
        match f.strip_prefix('-') {
            Some(x) if !x.is_empty() => exclude.push(x),
            Some(_) => {}
            None if !f.is_empty() => include.push(f.as_str()),
            None => {}
        }
    }
    let mut out = if include.is_empty() {
        doc.clone()
    } else {
        // Shorter paths first, so a whole field is copied before any of its sub-paths.
        include.sort_unstable();
        let mut out = Map::new();
        if let Some(id) = doc.get("id") {
            out.insert("id".into(), id.clone());
        }
        for path in include {
            let parts: Vec<&str> = path.split('.').collect();
            copy_path(&parts, doc, &mut out);
        }
        out
    };
    for path in exclude {
        let parts: Vec<&str> = path.split('.').collect();
        remove_path(&parts, &mut out);
    }
    out
}

fn copy_path(parts: &[&str], src: &Map<String, Value>, dst: &mut Map<String, Value>) {
    let Some((head, rest)) = parts.split_first() else {
        return;
    };
    let Some(value) = src.get(*head) else {
        return;
    };
    if rest.is_empty() {
        dst.insert((*head).to_string(), value.clone());
        return;
    }
    match value {
        Value::Object(inner) => {
            let entry = dst
                .entry((*head).to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(d) = entry {
                copy_path(rest, inner, d);
            }
        }
        Value::Array(items) => {
            let objects: Vec<&Map<String, Value>> =
                items.iter().filter_map(Value::as_object).collect();
            let entry = dst.entry((*head).to_string()).or_insert_with(|| {
                Value::Array(objects.iter().map(|_| Value::Object(Map::new())).collect())
            });
            let Value::Array(d) = entry else {
                return;
            };
            if d.len() != objects.len() {
                return;
            }
            for (s, d) in objects.into_iter().zip(d.iter_mut()) {
                if let Value::Object(d) = d {
                    copy_path(rest, s, d);
                }
            }
        }
        _ => {}
    }
}

fn remove_path(parts: &[&str], doc: &mut Map<String, Value>) {
    let Some((head, rest)) = parts.split_first() else {
        return;
    };
    if rest.is_empty() {
        doc.remove(*head);
        return;
    }
    match doc.get_mut(*head) {
        Some(Value::Object(inner)) => remove_path(rest, inner),
        Some(Value::Array(items)) => {
            for item in items.iter_mut() {
                if let Value::Object(inner) = item {
                    remove_path(rest, inner);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn proj(doc: Value, fields: &[&str]) -> Value {
        let doc = doc.as_object().cloned().unwrap_or_default();
        let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        Value::Object(project(&doc, Some(&fields)))
    }

    #[test]
    fn nested_path_keeps_an_empty_parent() {
        let doc = json!({"id": "t", "name": "n", "runtime": {}});
        assert_eq!(
            proj(doc, &["runtime.version", "name"]),
            json!({"id": "t", "name": "n", "runtime": {}})
        );
    }

    #[test]
    fn nested_path_of_a_missing_or_scalar_parent_returns_nothing() {
        let doc = json!({"id": "t", "runtime": null, "script": "x"});
        assert_eq!(
            proj(doc, &["runtime.version", "script.repo", "nope.a"]),
            json!({"id": "t"})
        );
    }

    #[test]
    fn nested_leaf_and_siblings() {
        let doc = json!({"id": "t", "execution": {"queue": "q", "parameters": {"a": 1}, "docker_cmd": null}});
        assert_eq!(
            proj(doc, &["execution.queue", "execution.docker_cmd"]),
            json!({"id": "t", "execution": {"queue": "q", "docker_cmd": null}})
        );
    }

    #[test]
    fn path_through_a_list_projects_each_object() {
        let doc = json!({"id": "t", "execution": {"artifacts": [
            {"key": "a", "uri": "u1"}, 5, {"uri": "u2"}
        ]}});
        assert_eq!(
            proj(doc, &["execution.artifacts.key"]),
            json!({"id": "t", "execution": {"artifacts": [{"key": "a"}, {}]}})
        );
    }

    #[test]
    fn whole_field_wins_over_its_sub_path() {
        let doc = json!({"id": "t", "runtime": {"version": "1", "x": 2}});
        let whole = json!({"id": "t", "runtime": {"version": "1", "x": 2}});
        assert_eq!(proj(doc.clone(), &["runtime.version", "runtime"]), whole);
        assert_eq!(proj(doc, &["runtime", "runtime.version"]), whole);
    }

    #[test]
    fn exclusions() {
        let doc = json!({"id": "t", "a": {"b": 1, "c": 2}, "d": 3});
        assert_eq!(
            proj(doc.clone(), &["-a.b", "-d"]),
            json!({"id": "t", "a": {"c": 2}})
        );
        assert_eq!(proj(doc, &["a", "-a.c"]), json!({"id": "t", "a": {"b": 1}}));
    }

    #[test]
    fn no_fields_is_the_whole_document() {
        let doc = json!({"id": "t", "a": 1});
        assert_eq!(proj(doc.clone(), &[]), doc);
    }

    fn ordered(docs: Value, order_by: Value) -> Vec<String> {
        let docs = docs
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_object().unwrap().clone())
            .collect();
        let req = Req {
            body: json!({"order_by": order_by}).as_object().unwrap().clone(),
            lines: None,
            bad_lines: Vec::new(),
            caller: None,
            worker_header: None,
        };
        order_page_project(docs, &req)
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// The HPO controller's `get_top_experiments` of a minimised objective: ascending by the
    /// metric, and a trial without it (failed, still queued) must not come first.
    #[test]
    fn unset_first_field_sorts_last_in_both_directions() {
        let value = |v: f64| json!({"m": {"v": {"value": v}}});
        let docs = json!([
            {"id": "none"},
            {"id": "mid", "last_metrics": value(1.5)},
            {"id": "null", "last_metrics": {"m": {"v": {"value": null}}}},
            {"id": "best", "last_metrics": value(0.5)},
            {"id": "worst", "last_metrics": value(4.5)},
        ]);
        let up = ordered(docs.clone(), json!(["last_metrics.m.v.value"]));
        assert_eq!(&up[..3], ["best", "mid", "worst"]);
        assert_eq!(&up[3..], ["none", "null"]);
        let down = ordered(docs, json!(["-last_metrics.m.v.value"]));
        assert_eq!(&down[..3], ["worst", "mid", "best"]);
        assert_eq!(&down[3..], ["none", "null"]);
    }

    #[test]
    fn empty_strings_and_lists_count_as_unset_and_id_breaks_ties() {
        let docs = json!([
            {"id": "c", "name": "x", "tags": []},
            {"id": "a", "name": "", "tags": ["t"]},
            {"id": "b", "name": "x", "tags": ["t"]},
        ]);
        assert_eq!(ordered(docs.clone(), json!(["name"])), ["b", "c", "a"]);
        assert_eq!(ordered(docs.clone(), json!(["tags"])), ["a", "b", "c"]);
        assert_eq!(ordered(docs.clone(), json!(["-id"])), ["c", "b", "a"]);
        // only the first order field sets unset values apart; later fields compare plainly
        assert_eq!(ordered(docs, json!(["tags", "name"])), ["a", "b", "c"]);
    }
}
