//! Helpers shared by the table and describe printers: reading fields out of
//! a JSON object, kubectl's time formats, label and selector formatting, and
//! finding a kind.

use chrono::{DateTime, Utc};
use flotilla_objects::ResourceInfo;
use serde_json::Value;

/// Find a kind by any name a user may type (the API's kind table).
pub(crate) fn kind_info(name: &str) -> Option<&'static ResourceInfo> {
    flotilla_objects::registry::lookup(name)
}

/// The field at `path`, if every step exists.
pub(crate) fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, key| cur.get(*key))
}

/// The string at `path`, or "" when it is absent or not a string.
pub(crate) fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}

/// The integer at `path`: a JSON number or a string holding one.
pub(crate) fn int(v: &Value, path: &[&str]) -> Option<i64> {
    match at(v, path)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The boolean at `path`, false when absent.
pub(crate) fn flag(v: &Value, path: &[&str]) -> bool {
    at(v, path).and_then(Value::as_bool).unwrap_or(false)
}

/// The array at `path`, empty when absent.
pub(crate) fn list<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// A scalar as kubectl would print it: strings bare, numbers and booleans
/// in their JSON form, null and absent as "".
pub(crate) fn scalar(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The scalar at `path` (see [`scalar`]), "" when absent.
pub(crate) fn scalar_at(v: &Value, path: &[&str]) -> String {
    at(v, path).map(scalar).unwrap_or_default()
}

/// The object at `path` as sorted key/value pairs of scalars.
pub(crate) fn string_map(v: &Value, path: &[&str]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = at(v, path)
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect())
        .unwrap_or_default();
    pairs.sort();
    pairs
}

/// `value`, or `fallback` when it is empty.
pub(crate) fn or(value: impl Into<String>, fallback: &str) -> String {
    let value = value.into();
    if value.is_empty() {
        fallback.to_string()
    } else {
        value
    }
}

/// kubectl's `labels.FormatLabels`: "a=b,c=d" sorted by key, "<none>" when
/// there are none.
pub(crate) fn format_labels(pairs: &[(String, String)]) -> String {
    let joined = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    or(joined, "<none>")
}

/// kubectl's `metav1.FormatLabelSelector` for a LabelSelector object:
/// requirements sorted by key, `k=v`, `k in (a,b)`, `k notin (a,b)`, `k`,
/// `!k`; "<none>" for an absent or empty selector.
pub(crate) fn format_label_selector(selector: Option<&Value>) -> String {
    let Some(sel) = selector.filter(|s| s.is_object()) else {
        return "<none>".to_string();
    };
    let mut reqs: Vec<(String, String)> = string_map(sel, &["matchLabels"])
        .into_iter()
        .map(|(k, v)| {
            let r = format!("{k}={v}");
            (k, r)
        })
        .collect();
    for e in list(sel, &["matchExpressions"]) {
        let key = text(e, &["key"]);
        let mut values: Vec<String> = list(e, &["values"]).iter().map(scalar).collect();
        values.sort();
        values.dedup();
        let r = match text(e, &["operator"]) {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!(
                "{key} {} ({})",
                other.to_ascii_lowercase(),
                values.join(",")
            ),
        };
        reqs.push((key.to_string(), r));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    let joined = reqs
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(",");
    or(joined, "<none>")
}

/// Parse a Kubernetes timestamp (RFC 3339, as in "2026-11-26T18:45:45Z").
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A timestamp in Go's `time.RFC1123Z` layout, as `kubectl describe` prints
/// it ("Thu, 26 Nov 2026 18:45:45 +0000"), in UTC. An unparseable value is
/// returned as it is.
pub(crate) fn rfc1123z(s: &str) -> String {
    match parse_time(s) {
        Some(t) => t.format("%a, %d %b %Y %H:%M:%S %z").to_string(),
        None => s.to_string(),
    }
}

/// kubectl's age of a timestamp: [`human_duration`] of the time since it,
/// "<unknown>" when it is absent or unparseable.
pub fn age(timestamp: Option<&str>, now: DateTime<Utc>) -> String {
    match timestamp.and_then(parse_time) {
        Some(t) => human_duration(now.signed_duration_since(t)),
        None => "<unknown>".to_string(),
    }
}

/// [`age`] of the string at `path` ("" counts as absent).
pub(crate) fn age_at(v: &Value, path: &[&str], now: DateTime<Utc>) -> String {
    age(at(v, path).and_then(Value::as_str), now)
}

/// `k8s.io/apimachinery/pkg/util/duration.HumanDuration`: a duration with
/// two or three significant figures. Below -1s it is "<invalid>", a small
/// negative (clock skew) is "0s"; then "Ns" below 2 minutes, "NmSs" below 10
/// minutes, "Nm" below 3 hours, "NhMm" below 8 hours, "Nh" below 48 hours,
/// "NdHh" below 8 days, "Nd" below 2 years, "NyDd" below 8 years, then "Ny".
/// Zero components are left out ("5m", "3h", "4d", "2y").
pub(crate) fn human_duration(d: chrono::TimeDelta) -> String {
    // Go converts with truncation toward zero, as Rust's integer division does.
    let seconds = d.num_milliseconds() / 1000;
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        format!("{hours}h{m}m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        format!("{}d{h}h", hours / 24)
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        format!("{}y{dy}d", hours / 24 / 365)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// Replace the characters that would break a tab-aligned layout.
pub(crate) fn one_line(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

/// Go's `net.JoinHostPort`: brackets around an IPv6 host.
pub(crate) fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn hd(secs: i64) -> String {
        human_duration(TimeDelta::seconds(secs))
    }

    #[test]
    fn human_duration_boundaries() {
        let m = 60;
        let h = 3600;
        let d = 24 * h;
        let y = 365 * d;
        let cases: &[(i64, &str)] = &[
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (10 * m - 1, "9m59s"),
            (10 * m, "10m"),
            (10 * m + 59, "10m"),
            (3 * h - 1, "179m"),
            (3 * h, "3h"),
            (3 * h + 5 * m, "3h5m"),
            (8 * h - 1, "7h59m"),
            (8 * h, "8h"),
            (48 * h - 1, "47h"),
            (48 * h, "2d"),
            (3 * d + 4 * h, "3d4h"),
            (8 * d - 1, "7d23h"),
            (8 * d, "8d"),
            (45 * d + 23 * h, "45d"),
            (2 * y - 1, "729d"),
            (2 * y, "2y"),
            (2 * y + 100 * d, "2y100d"),
            (8 * y - 1, "7y364d"),
            (8 * y, "8y"),
            (20 * y + 200 * d, "20y"),
        ];
        for (secs, want) in cases {
            assert_eq!(hd(*secs), *want, "{secs}s");
        }
    }

    #[test]
    fn human_duration_truncates_fractions_toward_zero() {
        assert_eq!(human_duration(TimeDelta::milliseconds(-1999)), "0s");
        assert_eq!(human_duration(TimeDelta::milliseconds(-2000)), "<invalid>");
        assert_eq!(human_duration(TimeDelta::milliseconds(119_999)), "119s");
    }

    #[test]
    fn age_of_absent_or_bad_timestamp_is_unknown() {
        let now = parse_time("2026-11-26T18:45:45Z").unwrap();
        assert_eq!(age(None, now), "<unknown>");
        assert_eq!(age(Some(""), now), "<unknown>");
        assert_eq!(age(Some("yesterday"), now), "<unknown>");
        assert_eq!(age(Some("2026-11-26T18:40:40Z"), now), "5m5s");
        assert_eq!(age(Some("2026-11-26T19:40:40+01:00"), now), "5m5s");
        assert_eq!(age(Some("2026-11-26T18:45:50Z"), now), "<invalid>");
    }

    #[test]
    fn rfc1123z_matches_go_layout() {
        assert_eq!(
            rfc1123z("2026-11-26T18:45:45Z"),
            "Thu, 26 Nov 2026 18:45:45 +0000"
        );
        assert_eq!(rfc1123z("garbage"), "garbage");
    }

    #[test]
    fn label_selector_formatting() {
        let sel = serde_json::json!({
            "matchLabels": {"tier": "web", "app": "shop"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "canary"]},
                {"key": "zz", "operator": "DoesNotExist"},
                {"key": "b", "operator": "Exists"},
                {"key": "c", "operator": "NotIn", "values": ["x"]}
            ]
        });
        assert_eq!(
            format_label_selector(Some(&sel)),
            "app=shop,b,c notin (x),env in (canary,prod),tier=web,!zz"
        );
        assert_eq!(format_label_selector(None), "<none>");
        assert_eq!(
            format_label_selector(Some(&serde_json::json!({}))),
            "<none>"
        );
    }

    #[test]
    fn kinds_are_found_by_every_name() {
        for name in [
            "Deployment",
            "deployments",
            "deploy",
            "deployments.apps",
            "deployment.apps",
        ] {
            assert_eq!(
                kind_info(name).map(|k| k.kind),
                Some("Deployment"),
                "{name}"
            );
        }
        assert_eq!(kind_info("np").map(|k| k.kind), Some("NodePool"));
        assert_eq!(kind_info("ep").map(|k| k.kind), Some("Endpoints"));
        assert!(kind_info("widgets").is_none());
    }
}
