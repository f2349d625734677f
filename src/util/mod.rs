//! Small leaf helpers every side shares, none of which knows about the proxy's own types:
//! [`secret`] (a redacted value and the one bounded secret-file reader), [`pem`] (CA files),
//! [`text`] (char-safe truncation, one-line errors), [`clock`] (wall-clock stamps for
//! metrics and `/status`) and [`html`] (escaping for the status page).

pub mod clock;
pub mod html;
pub mod pem;
pub mod secret;
pub mod text;
