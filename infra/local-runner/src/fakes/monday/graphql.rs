//! The GraphQL subset the fake serves, parsed by a real parser (`graphql-parser`): one operation
//! per request, variables, aliases (each root field fails on its own: `null` plus an error whose
//! `path` is the alias), inline fragments on `column_values`, and the answer projected on the
//! selection set. Root fields: `me`, `complexity`, `boards`, `items`,
//! `items_page_by_column_values`, `webhooks`; mutations `create_item`,
//! `change_multiple_column_values`, `change_column_value`, `change_simple_column_value`,
//! `delete_item`, `archive_item`, `create_update`, `create_column`, `create_webhook`,
//! `delete_webhook`.

use graphql_parser::query::{
    Definition, Document, Field, OperationDefinition, Selection, SelectionSet, Value as GValue,
};
use serde_json::{Map, Value, json};

/// A parsed request: its kind, the root fields (alias, name, arguments as JSON, selection).
pub struct Operation {
    pub mutation: bool,
    pub fields: Vec<RootField>,
}

pub struct RootField {
    pub key: String,
    pub name: String,
    pub args: Map<String, Value>,
    pub selection: Sel,
}

/// A selection set, resolved: field key -> (name, arguments, sub-selection); inline fragments
/// keep their type condition.
#[derive(Clone, Debug, Default)]
pub struct Sel {
    pub fields: Vec<SelField>,
}

#[derive(Clone, Debug)]
pub struct SelField {
    pub key: String,
    pub name: String,
    pub args: Map<String, Value>,
    pub sel: Sel,
    /// Set for a field inside `... on Type`.
    pub on: Option<String>,
}

