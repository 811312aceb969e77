//! Rows for CronJobs and DaemonSets, as kubectl prints them.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::super::util::{
    at, flag, format_label_selector, human_duration, list, parse_time, string_map, text,
};
use super::{containers_and_images, created, status_count};

/// NAME SCHEDULE TIMEZONE SUSPEND ACTIVE LAST SCHEDULE AGE (+ CONTAINERS
/// IMAGES SELECTOR of the job template).
pub(super) fn cron_job_row(
    name: String,
    cj: &Value,
    wide: bool,
    now: DateTime<Utc>,
) -> Vec<String> {
    let last = parse_time(text(cj, &["status", "lastScheduleTime"]))
        .map(|t| human_duration(now.signed_duration_since(t)))
        .unwrap_or_else(|| "<none>".into());
    let tz = text(cj, &["spec", "timeZone"]);
    let mut cells = vec![
        name,
        text(cj, &["spec", "schedule"]).to_string(),
        if tz.is_empty() {
            "<none>".into()
        } else {
            tz.to_string()
        },
        if flag(cj, &["spec", "suspend"]) {
            "True"
        } else {
            "False"
        }
        .to_string(),
        list(cj, &["status", "active"]).len().to_string(),
        last,
        created(cj, now),
    ];
    if wide {
        let template = at(cj, &["spec", "jobTemplate"])
            .cloned()
            .unwrap_or(Value::Null);
        let (containers, images) = containers_and_images(&template);
        cells.extend([
            containers,
            images,
            format_label_selector(at(&template, &["spec", "selector"])),
        ]);
    }
    cells
}

/// NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE
/// (+ CONTAINERS IMAGES SELECTOR).
pub(super) fn daemon_set_row(
    name: String,
    ds: &Value,
    wide: bool,
    now: DateTime<Utc>,
) -> Vec<String> {
    let selector = string_map(ds, &["spec", "template", "spec", "nodeSelector"]);
    let node_selector = if selector.is_empty() {
        "<none>".to_string()
    } else {
        selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut cells = vec![
        name,
        status_count(ds, "desiredNumberScheduled").to_string(),
        status_count(ds, "currentNumberScheduled").to_string(),
        status_count(ds, "numberReady").to_string(),
        status_count(ds, "updatedNumberScheduled").to_string(),
        status_count(ds, "numberAvailable").to_string(),
        node_selector,
        created(ds, now),
    ];
    if wide {
        let (containers, images) = containers_and_images(ds);
        cells.extend([
            containers,
            images,
            format_label_selector(at(ds, &["spec", "selector"])),
        ]);
    }
    cells
}
