//! The config loader, fed any text: it never panics, an error names a place inside the text,
//! and a config it accepts holds what the gateway relies on without checking again (every
//! route's paths in normal form, every upstream it names defined, every fixed answer valid,
//! every target and trusted network readable, every plugin's config sendable as JSON).

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use wasmgate_config::net::{TrustedProxies, parse_target};
use wasmgate_config::{Balance, Config, ConfigError, MAX_WEIGHT};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/gateway.toml");
    let config = match Config::parse(text, path) {
        Ok(config) => config,
        Err(ConfigError::Parse { line, column, .. }) => {
            let lines = text.split('\n').count();
            assert!(line <= lines, "line {line} of {lines}");
            if line > 0 {
                let width = text.split('\n').nth(line - 1).unwrap().chars().count();
                assert!(column <= width + 1, "column {column} of {width}");
            }
            return;
        }
        Err(ConfigError::Invalid { problems, .. }) => {
            assert!(!problems.is_empty(), "an invalid config says why");
            return;
        }
        Err(e) => panic!("parsing reads no file: {e}"),
    };
    for r in &config.routes {
        assert!(r.path_match().is_some(), "one way of matching paths");
        for p in [&r.path_prefix, &r.path, &r.path_pattern, &r.rewrite_prefix]
            .into_iter()
            .flatten()
        {
            assert!(wasmgate_uri::is_normal_path(p), "{p:?}");
        }
        match (&r.upstream, &r.respond) {
            (Some(u), None) => assert!(config.upstreams.contains_key(u), "{u:?}"),
            (None, Some(respond)) => {
                respond.parts().expect("an accepted answer is valid");
            }
            _ => panic!("an upstream or an answer"),
        }
        for entry in &r.pipeline {
            assert!(
                config.plugins.contains_key(&entry.plugin),
                "{:?}",
                entry.plugin
            );
            if entry.config_files.is_empty() {
                config
                    .plugin_config_json(entry)
                    .expect("a TOML table is JSON");
            }
        }
    }
    for u in config.upstreams.values() {
        assert!(!u.targets.is_empty());
        for t in &u.targets {
            parse_target(&t.url).expect("an accepted target parses");
            assert!(
                (1..=MAX_WEIGHT).contains(&t.weight),
                "an accepted weight is in range"
            );
        }
        assert!(u.hash_on.is_none() || u.balance == Balance::Hash);
    }
    TrustedProxies::parse(&config.server.trusted_proxies).expect("accepted networks parse");
    let _ = config.server.fixed_settings();
});