impl Sel {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The sub-selection of the first field named `name` (and its arguments).
    #[cfg(test)]
    pub fn field(&self, name: &str) -> Option<&SelField> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Parses `query` with `variables`; the error is Monday's `Parse error on ...` text.
pub fn parse(query: &str, variables: &Map<String, Value>) -> Result<Operation, String> {
    let doc: Document<String> = graphql_parser::parse_query(query)
        .map_err(|e| format!("Parse error on {}", one_line(&e.to_string())))?;
    let op = doc
        .definitions
        .iter()
        .find_map(|d| match d {
            Definition::Operation(op) => Some(op),
            Definition::Fragment(_) => None,
        })
        .ok_or("Parse error on \"\" (no operation)")?;
    let (mutation, set) = match op {
        OperationDefinition::Query(q) => (false, &q.selection_set),
        OperationDefinition::SelectionSet(s) => (false, s),
        OperationDefinition::Mutation(m) => (true, &m.selection_set),
        OperationDefinition::Subscription(_) => {
            return Err("Parse error on \"subscription\" (subscriptions are not served)".into());
        }
    };
    let sel = selection(set, variables, None)?;
    Ok(Operation {
        mutation,
        fields: sel
            .fields
            .into_iter()
            .map(|f| RootField {
                key: f.key,
                name: f.name,
                args: f.args,
                selection: f.sel,
            })
            .collect(),
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn selection(
    set: &SelectionSet<'_, String>,
    vars: &Map<String, Value>,
    on: Option<&str>,
) -> Result<Sel, String> {
    let mut out = Sel::default();
    for item in &set.items {
        match item {
            Selection::Field(f) => out.fields.push(field(f, vars, on)?),
            Selection::InlineFragment(frag) => {
                let cond = frag.type_condition.as_ref().map(|c| match c {
                    graphql_parser::query::TypeCondition::On(t) => t.clone(),
                });
                let inner = selection(&frag.selection_set, vars, cond.as_deref())?;
                out.fields.extend(inner.fields);
            }
            Selection::FragmentSpread(s) => {
                return Err(format!(
                    "Parse error on \"{}\" (named fragments are not served by this fake)",
                    s.fragment_name
                ));
            }
        }
    }
    Ok(out)
}

fn field(
    f: &Field<'_, String>,
    vars: &Map<String, Value>,
    on: Option<&str>,
) -> Result<SelField, String> {
    let mut args = Map::new();
    for (name, v) in &f.arguments {
        args.insert(name.clone(), value(v, vars)?);
    }
    Ok(SelField {
        key: f.alias.clone().unwrap_or_else(|| f.name.clone()),
        name: f.name.clone(),
        args,
        sel: selection(&f.selection_set, vars, None)?,
        on: on.map(str::to_owned),
    })
}

fn value(v: &GValue<'_, String>, vars: &Map<String, Value>) -> Result<Value, String> {
    Ok(match v {
        GValue::Variable(name) => vars.get(name).cloned().unwrap_or(Value::Null),
        GValue::Int(n) => n.as_i64().map_or(Value::Null, |i| json!(i)),
        GValue::Float(f) => json!(f),
        GValue::String(s) => Value::String(s.clone()),
        GValue::Boolean(b) => Value::Bool(*b),
        GValue::Null => Value::Null,
        GValue::Enum(e) => Value::String(e.clone()),
        GValue::List(l) => {
            Value::Array(l.iter().map(|x| value(x, vars)).collect::<Result<_, _>>()?)
        }
        GValue::Object(o) => {
            let mut m = Map::new();
            for (k, x) in o {
                m.insert(k.clone(), value(x, vars)?);
            }
            Value::Object(m)
        }
    })
}

/// Projects a full JSON object on a selection: only the selected fields, under their aliases;
/// an inline fragment's fields only where `__typename` matches; `children` resolves fields that
/// take arguments (`column_values(ids:)`, `updates(limit:)`).
pub fn project(
    full: &Value,
    sel: &Sel,
    children: &dyn Fn(&Value, &SelField) -> Option<Value>,
) -> Value {
    if sel.is_empty() {
        return full.clone();
    }
    match full {
        Value::Array(items) => {
            Value::Array(items.iter().map(|i| project(i, sel, children)).collect())
        }
        Value::Object(obj) => {
            let typename = obj.get("__typename").and_then(Value::as_str);
            let mut out = Map::new();
            for f in &sel.fields {
                if let Some(on) = &f.on
                    && typename != Some(on.as_str())
                {
                    continue;
                }
                let v = children(full, f)
                    .unwrap_or_else(|| obj.get(&f.name).cloned().unwrap_or(Value::Null));
                out.insert(f.key.clone(), project(&v, &f.sel, children));
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// An `ID` argument (int or string in, as Monday accepts both).
pub fn id_arg(args: &Map<String, Value>, name: &str) -> Option<u64> {
    match args.get(name)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// An `[ID]` argument.
pub fn ids_arg(args: &Map<String, Value>, name: &str) -> Vec<u64> {
    match args.get(name) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| match v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            })
            .collect(),
        Some(Value::Number(n)) => n.as_u64().into_iter().collect(),
        Some(Value::String(s)) => s.trim().parse().ok().into_iter().collect(),
        Some(_) => Vec::new(),
        None => Vec::new(),
    }
}

/// A `JSON` argument: Monday takes it as a string holding JSON (objects are accepted too).
pub fn json_arg(args: &Map<String, Value>, name: &str) -> Result<Option<Value>, String> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => serde_json::from_str(s)
            .map(Some)
            .map_err(|_| format!("`{name}` is not valid JSON")),
        Some(other) => Ok(Some(other.clone())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn aliases_variables_and_fragments_are_read() {
        let vars: Map<String, Value> = serde_json::from_value(json!({"b": "42"})).unwrap();
        let op = parse(
            "query ($b: [ID!]) { a: boards(ids: $b) { id columns { id ... on StatusColumn { x } } } me { id } }",
            &vars,
        )
        .unwrap();
        assert!(!op.mutation);
        assert_eq!(op.fields[0].key, "a");
        assert_eq!(op.fields[0].name, "boards");
        assert_eq!(op.fields[0].args["ids"], "42");
        let cols = op.fields[0].selection.field("columns").unwrap();
        assert_eq!(cols.sel.fields[1].on.as_deref(), Some("StatusColumn"));
        let err = parse("query { boards { id ", &Map::new()).err().unwrap();
        assert!(err.starts_with("Parse error on"), "{err}");
    }
}
