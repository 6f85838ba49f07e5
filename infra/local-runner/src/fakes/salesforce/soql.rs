//! The SOQL a connector needs for look-ups, and no more:
//!
//! ```text
//! SELECT Id, Name | COUNT() FROM Object
//!   [WHERE field op value [AND field op value ...]]   op: = != <> < <= > >= IN (v, ...)
//!   [ORDER BY field [ASC|DESC]] [LIMIT n]
//! ```
//!
//! Values are `'quoted strings'` (with `\'` escapes), numbers, `true`/`false`, `null` and date
//! literals (`2026-11-28`). Text compares case-insensitively, as in Salesforce; ids compare in
//! either length. Anything else (OR, LIKE, sub-queries, relationship fields) is refused with
//! `MALFORMED_QUERY` saying the fake does not support it. `ContentDocumentLink` keeps
//! Salesforce's restriction: it must be filtered by `ContentDocumentId` or `LinkedEntityId`.

use std::cmp::Ordering;

use serde_json::{Value, json};

use super::errors::SfError;
use super::ids;
use super::schema::{FieldDef, FieldType};
use super::store::Db;

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(f64),
    Punct(String),
}

fn malformed(msg: impl Into<String>) -> SfError {
    SfError::new("MALFORMED_QUERY", msg)
}

fn lex(q: &str) -> Result<Vec<Tok>, SfError> {
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(malformed("unterminated string literal")),
                    Some('\\') => {
                        let e = chars.get(i + 1).copied().unwrap_or('\\');
                        s.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        s.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(s));
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '-' | ':' | '+'))
            {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            match text.parse::<f64>() {
                Ok(n) => out.push(Tok::Num(n)),
                // A date or datetime literal.
                Err(_) => out.push(Tok::Str(text)),
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.')) {
                i += 1;
            }
            out.push(Tok::Word(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if ["!=", "<>", "<=", ">="].contains(&two.as_str()) {
                out.push(Tok::Punct(two));
                i += 2;
            } else if "=<>(),".contains(c) {
                out.push(Tok::Punct(c.to_string()));
                i += 1;
            } else {
                return Err(malformed(format!("unexpected character '{c}'")));
            }
        }
    }
    Ok(out)
}

struct Cond {
    field: String,
    op: String,
    values: Vec<Value>,
}

struct Query {
    fields: Vec<String>,
    count: bool,
    object: String,
    conds: Vec<Cond>,
    order: Option<(String, bool)>,
    limit: Option<usize>,
}

struct P {
    toks: Vec<Tok>,
    i: usize,
}

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.i).cloned();
        self.i += 1;
        t
    }

    fn keyword(&mut self, k: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(k)) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, k: &str) -> Result<(), SfError> {
        if self.keyword(k) {
            Ok(())
        } else {
            Err(malformed(format!("expecting {k}, found {}", self.shown())))
        }
    }

    fn punct(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(x)) if x == p) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn shown(&self) -> String {
        match self.peek() {
            None => "end of query".into(),
            Some(Tok::Word(w)) => format!("'{w}'"),
            Some(Tok::Str(s)) => format!("'{s}'"),
            Some(Tok::Num(n)) => n.to_string(),
            Some(Tok::Punct(p)) => format!("'{p}'"),
        }
    }

    fn word(&mut self) -> Result<String, SfError> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            _ => {
                self.i -= 1;
                Err(malformed(format!(
                    "expecting a name, found {}",
                    self.shown()
                )))
            }
        }
    }

    fn value(&mut self) -> Result<Value, SfError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Value::String(s)),
            Some(Tok::Num(n)) => Ok(json!(n)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => Ok(Value::Null),
            _ => {
                self.i -= 1;
                Err(malformed(format!(
                    "expecting a value, found {}",
                    self.shown()
                )))
            }
        }
    }
}

fn parse(q: &str) -> Result<Query, SfError> {
    let mut p = P {
        toks: lex(q)?,
        i: 0,
    };
    p.expect_keyword("SELECT")?;
    let mut fields = Vec::new();
    let mut count = false;
    if matches!(p.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case("COUNT")) {
        p.i += 1;
        if !(p.punct("(") && p.punct(")")) {
            return Err(malformed("the fake supports COUNT() without a field only"));
        }
        count = true;
    } else {
        loop {
            let f = p.word()?;
            if f.contains('.') {
                return Err(malformed(format!(
                    "the fake does not support relationship fields in SELECT ({f})"
                )));
            }
            fields.push(f);
            if !p.punct(",") {
                break;
            }
        }
    }
    p.expect_keyword("FROM")?;
    let object = p.word()?;
    let mut conds = Vec::new();
    if p.keyword("WHERE") {
        loop {
            let field = p.word()?;
            let op = match p.next() {
                Some(Tok::Punct(x))
                    if ["=", "!=", "<>", "<", "<=", ">", ">="].contains(&x.as_str()) =>
                {
                    x
                }
                Some(Tok::Word(w)) if w.eq_ignore_ascii_case("IN") => "IN".into(),
                _ => {
                    p.i -= 1;
                    return Err(malformed(format!(
                        "the fake supports = != < <= > >= and IN only, found {}",
                        p.shown()
                    )));
                }
            };
            let values = if op == "IN" {
                if !p.punct("(") {
                    return Err(malformed("IN needs a parenthesised list"));
                }
                let mut vs = vec![p.value()?];
                while p.punct(",") {
                    vs.push(p.value()?);
                }
                if !p.punct(")") {
                    return Err(malformed("IN list not closed"));
                }
                vs
            } else {
                vec![p.value()?]
            };
            conds.push(Cond { field, op, values });
            if p.keyword("AND") {
                continue;
            }
            if matches!(p.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case("OR")) {
                return Err(malformed("the fake does not support OR"));
            }
            break;
        }
    }
    let mut order = None;
    if p.keyword("ORDER") {
        p.expect_keyword("BY")?;
        let f = p.word()?;
        let desc = if p.keyword("DESC") {
            true
        } else {
            p.keyword("ASC");
            false
        };
        order = Some((f, desc));
    }
    let mut limit = None;
    if p.keyword("LIMIT") {
        match p.next() {
            Some(Tok::Num(n)) if n >= 0.0 && n.fract() == 0.0 => limit = Some(n as usize),
            _ => return Err(malformed("LIMIT needs a whole number")),
        }
    }
    if p.peek().is_some() {
        return Err(malformed(format!("unexpected token: {}", p.shown())));
    }
    Ok(Query {
        fields,
        count,
        object,
        conds,
        order,
        limit,
    })
}

