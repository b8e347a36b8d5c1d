//! `RENEWER__<SECTION>__<FIELD>=value` overrides, applied to the TOML table before it is
//! deserialized, so an override is checked exactly like the file.

use super::ConfigError;

/// Apply `RENEWER__SECTION__FIELD=value` variables. Returns (field path, variable) pairs so that
/// errors can name the variable.
pub(super) fn apply(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut applied = Vec::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix("RENEWER__") else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(ConfigError {
                source_name: "environment".into(),
                field: var.clone(),
                message: "expected RENEWER__<SECTION>__<FIELD>".into(),
            });
        }
        let parsed = parse_env_value(value);
        let mut node = &mut *table;
        let (last, parents) = path.split_last().ok_or_else(|| ConfigError {
            source_name: "environment".into(),
            field: var.clone(),
            message: "empty path".into(),
        })?;
        for p in parents {
            let entry = node
                .entry(p.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = entry.as_table_mut().ok_or_else(|| ConfigError {
                source_name: "environment".into(),
                field: var.clone(),
                message: format!("`{p}` is not a table"),
            })?;
        }
        node.insert(last.clone(), parsed);
        applied.push((path.join("."), var.clone()));
    }
    Ok(applied)
}

fn parse_env_value(value: &str) -> toml::Value {
    // `x = <value>` parses only when value is a TOML value (number, bool, array, quoted string).
    match format!("x = {value}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("x")
            .unwrap_or_else(|| toml::Value::String(value.to_string())),
        Err(_) => toml::Value::String(value.to_string()),
    }
}
