//! `wasmgate plugin new`: writes a small, working plugin in Rust, Python or JavaScript to start
//! from. Each template sets a configured header on requests and responses, the same way in
//! every language, so they can be compared side by side (`docs/plugins.md` does).
//!
//! The templates are files under `templates/`, embedded at build time. `{{name}}` in them
//! becomes the plugin's name, `{{crate_name}}` the name with `-` as `_` (the Rust library,
//! hence the component's file name), and `{{sdk_path}}` the Rust SDK's path. Python and
//! JavaScript cannot use the rules crate the host enforces, so `{{host_managed_headers}}`
//! becomes its list of host-managed headers as string literals in the file's language
//! (the Rust template calls the crate through the SDK instead).

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// The language of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }
}

/// A file a template writes.
#[derive(Debug)]
pub struct Template {
    /// Where its text comes from, relative to the repository root.
    pub source: &'static str,
    /// Where it goes, relative to the plugin's directory.
    pub path: &'static str,
    pub text: &'static str,
    pub executable: bool,
}

macro_rules! template {
    ($lang:literal, $file:literal => $path:literal) => {
        template!($lang, $file => $path, false)
    };
    ($lang:literal, $file:literal => $path:literal, $executable:expr) => {
        Template {
            source: concat!("host/src/scaffold/templates/", $lang, "/", $file),
            path: $path,
            text: include_str!(concat!("templates/", $lang, "/", $file)),
            executable: $executable,
        }
    };
}

/// The contract, copied into Python and JavaScript plugins, whose tools build against a WIT
/// directory of the plugin's own.
const WIT: Template = Template {
    source: "wit/plugin.wit",
    path: "wit/plugin.wit",
    text: include_str!("../../../wit/plugin.wit"),
    executable: false,
};

const RUST: &[Template] = &[
    template!("rust", "Cargo.toml.tmpl" => "Cargo.toml"),
    template!("rust", "src/lib.rs" => "src/lib.rs"),
    template!("rust", "README.md" => "README.md"),
    template!("rust", "gateway.toml" => "gateway.toml"),
    template!("rust", "gitignore" => ".gitignore"),
];

const PYTHON: &[Template] = &[
    template!("python", "app.py" => "app.py"),
    template!("python", "test_app.py" => "test_app.py"),
    template!("python", "build.sh" => "build.sh", true),
    template!("python", "test.sh" => "test.sh", true),
    WIT,
    template!("python", "README.md" => "README.md"),
    template!("python", "gateway.toml" => "gateway.toml"),
    template!("python", "gitignore" => ".gitignore"),
];

const JS: &[Template] = &[
    template!("js", "package.json" => "package.json"),
    template!("js", "app.js" => "app.js"),
    template!("js", "app.test.js" => "app.test.js"),
    template!("js", "build.sh" => "build.sh", true),
    template!("js", "test.sh" => "test.sh", true),
    WIT,
    template!("js", "README.md" => "README.md"),
    template!("js", "gateway.toml" => "gateway.toml"),
    template!("js", "gitignore" => ".gitignore"),
];

/// The files of a language's template, in the order they are written.
pub fn templates(lang: Lang) -> &'static [Template] {
    match lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
        Lang::Js => JS,
    }
}

/// A template file filled in for one plugin.
#[derive(Debug)]
pub struct File {
    pub source: &'static str,
    pub path: &'static str,
    pub contents: String,
    pub executable: bool,
}

/// Fills in a language's templates. `sdk_path` is the Rust SDK's path as the plugin's
/// `Cargo.toml` should name it (unused by the other languages).
pub fn render(lang: Lang, name: &str, sdk_path: &str) -> Vec<File> {
    let crate_name = name.replace('-', "_");
    let sdk_path = toml_basic_string(sdk_path);
    let quote = match lang {
        Lang::Js => '\'',
        Lang::Rust | Lang::Python => '"',
    };
    templates(lang)
        .iter()
        .map(|t| {
            let text = t
                .text
                .replace("{{name}}", name)
                .replace("{{crate_name}}", &crate_name)
                .replace("{{sdk_path}}", &sdk_path);
            File {
                source: t.source,
                path: t.path,
                contents: fill_list(
                    &text,
                    "{{host_managed_headers}}",
                    &wasmgate_rules::http::HOST_MANAGED_HEADERS,
                    quote,
                ),
                executable: t.executable,
            }
        })
        .collect()
}

