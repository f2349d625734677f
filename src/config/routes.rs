//! Routes: the listening addresses one process serves, each with its own validated [`Config`].
//!
//! ```text
//!   file: top-level fields ─┐            [[route]] name = "main-ro" … ─┐
//!   CONSUL_HTTP_* < file top < env < flags = the top stack             │
//!                             └── overlay(route table) ◀───────────────┘
//!                                  │ resolve (the same validation as one route)
//!                                  ▼
//!                  Routes { routes: [Route { name, config }], labelled }
//! ```
//! A file without `[[route]]` tables is one implicit route, named `default`, built from the
//! top-level fields, flags and env exactly as before routes existed (and not labelled in metrics).
//! With route tables, the top level only supplies defaults: every route is its table over the top
//! stack, so any field not set in a route comes from the top level. Process-wide fields (the
//! admin and metrics endpoints, logging) may not be set in a route. Errors name the route and the
//! field; duplicate names or listen addresses are errors.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::kinds::Role;
use super::model::{Config, Fallback, MONITOR_PASSWORD_ENV};
use super::settings::Settings;
use super::{ConfigError, Secret};

/// The name of the one route a file without `[[route]]` tables describes.
pub const IMPLICIT_ROUTE: &str = "default";

/// Fields that belong to the process, not to one route.
const PROCESS_FIELDS: [&str; 4] = ["admin", "metrics_listen", "log_format", "log_level"];

/// One named route: a listen address and everything about where its clients go.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: Arc<str>,
    pub config: Config,
}

/// Every route of the process.
#[derive(Debug, Clone, PartialEq)]
pub struct Routes {
    /// Never empty; in file order.
    pub routes: Vec<Route>,
    /// Route tables were given: metrics carry a `route` label and logs the route's name.
    pub labelled: bool,
}

/// A config file split into its top-level settings and its route tables.
struct FileLayers {
    top: Settings,
    routes: Vec<(String, Settings)>,
}

impl Routes {
    /// Loads the file named by `config_path` (if any) with `cli` (flags and env) on top of its
    /// top level, then one [`Config`] per route.
    pub fn load(config_path: Option<&Path>, cli: &Settings) -> Result<Routes, ConfigError> {
        let file = match config_path {
            Some(path) => read_layers(path)?,
            None => FileLayers {
                top: Settings::default(),
                routes: Vec::new(),
            },
        };
        let ecosystem =
            Settings::from_consul_env(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))?;
        let monitor_password = std::env::var(MONITOR_PASSWORD_ENV).ok().map(Secret::new);
        let top = ecosystem.overlay(file.top).overlay(cli.clone());
        Routes::resolve_with(top, file.routes, monitor_password)
    }

    /// Resolves the routes from the top stack and the route tables (name, settings).
    pub fn resolve_with(
        top: Settings,
        tables: Vec<(String, Settings)>,
        monitor_password: Option<Secret>,
    ) -> Result<Routes, ConfigError> {
        if tables.is_empty() {
            let config = Config::resolve_with(top, monitor_password)?;
            return Ok(Routes {
                routes: vec![Route {
                    name: IMPLICIT_ROUTE.into(),
                    config,
                }],
                labelled: false,
            });
        }
        let all_names: Vec<String> = tables.iter().map(|(name, _)| name.clone()).collect();
        let mut names = HashSet::new();
        let mut listens: Vec<(SocketAddr, Arc<str>)> = Vec::new();
        let mut routes = Vec::with_capacity(tables.len());
        for (name, table) in tables {
            check_name(&name)?;
            if !names.insert(name.clone()) {
                return Err(ConfigError::DuplicateRoute { name });
            }
            let in_route = |source: ConfigError| ConfigError::Route {
                route: name.clone(),
                source: Box::new(source),
            };
            if let Some(field) = process_field_set(&table) {
                return Err(in_route(super::invalid(
                    field,
                    "is process-wide: set it at the top level of the file, not in a route",
                )));
            }
            let others: Vec<&str> = all_names
                .iter()
                .map(String::as_str)
                .filter(|other| *other != name)
                .collect();
            let config = Config::resolve_route(
                top.clone().overlay(table),
                monitor_password.clone(),
                Some(&others),
            )
            .map_err(in_route)?;
            let name: Arc<str> = name.into();
            // Port 0 asks the kernel for a free port: never a clash.
            if config.listen.port() != 0
                && let Some((_, other)) = listens.iter().find(|(addr, _)| *addr == config.listen)
            {
                return Err(ConfigError::DuplicateListen {
                    addr: config.listen,
                    first: other.to_string(),
                    second: name.to_string(),
                });
            }
            listens.push((config.listen, name.clone()));
            routes.push(Route { name, config });
        }
        check_fallbacks(&routes)?;
        Ok(Routes {
            routes,
            labelled: true,
        })
    }

    /// The route settings that are the same for every route (admin, metrics, logs, workers of
    /// the first route): read from the first route, which never differs from the others there.
    pub fn process(&self) -> &Config {
        // `routes` is never empty: both constructors put at least one route in.
        &self.routes[0].config
    }

    /// The route called `name`.
    pub fn get(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| &*r.name == name)
    }
}