fn compare(f: &FieldDef, a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::String(x), Value::String(y)) => {
            if matches!(f.ftype, FieldType::Id | FieldType::Reference) {
                let x = ids::normalise(x).unwrap_or_else(|| x.clone());
                let y = ids::normalise(y).unwrap_or_else(|| y.clone());
                Some(x.cmp(&y))
            } else if f.case_sensitive {
                Some(x.cmp(y))
            } else {
                Some(x.to_lowercase().cmp(&y.to_lowercase()))
            }
        }
        (Value::String(x), Value::Number(y)) => x.parse::<f64>().ok()?.partial_cmp(&y.as_f64()?),
        _ => None,
    }
}

fn matches(f: &FieldDef, have: &Value, c: &Cond) -> bool {
    let eq = |v: &Value| compare(f, have, v) == Some(Ordering::Equal);
    match c.op.as_str() {
        "=" => c.values.first().is_some_and(eq),
        "!=" | "<>" => c.values.first().is_some_and(|v| !eq(v)),
        "IN" => c.values.iter().any(eq),
        op => {
            let Some(o) = c.values.first().and_then(|v| compare(f, have, v)) else {
                return false;
            };
            match op {
                "<" => o == Ordering::Less,
                "<=" => o != Ordering::Greater,
                ">" => o == Ordering::Greater,
                _ => o != Ordering::Less,
            }
        }
    }
}

/// Runs `q`: Salesforce's `{"totalSize", "done", "records"}`.
pub fn run(db: &Db, q: &str, version: &str) -> Result<Value, SfError> {
    let query = parse(q)?;
    let obj = db.object(&query.object).ok_or_else(|| {
        SfError::new(
            "INVALID_TYPE",
            format!(
                "sObject type '{}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name.",
                query.object
            ),
        )
    })?;
    let field = |name: &str| -> Result<FieldDef, SfError> {
        obj.field(name).cloned().ok_or_else(|| {
            SfError::new(
                "INVALID_FIELD",
                format!(
                    "No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name.",
                    obj.name
                ),
            )
        })
    };
    let conds: Vec<(FieldDef, &Cond)> = query
        .conds
        .iter()
        .map(|c| field(&c.field).map(|f| (f, c)))
        .collect::<Result<_, _>>()?;
    if obj.name == "ContentDocumentLink"
        && !conds.iter().any(|(f, c)| {
            (f.name == "ContentDocumentId" || f.name == "LinkedEntityId")
                && (c.op == "=" || c.op == "IN")
        })
    {
        return Err(malformed(
            "Implementation restriction: ContentDocumentLink requires a filter by a single Id on ContentDocumentId or LinkedEntityId using the equals operator or multiple Id's using the IN operator.",
        ));
    }
    for f in &query.fields {
        field(f)?;
    }
    let order = query
        .order
        .as_ref()
        .map(|(f, d)| field(f).map(|f| (f, *d)))
        .transpose()?;
    let mut rows: Vec<_> = db
        .records
        .values()
        .filter(|r| r.object == obj.name && !r.deleted)
        .filter(|r| {
            conds.iter().all(|(f, c)| {
                let have = r.fields.get(&f.name).cloned().unwrap_or(Value::Null);
                matches(f, &have, c)
            })
        })
        .collect();
    if let Some((f, desc)) = &order {
        rows.sort_by(|a, b| {
            let x = a.fields.get(&f.name).cloned().unwrap_or(Value::Null);
            let y = b.fields.get(&f.name).cloned().unwrap_or(Value::Null);
            let o = compare(f, &x, &y).unwrap_or_else(|| x.is_null().cmp(&y.is_null()));
            if *desc { o.reverse() } else { o }
        });
    }
    if let Some(n) = query.limit {
        rows.truncate(n);
    }
    if query.count {
        return Ok(json!({"totalSize": rows.len(), "done": true, "records": []}));
    }
    let records = rows
        .iter()
        .map(|r| db.view(r, version, Some(&query.fields)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({"totalSize": records.len(), "done": true, "records": records}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_the_connector_uses_and_refuses_the_rest() {
        let q = parse("SELECT Id, Name FROM Contact WHERE Enerflo_Customer_Id__c = 'c\\'1' AND IsDeleted = false ORDER BY Name DESC LIMIT 2").expect("parses");
        assert_eq!(q.fields, ["Id", "Name"]);
        assert_eq!(q.conds[0].values, [json!("c'1")]);
        assert_eq!(q.limit, Some(2));
        assert!(parse("SELECT COUNT() FROM Lead WHERE CreatedDate > 2026-01-01").is_ok());
        let e = parse("SELECT Id FROM Lead WHERE A = 'x' OR B = 'y'").err();
        assert_eq!(e.map(|e| e.code), Some("MALFORMED_QUERY".into()));
    }
}
