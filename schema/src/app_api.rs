//! App API definitions, read from WALKOFF `api.yaml` files unchanged, and the catalog of known apps.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::LoadError;

/// One app version's API, as in WALKOFF's `apps/<app>/<version>/api.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppApi {
    pub name: String,
    pub app_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walkoff_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub actions: Vec<ActionApi>,
    /// contact_info, license_info, external_docs and anything else, kept as written.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionApi {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Vec<ParameterApi>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returns: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParameterApi {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub parallelizable: bool,
    /// JSON Schema (Draft 4) of the value. WALKOFF's docs sometimes call it `schema`.
    #[serde(default, alias = "schema", skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl AppApi {
    /// Parse an `api.yaml` document.
    pub fn from_yaml(text: &str) -> Result<AppApi, LoadError> {
        let api: AppApi = serde_yaml::from_str(text).map_err(|e| LoadError::AppApi {
            location: e
                .location()
                .map(|l| format!("line {}, column {}", l.line(), l.column()))
                .unwrap_or_default(),
            message: e.to_string(),
        })?;
        Ok(api)
    }

    pub fn from_file(path: &Path) -> Result<AppApi, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        AppApi::from_yaml(&text).map_err(|e| match e {
            LoadError::AppApi { location, message } => LoadError::AppApi {
                location: format!("{}: {location}", path.display()),
                message,
            },
            other => other,
        })
    }

    pub fn action(&self, name: &str) -> Option<&ActionApi> {
        self.actions.iter().find(|a| a.name == name)
    }

    /// Every way this API breaks WALKOFF's rules for an app API: it has actions (uniquely
    /// named, with uniquely named parameters), its versions are semantic versions, and its
    /// contact (when given) is an object whose `url` is an http(s) URL and `email` an address.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.name.trim().is_empty() {
            problems.push("name: empty".to_string());
        }
        if self.actions.is_empty() {
            problems.push("actions: an app API has at least one action".to_string());
        }
        if semver::Version::parse(&self.app_version).is_err() {
            problems.push(format!(
                "app_version: '{}' is not a semantic version (like 1.0.0)",
                self.app_version
            ));
        }
        if let Some(version) = &self.walkoff_version {
            if semver::Version::parse(version).is_err() {
                problems.push(format!(
                    "walkoff_version: '{version}' is not a semantic version (like 1.0.0)"
                ));
            }
        }
        match self.extra.get("contact_info") {
            None => {}
            Some(Value::Object(contact)) => {
                if let Some(url) = contact.get("url") {
                    if !url.as_str().is_some_and(is_http_url) {
                        problems.push(format!("contact_info.url: {url} is not an http(s) URL"));
                    }
                }
                if let Some(email) = contact.get("email") {
                    if !email.as_str().is_some_and(is_email) {
                        problems.push(format!(
                            "contact_info.email: {email} is not an email address"
                        ));
                    }
                }
            }
            Some(other) => problems.push(format!("contact_info: {other} is not an object")),
        }
        let mut actions = std::collections::BTreeSet::new();
        for action in &self.actions {
            if !actions.insert(action.name.as_str()) {
                problems.push(format!("actions: '{}' is defined twice", action.name));
            }
            let mut parameters = std::collections::BTreeSet::new();
            for parameter in &action.parameters {
                if !parameters.insert(parameter.name.as_str()) {
                    problems.push(format!(
                        "actions.{}.parameters: '{}' is defined twice",
                        action.name, parameter.name
                    ));
                }
            }
        }
        problems
    }
}

fn is_http_url(text: &str) -> bool {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"));
    rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or_default();
        !host.is_empty() && !host.contains(char::is_whitespace)
    })
}

fn is_email(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !text.contains(char::is_whitespace)
        }
        None => false,
    }
}

impl ActionApi {
    pub fn parameter(&self, name: &str) -> Option<&ParameterApi> {
        self.parameters.iter().find(|p| p.name == name)
    }
}

/// Every app API the engine knows, by name and version.
#[derive(Debug, Clone, Default)]
pub struct AppCatalog {
    apps: BTreeMap<String, BTreeMap<Version, AppApi>>,
}

