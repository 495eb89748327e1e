//! Routes and the upstreams their chains name. Each upstream is built once, the
//! first time a chain names it, with the global breaker block merged with its own
//! override; models named along the way join the set with breakers of their own.

use super::breaker::breaker_config;
use super::checks::{check_name, check_upstream_name};
use super::error::invalid;
use super::models::{check_model_name, note_model};
use super::raw::{RawChainEntry, RawMatch, RawRoute, RawUpstream};
use super::{ConfigError, ProbeConfig, RequestShape, Route, Upstream};
use crate::ids::UpstreamId;
use crate::model::ModelPattern;
use serde_json::Value;
use std::collections::BTreeMap;

/// What the routes declare: routes in order, upstreams in first-use order, and the
/// models with breakers of their own.
pub(super) struct Routing<'a> {
    /// The global `breaker` block (an object), before overrides.
    global: &'a Value,
    /// The `upstreams` override blocks by name.
    overrides: &'a BTreeMap<String, RawUpstream>,
    pub routes: Vec<Route>,
    pub upstreams: Vec<Upstream>,
    pub models: Vec<String>,
}

impl<'a> Routing<'a> {
    /// An empty plan; `models` are those listed at the top level.
    pub(super) fn new(
        global: &'a Value,
        overrides: &'a BTreeMap<String, RawUpstream>,
        models: Vec<String>,
    ) -> Self {
        Routing {
            global,
            overrides,
            routes: Vec::new(),
            upstreams: Vec::new(),
            models,
        }
    }

    /// Validates route `i` and adds it, with any upstream it names first.
    pub(super) fn add_route(&mut self, i: usize, r: RawRoute) -> Result<(), ConfigError> {
        let at = format!("routes[{i}]");
        self.check_head(&at, &r)?;
        let (chain, chain_models) = self.chain(&at, &r.upstreams)?;
        let models = self.match_models(&at, &r.matcher)?;
        self.routes.push(Route {
            name: r.name,
            path_prefix: r.matcher.path_prefix,
            path: r.matcher.path,
            chain,
            chain_models,
            models,
            when_all_open: r.when_all_open,
            pass_client_credentials: r.pass_client_credentials,
        });
        Ok(())
    }

    /// The route's name (unique), a non-empty chain, and absolute match paths.
    fn check_head(&self, at: &str, r: &RawRoute) -> Result<(), ConfigError> {
        check_name(&format!("{at}.name"), &r.name)?;
        if self.routes.iter().any(|x| x.name == r.name) {
            return Err(invalid(
                format!("{at}.name"),
                format!("duplicate route name {:?}", r.name),
            ));
        }
        if r.upstreams.is_empty() {
            return Err(invalid(
                format!("{at}.upstreams"),
                "must list at least one upstream",
            ));
        }
        for (field, v) in [
            ("path_prefix", &r.matcher.path_prefix),
            ("path", &r.matcher.path),
        ] {
            if let Some(p) = v.as_ref().filter(|p| !p.starts_with('/')) {
                return Err(invalid(
                    format!("{at}.match.{field}"),
                    format!("must start with '/', got {p:?}"),
                ));
            }
        }
        Ok(())
    }

    /// The chain as upstream indexes, and the model each entry rewrites to.
    fn chain(
        &mut self,
        at: &str,
        entries: &[RawChainEntry],
    ) -> Result<(Vec<UpstreamId>, Vec<Option<String>>), ConfigError> {
        let mut chain = Vec::with_capacity(entries.len());
        let mut chain_models = Vec::with_capacity(entries.len());
        for (j, entry) in entries.iter().enumerate() {
            let field = format!("{at}.upstreams[{j}]");
            let name = entry.upstream();
            check_upstream_name(&field, name)?;
            if entries[..j].iter().any(|e| e.upstream() == name) {
                return Err(invalid(field, format!("duplicate upstream {name:?}")));
            }
            if let Some(m) = entry.model() {
                check_model_name(&format!("{field}.model"), m)?;
                note_model(&mut self.models, m);
            }
            chain_models.push(entry.model().map(str::to_string));
            chain.push(UpstreamId::new(self.upstream(name)?));
        }
        Ok((chain, chain_models))
    }

    /// The index of upstream `name`, built on first use from the global breaker
    /// block merged with its override, and its probe.
    fn upstream(&mut self, name: &str) -> Result<usize, ConfigError> {
        if let Some(idx) = self.upstreams.iter().position(|u| u.name == name) {
            return Ok(idx);
        }
        let over = self.overrides.get(name);
        let (merged, path) = match over {
            Some(o) => {
                let path = format!("upstreams.{name}.breaker");
                let o = object_or_empty(o.breaker.clone(), &path)?;
                (merge(self.global.clone(), o), path)
            }
            None => (self.global.clone(), "breaker".to_string()),
        };
        let probe = match over.and_then(|o| o.probe.clone()) {
            Some(p) => Some(
                ProbeConfig::try_from((name, p))
                    .map_err(|e| e.under(&format!("upstreams.{name}.probe")))?,
            ),
            None => None,
        };
        let breaker = breaker_config(merged, &path)?;
        let request = match over.and_then(|o| o.request.clone()) {
            Some(r) => RequestShape::try_from(r)
                .map_err(|e| e.under(&format!("upstreams.{name}.request")))?,
            None => RequestShape::default(),
        };
        self.upstreams.push(Upstream {
            name: name.to_string(),
            breaker,
            probe,
            request,
        });
        Ok(self.upstreams.len() - 1)
    }

    /// The route's model patterns; exact names get breakers of their own.
    fn match_models(&mut self, at: &str, m: &RawMatch) -> Result<Vec<ModelPattern>, ConfigError> {
        let mut models = Vec::new();
        for (j, name) in m.models.iter().flatten().enumerate() {
            let field = format!("{at}.match.models[{j}]");
            let p = ModelPattern::parse(name).map_err(|e| invalid(&field, e))?;
            if p.is_exact() {
                note_model(&mut self.models, name);
            }
            models.push(p);
        }
        if m.models.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid(
                format!("{at}.match.models"),
                "must list at least one model (or be left out)",
            ));
        }
        Ok(models)
    }

    /// Every override names an upstream some route uses.
    pub(super) fn check_overrides_used(&self) -> Result<(), ConfigError> {
        match self
            .overrides
            .keys()
            .find(|n| !self.upstreams.iter().any(|u| &u.name == *n))
        {
            Some(name) => Err(invalid(
                format!("upstreams.{name}"),
                "is not used by any route (typo?)",
            )),
            None => Ok(()),
        }
    }
}

/// A breaker block as an object (`null` is an empty one).
pub(super) fn object_or_empty(v: Value, field: &str) -> Result<Value, ConfigError> {
    match v {
        Value::Null => Ok(Value::Object(Default::default())),
        Value::Object(_) => Ok(v),
        other => Err(ConfigError::Json {
            field: field.to_string(),
            message: format!("expected an object, got {other}"),
        }),
    }
}

/// Deep-merges `over` into `base`. A `window` object is replaced whole, since its two
/// forms exclude each other.
fn merge(base: Value, over: Value) -> Value {
    match (base, over) {
        (Value::Object(mut b), Value::Object(o)) => {
            for (k, v) in o {
                let merged = match b.remove(&k) {
                    Some(old) if k != "window" => merge(old, v),
                    _ => v,
                };
                b.insert(k, merged);
            }
            Value::Object(b)
        }
        (_, over) => over,
    }
}