/// A replica route may fall back only to a primary route (whose primary it then uses).
fn check_fallbacks(routes: &[Route]) -> Result<(), ConfigError> {
    for route in routes {
        let Fallback::Route(target) = &route.config.fallback else {
            continue;
        };
        let target_role = routes
            .iter()
            .find(|r| &*r.name == target)
            .map(|r| r.config.role);
        if target_role != Some(Role::Primary) {
            return Err(ConfigError::Route {
                route: route.name.to_string(),
                source: Box::new(super::invalid(
                    "fallback",
                    format!(
                        "route `{target}` is not a `role = primary` route: a fallback must be a primary route (or `hold`)"
                    ),
                )),
            });
        }
    }
    Ok(())
}

/// Reads a config file: its top-level fields, and each `[[route]]` table with its `name`.
fn read_layers(path: &Path) -> Result<FileLayers, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_layers(&text).map_err(|message| ConfigError::Parse {
        path: path.to_owned(),
        message,
    })
}

/// Splits TOML text into the top-level settings and the route tables; the message names the
/// route (by name, or by position when the name is missing) and the key.
fn parse_layers(text: &str) -> Result<FileLayers, String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
    let route_tables = match table.remove("route") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items,
        Some(_) => return Err("`route` must be an array of tables, written `[[route]]`".into()),
    };
    let top =
        Settings::deserialize(toml::Value::Table(table)).map_err(|e| one_line(&e.to_string()))?;
    let mut routes = Vec::with_capacity(route_tables.len());
    for (index, item) in route_tables.into_iter().enumerate() {
        let position = index + 1;
        let toml::Value::Table(mut route) = item else {
            return Err(format!(
                "route #{position}: must be a table, written `[[route]]`"
            ));
        };
        let name = match route.remove("name") {
            Some(toml::Value::String(name)) => name,
            Some(_) => return Err(format!("route #{position}: `name` must be a string")),
            None => {
                return Err(format!(
                    "route #{position}: `name` is missing (every [[route]] needs a name, e.g. name = \"main-rw\")"
                ));
            }
        };
        let settings = Settings::deserialize(toml::Value::Table(route))
            .map_err(|e| format!("route \"{name}\": {}", one_line(&e.to_string())))?;
        routes.push((name, settings));
    }
    Ok(FileLayers { top, routes })
}

fn one_line(message: &str) -> String {
    message.trim_end().replace('\n', " ")
}

/// Route names go into logs and metric labels: keep them plain.
fn check_name(name: &str) -> Result<(), ConfigError> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if plain {
        Ok(())
    } else {
        Err(ConfigError::RouteName {
            name: name.to_owned(),
        })
    }
}

