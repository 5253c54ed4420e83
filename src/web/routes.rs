//! Route registration that also lists what it registers: every route module adds its
//! routes through [`RouteExt`] (`cfg.get(path, handler)`, …, `cfg.scoped(prefix, …)`),
//! so [`route_table`] can enumerate the router itself — the hostile-input tests walk
//! every route from it, and a new route is covered the day it is added.

use actix_web::http::Method;
use actix_web::{web, FromRequest, Handler, Responder};
use std::cell::RefCell;

/// One registered route: method and full path pattern (`/api/v1/vms/{name}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub method: Method,
    pub pattern: String,
}

thread_local! {
    /// Set while [`route_table`] runs: the routes registered, and the scope prefixes.
    static RECORDING: RefCell<Option<(Vec<RouteEntry>, Vec<String>)>> = const { RefCell::new(None) };
}

fn record(method: Method, path: &str) {
    RECORDING.with(|r| {
        if let Some((table, prefixes)) = r.borrow_mut().as_mut() {
            table.push(RouteEntry {
                method,
                pattern: format!("{}{path}", prefixes.concat()),
            });
        }
    });
}

/// Registers routes and records them.
pub trait RouteExt {
    fn add<F, Args>(&mut self, method: Method, path: &str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static;

    fn get<F, Args>(&mut self, path: &str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.add(Method::GET, path, handler)
    }

    fn post<F, Args>(&mut self, path: &str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.add(Method::POST, path, handler)
    }

    fn put<F, Args>(&mut self, path: &str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.add(Method::PUT, path, handler)
    }

    fn patch<F, Args>(&mut self, path: &str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.add(Method::PATCH, path, handler)
    }

    fn delete<F, Args>(&mut self, path: &str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.add(Method::DELETE, path, handler)
    }

    /// Routes under a path prefix (an actix scope).
    fn scoped(&mut self, prefix: &str, routes: impl FnOnce(&mut web::ServiceConfig)) -> &mut Self;

    /// A resource with its own settings (e.g. a larger body limit): `build` adds one
    /// route per method in `methods`, which are recorded.
    fn resource(
        &mut self,
        path: &str,
        methods: &[Method],
        build: impl FnOnce(actix_web::Resource) -> actix_web::Resource,
    ) -> &mut Self;
}

impl RouteExt for web::ServiceConfig {
    fn add<F, Args>(&mut self, method: Method, path: &str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        record(method.clone(), path);
        self.route(path, web::method(method).to(handler))
    }

    fn scoped(&mut self, prefix: &str, routes: impl FnOnce(&mut web::ServiceConfig)) -> &mut Self {
        let push = |p: &str| {
            RECORDING.with(|r| {
                if let Some((_, prefixes)) = r.borrow_mut().as_mut() {
                    prefixes.push(p.to_string());
                }
            })
        };
        push(prefix);
        let scope = web::scope(prefix).configure(routes);
        RECORDING.with(|r| {
            if let Some((_, prefixes)) = r.borrow_mut().as_mut() {
                prefixes.pop();
            }
        });
        self.service(scope)
    }

    fn resource(
        &mut self,
        path: &str,
        methods: &[Method],
        build: impl FnOnce(actix_web::Resource) -> actix_web::Resource,
    ) -> &mut Self {
        for m in methods {
            record(m.clone(), path);
        }
        self.service(build(web::resource(path)))
    }
}

/// Every route of the app, in registration order.
pub fn route_table() -> Vec<RouteEntry> {
    RECORDING.with(|r| *r.borrow_mut() = Some((Vec::new(), Vec::new())));
    let _app = actix_web::App::new().configure(super::server::configure);
    RECORDING.with(|r| r.borrow_mut().take().map(|(t, _)| t).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_routes_with_their_scopes() {
        let table = route_table();
        let has = |m: Method, p: &str| table.iter().any(|e| e.method == m && e.pattern == p);
        assert!(has(Method::POST, "/login"));
        assert!(has(Method::GET, "/api/v1/vms/{name}"));
        assert!(has(Method::DELETE, "/api/v1/vms/{name}"));
        assert!(table.len() > 50, "{} routes", table.len());
    }
}
