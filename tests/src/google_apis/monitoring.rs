//! Cloud Monitoring: alert policies, whose filters the real API checks, and which cannot
//! name a log-based metric created moments before.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::reply::error;
use super::state::State;

/// A new alert policy (`body`) the API refuses: a filter outside Monitoring's grammar, or,
/// once, a log-based metric created moments before; `None` when it is accepted.
pub(super) fn refuse_new_policy(st: &mut State, body: &Value) -> Option<Response> {
    if let Err(e) = check_alert_policy(body) {
        return Some(error(StatusCode::BAD_REQUEST, &e));
    }
    let text = body.to_string();
    let unseen = st
        .not_yet_visible
        .iter()
        .find(|m| m.starts_with("logging.googleapis.com/") && text.contains(m.as_str()))
        .cloned();
    let metric = unseen?;
    st.not_yet_visible.remove(&metric);
    Some(error(
            StatusCode::NOT_FOUND,
            &format!("Cannot find metric(s) that match type = \"{metric}\". If a metric was created recently, it could take up to 10 minutes to become available. Please try again soon."),
        ))
}

/// The metric conditions of an alert policy must use Monitoring's filter language
/// (https://cloud.google.com/monitoring/api/v3/filters), which the real API checks: the error
/// names the field, as the API's does.
pub(super) fn check_alert_policy(policy: &Value) -> std::result::Result<(), String> {
    let conditions = policy["conditions"].as_array().cloned().unwrap_or_default();
    for (i, condition) in conditions.iter().enumerate() {
        for kind in ["conditionThreshold", "conditionAbsent"] {
            if let Some(filter) = condition[kind]["filter"].as_str() {
                monitoring_filter(filter).map_err(|why| {
                    let field = if kind == "conditionThreshold" {
                        "condition_threshold"
                    } else {
                        "condition_absent"
                    };
                    format!(
                        "Field alert_policy.conditions[{i}].{field}.filter had an invalid value of \"{filter}\": {why}"
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// Monitoring's filter grammar, as far as alert conditions use it:
/// `expr := term { (AND | OR) term }`, `term := [NOT] (comparison | "(" expr ")")`,
/// `comparison := selector op value`, where a selector is `metric.type`, `resource.type`,
/// `metric.label(s).KEY`, `resource.label(s).KEY`, `project` or `group.id`, an op is one of
/// `= != < <= > >=`, and a value is a string, a number, or one of the functions `one_of`,
/// `starts_with`, `ends_with`, `has_substring`, `monitoring.regex.full_match` on strings.
/// Logging's `field=("a" OR "b")` is not in it.
pub fn monitoring_filter(filter: &str) -> std::result::Result<(), String> {
    #[derive(Debug, Clone, PartialEq)]
    enum T {
        Str,
        Num,
        Ident(String),
        Op,
        Open,
        Close,
        Comma,
    }
    let mut tokens = Vec::new();
    let chars: Vec<char> = filter.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            if i >= chars.len() {
                return Err("unterminated string".into());
            }
            i += 1;
            tokens.push(T::Str);
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            tokens.push(T::Num);
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_.-".contains(chars[i]))
            {
                i += 1;
            }
            tokens.push(T::Ident(chars[start..i].iter().collect()));
        } else if "=!<>".contains(c) {
            i += 1;
            if i < chars.len() && chars[i] == '=' {
                i += 1;
            }
            tokens.push(T::Op);
        } else if c == '(' {
            i += 1;
            tokens.push(T::Open);
        } else if c == ')' {
            i += 1;
            tokens.push(T::Close);
        } else if c == ',' {
            i += 1;
            tokens.push(T::Comma);
        } else {
            return Err(format!("unexpected character {c:?}"));
        }
    }
    let selector = |s: &str| {
        matches!(s, "metric.type" | "resource.type" | "project" | "group.id")
            || [
                "metric.label.",
                "metric.labels.",
                "resource.label.",
                "resource.labels.",
            ]
            .iter()
            .any(|p| s.strip_prefix(p).is_some_and(|k| !k.is_empty()))
    };
    let function = |s: &str| {
        matches!(
            s,
            "one_of"
                | "starts_with"
                | "ends_with"
                | "has_substring"
                | "monitoring.regex.full_match"
        )
    };
    // A recursive-descent check over the tokens.
    fn expr(
        t: &[T],
        at: &mut usize,
        selector: &dyn Fn(&str) -> bool,
        function: &dyn Fn(&str) -> bool,
    ) -> std::result::Result<(), String> {
        term(t, at, selector, function)?;
        while matches!(t.get(*at), Some(T::Ident(k)) if k == "AND" || k == "OR") {
            *at += 1;
            term(t, at, selector, function)?;
        }
        Ok(())
    }
    fn term(
        t: &[T],
        at: &mut usize,
        selector: &dyn Fn(&str) -> bool,
        function: &dyn Fn(&str) -> bool,
    ) -> std::result::Result<(), String> {
        if matches!(t.get(*at), Some(T::Ident(k)) if k == "NOT") {
            *at += 1;
        }
        match t.get(*at) {
            Some(T::Open) => {
                *at += 1;
                expr(t, at, selector, function)?;
                if t.get(*at) != Some(&T::Close) {
                    return Err("expected )".into());
                }
                *at += 1;
                Ok(())
            }
            Some(T::Ident(name)) if selector(name) => {
                *at += 1;
                if t.get(*at) != Some(&T::Op) {
                    return Err(format!("expected an operator after {name}"));
                }
                *at += 1;
                match t.get(*at) {
                    Some(T::Str | T::Num) => {
                        *at += 1;
                        Ok(())
                    }
                    Some(T::Ident(f)) if function(f) => {
                        *at += 1;
                        if t.get(*at) != Some(&T::Open) {
                            return Err(format!("expected ( after {f}"));
                        }
                        *at += 1;
                        loop {
                            if t.get(*at) != Some(&T::Str) {
                                return Err(format!("{f} takes strings"));
                            }
                            *at += 1;
                            match t.get(*at) {
                                Some(T::Comma) => *at += 1,
                                Some(T::Close) => {
                                    *at += 1;
                                    return Ok(());
                                }
                                _ => return Err(format!("expected , or ) in {f}")),
                            }
                        }
                    }
                    other => Err(format!(
                        "after {name} and its operator, expected a string, a number or a function, not {other:?}"
                    )),
                }
            }
            other => Err(format!("expected a selector, not {other:?}")),
        }
    }
    let mut at = 0;
    expr(&tokens, &mut at, &selector, &function)?;
    if at != tokens.len() {
        return Err(format!("unexpected {:?}", tokens[at]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::monitoring_filter;

    #[test]
    fn monitoring_filters_follow_the_documented_grammar() {
        for ok in [
            r#"metric.type = "logging.googleapis.com/user/x" AND resource.type = one_of("cloud_run_job", "cloud_run_revision")"#,
            r#"metric.type="a/b" AND resource.label.host = one_of("a.example", "b.example")"#,
            r#"resource.labels.zone = starts_with("europe-") AND NOT metric.label.x = "y""#,
            r#"(metric.type = "a" OR metric.type = "b") AND project = "p""#,
        ] {
            monitoring_filter(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            r#"metric.type = "a" AND resource.type=("cloud_run_job" OR "cloud_run_revision")"#,
            r#"jsonPayload.message = "x""#,
            r#"metric.type "a""#,
            r#"metric.type = unknown_function("a")"#,
            r#"metric.type = "a" AND"#,
        ] {
            assert!(monitoring_filter(bad).is_err(), "{bad} accepted");
        }
    }
}