/// The first process-wide field a route table sets, if any.
fn process_field_set(table: &Settings) -> Option<&'static str> {
    let set = [
        table.admin.is_some(),
        table.metrics_listen.is_some(),
        table.log_format.is_some(),
        table.log_level.is_some(),
    ];
    PROCESS_FIELDS
        .iter()
        .zip(set)
        .find_map(|(field, is_set)| is_set.then_some(*field))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Routes, ConfigError> {
        let layers = parse_layers(text).map_err(|message| ConfigError::Parse {
            path: "test.toml".into(),
            message,
        })?;
        Routes::resolve_with(layers.top, layers.routes, None)
    }

    #[test]
    fn a_file_without_routes_is_one_unlabelled_route() {
        let routes = load("backend = \"127.0.0.1:3307\"\nlisten = \"127.0.0.1:4000\"").unwrap();
        assert!(!routes.labelled);
        assert_eq!(routes.routes.len(), 1);
        assert_eq!(&*routes.routes[0].name, IMPLICIT_ROUTE);
        let alone = Config::resolve(
            Settings::from_toml("backend = \"127.0.0.1:3307\"\nlisten = \"127.0.0.1:4000\"")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(routes.routes[0].config, alone, "exactly today's config");
    }

    #[test]
    fn route_fields_win_and_the_rest_comes_from_the_top_level() {
        let routes = load(
            r#"
            hold_timeout = "7s"
            backend = "127.0.0.1:3307"
            [[route]]
            name = "rw"
            listen = "127.0.0.1:4000"
            [[route]]
            name = "other"
            listen = "127.0.0.1:4001"
            backend = "127.0.0.1:3308"
            hold_timeout = "2s"
            "#,
        )
        .unwrap();
        assert!(routes.labelled);
        let rw = &routes.get("rw").unwrap().config;
        let other = &routes.get("other").unwrap().config;
        assert_eq!(rw.hold_timeout.as_secs(), 7);
        assert_eq!(other.hold_timeout.as_secs(), 2);
        assert_eq!(rw.listen.port(), 4000);
        assert_ne!(rw.discovery, other.discovery);
    }

    #[test]
    fn errors_name_the_route_and_the_field() {
        let err = load(
            r#"
            backend = "127.0.0.1:3307"
            [[route]]
            name = "main-ro"
            listen = "127.0.0.1:4000"
            hold_timeout = "0s"
            "#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("route \"main-ro\": hold_timeout: must be greater than 0"),
            "{err}"
        );

        let err = load("[[route]]\nname = \"x\"\nlisten = \"127.0.0.1:1\"\nbalanse = 1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("route \"x\"") && err.contains("balanse"),
            "{err}"
        );

        let err = load("[[route]]\nlisten = \"127.0.0.1:1\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("route #1: `name` is missing"), "{err}");

        let err = load("backend = \"127.0.0.1:3307\"\n[[route]]\nname = \"x\"\nadmin = \"off\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("route \"x\": admin: is process-wide"), "{err}");

        let err = load("backend = \"127.0.0.1:3307\"\n[[route]]\nname = \"a b\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("route name `a b`"), "{err}");
    }

    #[test]
    fn the_example_file_loads() {
        let routes = load(include_str!("../../deploy/routes.example.toml")).unwrap();
        let names: Vec<&str> = routes.routes.iter().map(|r| &*r.name).collect();
        assert_eq!(names, ["main-rw", "main-ro", "billing-rw"]);
        let ro = &routes.get("main-ro").unwrap().config;
        assert_eq!(ro.role, Role::Replica);
        assert_eq!(ro.fallback, Fallback::Route("main-rw".into()));
        assert_eq!(
            routes.get("billing-rw").unwrap().config.service,
            "mysql-billing"
        );
    }

    #[test]
    fn a_fallback_must_be_another_primary_route() {
        let base = "backend = \"127.0.0.1:3307\"\n";
        let err = load(&format!(
            "{base}[[route]]\nname = \"ro\"\nrole = \"replica\"\nfallback = \"ro2\"\nlisten = \"127.0.0.1:0\"\n\
             [[route]]\nname = \"ro2\"\nrole = \"replica\"\nlisten = \"127.0.0.1:0\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("route \"ro\": fallback: route `ro2` is not a `role = primary` route"),
            "{err}"
        );
        let err = load(&format!(
            "{base}[[route]]\nname = \"ro\"\nfallback = \"ro\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("route \"ro\": fallback: no other route named `ro`"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_names_and_listen_addresses_are_errors() {
        let base = "backend = \"127.0.0.1:3307\"\n";
        let err = load(&format!(
            "{base}[[route]]\nname = \"a\"\nlisten = \"127.0.0.1:4000\"\n[[route]]\nname = \"a\"\nlisten = \"127.0.0.1:4001\""
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("two routes are named \"a\""), "{err}");
        let err = load(&format!(
            "{base}[[route]]\nname = \"a\"\nlisten = \"127.0.0.1:4000\"\n[[route]]\nname = \"b\"\nlisten = \"127.0.0.1:4000\""
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("routes \"a\" and \"b\" both listen on 127.0.0.1:4000"),
            "{err}"
        );
        // Port 0: each gets its own free port.
        load(&format!(
            "{base}[[route]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n[[route]]\nname = \"b\"\nlisten = \"127.0.0.1:0\""
        ))
        .unwrap();
    }
}
