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