/// Longest line a filled-in list makes, as the templates' own lines are.
const LIST_WIDTH: usize = 100;

/// Replaces `placeholder` with `items` as quoted string literals, `, `-separated with a
/// trailing comma, wrapped at [`LIST_WIDTH`] with the placeholder's indentation. The items
/// are header names (tokens), which need no escaping in either language.
fn fill_list(text: &str, placeholder: &str, items: &[&str], quote: char) -> String {
    let Some(at) = text.find(placeholder) else {
        return text.to_owned();
    };
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let indent = &text[line_start..at];
    let mut list = String::new();
    let mut line_len = indent.len();
    for item in items {
        let literal = format!("{quote}{item}{quote},");
        if line_len > indent.len() {
            if line_len + 1 + literal.len() > LIST_WIDTH {
                list.push('\n');
                list.push_str(indent);
                line_len = indent.len();
            } else {
                list.push(' ');
                line_len += 1;
            }
        }
        list.push_str(&literal);
        line_len += literal.len();
    }
    text.replacen(placeholder, &list, 1)
}

/// The inside of a TOML basic string (`"..."`) holding `s`.
fn toml_basic_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Why a plugin was not created.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid plugin name `{0}`: use lowercase letters, digits and `-`, starting with a letter (at most 64 characters)"
    )]
    BadName(String),
    #[error("invalid plugin name `{0}`: it is reserved in Rust; pick another name")]
    ReservedName(String),
    #[error("{0} already exists and is not an empty directory; nothing was written")]
    NotEmpty(PathBuf),
    #[error(
        "cannot find the wasmgate Rust SDK (a `plugin-sdk/Cargo.toml` in {0} or a directory above it); pass --sdk PATH to the plugin-sdk directory"
    )]
    SdkNotFound(PathBuf),
    #[error("--sdk {0}: not the wasmgate SDK (no Cargo.toml of package `wasmgate-sdk` there)")]
    NotSdk(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Names Cargo refuses for a package, or a library name that does not compile.
const RUST_RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc-macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

/// Checks a plugin name: lowercase ASCII letters, digits and `-`, starting with a letter, at
/// most 64 characters. It names the directory, the package, the component and the
/// `[plugins.NAME]` table, so it must be safe in all of them.
pub fn validate_name(name: &str, lang: Lang) -> Result<(), Error> {
    let mut bytes = name.bytes();
    let ok = name.len() <= 64
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(Error::BadName(name.to_owned()));
    }
    if lang == Lang::Rust && RUST_RESERVED.contains(&name) {
        return Err(Error::ReservedName(name.to_owned()));
    }
    Ok(())
}

/// Refuses a path that exists and is anything but an empty directory.
pub fn check_target(dir: &Path) -> Result<(), Error> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(dir)(e)),
        Ok(meta) if !meta.is_dir() => Err(Error::NotEmpty(dir.to_owned())),
        Ok(_) => {
            let mut entries = std::fs::read_dir(dir).map_err(io(dir))?;
            match entries.next() {
                None => Ok(()),
                Some(_) => Err(Error::NotEmpty(dir.to_owned())),
            }
        }
    }
}

/// What `plugin new` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub name: String,
    pub lang: Lang,
    /// Defaults to `./NAME`.
    pub dir: Option<PathBuf>,
    /// The Rust SDK's directory; found by walking up from the plugin's directory when unset.
    pub sdk: Option<PathBuf>,
}

/// What `plugin new` wrote.
#[derive(Debug)]
pub struct Created {
    pub dir: PathBuf,
    pub files: Vec<&'static str>,
    /// Shell commands to go on with, one a line.
    pub next: Vec<String>,
}

