//! Typed, tracked access to a TOML table: each getter checks the value's type and says what
//! was expected, and `finish` reports keys that nothing read (typos, unsupported options).

use std::cell::RefCell;
use std::collections::BTreeSet;

use crate::error::Error;

pub(crate) type R<T> = std::result::Result<T, Error>;

/// A TOML table being read, with where it is (for messages).
pub(crate) struct Table<'a> {
    pub path: &'a str,
    pub at: String,
    pub t: &'a toml::Table,
    used: RefCell<BTreeSet<String>>,
}

fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the string \"{s}\""),
        toml::Value::Integer(i) => format!("the integer {i}"),
        toml::Value::Float(f) => format!("the number {f}"),
        toml::Value::Boolean(b) => format!("{b}"),
        toml::Value::Array(_) => format!("the list {v}"),
        toml::Value::Table(_) => "a table".into(),
        toml::Value::Datetime(d) => format!("the date {d}"),
    }
}

/// Edit distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + (ca != *cb) as usize)
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

impl<'a> Table<'a> {
    pub fn new(path: &'a str, at: impl Into<String>, t: &'a toml::Table) -> Self {
        Table {
            path,
            at: at.into(),
            t,
            used: RefCell::new(BTreeSet::new()),
        }
    }

    /// An error about `key` of this table.
    pub fn err(&self, key: &str, msg: impl Into<String>) -> Error {
        Error::Spec {
            path: self.path.into(),
            at: format!("{}, key `{key}`", self.at),
            msg: msg.into(),
        }
    }

    /// An error about the table as a whole.
    pub fn err_here(&self, msg: impl Into<String>) -> Error {
        Error::Spec {
            path: self.path.into(),
            at: self.at.clone(),
            msg: msg.into(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a toml::Value> {
        self.used.borrow_mut().insert(key.to_string());
        self.t.get(key)
    }

    fn expected<T>(&self, key: &str, what: &str, v: &toml::Value) -> R<T> {
        Err(self.err(key, format!("expected {what}, got {}", show(v))))
    }

    pub fn required<T>(&self, key: &str, v: R<Option<T>>, what: &str) -> R<T> {
        v?.ok_or_else(|| self.missing(key, what))
    }

    /// The error for a required `key` that is absent: a misspelling of it, when the table has
    /// one (`filtres` for `filters`), is named first, as the unknown key it is.
    pub fn missing(&self, key: &str, what: &str) -> Error {
        let used = self.used.borrow();
        let typo = self
            .t
            .keys()
            .filter(|k| !used.contains(*k) && distance(k, key) <= 2)
            .min_by_key(|k| distance(k, key));
        match typo {
            Some(k) => self.err(
                k,
                format!("unknown key (did you mean `{key}`? it is required: {what})"),
            ),
            None => self.err(key, format!("is required ({what})")),
        }
    }

    pub fn usize(&self, key: &str) -> R<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) if *i >= 0 => Ok(Some(*i as usize)),
            Some(v) => self.expected(key, "a non-negative integer", v),
        }
    }

