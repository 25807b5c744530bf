//! Configuration from the environment, for containers: `PGVALET_CONFIG_TOML` may hold the whole
//! configuration, and `PGVALET_<KEY>` overrides one key of it. Nested keys are joined with a
//! double underscore and array elements are numbered: `PGVALET_LISTEN_ADDR`,
//! `PGVALET_TLS__CERT`, `PGVALET_BACKENDS__MAIN__HOST`, `PGVALET_ROUTES__0__MAX_SIZE`.
//!
//! A value is read as TOML when it is an integer, a boolean, an array or an inline table
//! (`100`, `true`, `["10.0.0.0/8"]`), and as a string otherwise (`127.0.0.1:6432`, `30s`, `1.2`).
//! A variable whose first part names no top-level key is not an override: it may be a secret
//! the configuration refers to (`password_env`, `env:NAME` certificates).

use toml::{Table, Value};

/// The variable that may hold the whole configuration, instead of a file.
pub const WHOLE: &str = "PGVALET_CONFIG_TOML";
const PREFIX: &str = "PGVALET_";
/// Variables with the prefix that are not overrides.
const NOT_KEYS: &[&str] = &["PGVALET_CONFIG", WHOLE, "PGVALET_LOG"];

/// Every top-level key of the configuration (kept in step with [`super::Config`] by a test).
pub const TOP_LEVEL: &[&str] = &[
    "listen_addr",
    "allow_cidrs",
    "handshake_timeout",
    "shutdown_timeout",
    "max_clients",
    "proxy_protocol",
    "proxy_protocol_trusted",
    "instance_id",
    "peers",
    "log_format",
    "watch",
    "idle_client_timeout",
    "require_tls",
    "metrics",
    "iam",
    "tls",
    "backends",
    "credentials",
    "routes",
    "endpoints",
];

/// One override: the variable it came from and where it goes.
#[derive(Debug)]
pub struct Override {
    pub var: String,
    path: Vec<String>,
    value: Value,
}

/// The overrides among `vars`, in name order so the result does not depend on the environment's.
pub fn overrides(vars: &[(String, String)]) -> Vec<Override> {
    let mut found: Vec<Override> = vars
        .iter()
        .filter(|(name, _)| !NOT_KEYS.contains(&name.as_str()))
        .filter_map(|(name, raw)| {
            let rest = name.strip_prefix(PREFIX)?;
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            TOP_LEVEL.contains(&path[0].as_str()).then(|| Override {
                var: name.clone(),
                path,
                value: value(raw),
            })
        })
        .collect();
    found.sort_by(|a, b| a.var.cmp(&b.var));
    found
}

/// A variable's text as a TOML value: typed when it is an integer, boolean, array or inline
/// table, otherwise the text itself.
fn value(raw: &str) -> Value {
    match toml::from_str::<Table>(&format!("v = {raw}")) {
        Ok(mut t) => match t.remove("v") {
            Some(
                v @ (Value::Integer(_) | Value::Boolean(_) | Value::Array(_) | Value::Table(_)),
            ) => v,
            _ => Value::String(raw.to_owned()),
        },
        Err(_) => Value::String(raw.to_owned()),
    }
}

