//! Scripted faults shared by the CRM fakes: "the next N requests matching this route answer X".
//! A pattern is a path as the fake sees it, where `*` stands for one segment and a final `**`
//! for any rest (`/crm/v3/objects/*/batch/**`). Rules are tried in the order they were added;
//! each matching request uses up one of its rule's answers. What an answer is (`K`) is each
//! fake's own `FaultKind`.

/// One rule: `times` answers of `kind` for requests matching `method` (any: `None`) and `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault<K> {
    pub method: Option<String>,
    pub path: String,
    pub times: u32,
    pub kind: K,
}

impl<K> Fault<K> {
    /// The next request (of any method) matching `path` gets `kind`.
    pub fn new(path: &str, kind: K) -> Self {
        Self {
            method: None,
            path: path.to_owned(),
            times: 1,
            kind,
        }
    }

    pub fn times(mut self, n: u32) -> Self {
        self.times = n;
        self
    }

    pub fn method(mut self, m: &str) -> Self {
        self.method = Some(m.to_ascii_uppercase());
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method) && pattern_matches(&self.path, path)
    }
}

/// Whether `path` fits `pattern` (`*` one segment, a final `**` any rest, including none).
pub fn pattern_matches(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    for (i, p) in pat.iter().enumerate() {
        if *p == "**" && i == pat.len() - 1 {
            return true;
        }
        match segs.get(i) {
            Some(s) if *p == "*" || p == s => {}
            _ => return false,
        }
    }
    pat.len() == segs.len()
}

/// The scripted rules.
#[derive(Debug)]
pub struct Faults<K> {
    rules: Vec<Fault<K>>,
}

impl<K> Default for Faults<K> {
    fn default() -> Self {
        Self { rules: Vec::new() }
    }
}

impl<K: Clone> Faults<K> {
    pub fn add(&mut self, f: Fault<K>) {
        self.rules.push(f);
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// Uses up one answer of the first rule that matches, if any.
    pub fn take(&mut self, method: &str, path: &str) -> Option<K> {
        self.take_if(method, path, |_| true)
    }

    /// Uses up one answer of the first rule that matches and `accept`s its kind, if any.
    pub fn take_if(&mut self, method: &str, path: &str, accept: impl Fn(&K) -> bool) -> Option<K> {
        let i = self
            .rules
            .iter()
            .position(|r| r.times > 0 && r.matches(method, path) && accept(&r.kind))?;
        self.rules[i].times -= 1;
        let kind = self.rules[i].kind.clone();
        if self.rules[i].times == 0 {
            self.rules.remove(i);
        }
        Some(kind)
    }

    /// Rules with answers left.
    pub fn pending(&self) -> Vec<Fault<K>> {
        self.rules.clone()
    }
}