    pub fn f32(&self, key: &str) -> R<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) => Ok(Some(*i as f32)),
            Some(toml::Value::Float(f)) if (*f as f32).is_finite() => Ok(Some(*f as f32)),
            Some(toml::Value::Float(f)) if f.is_finite() => Err(self.err(
                key,
                format!("{f:e} is beyond the range of a 32-bit float (about 3.4e38)"),
            )),
            Some(v) => self.expected(key, "a number", v),
        }
    }

    pub fn bool(&self, key: &str) -> R<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(v) => self.expected(key, "true or false", v),
        }
    }

    pub fn str(&self, key: &str) -> R<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => self.expected(key, "a string", v),
        }
    }

    /// One of `choices`.
    pub fn choice(&self, key: &str, choices: &[&str]) -> R<Option<&'a str>> {
        match self.str(key)? {
            None => Ok(None),
            Some(s) if choices.contains(&s) => Ok(Some(s)),
            Some(s) => Err(self.err(
                key,
                format!("\"{s}\" is not one of: {}", choices.join(", ")),
            )),
        }
    }

    /// An integer (the same for every dimension) or a list of `dims` integers.
    pub fn usize_per_dim(&self, key: &str, dims: usize) -> R<Option<Vec<usize>>> {
        let what = if dims == 1 {
            "a non-negative integer".to_string()
        } else {
            format!("a non-negative integer or a list of {dims} of them")
        };
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) if *i >= 0 => Ok(Some(vec![*i as usize; dims])),
            Some(v @ toml::Value::Array(a)) => {
                if a.len() != dims {
                    return self.expected(key, &what, v);
                }
                a.iter()
                    .map(|x| match x {
                        toml::Value::Integer(i) if *i >= 0 => Ok(*i as usize),
                        _ => self.expected(key, &what, v),
                    })
                    .collect::<R<Vec<_>>>()
                    .map(Some)
            }
            Some(v) => self.expected(key, &what, v),
        }
    }

    /// A list of integers (`-1` allowed when `allow_infer`, read as `None`).
    pub fn int_list(&self, key: &str, allow_infer: bool) -> R<Option<Vec<Option<usize>>>> {
        let what = if allow_infer {
            "a list of positive integers (one may be -1)"
        } else {
            "a list of positive integers"
        };
        match self.get(key) {
            None => Ok(None),
            Some(v @ toml::Value::Array(a)) => a
                .iter()
                .map(|x| match x {
                    toml::Value::Integer(i) if *i > 0 => Ok(Some(*i as usize)),
                    toml::Value::Integer(-1) if allow_infer => Ok(None),
                    _ => self.expected(key, what, v),
                })
                .collect::<R<Vec<_>>>()
                .map(Some),
            Some(v) => self.expected(key, what, v),
        }
    }

    pub fn f32_list(&self, key: &str) -> R<Option<Vec<f32>>> {
        match self.get(key) {
            None => Ok(None),
            Some(v @ toml::Value::Array(a)) => a
                .iter()
                .map(|x| match x {
                    toml::Value::Integer(i) => Ok(*i as f32),
                    toml::Value::Float(f) if (*f as f32).is_finite() => Ok(*f as f32),
                    _ => self.expected(key, "a list of 32-bit float numbers", v),
                })
                .collect::<R<Vec<_>>>()
                .map(Some),
            Some(v) => self.expected(key, "a list of numbers", v),
        }
    }

    pub fn str_list(&self, key: &str) -> R<Option<Vec<String>>> {
        match self.get(key) {
            None => Ok(None),
            Some(v @ toml::Value::Array(a)) => a
                .iter()
                .map(|x| match x {
                    toml::Value::String(s) => Ok(s.clone()),
                    _ => self.expected(key, "a list of strings", v),
                })
                .collect::<R<Vec<_>>>()
                .map(Some),
            Some(v) => self.expected(key, "a list of strings", v),
        }
    }

    /// A sub-table, or a string shorthand `key = "name"` read as `{ type = "name" }`.
    pub fn table_or_name(&self, key: &str) -> R<Option<toml::Table>> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Table(t)) => Ok(Some(t.clone())),
            Some(toml::Value::String(s)) => {
                let mut t = toml::Table::new();
                t.insert("type".into(), toml::Value::String(s.clone()));
                Ok(Some(t))
            }
            Some(v) => self.expected(key, "a table or a name", v),
        }
    }

    /// Fails on any key that no getter asked for.
    pub fn finish(&self) -> R<()> {
        let used = self.used.borrow();
        let mut allowed: Vec<&String> = used.iter().collect();
        allowed.sort();
        for k in self.t.keys() {
            if !used.contains(k) {
                let hint = used
                    .iter()
                    .filter(|u| distance(k, u) <= 2)
                    .min_by_key(|u| distance(k, u));
                let mut msg = format!(
                    "unknown key; expected one of: {}",
                    allowed
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                if let Some(h) = hint {
                    msg = format!(
                        "unknown key (did you mean `{h}`?); expected one of: {}",
                        allowed
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                return Err(self.err(k, msg));
            }
        }
        Ok(())
    }
}
