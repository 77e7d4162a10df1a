//! Where the broker and database settings come from. In a plugin project's
//! environment Celerity needs no second copy of them: without its own
//! `--broker-url` / `CELERITY_BROKER_URL` it reads the plugin runtime's
//! `BK_PLUGIN_RUNTIME_BROKER_URL`, and without `--database-url` /
//! `CELERITY_DATABASE_URL` it builds the URL from the runtime's
//! `BK_PLUGIN_RUNTIME_DB_{NAME,HOST,PORT,USER,PWD}`; then the defaults.

use std::fmt;
use std::path::{Path, PathBuf};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::{DEFAULT_BROKER_URL, DEFAULT_DATABASE_URL};

/// The plugin runtime's broker setting.
pub const RUNTIME_BROKER_URL: &str = "BK_PLUGIN_RUNTIME_BROKER_URL";
/// The CA bundle Python's `requests` trusts instead of its own, when set:
/// the plugins' callbacks were posted with it.
pub const REQUESTS_CA_BUNDLE: &str = "REQUESTS_CA_BUNDLE";
/// The plugin runtime's database settings; only the name is required.
pub const RUNTIME_DB_NAME: &str = "BK_PLUGIN_RUNTIME_DB_NAME";
/// Defaults to `127.0.0.1`.
pub const RUNTIME_DB_HOST: &str = "BK_PLUGIN_RUNTIME_DB_HOST";
/// Defaults to `3306`.
pub const RUNTIME_DB_PORT: &str = "BK_PLUGIN_RUNTIME_DB_PORT";
/// Defaults to `root`.
pub const RUNTIME_DB_USER: &str = "BK_PLUGIN_RUNTIME_DB_USER";
/// Defaults to no password.
pub const RUNTIME_DB_PWD: &str = "BK_PLUGIN_RUNTIME_DB_PWD";

/// Where a setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Celerity's own flag or `CELERITY_*` variable.
    Celerity(&'static str),
    /// The plugin runtime's variables.
    Runtime(&'static str),
    /// The built-in default.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Celerity(name) | Source::Runtime(name) => f.write_str(name),
            Source::Default => f.write_str("the default"),
        }
    }
}

/// A URL and where it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Setting {
    /// The URL.
    pub url: String,
    /// Its source.
    pub source: Source,
}

impl fmt::Debug for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} from {}", celerity_db::redact_url(&self.url), self.source)
    }
}

impl Setting {
    /// `URL (password masked) from SOURCE`, for the start-up log.
    pub fn describe(&self) -> String {
        format!("{self:?}")
    }
}

/// The broker URL: Celerity's own, the runtime's, or the default.
pub fn broker_url(given: Option<String>, env: impl Fn(&str) -> Option<String>) -> Setting {
    if let Some(url) = given {
        return Setting { url, source: Source::Celerity("--broker-url / CELERITY_BROKER_URL") };
    }
    match env(RUNTIME_BROKER_URL).filter(|u| !u.is_empty()) {
        Some(url) => Setting { url, source: Source::Runtime(RUNTIME_BROKER_URL) },
        None => Setting { url: DEFAULT_BROKER_URL.into(), source: Source::Default },
    }
}

/// Characters kept as they are in a URL's user and password.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The database URL: Celerity's own, one built from the runtime's, or the default.
pub fn database_url(given: Option<String>, env: impl Fn(&str) -> Option<String>) -> Setting {
    if let Some(url) = given {
        return Setting { url, source: Source::Celerity("--database-url / CELERITY_DATABASE_URL") };
    }
    let Some(name) = env(RUNTIME_DB_NAME).filter(|n| !n.is_empty()) else {
        return Setting { url: DEFAULT_DATABASE_URL.into(), source: Source::Default };
    };
    let var = |key: &str, default: &str| env(key).filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned());
    let user = utf8_percent_encode(&var(RUNTIME_DB_USER, "root"), USERINFO).to_string();
    let password = env(RUNTIME_DB_PWD).unwrap_or_default();
    let userinfo =
        if password.is_empty() { user } else { format!("{user}:{}", utf8_percent_encode(&password, USERINFO)) };
    let (host, port) = (var(RUNTIME_DB_HOST, "127.0.0.1"), var(RUNTIME_DB_PORT, "3306"));
    Setting {
        url: format!("mysql://{userinfo}@{host}:{port}/{name}"),
        source: Source::Runtime("BK_PLUGIN_RUNTIME_DB_*"),
    }
}

