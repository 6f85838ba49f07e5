//! `RECONCILE_*`: what the sweep pages and how. Enerflo's list endpoints are known only from
//! third-party code (docs/README "What is assumed about Enerflo"), so every path, parameter and
//! field name is configuration, with the names that code uses as defaults.

use std::time::Duration;

use crate::registry::Stage;

/// The stages the sweep can compare: those whose entities Enerflo's REST lists carry (installs:
/// status and milestones; customers: leads). Deals (stage 2), notes and change orders are not
/// listed by the REST API.
pub const SWEEPABLE: [Stage; 3] = [Stage::Leads, Stage::Milestone, Stage::Status];

/// One paged list endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListSpec {
    /// `RECONCILE_<LIST>_PATH`.
    pub path: String,
    /// `RECONCILE_<LIST>_PAGE_PARAM` / `RECONCILE_<LIST>_SIZE_PARAM`: the query parameters.
    pub page_param: String,
    pub size_param: String,
    /// `RECONCILE_<LIST>_PAGE_SIZE`.
    pub page_size: u64,
    /// `RECONCILE_<LIST>_QUERY`: further query parameters, sent as written (`sort_by=id`).
    pub query: String,
    /// `RECONCILE_<LIST>_ITEMS_PATHS`: where an answer holds its rows (a bare array works too).
    pub items_paths: Vec<String>,
    /// The prefix of its variables, for messages.
    pub env: &'static str,
}

impl ListSpec {
    /// The request path of one page.
    pub fn page_path(&self, page: u64) -> String {
        let mut p = format!(
            "{}?{}={page}&{}={}",
            self.path, self.page_param, self.size_param, self.page_size
        );
        let extra = self.query.trim().trim_start_matches(['?', '&']);
        if !extra.is_empty() {
            p.push('&');
            p.push_str(extra);
        }
        p
    }
}

/// `RECONCILE_INSTALL_DETAIL`: when an install's own object is fetched
/// (`GET /api/v3/installs/{id}`, one call per install).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetailMode {
    /// Only when its list row lacks what a swept stage compares (no milestone list, no status).
    Auto,
    Always,
    /// Never: rows without milestones are compared for their status only.
    Never,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconcileSettings {
    /// `RECONCILE_ENERFLO_PER_MINUTE` (default 60): the sweep's own share of Enerflo's 300
    /// requests/minute per key, beside the stage functions' (each process under 240).
    pub per_minute: u32,
    pub installs: ListSpec,
    pub customers: ListSpec,
    /// `RECONCILE_TOTAL_PATHS`: where a page says how many rows the list has (optional).
    pub total_paths: Vec<String>,
    /// `RECONCILE_FIRST_PAGE` (default 1).
    pub first_page: u64,
    pub detail: DetailMode,
    /// `RECONCILE_UPDATED_PATHS`: where a row says when it last changed (for `--since`).
    pub updated_paths: Vec<String>,
    /// `RECONCILE_STAGES` (default all of [`SWEEPABLE`]): what the scheduled sweep compares.
    pub stages: Vec<Stage>,
    /// `RECONCILE_INTERVAL_SECS`: the local runner sweeps this often (unset or 0: never).
    pub interval: Option<Duration>,
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            per_minute: 60,
            installs: ListSpec {
                path: "/api/v3/installs".into(),
                page_param: "page".into(),
                size_param: "per_page".into(),
                page_size: 100,
                query: "sort_by=id".into(),
                items_paths: list("results,data,installs,items"),
                env: "RECONCILE_INSTALLS",
            },
            customers: ListSpec {
                path: "/api/v1/customers".into(),
                page_param: "page".into(),
                size_param: "pageSize".into(),
                page_size: 100,
                query: String::new(),
                items_paths: list("data,results,customers,items"),
                env: "RECONCILE_CUSTOMERS",
            },
            total_paths: list("total,dataCount,meta.total,totalItemCount"),
            first_page: 1,
            detail: DetailMode::Auto,
            updated_paths: list("updated_at,timestamps.updated_at,updatedAt"),
            stages: SWEEPABLE.to_vec(),
            interval: None,
        }
    }
}

