//! librdkafka properties an operator passes through the environment, for managed Kafka (TLS, SASL, client rack,
//! timeouts nobody foresaw): every `KAFKA_CONFIG_<NAME>` variable becomes property `<name>`, lower-cased with `_`
//! read as `.` (the convention of the Kafka tools' container images), so `KAFKA_CONFIG_SECURITY_PROTOCOL=SASL_SSL`
//! sets `security.protocol`.
//!
//! The properties are installed once at start-up, after each was checked by librdkafka itself, and every client
//! the process creates (producer, group consumer, tail reader, admin, replay) applies them last through
//! [`apply`]. A process-wide list rather than a field on each client's settings: the clients are created deep in
//! the restore and replay paths, and a security setting that one of them missed would only show as a connection
//! refused much later.

use std::sync::OnceLock;

use rdkafka::config::ClientConfig;

/// The prefix of the pass-through variables.
pub const PREFIX: &str = "KAFKA_CONFIG_";

/// One pass-through property and the variable it came from (for error messages). Its `Debug` never shows the
/// value: these carry SASL passwords and key material.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientProp {
    pub var: String,
    pub name: String,
    pub value: String,
}

impl std::fmt::Debug for ClientProp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientProp")
            .field("var", &self.var)
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// A property librdkafka refused, naming the variable that carried it.
#[derive(Debug, thiserror::Error)]
#[error("{var}: librdkafka refused property {name:?}: {reason}")]
pub struct BadClientProp {
    pub var: String,
    pub name: String,
    pub reason: String,
}

static INSTALLED: OnceLock<Vec<ClientProp>> = OnceLock::new();

/// The librdkafka property a variable names, or `None` when it is not a pass-through variable.
pub fn property_of(var: &str) -> Option<String> {
    let rest = var.strip_prefix(PREFIX)?;
    if rest.is_empty() {
        return None;
    }
    Some(rest.to_ascii_lowercase().replace('_', "."))
}

/// The pass-through properties among `vars` (the process environment in `main`), sorted by property name so the
/// order the environment happens to list them in does not matter.
pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Vec<ClientProp> {
    let mut props: Vec<ClientProp> = vars
        .into_iter()
        .filter_map(|(var, value)| {
            let name = property_of(&var)?;
            Some(ClientProp { var, name, value })
        })
        .collect();
    props.sort_by(|a, b| a.name.cmp(&b.name));
    props
}

/// Asks librdkafka whether it accepts each property (name known, value valid), without creating a client.
pub fn check(props: &[ClientProp]) -> Result<(), BadClientProp> {
    for prop in props {
        let mut config = ClientConfig::new();
        config.set(&prop.name, &prop.value);
        if let Err(e) = config.create_native_config() {
            // librdkafka's own message repeats the value (a password, for a mistyped SASL property), so only the
            // error code goes into ours.
            let reason = match e {
                rdkafka::error::KafkaError::ClientConfig(code, ..) => format!("{code:?}"),
                other => format!("{:?}", other.rdkafka_error_code()),
            };
            return Err(BadClientProp {
                var: prop.var.clone(),
                name: prop.name.clone(),
                reason,
            });
        }
    }
    Ok(())
}

/// Checks `props` and makes them the properties every client applies. The first installation wins: one process,
/// one environment.
pub fn install(props: Vec<ClientProp>) -> Result<(), BadClientProp> {
    check(&props)?;
    if !props.is_empty() {
        let names: Vec<&str> = props.iter().map(|p| p.name.as_str()).collect();
        tracing::info!(properties = ?names, "librdkafka properties from KAFKA_CONFIG_*");
    }
    let _ = INSTALLED.set(props);
    Ok(())
}

/// Applies the installed properties to `config`; call it last, just before the client is created, so they win
/// over the defaults the code sets.
pub fn apply(config: &mut ClientConfig) -> &mut ClientConfig {
    for prop in INSTALLED.get().map(Vec::as_slice).unwrap_or_default() {
        config.set(&prop.name, &prop.value);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn variables_map_to_lower_case_dotted_properties() {
        assert_eq!(
            property_of("KAFKA_CONFIG_SECURITY_PROTOCOL").as_deref(),
            Some("security.protocol")
        );
        assert_eq!(
            property_of("KAFKA_CONFIG_SASL_MECHANISMS").as_deref(),
            Some("sasl.mechanisms")
        );
        assert_eq!(property_of("KAFKA_CONFIG_"), None);
        assert_eq!(property_of("KAFKA_BROKERS"), None);
    }

    #[test]
    fn only_prefixed_variables_are_taken_in_name_order() {
        let props = from_vars(vars(&[
            ("KAFKA_CONFIG_SSL_CA_LOCATION", "/ca.pem"),
            ("KAFKA_BROKERS", "b:9092"),
            ("KAFKA_CONFIG_CLIENT_RACK", "eu-west-1a"),
        ]));
        let names: Vec<&str> = props.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["client.rack", "ssl.ca.location"]);
        assert_eq!(props[1].var, "KAFKA_CONFIG_SSL_CA_LOCATION");
        assert_eq!(props[1].value, "/ca.pem");
    }

    #[test]
    fn librdkafka_judges_names_and_values() {
        let good = from_vars(vars(&[
            ("KAFKA_CONFIG_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_CONFIG_SASL_MECHANISMS", "SCRAM-SHA-512"),
        ]));
        assert!(check(&good).is_ok());
        let bad_value = from_vars(vars(&[("KAFKA_CONFIG_SECURITY_PROTOCOL", "bogus")]));
        let e = check(&bad_value).unwrap_err();
        assert_eq!(e.var, "KAFKA_CONFIG_SECURITY_PROTOCOL");
        assert!(e.to_string().contains("security.protocol"), "{e}");
        let unknown = from_vars(vars(&[("KAFKA_CONFIG_NO_SUCH_THING", "1")]));
        assert_eq!(
            check(&unknown).unwrap_err().var,
            "KAFKA_CONFIG_NO_SUCH_THING"
        );
        // A Java client's property librdkafka does not know, carrying a password: refused without echoing it.
        let secret = from_vars(vars(&[(
            "KAFKA_CONFIG_SSL_TRUSTSTORE_PASSWORD",
            "hunter2-secret",
        )]));
        let e = check(&secret).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn applied_properties_override_the_code_defaults() {
        let mut config = ClientConfig::new();
        config.set("client.rack", "from-code");
        // Nothing installed in unit tests: the config is left as it is.
        apply(&mut config);
        assert_eq!(config.get("client.rack"), Some("from-code"));
    }
}