/// Writes each override into `doc`, making the tables it passes through. An array element may
/// be replaced, or added right after the last one. The error is `(variable, message)`.
pub fn apply(doc: &mut Table, overrides: &[Override]) -> Result<(), (String, String)> {
    for o in overrides {
        let fail = |message: String| Err((o.var.clone(), message));
        // A split yields one part at least.
        let Some((last, parents)) = o.path.split_last() else {
            continue;
        };
        let mut here: &mut Value = doc
            .entry(parents.first().unwrap_or(last).clone())
            .or_insert_with(|| Value::Table(Table::new()));
        if parents.is_empty() {
            *here = o.value.clone();
            continue;
        }
        for part in parents[1..].iter().chain(std::iter::once(last)) {
            here = match here {
                Value::Table(t) => t
                    .entry(part.clone())
                    .or_insert_with(|| Value::Table(Table::new())),
                Value::Array(items) => {
                    let Ok(i) = part.parse::<usize>() else {
                        return fail(format!("\"{part}\" is not an index into an array"));
                    };
                    let len = items.len();
                    if i == len {
                        items.push(Value::Table(Table::new()));
                    }
                    match items.get_mut(i) {
                        Some(item) => item,
                        None => {
                            return fail(format!("index {i} is past the end of an array of {len}"));
                        }
                    }
                }
                _ => return fail(format!("\"{part}\" is inside a value that is not a table")),
            };
        }
        *here = o.value.clone();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn values_are_typed_only_when_unambiguous() {
        assert_eq!(value("100"), Value::Integer(100));
        assert_eq!(value("true"), Value::Boolean(true));
        assert_eq!(
            value("127.0.0.1:6432"),
            Value::String("127.0.0.1:6432".into())
        );
        assert_eq!(value("1.2"), Value::String("1.2".into()));
        assert_eq!(value("30s"), Value::String("30s".into()));
        assert_eq!(
            value(r#"["10.0.0.0/8", "::1/128"]"#),
            Value::Array(vec!["10.0.0.0/8".into(), "::1/128".into()])
        );
    }

    #[test]
    fn secrets_and_reserved_names_are_not_overrides() {
        let found = overrides(&vars(&[
            ("PGVALET_LOG", "debug"),
            ("PGVALET_CONFIG", "x.toml"),
            ("PGVALET_DB_PASSWORD", "hunter2"),
            ("PGVALET_TLS_CERT_PEM", "-----BEGIN"),
            ("HOME", "/root"),
            ("PGVALET_MAX_CLIENTS", "5"),
        ]));
        let names: Vec<&str> = found.iter().map(|o| o.var.as_str()).collect();
        assert_eq!(names, ["PGVALET_MAX_CLIENTS"]);
    }

    #[test]
    fn nested_keys_and_array_elements() {
        let mut doc: Table = toml::from_str(
            r#"
            listen_addr = "127.0.0.1:6432"
            [tls]
            cert = "a.crt"
            [[routes]]
            name = "r"
            max_size = 3
            "#,
        )
        .unwrap();
        let found = overrides(&vars(&[
            ("PGVALET_LISTEN_ADDR", "0.0.0.0:5432"),
            ("PGVALET_TLS__CERT", "env:CERT_PEM"),
            ("PGVALET_ROUTES__0__MAX_SIZE", "10"),
            ("PGVALET_BACKENDS__MAIN__HOST", "db.internal"),
        ]));
        apply(&mut doc, &found).unwrap();
        assert_eq!(doc["listen_addr"].as_str(), Some("0.0.0.0:5432"));
        assert_eq!(doc["tls"]["cert"].as_str(), Some("env:CERT_PEM"));
        assert_eq!(doc["routes"][0]["max_size"].as_integer(), Some(10));
        assert_eq!(doc["routes"][0]["name"].as_str(), Some("r"));
        assert_eq!(
            doc["backends"]["main"]["host"].as_str(),
            Some("db.internal")
        );
    }

    #[test]
    fn bad_paths_name_the_variable() {
        let mut doc: Table = toml::from_str("[[routes]]\nname = \"r\"\nlisten = 1").unwrap();
        for (var, expected) in [
            ("PGVALET_ROUTES__X__NAME", "not an index"),
            ("PGVALET_ROUTES__5__NAME", "past the end"),
            ("PGVALET_ROUTES__0__NAME__DEEPER", "not a table"),
        ] {
            let found = overrides(&vars(&[(var, "v")]));
            let (name, message) = apply(&mut doc, &found).unwrap_err();
            assert_eq!(name, var);
            assert!(message.contains(expected), "{var}: {message}");
        }
    }
}