/// An app version, ordered as semantic versions are (`1.9.0` < `1.10.0`, `1.0.0-rc.1` <
/// `1.0.0`); versions that are not semantic sort before those that are, by their text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(Option<semver::Version>, String);

impl Version {
    pub fn parse(text: &str) -> Version {
        Version(semver::Version::parse(text).ok(), text.to_string())
    }
}

impl AppCatalog {
    pub fn new() -> AppCatalog {
        AppCatalog::default()
    }

    pub fn insert(&mut self, api: AppApi) {
        self.apps
            .entry(api.name.clone())
            .or_default()
            .insert(Version::parse(&api.app_version), api);
    }

    pub fn with(mut self, api: AppApi) -> AppCatalog {
        self.insert(api);
        self
    }

    /// The API of `name` at `version`; an empty version means the newest one.
    pub fn get(&self, name: &str, version: &str) -> Option<&AppApi> {
        let versions = self.apps.get(name)?;
        if version.is_empty() {
            versions.values().next_back()
        } else {
            versions.values().find(|api| api.app_version == version)
        }
    }

    pub fn contains_app(&self, name: &str) -> bool {
        self.apps.contains_key(name)
    }

    /// Versions known for `name`, oldest first.
    pub fn versions(&self, name: &str) -> Vec<&str> {
        self.apps
            .get(name)
            .map(|v| v.values().map(|a| a.app_version.as_str()).collect())
            .unwrap_or_default()
    }

    pub fn apps(&self) -> impl Iterator<Item = &AppApi> {
        self.apps.values().flat_map(|v| v.values())
    }
}

#[cfg(test)]
mod walkoff_app_api_tests {
    //! WALKOFF's `testing/api/test_app_api.py` create cases, as rules of an app API (apps are
    //! registered by executors, not created through walkoff's API).
    use super::*;

    fn api(yaml: &str) -> AppApi {
        AppApi::from_yaml(yaml).unwrap()
    }

    const MINIMUM: &str = "walkoff_version: 1.0.0\napp_version: 1.0.0\nname: min\ndescription: d\nactions:\n  - name: a\n";

    #[test]
    fn create_api_empty() {
        let problems = api("walkoff_version: 1.0.0\napp_version: 1.0.0\nname: empty\n").problems();
        assert!(
            problems.iter().any(|p| p.starts_with("actions:")),
            "{problems:?}"
        );
    }

    #[test]
    fn create_api_minimum() {
        assert_eq!(api(MINIMUM).problems(), Vec::<String>::new());
    }

    #[test]
    fn create_api_invalid_semver() {
        for (field, yaml) in [
            (
                "walkoff_version",
                MINIMUM.replace("walkoff_version: 1.0.0", "walkoff_version: '1.0'"),
            ),
            (
                "app_version",
                MINIMUM.replace("app_version: 1.0.0", "app_version: '1.0'"),
            ),
        ] {
            let problems = api(&yaml).problems();
            assert!(
                problems.iter().any(|p| p.starts_with(field)),
                "{field}: {problems:?}"
            );
        }
    }

    #[test]
    fn create_api_valid_contact() {
        let yaml = format!(
            "{MINIMUM}contact_info:\n  name: Someone\n  url: https://example.com/team\n  email: team@example.com\n"
        );
        assert_eq!(api(&yaml).problems(), Vec::<String>::new());
    }

    #[test]
    fn create_api_invalid_contact() {
        for contact in [
            "contact_info: just a name\n",
            "contact_info:\n  email: not-an-address\n",
            "contact_info:\n  url: not a url\n",
        ] {
            let problems = api(&format!("{MINIMUM}{contact}")).problems();
            assert!(
                problems.iter().any(|p| p.starts_with("contact_info")),
                "{contact}: {problems:?}"
            );
        }
    }

    #[test]
    fn the_bundled_apps_follow_the_rules() {
        for app in ["basics", "diagnostics", "python-example"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../apps")
                .join(app)
                .join("api.yaml");
            assert_eq!(
                AppApi::from_file(&path).unwrap().problems(),
                Vec::<String>::new(),
                "{app}"
            );
        }
    }
}
