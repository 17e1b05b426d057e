//! What `GET /admin/status` and `POST /admin/reload` report: the live config and the outcome
//! of the last reload.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::gateway::Table;

/// How one reload ended.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// `ok`, `failed`, `unchanged` (files touched, contents the same) or `unavailable`.
    pub outcome: &'static str,
    /// When the reload started (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<&'static str>,
    pub duration_ms: u64,
    pub message: String,
    pub errors: Vec<String>,
    /// `sha256:` of the config file the reload read.
    pub config_hash: Option<String>,
    /// `sha256:` of each plugin's component as the reload read it.
    pub plugins: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<Stages>,
}

/// Pipeline entries kept with their warm instances, and entries built anew.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stages {
    pub reused: usize,
    pub created: usize,
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        self.outcome == "ok"
    }

    fn base(outcome: &'static str, message: String) -> Self {
        Self {
            outcome,
            at: None,
            trigger: None,
            duration_ms: 0,
            message,
            errors: Vec::new(),
            config_hash: None,
            plugins: BTreeMap::new(),
            stages: None,
        }
    }

    pub(super) fn unavailable() -> Self {
        let mut o = Self::base("unavailable", "the reload thread has stopped".into());
        o.errors.push(o.message.clone());
        o
    }

    pub(super) fn unchanged() -> Self {
        Self::base("unchanged", "no watched file changed its contents".into())
    }

    pub(super) fn ok(
        at: SystemTime,
        trigger: &'static str,
        took: Duration,
        config_hash: Option<String>,
        plugins: BTreeMap<String, String>,
        reused: usize,
        created: usize,
    ) -> Self {
        let duration_ms = took.as_millis() as u64;
        Self {
            at: Some(rfc3339(at)),
            trigger: Some(trigger),
            duration_ms,
            config_hash,
            plugins,
            stages: Some(Stages { reused, created }),
            ..Self::base(
                "ok",
                format!(
                    "reloaded in {duration_ms} ms: {reused} pipeline entries kept, {created} created"
                ),
            )
        }
    }

    pub(super) fn failed(
        at: SystemTime,
        trigger: &'static str,
        took: Duration,
        config_hash: Option<String>,
        plugins: BTreeMap<String, String>,
        errors: Vec<String>,
    ) -> Self {
        Self {
            at: Some(rfc3339(at)),
            trigger: Some(trigger),
            duration_ms: took.as_millis() as u64,
            config_hash,
            plugins,
            message: format!(
                "reload failed, the previous config stays live: {}",
                errors.join("; ")
            ),
            errors,
            ..Self::base("failed", String::new())
        }
    }
}

/// The live config and the reload history.
pub(super) struct Status {
    path: PathBuf,
    config_hash: Option<String>,
    plugins: BTreeMap<String, String>,
    loaded_at: SystemTime,
    succeeded: u64,
    failed: u64,
    last: Option<Outcome>,
}

impl Status {
    pub(super) fn new(path: &Path, config_hash: Option<String>, table: &Table) -> Self {
        Self {
            path: path.to_owned(),
            config_hash,
            plugins: plugins(table),
            loaded_at: SystemTime::now(),
            succeeded: 0,
            failed: 0,
            last: None,
        }
    }

    pub(super) fn succeeded(&mut self, outcome: &Outcome, table: &Table) {
        self.config_hash = outcome.config_hash.clone();
        self.plugins = plugins(table);
        self.loaded_at = SystemTime::now();
        self.succeeded += 1;
        self.last = Some(outcome.clone());
    }

    pub(super) fn failed(&mut self, outcome: &Outcome) {
        self.failed += 1;
        self.last = Some(outcome.clone());
    }

    pub(super) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "config": {
                "path": self.path.display().to_string(),
                "hash": self.config_hash,
                "loaded_at": rfc3339(self.loaded_at),
            },
            "plugins": self.plugins,
            "reloads": { "succeeded": self.succeeded, "failed": self.failed },
            "last_reload": self.last,
        })
    }
}

fn plugins(table: &Table) -> BTreeMap<String, String> {
    table
        .plugins
        .iter()
        .map(|(n, h)| (n.to_string(), h.to_string()))
        .collect()
}

/// `2026-01-31T12:34:56.789Z`.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Year, month, day of a count of days since 1970-01-01 (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_gregorian() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_123)),
            "2000-02-29T00:00:00.123Z"
        );
    }
}
