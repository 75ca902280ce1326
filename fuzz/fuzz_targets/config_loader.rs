//! The configuration loader on arbitrary text: a clear error or a valid configuration, never a
//! panic; a valid one renders `config check` and names no secret it read.

#![no_main]

use hourglass_config::Config;
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "sk-fuzz-secret-value";

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    // Every environment variable holds the secret; files are read relative to a directory that
    // does not exist, so a `…_file` key can only fail, cleanly.
    let env = |_: &str| Some(SECRET.to_owned());
    match Config::from_toml(text, "/nonexistent-hourglass-fuzz/fuzz.toml", &env) {
        Ok(config) => {
            let check = config.render_check();
            assert!(!check.contains(SECRET), "config check shows a secret");
            assert!(
                !format!("{config:?}").contains(SECRET),
                "Debug shows a secret"
            );
        }
        Err(error) => {
            let message = error.to_string();
            assert!(!message.is_empty());
            assert!(
                !message.contains(SECRET),
                "an error shows a secret: {message}"
            );
        }
    }
});
