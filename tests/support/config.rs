//! A gateway config built in code, so a test writes only its own settings: the listener on
//! `127.0.0.1:0` and the section headers are written here.
//!
//! ```ignore
//! let cfg = GatewayConfig::new()
//!     .server("max_headers = 20")
//!     .upstream("app", &up.url())
//!     .route("api", "/api", "app")
//!     .stage("headers", r#"{ request = { set = { "x-a" = "1" } } }"#);
//! let gw = Gateway::start(&cfg.to_string());
//! ```

use std::fmt;
use std::path::Path;

#[derive(Debug, Default)]
struct Route {
    name: String,
    prefix: String,
    upstream: String,
    lines: Vec<String>,
    /// Each entry's plugin and its other lines.
    stages: Vec<(String, Vec<String>)>,
}

/// A config under construction; `to_string` renders it as TOML.
#[derive(Debug, Default)]
pub struct GatewayConfig {
    server: Vec<String>,
    admin: bool,
    plugins: Vec<(String, String, Vec<String>)>,
    upstreams: Vec<(String, Vec<String>, Vec<String>)>,
    routes: Vec<Route>,
    tail: Vec<String>,
}

/// A TOML basic string.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl GatewayConfig {
    /// `[server] listen = "127.0.0.1:0"`, and nothing else.
    pub fn new() -> Self {
        Self::default()
    }

    /// A line of the `[server]` table (`"max_headers = 20"`).
    pub fn server(mut self, line: &str) -> Self {
        self.server.push(line.to_owned());
        self
    }

    /// An admin listener on `127.0.0.1:0`.
    pub fn admin(mut self) -> Self {
        self.admin = true;
        self
    }

    /// A plugin at `path`.
    pub fn plugin(self, name: &str, path: &Path) -> Self {
        self.plugin_with(name, path, &[])
    }

    /// A plugin at `path`, with more lines of its table (`"capabilities = []"`).
    pub fn plugin_with(mut self, name: &str, path: &Path, lines: &[&str]) -> Self {
        self.plugins.push((
            name.to_owned(),
            path.display().to_string(),
            lines.iter().map(|l| l.to_string()).collect(),
        ));
        self
    }

    /// An upstream with one target.
    pub fn upstream(self, name: &str, url: &str) -> Self {
        self.upstream_with(name, &[url], &[])
    }

    /// An upstream with these targets and more lines of its table (`"timeout_ms = 500"`).
    pub fn upstream_with(mut self, name: &str, urls: &[&str], lines: &[&str]) -> Self {
        self.upstreams.push((
            name.to_owned(),
            urls.iter().map(|u| quoted(u)).collect(),
            lines.iter().map(|l| l.to_string()).collect(),
        ));
        self
    }

    /// An upstream whose targets have weights (`{ url = "...", weight = 3 }`).
    pub fn upstream_weighted(
        mut self,
        name: &str,
        targets: &[(&str, u32)],
        lines: &[&str],
    ) -> Self {
        self.upstreams.push((
            name.to_owned(),
            targets
                .iter()
                .map(|(u, w)| format!("{{ url = {}, weight = {w} }}", quoted(u)))
                .collect(),
            lines.iter().map(|l| l.to_string()).collect(),
        ));
        self
    }

    /// A route; `with` and `stage` add to the last one.
    pub fn route(mut self, name: &str, prefix: &str, upstream: &str) -> Self {
        self.routes.push(Route {
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            upstream: upstream.to_owned(),
            ..Route::default()
        });
        self
    }

    /// A line of the last route's table (`"strip_prefix = true"`).
    pub fn with(mut self, line: &str) -> Self {
        self.last_route().lines.push(line.to_owned());
        self
    }

    /// A pipeline entry on the last route, with its config as an inline TOML table (`"{}"`
    /// for none).
    pub fn stage(self, plugin: &str, config: &str) -> Self {
        let config = format!("config = {config}");
        self.stage_with(plugin, &[&config])
    }

    /// A pipeline entry on the last route, with these lines (`"on_error = \"skip\""`).
    pub fn stage_with(mut self, plugin: &str, lines: &[&str]) -> Self {
        let lines = lines.iter().map(|l| l.to_string()).collect();
        self.last_route().stages.push((plugin.to_owned(), lines));
        self
    }

    /// Text added at the end, as it is (tables the builder does not know).
    pub fn raw(mut self, text: &str) -> Self {
        self.tail.push(text.to_owned());
        self
    }

    fn last_route(&mut self) -> &mut Route {
        self.routes
            .last_mut()
            .expect("`with` and `stage` follow a `route`")
    }
}

impl fmt::Display for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[server]\nlisten = \"127.0.0.1:0\"")?;
        for l in &self.server {
            writeln!(f, "{l}")?;
        }
        if self.admin {
            writeln!(f, "[admin]\nlisten = \"127.0.0.1:0\"")?;
        }
        for (name, path, lines) in &self.plugins {
            writeln!(f, "[plugins.{name}]\npath = {}", quoted(path))?;
            for l in lines {
                writeln!(f, "{l}")?;
            }
        }
        for (name, urls, lines) in &self.upstreams {
            writeln!(f, "[upstreams.{name}]\ntargets = [{}]", urls.join(", "))?;
            for l in lines {
                writeln!(f, "{l}")?;
            }
        }
        for r in &self.routes {
            writeln!(
                f,
                "[[routes]]\nname = {}\npath_prefix = {}\nupstream = {}",
                quoted(&r.name),
                quoted(&r.prefix),
                quoted(&r.upstream)
            )?;
            for l in &r.lines {
                writeln!(f, "{l}")?;
            }
            for (plugin, lines) in &r.stages {
                writeln!(f, "[[routes.pipeline]]\nplugin = {}", quoted(plugin))?;
                for l in lines {
                    writeln!(f, "{l}")?;
                }
            }
        }
        for t in &self.tail {
            writeln!(f, "{t}")?;
        }
        Ok(())
    }
}