impl Created {
    /// What the command prints.
    pub fn summary(&self, name: &str, lang: Lang) -> String {
        let mut out = format!(
            "created {} plugin `{name}` in {}:\n",
            lang.as_str(),
            self.dir.display()
        );
        for f in &self.files {
            let _ = writeln!(out, "  {f}");
        }
        out.push_str("\nnext:\n");
        for line in &self.next {
            let _ = writeln!(out, "  {line}");
        }
        out
    }
}

/// Writes a new plugin. Nothing is written unless the name, the directory and (for Rust) the
/// SDK all check out, and no existing file is ever replaced.
pub fn create(opts: &Options) -> Result<Created, Error> {
    validate_name(&opts.name, opts.lang)?;
    let dir = opts
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&opts.name));
    check_target(&dir)?;
    let abs_dir = absolute(&dir)?;
    let sdk_path = match opts.lang {
        Lang::Rust => sdk_path(&abs_dir, opts.sdk.as_deref())?,
        Lang::Python | Lang::Js => String::new(),
    };
    let files = render(opts.lang, &opts.name, &sdk_path);

    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    for f in &files {
        let path = dir.join(f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mode = if f.executable { 0o755 } else { 0o644 };
        // `create_new`: a file that appeared since the check is left alone, not overwritten.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(io(&path))?;
        file.write_all(f.contents.as_bytes()).map_err(io(&path))?;
        if f.executable {
            // The umask may have taken bits off the mode asked for at creation.
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(io(&path))?;
        }
    }

    let crate_name = opts.name.replace('-', "_");
    let steps = match opts.lang {
        Lang::Rust => [
            ("cargo test".to_owned(), "unit tests, natively".to_owned()),
            (
                "cargo build --release --target wasm32-wasip2".to_owned(),
                format!("-> target/wasm32-wasip2/release/{crate_name}.wasm"),
            ),
        ],
        Lang::Python | Lang::Js => [
            ("./test.sh".to_owned(), "unit tests, natively".to_owned()),
            ("./build.sh".to_owned(), format!("-> {}.wasm", opts.name)),
        ],
    };
    let check = (
        "wasmgate check --config gateway.toml".to_owned(),
        "load it as the gateway would".to_owned(),
    );
    let mut next = vec![format!("cd {}", shell_quote(&dir.display().to_string()))];
    let width = steps
        .iter()
        .chain([&check])
        .map(|(c, _)| c.len())
        .max()
        .unwrap_or(0);
    for (command, what) in steps.iter().chain([&check]) {
        next.push(format!("{command:width$}   # {what}"));
    }
    Ok(Created {
        dir,
        files: files.iter().map(|f| f.path).collect(),
        next,
    })
}

/// The SDK's path as the plugin's `Cargo.toml` names it: relative to the plugin when the two
/// share a directory below the root, else absolute.
fn sdk_path(abs_dir: &Path, sdk: Option<&Path>) -> Result<String, Error> {
    let sdk = match sdk {
        Some(sdk) => {
            let sdk = absolute(sdk)?;
            if !is_sdk(&sdk) {
                return Err(Error::NotSdk(sdk));
            }
            sdk
        }
        None => abs_dir
            .ancestors()
            .skip(1)
            .map(|a| a.join("plugin-sdk"))
            .find(|candidate| is_sdk(candidate))
            .ok_or_else(|| Error::SdkNotFound(abs_dir.to_owned()))?,
    };
    let sdk = std::fs::canonicalize(&sdk).map_err(io(&sdk))?;
    Ok(relative(abs_dir, &sdk)
        .unwrap_or(sdk)
        .to_string_lossy()
        .into_owned())
}

fn is_sdk(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .is_ok_and(|text| text.lines().any(|l| l.trim() == r#"name = "wasmgate-sdk""#))
}

/// An absolute path with symlinks resolved as far as the path exists (the plugin's directory
/// may not exist yet), so a relative path computed from it holds.
fn absolute(path: &Path) -> Result<PathBuf, Error> {
    let path = std::path::absolute(path).map_err(io(path))?;
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(mut resolved) => {
                for part in rest.iter().rev() {
                    resolved.push(part);
                }
                return Ok(normalize(&resolved));
            }
            Err(_) => match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_owned());
                    existing = parent;
                }
                _ => return Ok(normalize(&path)),
            },
        }
    }
}

