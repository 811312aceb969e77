//! Validation of CronJob and DaemonSet.

use std::str::FromStr;

use super::{
    job, non_negative, one_of, rolling_limits, selector_and_template, selector_unchanged, template,
    Errors,
};
use crate::admit::FieldError;
use crate::apps::DaemonSet;
use crate::batch::{CronJob, Job};

/// Kubernetes limits a CronJob's name to 52 characters: its jobs are named
/// `<cronjob>-<minutes since the epoch>` (11 more) and must fit in 63.
const CRON_JOB_NAME_MAX: usize = 52;

/// Parse a schedule as the CronJob controller reads it: five fields or a
/// descriptor (`@hourly`), in the given time zone (UTC when none).
pub fn parse_schedule(schedule: &str) -> Result<croner::Cron, String> {
    if schedule.contains("TZ=") || schedule.contains("CRON_TZ=") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    if schedule.split_whitespace().count() > 5 {
        return Err("expected exactly 5 fields, found more (seconds are not supported)".into());
    }
    croner::Cron::from_str(schedule.trim()).map_err(|e| e.to_string())
}

/// The time zone named by `timeZone` (None: UTC).
pub fn parse_time_zone(tz: Option<&str>) -> Result<chrono_tz::Tz, String> {
    match tz {
        None => Ok(chrono_tz::UTC),
        Some(name) => {
            chrono_tz::Tz::from_str(name).map_err(|_| format!("unknown time zone {name}"))
        }
    }
}

pub(crate) fn cron_job(c: &CronJob) -> Errors {
    let mut errs = Vec::new();
    let s = &c.spec;
    if c.metadata.name.len() > CRON_JOB_NAME_MAX {
        errs.push(FieldError::invalid_str(
            "metadata.name",
            &c.metadata.name,
            format!("must be no more than {CRON_JOB_NAME_MAX} characters"),
        ));
    }
    if s.schedule.trim().is_empty() {
        errs.push(FieldError::required("spec.schedule", ""));
    } else if let Err(e) = parse_schedule(&s.schedule) {
        errs.push(FieldError::invalid_str("spec.schedule", &s.schedule, e));
    }
    if let Err(e) = parse_time_zone(s.time_zone.as_deref()) {
        errs.push(FieldError::invalid_str(
            "spec.timeZone",
            s.time_zone.as_deref().unwrap_or(""),
            e,
        ));
    }
    one_of(
        &mut errs,
        "spec.concurrencyPolicy",
        &s.concurrency_policy,
        &["Allow", "Forbid", "Replace"],
    );
    if let Some(d) = s.starting_deadline_seconds {
        non_negative(&mut errs, "spec.startingDeadlineSeconds", d);
    }
    for (field, v) in [
        (
            "successfulJobsHistoryLimit",
            s.successful_jobs_history_limit,
        ),
        ("failedJobsHistoryLimit", s.failed_jobs_history_limit),
    ] {
        if let Some(v) = v {
            non_negative(&mut errs, &format!("spec.{field}"), v.into());
        }
    }
    // The job template is validated as a Job, its paths under jobTemplate.
    let j = Job {
        spec: s.job_template.spec.clone(),
        ..Default::default()
    };
    for mut e in job(&j) {
        e.path = e.path.replacen("spec.", "spec.jobTemplate.spec.", 1);
        errs.push(e);
    }
    errs
}

pub(crate) fn cron_job_update(_old: &CronJob, _new: &CronJob) -> Errors {
    Vec::new()
}

pub(crate) fn daemon_set(d: &DaemonSet) -> Errors {
    let mut errs = Vec::new();
    let s = &d.spec;
    non_negative(
        &mut errs,
        "spec.minReadySeconds",
        s.min_ready_seconds.into(),
    );
    if let Some(r) = s.revision_history_limit {
        non_negative(&mut errs, "spec.revisionHistoryLimit", r.into());
    }
    selector_and_template(
        &mut errs,
        s.selector.as_ref(),
        &s.template,
        "daemonset",
        false,
    );
    template(&mut errs, &s.template, &["Always"]);
    match s.update_strategy.type_.as_str() {
        "OnDelete" => {
            if s.update_strategy.rolling_update.is_some() {
                errs.push(FieldError::forbidden(
                    "spec.updateStrategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'OnDelete'",
                ));
            }
        }
        "RollingUpdate" => {
            if let Some(ru) = &s.update_strategy.rolling_update {
                rolling_limits(
                    &mut errs,
                    "spec.updateStrategy.rollingUpdate",
                    ru.max_unavailable.as_ref(),
                    ru.max_surge.as_ref(),
                );
            }
        }
        t => errs.push(FieldError::not_supported(
            "spec.updateStrategy.type",
            t,
            &["OnDelete", "RollingUpdate"],
        )),
    }
    errs
}

pub(crate) fn daemon_set_update(old: &DaemonSet, new: &DaemonSet) -> Errors {
    selector_unchanged(old.spec.selector.as_ref(), new.spec.selector.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_as_kubernetes_reads_them() {
        assert!(parse_schedule("*/5 * * * *").is_ok());
        assert!(parse_schedule("0 3 * * MON-FRI").is_ok());
        assert!(parse_schedule("@hourly").is_ok());
        assert!(parse_schedule("61 * * * *").is_err());
        assert!(parse_schedule("0 0 * * * *").is_err(), "no seconds field");
        assert!(parse_schedule("TZ=UTC 0 * * * *").is_err());
        assert!(parse_time_zone(Some("Europe/Paris")).is_ok());
        assert!(parse_time_zone(Some("Mars/Olympus")).is_err());
    }
}