impl ReconcileSettings {
    /// Reads `RECONCILE_*` through `var` (trimmed, blank as unset); every bad value is named in
    /// `problems`.
    pub fn from_lookup(var: &impl Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> Self {
        let mut s = Self::default();
        let mut number = |k: &str, default: u64, min: u64, max: u64| match var(k) {
            None => default,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => n,
                _ => {
                    problems.push(format!("{k} must be a whole number from {min} to {max}"));
                    default
                }
            },
        };
        s.per_minute = number("RECONCILE_ENERFLO_PER_MINUTE", 60, 1, 300) as u32;
        s.first_page = number("RECONCILE_FIRST_PAGE", 1, 0, 1);
        s.installs.page_size = number("RECONCILE_INSTALLS_PAGE_SIZE", 100, 1, 1000);
        s.customers.page_size = number("RECONCILE_CUSTOMERS_PAGE_SIZE", 100, 1, 1000);
        let secs = number("RECONCILE_INTERVAL_SECS", 0, 0, 7 * 86_400);
        s.interval = (secs > 0).then(|| Duration::from_secs(secs));
        for spec in [&mut s.installs, &mut s.customers] {
            let env = spec.env;
            for (suffix, slot) in [
                ("PATH", &mut spec.path),
                ("PAGE_PARAM", &mut spec.page_param),
                ("SIZE_PARAM", &mut spec.size_param),
            ] {
                if let Some(v) = var(&format!("{env}_{suffix}")) {
                    *slot = v;
                }
            }
            // Set but blank sends no extra parameters; `var` reads blank as unset, so a literal
            // `none` does the same.
            if let Some(v) = var(&format!("{env}_QUERY")) {
                spec.query = if v == "none" { String::new() } else { v };
            }
            if let Some(v) = var(&format!("{env}_ITEMS_PATHS")) {
                spec.items_paths = list(&v);
            }
            if !spec.path.starts_with('/') || spec.path.contains('?') {
                problems.push(format!(
                    "{env}_PATH must be a path starting with `/`, without a query (put parameters in {env}_QUERY)"
                ));
            }
            for (suffix, value) in [
                ("PAGE_PARAM", &spec.page_param),
                ("SIZE_PARAM", &spec.size_param),
            ] {
                if value.is_empty()
                    || !value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-[].".contains(&b))
                {
                    problems.push(format!("{env}_{suffix} must be a query parameter name"));
                }
            }
            if spec.items_paths.is_empty() {
                problems.push(format!("{env}_ITEMS_PATHS must name at least one path"));
            }
        }
        if let Some(v) = var("RECONCILE_TOTAL_PATHS") {
            s.total_paths = list(&v);
        }
        if let Some(v) = var("RECONCILE_UPDATED_PATHS") {
            s.updated_paths = list(&v);
        }
        match var("RECONCILE_INSTALL_DETAIL").as_deref() {
            None | Some("auto") => {}
            Some("always") => s.detail = DetailMode::Always,
            Some("never") => s.detail = DetailMode::Never,
            Some(_) => {
                problems.push("RECONCILE_INSTALL_DETAIL must be auto, always or never".into())
            }
        }
        if let Some(v) = var("RECONCILE_STAGES") {
            match parse_stages(&v) {
                Ok(stages) => s.stages = stages,
                Err(e) => problems.push(format!("RECONCILE_STAGES: {e}")),
            }
        }
        s
    }
}

/// A comma-separated list of sweepable stages (`leads,status`); `all` is every one.
pub fn parse_stages(text: &str) -> Result<Vec<Stage>, String> {
    let mut out = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name == "all" {
            return Ok(SWEEPABLE.to_vec());
        }
        let stage = Stage::parse(name).ok_or_else(|| format!("unknown stage `{name}`"))?;
        if !SWEEPABLE.contains(&stage) {
            return Err(format!(
                "stage `{name}` cannot be swept: Enerflo's REST lists carry installs (status, milestone) and customers (leads) only"
            ));
        }
        if !out.contains(&stage) {
            out.push(stage);
        }
    }
    if out.is_empty() {
        return Err("names no stage (leads, milestone, status or all)".into());
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> (ReconcileSettings, Vec<String>) {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut problems = Vec::new();
        let s = ReconcileSettings::from_lookup(
            &|k: &str| {
                map.get(k)
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
            },
            &mut problems,
        );
        (s, problems)
    }

    #[test]
    fn defaults_page_the_documented_lists() {
        let (s, problems) = load(&[]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            s.installs.page_path(1),
            "/api/v3/installs?page=1&per_page=100&sort_by=id"
        );
        assert_eq!(
            s.customers.page_path(3),
            "/api/v1/customers?page=3&pageSize=100"
        );
        assert_eq!((s.per_minute, s.interval, s.stages.len()), (60, None, 3));
    }

    #[test]
    fn every_bad_value_is_named() {
        let (_, problems) = load(&[
            ("RECONCILE_ENERFLO_PER_MINUTE", "301"),
            ("RECONCILE_INSTALLS_PATH", "api/v3/installs?x=1"),
            ("RECONCILE_CUSTOMERS_SIZE_PARAM", "page size"),
            ("RECONCILE_INSTALL_DETAIL", "sometimes"),
            ("RECONCILE_STAGES", "status,project"),
        ]);
        let text = problems.join("; ");
        for name in [
            "RECONCILE_ENERFLO_PER_MINUTE",
            "RECONCILE_INSTALLS_PATH",
            "RECONCILE_CUSTOMERS_SIZE_PARAM",
            "RECONCILE_INSTALL_DETAIL",
            "RECONCILE_STAGES: stage `project` cannot be swept",
        ] {
            assert!(text.contains(name), "{name} not named in: {text}");
        }
    }

    #[test]
    fn overrides_apply() {
        let (s, problems) = load(&[
            ("RECONCILE_INSTALLS_SIZE_PARAM", "limit"),
            ("RECONCILE_INSTALLS_QUERY", "none"),
            ("RECONCILE_STAGES", "status, leads"),
            ("RECONCILE_INTERVAL_SECS", "30"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.installs.page_path(2), "/api/v3/installs?page=2&limit=100");
        assert_eq!(s.stages, [Stage::Leads, Stage::Status]);
        assert_eq!(s.interval, Some(Duration::from_secs(30)));
    }
}