/// Resolves `.` and `..` without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// `to` relative to `from` (both absolute and normalized), when they share more than the root.
fn relative(from: &Path, to: &Path) -> Option<PathBuf> {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    if common < 2 {
        return None;
    }
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    Some(out)
}

fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./+,:@".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for name in ["a", "hello", "set-header", "v2", "a-b-c-1"] {
            validate_name(name, Lang::Rust).unwrap();
        }
        validate_name(&"a".repeat(64), Lang::Js).unwrap();
    }

    #[test]
    fn refuses_other_names() {
        for name in [
            "",
            "1abc",
            "-abc",
            "Hello",
            "hello_world",
            "hello world",
            "héllo",
            "../evil",
            "a/b",
            ".hidden",
            "a\nb",
        ] {
            for lang in [Lang::Rust, Lang::Python, Lang::Js] {
                let err = validate_name(name, lang).unwrap_err();
                assert!(matches!(err, Error::BadName(_)), "{name:?}: {err}");
            }
        }
        assert!(validate_name(&"a".repeat(65), Lang::Python).is_err());
    }

    #[test]
    fn refuses_names_rust_reserves_for_rust_only() {
        for name in ["fn", "self", "test", "std", "proc-macro"] {
            let err = validate_name(name, Lang::Rust).unwrap_err();
            assert!(matches!(err, Error::ReservedName(_)), "{name}: {err}");
            validate_name(name, Lang::Python).unwrap();
        }
    }

    #[test]
    fn refuses_a_non_empty_or_non_directory_target() {
        let tmp = tempfile::tempdir().unwrap();
        check_target(&tmp.path().join("missing")).unwrap();
        check_target(tmp.path()).unwrap();

        std::fs::write(tmp.path().join(".keep"), "").unwrap();
        let err = check_target(tmp.path()).unwrap_err();
        assert!(matches!(err, Error::NotEmpty(_)), "{err}");

        let file = tmp.path().join(".keep");
        assert!(matches!(check_target(&file), Err(Error::NotEmpty(_))));
    }

    #[test]
    fn create_refuses_a_non_empty_dir_and_leaves_it_alone() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("app.py"), "mine").unwrap();
        let opts = Options {
            name: "hello".into(),
            lang: Lang::Python,
            dir: Some(tmp.path().to_owned()),
            sdk: None,
        };
        assert!(matches!(create(&opts), Err(Error::NotEmpty(_))));
        let entries: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("app.py")).unwrap(),
            "mine"
        );
    }

    #[test]
    fn creates_into_an_empty_dir_with_executable_scripts() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let opts = Options {
            name: "my-plugin".into(),
            lang: Lang::Js,
            dir: Some(tmp.path().to_owned()),
            sdk: None,
        };
        let created = create(&opts).unwrap();
        assert!(created.files.contains(&"wit/plugin.wit"));
        for f in &created.files {
            let text = std::fs::read_to_string(tmp.path().join(f)).unwrap();
            assert!(!text.contains("{{"), "{f} has an unfilled placeholder");
        }
        let mode = |f: &str| {
            let meta = std::fs::metadata(tmp.path().join(f)).unwrap();
            meta.permissions().mode() & 0o777
        };
        assert_eq!(mode("build.sh"), 0o755);
        assert_eq!(mode("test.sh"), 0o755);
        assert_eq!(mode("app.js"), 0o644);
        let package = std::fs::read_to_string(tmp.path().join("package.json")).unwrap();
        let package: serde_json::Value = serde_json::from_str(&package).unwrap();
        assert_eq!(package["name"], "my-plugin");
        assert_eq!(package["main"], "app.js");
    }

    #[test]
    fn rust_finds_the_sdk_above_the_plugin_and_names_it_relatively() {
        let tmp = tempfile::tempdir().unwrap();
        let sdk = tmp.path().join("plugin-sdk");
        std::fs::create_dir(&sdk).unwrap();
        std::fs::write(
            sdk.join("Cargo.toml"),
            "[package]\nname = \"wasmgate-sdk\"\n",
        )
        .unwrap();
        let dir = tmp.path().join("plugins/set-header");
        let opts = Options {
            name: "set-header".into(),
            lang: Lang::Rust,
            dir: Some(dir.clone()),
            sdk: None,
        };
        create(&opts).unwrap();
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let manifest: toml::Table = manifest.parse().unwrap();
        assert_eq!(
            manifest["dependencies"]["wasmgate-sdk"]["path"].as_str(),
            Some("../../plugin-sdk")
        );
        assert_eq!(manifest["package"]["name"].as_str(), Some("set-header"));
        assert_eq!(manifest["lib"]["name"].as_str(), Some("set_header"));
        let gateway = std::fs::read_to_string(dir.join("gateway.toml")).unwrap();
        assert!(gateway.contains("target/wasm32-wasip2/release/set_header.wasm"));
    }

    #[test]
    fn rust_without_an_sdk_asks_for_one_and_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hello");
        let opts = Options {
            name: "hello".into(),
            lang: Lang::Rust,
            dir: Some(dir.clone()),
            sdk: None,
        };
        let err = create(&opts).unwrap_err();
        assert!(matches!(err, Error::SdkNotFound(_)), "{err}");
        assert!(err.to_string().contains("--sdk"));
        assert!(!dir.exists());

        let opts = Options {
            sdk: Some(tmp.path().to_owned()),
            ..opts
        };
        assert!(matches!(create(&opts), Err(Error::NotSdk(_))));
        assert!(!dir.exists());
    }

    #[test]
    fn sdk_paths_are_escaped_for_toml() {
        let files = render(Lang::Rust, "x", r#"/odd "dir"\sdk"#);
        let manifest = &files
            .iter()
            .find(|f| f.path == "Cargo.toml")
            .unwrap()
            .contents;
        let manifest: toml::Table = manifest.parse().unwrap();
        assert_eq!(
            manifest["dependencies"]["wasmgate-sdk"]["path"].as_str(),
            Some(r#"/odd "dir"\sdk"#)
        );
    }

    #[test]
    fn python_and_js_get_the_host_managed_headers_from_the_rules() {
        use wasmgate_rules::http::HOST_MANAGED_HEADERS;
        for (lang, file, quote) in [(Lang::Python, "app.py", '"'), (Lang::Js, "app.js", '\'')] {
            let files = render(lang, "x", "");
            let text = &files.iter().find(|f| f.path == file).unwrap().contents;
            assert!(!text.contains("{{"), "{file} has an unfilled placeholder");
            for name in HOST_MANAGED_HEADERS {
                assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
                let literal = format!("{quote}{name}{quote},");
                assert_eq!(text.matches(&literal).count(), 1, "{file}: {literal}");
            }
            assert!(text.lines().all(|l| l.len() <= LIST_WIDTH), "{file}");
        }
    }

    #[test]
    fn lists_wrap_with_the_placeholders_indentation() {
        let text = "set = {\n    {{list}}\n}\n";
        let items = ["aaaa", "bbbb", "cccc"];
        let filled = fill_list(text, "{{list}}", &items, '"');
        assert_eq!(filled, "set = {\n    \"aaaa\", \"bbbb\", \"cccc\",\n}\n");
        // 4 + 47 + 1 + 48: exactly the width, so the third item starts a line.
        let long = ["a".repeat(44), "b".repeat(45), "c".repeat(10)];
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        let filled = fill_list(text, "{{list}}", &long, '\'');
        let lines: Vec<&str> = filled.lines().collect();
        assert_eq!(lines[1], format!("    '{}', '{}',", long[0], long[1]));
        assert_eq!(lines[2], format!("    '{}',", long[2]));
        assert_eq!(fill_list("none", "{{list}}", &items, '"'), "none");
    }

    #[test]
    fn relative_paths_need_a_shared_directory() {
        let rel = relative(
            Path::new("/work/main/plugins/a"),
            Path::new("/work/main/plugin-sdk"),
        );
        assert_eq!(rel, Some(PathBuf::from("../../plugin-sdk")));
        assert_eq!(relative(Path::new("/tmp/a"), Path::new("/work/sdk")), None);
    }
}