/// The interpreter of the Python environment `celerity` is installed in
/// (`pip install celerity-worker` puts it in that environment's `bin/`):
/// `python` (or `python3`) beside the binary `exe`, when that folder is a
/// virtual environment's (`../pyvenv.cfg`) or a Python prefix where pip
/// recorded the wheel (`../lib/python3.*/site-packages/celerity_worker-*.dist-info`).
/// A `python` that merely shares a folder such as `/usr/bin` is not taken.
pub fn python_beside(exe: &Path) -> Option<(PathBuf, &'static str)> {
    let bin = exe.parent()?;
    let python = ["python", "python3"].into_iter().map(|name| bin.join(name)).find(|p| p.is_file())?;
    let prefix = bin.parent()?;
    if prefix.join("pyvenv.cfg").is_file() {
        return Some((python, "the virtual environment celerity is installed in"));
    }
    let installed_here = std::fs::read_dir(prefix.join("lib")).ok()?.flatten().any(|lib| {
        lib.file_name().to_string_lossy().starts_with("python3")
            && std::fs::read_dir(lib.path().join("site-packages")).is_ok_and(|mut entries| {
                entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("celerity_worker-")))
            })
    });
    installed_here.then_some((python, "the Python environment celerity is installed in"))
}

/// The process environment, read once at start-up.
pub fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn celeritys_own_setting_wins_then_the_runtimes_then_the_default() {
        let runtime = env(&[(RUNTIME_BROKER_URL, "amqp://bk:secret@mq:5672/plugins")]);
        let own = broker_url(Some("amqp://a/%2f".into()), &runtime);
        assert_eq!(own.url, "amqp://a/%2f");
        assert!(matches!(own.source, Source::Celerity(_)));
        let theirs = broker_url(None, &runtime);
        assert_eq!(
            theirs,
            Setting { url: "amqp://bk:secret@mq:5672/plugins".into(), source: Source::Runtime(RUNTIME_BROKER_URL) }
        );
        assert_eq!(theirs.describe(), "amqp://bk:***@mq:5672/plugins from BK_PLUGIN_RUNTIME_BROKER_URL");
        assert_eq!(broker_url(None, env(&[])).source, Source::Default);
    }

    #[test]
    fn the_runtimes_database_settings_make_a_url_with_the_password_encoded_and_masked() {
        let runtime = env(&[
            (RUNTIME_DB_NAME, "bk_plugin"),
            (RUNTIME_DB_HOST, "db.internal"),
            (RUNTIME_DB_PORT, "3307"),
            (RUNTIME_DB_USER, "plugin"),
            (RUNTIME_DB_PWD, "p@ss:w/rd"),
        ]);
        let db = database_url(None, runtime);
        assert_eq!(db.url, "mysql://plugin:p%40ss%3Aw%2Frd@db.internal:3307/bk_plugin");
        assert_eq!(db.describe(), "mysql://plugin:***@db.internal:3307/bk_plugin from BK_PLUGIN_RUNTIME_DB_*");
        let defaults = database_url(None, env(&[(RUNTIME_DB_NAME, "bk_plugin")]));
        assert_eq!(defaults.url, "mysql://root@127.0.0.1:3306/bk_plugin");
        assert_eq!(database_url(None, env(&[(RUNTIME_DB_HOST, "h")])).source, Source::Default, "no name, no URL");
    }

    #[test]
    fn the_interpreter_beside_celerity_is_taken_only_in_a_python_environment() {
        let root = std::env::temp_dir().join(format!("celerity-beside-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let touch = |path: &Path| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        };
        // A virtual environment.
        let venv = root.join("venv");
        touch(&venv.join("bin/python"));
        touch(&venv.join("bin/celerity"));
        assert_eq!(python_beside(&venv.join("bin/celerity")), None, "no pyvenv.cfg: not a venv");
        touch(&venv.join("pyvenv.cfg"));
        let (python, from) = python_beside(&venv.join("bin/celerity")).unwrap();
        assert_eq!((python, from), (venv.join("bin/python"), "the virtual environment celerity is installed in"));
        // A Python prefix pip installed the wheel into (a buildpack's, an image's system Python).
        let prefix = root.join("prefix");
        touch(&prefix.join("bin/python3"));
        touch(&prefix.join("lib/python3.10/site-packages/six.py"));
        assert_eq!(python_beside(&prefix.join("bin/celerity")), None, "a python that only shares the folder");
        touch(&prefix.join("lib/python3.10/site-packages/celerity_worker-0.1.0.dist-info/RECORD"));
        assert_eq!(python_beside(&prefix.join("bin/celerity")).unwrap().0, prefix.join("bin/python3"));
        // No interpreter beside it at all.
        assert_eq!(python_beside(&root.join("elsewhere/celerity")), None);
        let _ = std::fs::remove_dir_all(root);
    }
}
